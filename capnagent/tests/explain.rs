//! `Verifier::explain` agrees with `Verifier::verify_with_context` on every
//! `verify` vector of the conformance suite (tests/vectors/vectors.jsonl):
//! same outcome, same gate, or the same refusal; and says what it must
//! about the vectors' unparsable caveats and forged tokens.

use capnagent::explain::CaveatResult;
use capnagent::{Auditor, Capability, CaveatFailure, Context, Gate, Verifier};
use serde_json::Value;

fn hex(text: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(text).ok()
}

#[test]
fn explain_decides_as_the_verifier_on_every_verify_vector() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/vectors.jsonl");
    let text = std::fs::read_to_string(path).expect("read the vectors");
    let (mut compared, mut forged, mut unparsable, mut denied, mut allowed) = (0, 0, 0, 0, 0);
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).expect("JSON line");
        if row["op"] != "verify" {
            continue;
        }
        let id = row["id"].as_str().unwrap_or("?");
        let field = |name: &str| row[name].as_str().unwrap_or_default().to_owned();
        let (Some(root), Some(audit)) = (hex(&field("root_key_hex")), hex(&field("audit_key_hex")))
        else {
            continue;
        };
        let (Ok(verifier), Ok(auditor)) = (Verifier::new(&root), Auditor::new(&audit)) else {
            continue;
        };
        let Ok(cap) = Capability::parse(&field("token")) else {
            continue;
        };
        let Ok(ctx) = Context::from_json_with_limits(&field("ctx_json"), verifier.limits()) else {
            continue;
        };
        let verdict = verifier.verify_with_context(&cap, &ctx, &auditor);
        let explained = verifier.explain(&cap, &ctx);
        compared += 1;
        match (verdict, explained) {
            (Ok(receipt), Ok(explanation)) => {
                assert_eq!(&explanation.outcome, receipt.outcome(), "{id}");
                assert_eq!(explanation.denied_by, receipt.denied_by(), "{id}");
                assert_eq!(explanation.is_allowed(), receipt.is_allowed(), "{id}");
                let json = explanation.to_json();
                assert_eq!(
                    json["decision"]["reason"].as_str(),
                    receipt.outcome().reason(),
                    "{id}"
                );
                if receipt.is_allowed() {
                    allowed += 1;
                    assert!(
                        explanation.to_string().ends_with("decision: allowed"),
                        "{id}"
                    );
                } else {
                    denied += 1;
                }
                if let Some(Gate::Caveat {
                    index,
                    failure: CaveatFailure::Parse,
                }) = receipt.denied_by()
                {
                    unparsable += 1;
                    let caveat = &explanation.caveats[index];
                    assert!(matches!(caveat.result, CaveatResult::ParseError(_)), "{id}");
                    let line = format!("caveat {index}: ");
                    let text = explanation.to_string();
                    let shown = text.lines().find(|l| l.trim_start().starts_with(&line));
                    assert!(
                        shown.is_some_and(|l| l.contains(": does not parse: ")),
                        "{id}: {text}"
                    );
                }
            }
            (Err(e), Err(f)) => {
                assert_eq!(e.gate(), f.gate(), "{id}");
                if e.gate() == Some(Gate::Chain) {
                    forged += 1;
                }
            }
            (v, x) => panic!("{id}: verifier {v:?}, explain {x:?}"),
        }
    }
    // The suite exercises every kind of answer.
    assert!(compared > 300, "{compared} vectors compared");
    assert!(forged > 0 && unparsable > 0 && denied > 0 && allowed > 0);
}
