//! Replays the conformance vectors recorded from the capnagent 0.7.4
//! reference package (`tests/vectors/vectors.jsonl`), or the `.jsonl` file
//! named by `CAPNAGENT_VECTORS`, with the matching rules of the corpus
//! README:
//!
//! - `verify`: our receipt JSON is byte-identical to the expected one
//!   (volatile rows: all but `timestamp_ms` and `signature`), or both sides
//!   refuse with no receipt;
//! - `build`, `attenuate`, `parse`: the token is byte-identical, or both
//!   refuse;
//! - `audit_verify`, `key_ctor`: both accept or both refuse.
//!
//! Rows listed in `tests/vectors/deviations.jsonl` are the deliberate
//! deviations: each must behave exactly as listed there (and differently
//! from the reference), so the list cannot hide a bug. Rows of an unknown
//! op fail.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use capnagent::{Auditor, Capability, Issuer, Verifier};
use serde_json::Value;

/// What our implementation did with one row, normalized for comparison.
#[derive(Debug, Clone, PartialEq)]
enum Actual {
    /// A refusal, with our stable error code.
    Error(String),
    /// A signed receipt (its JSON).
    Receipt(String),
    /// A token.
    Token(String),
    /// A parsed token: reserialized, identifier, holder key hex.
    Parsed {
        reserialized: String,
        identifier: String,
        holder_of_key_hex: Option<String>,
    },
    /// Accepted (audit_verify, key_ctor).
    Ok,
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd hex".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn run(row: &Value) -> Result<Actual, String> {
    let op = field(row, "op");
    let err = |e: capnagent::Error| Actual::Error(e.code().to_owned());
    Ok(match op {
        "verify" => {
            let cap = match Capability::parse(field(row, "token")) {
                Ok(cap) => cap,
                Err(e) => return Ok(err(e)),
            };
            let verifier = match Verifier::new(&hex(field(row, "root_key_hex"))?) {
                Ok(v) => v,
                Err(e) => return Ok(err(e)),
            };
            let auditor = match Auditor::new(&hex(field(row, "audit_key_hex"))?) {
                Ok(a) => a,
                Err(e) => return Ok(err(e)),
            };
            match verifier.verify_with_context_json(&cap, field(row, "ctx_json"), &auditor) {
                Ok(receipt) => {
                    let json = receipt.to_json();
                    // Every receipt we produce must verify under the audit key.
                    auditor
                        .verify(&json)
                        .map_err(|e| format!("our own receipt does not verify: {e}"))?;
                    Actual::Receipt(json)
                }
                Err(e) => err(e),
            }
        }
        "build" => {
            let issuer = match Issuer::from_key(&hex(field(row, "root_key_hex"))?) {
                Ok(i) => i,
                Err(e) => return Ok(err(e)),
            };
            let mut builder = issuer.issue(field(row, "identifier"));
            let steps = row
                .get("steps")
                .and_then(Value::as_array)
                .ok_or("build row without steps")?;
            for step in steps {
                let kind = step.get(0).and_then(Value::as_str).unwrap_or_default();
                let arg = step.get(1).and_then(Value::as_str).unwrap_or_default();
                let result = match kind {
                    "caveat" => builder.caveat(arg).map(|_| ()),
                    "holder_of_key" => match <[u8; 32]>::try_from(hex(arg)?.as_slice()) {
                        Ok(key) => builder.holder_of_key(key).map(|_| ()),
                        Err(_) => return Ok(Actual::Error("holder_key.length".into())),
                    },
                    other => return Err(format!("unknown build step {other:?}")),
                };
                if let Err(e) = result {
                    return Ok(err(e));
                }
            }
            match builder.build() {
                Ok(cap) => Actual::Token(cap.serialize()),
                Err(e) => err(e),
            }
        }
        "attenuate" => match Capability::parse(field(row, "token"))
            .and_then(|cap| cap.attenuate(field(row, "predicate")))
        {
            Ok(cap) => Actual::Token(cap.serialize()),
            Err(e) => err(e),
        },
        "parse" => match Capability::parse(field(row, "token")) {
            Ok(cap) => Actual::Parsed {
                reserialized: cap.serialize(),
                identifier: cap.identifier().to_owned(),
                holder_of_key_hex: cap
                    .holder_of_key()
                    .map(|k| k.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            },
            Err(e) => err(e),
        },
        "audit_verify" => match Auditor::new(&hex(field(row, "audit_key_hex"))?)
            .and_then(|a| a.verify(field(row, "receipt_json")))
        {
            Ok(_) => Actual::Ok,
            Err(e) => err(e),
        },
        "key_ctor" => {
            let key = hex(field(row, "key_hex"))?;
            let result = match field(row, "ctor") {
                "Issuer.from_key" => Issuer::from_key(&key).map(|_| ()),
                "Verifier" => Verifier::new(&key).map(|_| ()),
                "Auditor" => Auditor::new(&key).map(|_| ()),
                other => return Err(format!("unknown ctor {other:?}")),
            };
            match result {
                Ok(()) => Actual::Ok,
                Err(e) => err(e),
            }
        }
        other => return Err(format!("unknown op {other:?}")),
    })
}

/// Receipt JSON with the wall-clock-dependent fields removed.
fn strip_volatile(json: &str, volatile: &[String]) -> Option<Value> {
    let mut value: Value = serde_json::from_str(json).ok()?;
    let obj = value.as_object_mut()?;
    for name in volatile {
        obj.remove(name);
    }
    Some(value)
}

/// Both receipts deny with `caveat parse error in <pred:?>: parse error: `
/// for the same predicate (the detail after it may differ).
fn parse_error_prefixes_match(ours: &str, theirs: &str) -> bool {
    let (Ok(ours), Ok(theirs)) = (
        serde_json::from_str::<Value>(ours),
        serde_json::from_str::<Value>(theirs),
    ) else {
        return false;
    };
    let reason = |v: &Value| v["outcome"]["reason"].as_str().map(str::to_owned);
    let (Some(a), Some(b)) = (reason(&ours), reason(&theirs)) else {
        return false;
    };
    let Some(caveats) = theirs["caveats"].as_array() else {
        return false;
    };
    caveats
        .iter()
        .filter_map(|c| c["predicate"].as_str())
        .map(|p| format!("caveat parse error in {p:?}: parse error: "))
        .any(|prefix| a.starts_with(&prefix) && b.starts_with(&prefix))
}

/// Does our result match the reference's expected result?
fn matches_reference(row: &Value, actual: &Actual) -> bool {
    let expected = &row["expected"];
    if expected.get("error").is_some() {
        return matches!(actual, Actual::Error(_));
    }
    match (field(row, "op"), actual) {
        ("verify", Actual::Receipt(ours)) => {
            let theirs = expected
                .get("receipt")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let volatile: Vec<String> = row
                .get("volatile_fields")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if ours == theirs {
                return true;
            }
            // Our parser words its parse-error details differently; the
            // reason's prefix must still match. The signature covers the
            // reason, so it is left out (ours was verified above).
            let mut volatile = volatile;
            if parse_error_prefixes_match(ours, theirs) {
                volatile.push("signature".into());
                volatile.push("outcome".into());
            }
            if volatile.is_empty() {
                return false;
            }
            strip_volatile(ours, &volatile).is_some()
                && strip_volatile(ours, &volatile) == strip_volatile(theirs, &volatile)
        }
        ("build" | "attenuate", Actual::Token(ours)) => {
            expected.get("token").and_then(Value::as_str) == Some(ours.as_str())
        }
        (
            "parse",
            Actual::Parsed {
                reserialized,
                identifier,
                holder_of_key_hex,
            },
        ) => {
            expected.get("reserialized").and_then(Value::as_str) == Some(reserialized.as_str())
                && expected.get("identifier").and_then(Value::as_str) == Some(identifier.as_str())
                && expected.get("holder_of_key_hex").and_then(Value::as_str)
                    == holder_of_key_hex.as_deref()
        }
        ("audit_verify" | "key_ctor", Actual::Ok) => expected.get("ok") == Some(&Value::Bool(true)),
        _ => false,
    }
}

/// Does our result match what the deviations file says we do?
///
/// `ours` is one of `{"error": CODE}`, `{"allowed": true}`,
/// `{"denied": REASON}`, `{"ok": true}`, `{"token": TOKEN}`.
fn matches_listed(ours: &Value, actual: &Actual) -> bool {
    if let Some(code) = ours.get("error").and_then(Value::as_str) {
        return matches!(actual, Actual::Error(c) if c == code);
    }
    if ours.get("ok") == Some(&Value::Bool(true)) {
        return matches!(actual, Actual::Ok);
    }
    if let Some(token) = ours.get("token").and_then(Value::as_str) {
        return matches!(actual, Actual::Token(t) if t == token);
    }
    let Actual::Receipt(json) = actual else {
        return false;
    };
    let Ok(receipt) = serde_json::from_str::<Value>(json) else {
        return false;
    };
    let outcome = &receipt["outcome"];
    if ours.get("allowed") == Some(&Value::Bool(true)) {
        return outcome["kind"] == "allowed";
    }
    match ours.get("denied").and_then(Value::as_str) {
        Some(reason) => outcome["kind"] == "denied" && outcome["reason"] == reason,
        None => false,
    }
}

fn read_jsonl(path: &PathBuf) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn main() -> ExitCode {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let vectors = std::env::var_os("CAPNAGENT_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("vectors.jsonl"));
    let rows = match read_jsonl(&vectors) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("conformance: cannot read vectors: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deviations: HashMap<String, Value> = match read_jsonl(&dir.join("deviations.jsonl")) {
        Ok(rows) => rows
            .into_iter()
            .map(|r| (field(&r, "id").to_owned(), r))
            .collect(),
        Err(e) => {
            eprintln!("conformance: cannot read deviations: {e}");
            return ExitCode::FAILURE;
        }
    };

    let (mut passed, mut failed, mut deviated) = (0usize, 0usize, 0usize);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        let id = field(row, "id");
        let actual = match run(row) {
            Ok(actual) => actual,
            Err(e) => {
                failed += 1;
                println!("FAIL {id}: {e}");
                continue;
            }
        };
        let agrees = matches_reference(row, &actual);
        match deviations.get(id) {
            Some(dev) => {
                let ours = &dev["ours"];
                if matches_listed(ours, &actual) && !agrees {
                    deviated += 1;
                    *kinds.entry(field(dev, "kind").to_owned()).or_default() += 1;
                } else {
                    failed += 1;
                    println!(
                        "FAIL {id} (listed deviation): listed {ours}, actual {actual:?}, reference {}",
                        row["expected"]
                    );
                }
            }
            None if agrees => passed += 1,
            None => {
                failed += 1;
                println!(
                    "FAIL {id} [{}] {}\n  expected: {}\n  actual:   {actual:?}",
                    field(row, "group"),
                    field(row, "desc"),
                    row["expected"]
                );
            }
        }
    }
    for (kind, n) in &kinds {
        println!("deviation {kind}: {n}");
    }
    println!("conformance: {passed} passed, {failed} failed, {deviated} deviations");
    if failed == 0 && !rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
