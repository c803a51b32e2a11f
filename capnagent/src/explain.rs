//! [`Explanation`]: why the verifier allows or denies one call, gate by
//! gate and caveat by caveat, from [`Verifier::explain`].
//!
//! The decision is the verifier's own (the same `judge` that
//! [`Verifier::verify_with_context`] signs), so an explanation never
//! disagrees with a receipt; the rest is an account of it:
//!
//! - the gates, in the verifier's order: chain, holder key, proof and
//!   replay (never checked here: a holder-of-key proof cannot be checked
//!   offline), revocation, no caveats, caveats;
//! - each caveat with its result and, for each comparison in it (every
//!   operand of an AND/OR, evaluated on its own), the value the identifier
//!   has in the context, the literal and the result:
//!   `arg.amount_cents = 9900 <= 5000: false`. A missing argument and a
//!   caveat that does not parse are said as such.
//!
//! Caveats after the one that decided a denial are still explained (the
//! verifier never reaches them; the explanation says so). No key, and not
//! the token's signature, is ever part of an explanation; the context's
//! facts (arguments, `env`) are the caller's and are shown. Token text
//! (identifier, predicates, string values) is shown with control and
//! bidirectional-override characters escaped, so an explanation written
//! to a terminal or a log is one line per item whatever the token holds.
//!
//! [`Verifier::explain`]: crate::Verifier::explain
//! [`Verifier::verify_with_context`]: crate::Verifier::verify_with_context

use std::fmt;

use crate::capability::Capability;
use crate::context::Context;
use crate::dsl::{self, EvalError, Predicate};
use crate::gate::{CaveatFailure, Gate};
use crate::receipt::Outcome;

/// How one of the verifier's gates went for this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateStatus {
    /// The gate was checked and passed.
    Passed,
    /// The gate denied the call.
    Failed,
    /// An earlier gate denied the call; this one was not checked.
    NotReached,
    /// The gate cannot be checked by an explanation (a holder-of-key
    /// proof, its replay check) or does not apply.
    NotChecked,
    /// The verifier has no such check configured (revocation).
    NotConfigured,
}

impl GateStatus {
    /// `passed`, `failed`, `not reached`, `not checked`, `not configured`.
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Passed => "passed",
            GateStatus::Failed => "failed",
            GateStatus::NotReached => "not reached",
            GateStatus::NotChecked => "not checked",
            GateStatus::NotConfigured => "not configured",
        }
    }
}

/// One gate of the verifier and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateCheck {
    /// The gate's code, as [`Gate::code`]: `chain`, `holder_key`, `proof`,
    /// `replay`, `revocation`, `no_caveats`, `caveat`.
    pub gate: &'static str,
    /// How it went.
    pub status: GateStatus,
    /// A short account (`bearer token`, `3 caveats`, the denial reason).
    pub detail: String,
}

/// What a caveat came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaveatResult {
    /// It holds for this call.
    Holds,
    /// It parsed and is false for this call.
    False,
    /// It is not a predicate of the caveat language (or exceeds a limit).
    ParseError(String),
    /// It parsed but could not be evaluated (a missing argument, a type
    /// mismatch).
    EvalError(String),
}

impl CaveatResult {
    /// `holds`, `false`, `parse error`, `eval error`.
    pub fn code(&self) -> &'static str {
        match self {
            CaveatResult::Holds => "holds",
            CaveatResult::False => "false",
            CaveatResult::ParseError(_) => "parse error",
            CaveatResult::EvalError(_) => "eval error",
        }
    }
}

/// One comparison of a caveat, evaluated on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComparisonExplanation {
    /// The identifier as written (`arg.amount_cents`).
    pub ident: String,
    /// The operator (`<=`).
    pub op: String,
    /// The literal as written in the caveat language (`5000`, `"a"`).
    pub literal: String,
    /// The identifier's value in the context, in the same notation;
    /// `None` when it has none (see [`missing`](Self::missing)).
    pub value: Option<String>,
    /// True when the identifier is not in the context (a missing
    /// argument or `env` key, an unknown root).
    pub missing: bool,
    /// The result: `Ok(true)`, `Ok(false)`, or why it could not be
    /// evaluated.
    pub result: Result<bool, String>,
}

/// One caveat, its result and its comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaveatExplanation {
    /// Its position in the capability, from 0.
    pub index: usize,
    /// The predicate text.
    pub predicate: String,
    /// What it came to for this call.
    pub result: CaveatResult,
    /// Its comparisons in source order (empty when it does not parse).
    pub comparisons: Vec<ComparisonExplanation>,
    /// False for a caveat the verifier never reaches: after the one that
    /// denied the call, or all of them when an earlier gate denied it.
    pub reached: bool,
}

/// Why the verifier allows or denies one call: see the
/// [module docs](self) and [`Verifier::explain`](crate::Verifier::explain).
///
/// `Display` writes it as text, one item a line; [`to_json`](Self::to_json)
/// as one JSON object.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The capability's identifier.
    pub identifier: String,
    /// True when the capability is bound to a holder key.
    pub holder_bound: bool,
    /// The gates in the verifier's order.
    pub gates: Vec<GateCheck>,
    /// Every caveat, in chain order.
    pub caveats: Vec<CaveatExplanation>,
    /// The decision, exactly as the verifier signs it.
    pub outcome: Outcome,
    /// The gate that denied the call, if it was denied.
    pub denied_by: Option<Gate>,
}

/// Builds the explanation of a decision the verifier made (`outcome`,
/// `denied_by`) for a capability whose chain verified.
pub(crate) fn build(
    cap: &Capability,
    ctx: &Context,
    limits: &crate::Limits,
    key_id: Option<&str>,
    revocation_configured: bool,
    outcome: Outcome,
    denied_by: Option<Gate>,
) -> Explanation {
    let holder_bound = cap.holder_of_key().is_some();
    // Position of each bearer-path gate; the denying gate's position
    // splits the others into passed (before) and not reached (after).
    let failed_at = denied_by.map(|gate| match gate {
        Gate::Chain => 0,
        Gate::HolderKey | Gate::Proof | Gate::Replay => 1,
        Gate::Revocation => 2,
        Gate::NoCaveats => 3,
        Gate::Caveat { .. } => 4,
    });
    let status = |position: usize| match failed_at {
        Some(at) if at == position => GateStatus::Failed,
        Some(at) if at < position => GateStatus::NotReached,
        _ => GateStatus::Passed,
    };
    let reason = outcome.reason().unwrap_or_default().to_owned();
    let detail = |position: usize, passed: String| {
        if failed_at == Some(position) {
            reason.clone()
        } else {
            passed
        }
    };
    let not_offline = if holder_bound {
        "a holder-of-key proof cannot be checked offline"
    } else {
        "bearer token, no proof"
    };
    let caveat_count = cap.caveats().len();
    let mut gates = vec![
        GateCheck {
            gate: Gate::Chain.code(),
            status: GateStatus::Passed,
            detail: match key_id {
                Some(id) => format!("genuine, under root key {}", escape(id)),
                None => "genuine".to_owned(),
            },
        },
        GateCheck {
            gate: Gate::HolderKey.code(),
            status: status(1),
            detail: detail(
                1,
                if holder_bound {
                    "bound to a holder key".to_owned()
                } else {
                    "bearer token, no holder key".to_owned()
                },
            ),
        },
        GateCheck {
            gate: Gate::Proof.code(),
            status: GateStatus::NotChecked,
            detail: not_offline.to_owned(),
        },
        GateCheck {
            gate: Gate::Replay.code(),
            status: GateStatus::NotChecked,
            detail: not_offline.to_owned(),
        },
    ];
    gates.push(if revocation_configured {
        GateCheck {
            gate: Gate::Revocation.code(),
            status: status(2),
            detail: detail(2, "not revoked".to_owned()),
        }
    } else {
        GateCheck {
            gate: Gate::Revocation.code(),
            status: GateStatus::NotConfigured,
            detail: "no revocation list configured".to_owned(),
        }
    });
    gates.push(GateCheck {
        gate: Gate::NoCaveats.code(),
        status: status(3),
        detail: detail(3, format!("{caveat_count} caveat(s)")),
    });
    gates.push(GateCheck {
        gate: "caveat",
        status: status(4),
        detail: detail(4, "every caveat holds".to_owned()),
    });

    let deciding = match denied_by {
        Some(Gate::Caveat { index, .. }) => Some(index),
        _ => None,
    };
    let caveats = cap
        .caveats()
        .iter()
        .enumerate()
        .map(|(index, caveat)| {
            let mut explained = explain_predicate(caveat.predicate(), ctx, limits);
            explained.index = index;
            explained.reached = match (denied_by, deciding) {
                (None, _) => true,
                (_, Some(at)) => index <= at,
                // Denied before the caveats.
                (Some(_), None) => false,
            };
            explained
        })
        .collect();
    Explanation {
        identifier: cap.identifier().to_owned(),
        holder_bound,
        gates,
        caveats,
        outcome,
        denied_by,
    }
}

/// Explains one predicate text against a context (index 0, reached).
fn explain_predicate(text: &str, ctx: &Context, limits: &crate::Limits) -> CaveatExplanation {
    let (result, comparisons) = match Predicate::parse_with_limits(text, limits) {
        Err(e) => (CaveatResult::ParseError(e.to_string()), Vec::new()),
        Ok(predicate) => {
            let result = match dsl::eval_expr(predicate.expr(), ctx) {
                Ok(true) => CaveatResult::Holds,
                Ok(false) => CaveatResult::False,
                Err(e) => CaveatResult::EvalError(e.to_string()),
            };
            let comparisons = dsl::trace(predicate.expr(), ctx)
                .into_iter()
                .map(|t| ComparisonExplanation {
                    missing: matches!(t.value, Err(EvalError::UnknownIdent(_))),
                    ident: t.ident,
                    op: t.op,
                    literal: t.literal,
                    value: t.value.ok(),
                    result: t.result.map_err(|e| e.to_string()),
                })
                .collect();
            (result, comparisons)
        }
    };
    CaveatExplanation {
        index: 0,
        predicate: text.to_owned(),
        result,
        comparisons,
        reached: true,
    }
}

impl Explanation {
    /// True when the verifier allows the call.
    pub fn is_allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed)
    }

    /// The explanation as one JSON object:
    /// `{"identifier", "holder_bound", "decision": {"allowed", "reason",
    /// "gate", "caveat"}, "gates": [{"gate", "status", "detail"}],
    /// "caveats": [{"index", "predicate", "result", "error", "reached",
    /// "comparisons": [{"ident", "op", "literal", "value", "missing",
    /// "result", "error"}]}]}`. `result` of a comparison is `true`,
    /// `false` or `null` (with `error`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let caveat_index = match self.denied_by {
            Some(Gate::Caveat { index, .. }) => Some(index),
            _ => None,
        };
        let gates: Vec<_> = self
            .gates
            .iter()
            .map(|g| json!({"gate": g.gate, "status": g.status.as_str(), "detail": g.detail}))
            .collect();
        let caveats: Vec<_> = self
            .caveats
            .iter()
            .map(|c| {
                let error = match &c.result {
                    CaveatResult::ParseError(e) | CaveatResult::EvalError(e) => Some(e),
                    _ => None,
                };
                let comparisons: Vec<_> = c
                    .comparisons
                    .iter()
                    .map(|t| {
                        json!({
                            "ident": t.ident,
                            "op": t.op,
                            "literal": t.literal,
                            "value": t.value,
                            "missing": t.missing,
                            "result": t.result.as_ref().ok(),
                            "error": t.result.as_ref().err(),
                        })
                    })
                    .collect();
                json!({
                    "index": c.index,
                    "predicate": c.predicate,
                    "result": c.result.code(),
                    "error": error,
                    "reached": c.reached,
                    "comparisons": comparisons,
                })
            })
            .collect();
        json!({
            "identifier": self.identifier,
            "holder_bound": self.holder_bound,
            "decision": {
                "allowed": self.is_allowed(),
                "reason": self.outcome.reason(),
                "gate": self.denied_by.map(|g| g.code()),
                "caveat": caveat_index,
            },
            "gates": gates,
            "caveats": caveats,
        })
    }

    /// The caveats only, one line each with their comparisons indented
    /// below: what a debug log of a caveat denial needs.
    /// Whether a caveat was reached is left out: on the proof path (which
    /// an explanation does not take) a bound token's caveats are reached.
    pub fn caveats_text(&self) -> String {
        struct Plain<'a>(&'a CaveatExplanation);
        impl fmt::Display for Plain<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write(f, false)
            }
        }
        let mut out = String::new();
        for caveat in &self.caveats {
            out.push_str(&Plain(caveat).to_string());
        }
        out
    }
}

impl fmt::Display for CaveatExplanation {
    /// `caveat N: PREDICATE: RESULT`, then one indented line per
    /// comparison, each line ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, true)
    }
}

impl CaveatExplanation {
    fn write(&self, f: &mut fmt::Formatter<'_>, with_reach: bool) -> fmt::Result {
        write!(f, "caveat {}: {}: ", self.index, escape(&self.predicate))?;
        match &self.result {
            CaveatResult::Holds => f.write_str("holds")?,
            CaveatResult::False => f.write_str("false")?,
            CaveatResult::ParseError(e) => write!(f, "does not parse: {}", escape(e))?,
            CaveatResult::EvalError(e) => write!(f, "cannot be evaluated: {}", escape(e))?,
        }
        if with_reach && !self.reached {
            f.write_str(" (not reached by the verifier)")?;
        }
        f.write_str("\n")?;
        for t in &self.comparisons {
            let (ident, literal) = (escape(&t.ident), escape(&t.literal));
            match (&t.value, &t.result) {
                (_, Ok(result)) => writeln!(
                    f,
                    "    {ident} = {} {} {literal}: {result}",
                    escape(t.value.as_deref().unwrap_or("?")),
                    t.op
                )?,
                (None, Err(_)) if t.missing => {
                    writeln!(f, "    {ident} {} {literal}: {ident} is missing", t.op)?
                }
                (Some(value), Err(e)) => writeln!(
                    f,
                    "    {ident} = {} {} {literal}: error: {}",
                    escape(value),
                    t.op,
                    escape(e)
                )?,
                (None, Err(e)) => {
                    writeln!(f, "    {ident} {} {literal}: error: {}", t.op, escape(e))?
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    /// The text form: the token, the gates, the caveats, the decision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "identifier: {}", escape(&self.identifier))?;
        writeln!(
            f,
            "holder key: {}",
            if self.holder_bound { "bound" } else { "none" }
        )?;
        f.write_str("gates:\n")?;
        for g in &self.gates {
            writeln!(
                f,
                "  {}: {} ({})",
                g.gate,
                g.status.as_str(),
                escape(&g.detail)
            )?;
        }
        f.write_str("caveats:\n")?;
        for caveat in &self.caveats {
            write!(f, "  {caveat}")?;
        }
        match (&self.outcome, self.denied_by) {
            (Outcome::Allowed, _) => f.write_str("decision: allowed"),
            (Outcome::Denied { reason }, gate) => {
                let gate = match gate {
                    Some(Gate::Caveat { index, failure }) => {
                        let how = match failure {
                            CaveatFailure::False => "false",
                            CaveatFailure::Parse => "parse",
                            CaveatFailure::Eval => "eval",
                            CaveatFailure::BudgetExhausted => "budget exhausted",
                            CaveatFailure::BudgetUnavailable => "budget unavailable",
                        };
                        format!("caveat {index}, {how}")
                    }
                    Some(gate) => gate.code().to_owned(),
                    None => "unknown".to_owned(),
                };
                write!(f, "decision: denied by {gate}: {}", escape(reason))
            }
        }
    }
}

/// Escapes control and bidirectional-override characters (`\n`,
/// `\u{202e}`): token text cannot start a line of its own or disguise
/// itself in an explanation, a terminal or a log line.
///
/// ```
/// assert_eq!(capnagent::explain::escape("a\nb\u{202e}"), "a\\nb\\u{202e}");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{Auditor, Capability, Context, Gate, Issuer, Verifier};

    const KEY: [u8; 32] = [7; 32];

    fn token(caveats: &[&str]) -> Capability {
        let issuer = Issuer::from_key(&KEY).expect("issuer");
        let mut cap = issuer
            .issue("agent-42")
            .caveat(caveats[0])
            .expect("caveat")
            .build()
            .expect("token");
        for c in &caveats[1..] {
            cap = cap.attenuate(c).expect("attenuate");
        }
        cap
    }

    fn call(args: serde_json::Value) -> Context {
        Context::builder()
            .now_millis(1_700_000_000_000)
            .caller("agent:planner")
            .tool("checkout.purchase")
            .args(args)
            .build()
    }

    fn explain(cap: &Capability, ctx: &Context) -> super::Explanation {
        Verifier::new(&KEY)
            .expect("verifier")
            .explain(cap, ctx)
            .expect("explain")
    }

    #[test]
    fn allowed_shows_every_comparison_and_the_gates() {
        let cap = token(&[r#"tool == "checkout.purchase" AND arg.amount_cents <= 5000"#]);
        let e = explain(&cap, &call(serde_json::json!({"amount_cents": 1299})));
        assert!(e.is_allowed());
        let text = e.to_string();
        assert!(
            text.contains(r#"tool = "checkout.purchase" == "checkout.purchase": true"#),
            "{text}"
        );
        assert!(
            text.contains("arg.amount_cents = 1299 <= 5000: true"),
            "{text}"
        );
        assert!(text.contains("  chain: passed"), "{text}");
        assert!(
            text.contains("  proof: not checked (bearer token, no proof)"),
            "{text}"
        );
        assert!(text.contains("  revocation: not configured"), "{text}");
        assert!(text.ends_with("decision: allowed"), "{text}");
    }

    #[test]
    fn denied_names_the_caveat_and_the_values() {
        let cap = token(&[
            r#"tool == "checkout.purchase""#,
            "arg.amount_cents <= 5000",
            r#"caller == "x""#,
        ]);
        let e = explain(&cap, &call(serde_json::json!({"amount_cents": 9900})));
        assert!(!e.is_allowed());
        assert_eq!(
            e.outcome.reason(),
            Some("caveat failed: arg.amount_cents <= 5000")
        );
        let text = e.to_string();
        assert!(
            text.contains("caveat 1: arg.amount_cents <= 5000: false\n"),
            "{text}"
        );
        assert!(
            text.contains("arg.amount_cents = 9900 <= 5000: false"),
            "{text}"
        );
        assert!(
            text.contains("caveat 2: caller == \"x\": false (not reached by the verifier)"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "decision: denied by caveat 1, false: caveat failed: arg.amount_cents <= 5000"
            ),
            "{text}"
        );
        assert!(!e.caveats[2].reached && e.caveats[1].reached);
        let json = e.to_json();
        assert_eq!(json["decision"]["allowed"], false);
        assert_eq!(json["decision"]["gate"], "caveat");
        assert_eq!(json["decision"]["caveat"], 1);
        assert_eq!(json["caveats"][1]["comparisons"][0]["value"], "9900");
        assert_eq!(json["caveats"][1]["comparisons"][0]["result"], false);
        // No signature, no key.
        let sig = cap.serialize();
        assert!(!text.contains(&sig[sig.len() - 20..]));
    }

    #[test]
    fn or_shows_each_operand_and_a_missing_argument() {
        let cap = token(&[r#"arg.amount_cents <= 5000 OR caller == "agent:planner""#]);
        let e = explain(&cap, &call(serde_json::json!({})));
        let text = e.to_string();
        // The verifier errors on the first operand: eval error, denied.
        assert!(!e.is_allowed());
        assert!(
            text.contains("arg.amount_cents <= 5000: arg.amount_cents is missing"),
            "{text}"
        );
        assert!(
            text.contains(r#"caller = "agent:planner" == "agent:planner": true"#),
            "{text}"
        );
        assert!(
            text.contains("cannot be evaluated: unknown identifier: arg.amount_cents"),
            "{text}"
        );
        assert!(e.caveats[0].comparisons[0].missing);
    }

    #[test]
    fn unparsable_caveat_is_said() {
        // Attenuation refuses what does not parse (a token can still carry
        // it: tests/explain.rs has one from the conformance vectors).
        let e = super::explain_predicate(
            "arg.x <=",
            &Context::builder().build(),
            &crate::Limits::DEFAULT,
        );
        assert!(matches!(e.result, super::CaveatResult::ParseError(_)));
        assert!(
            e.to_string()
                .starts_with("caveat 0: arg.x <=: does not parse: "),
            "{e}"
        );
        assert!(e.comparisons.is_empty());
    }

    #[test]
    fn forged_token_is_an_error() {
        let cap = Issuer::from_key(&[8; 32])
            .and_then(|i| i.issue("a").tool_is("t")?.build())
            .expect("token");
        let err = Verifier::new(&KEY)
            .expect("verifier")
            .explain(&cap, &call(serde_json::json!({})));
        assert_eq!(
            err.map(|_| ()).map_err(|e| e.gate()),
            Err(Some(Gate::Chain))
        );
    }

    #[test]
    fn holder_bound_token_says_the_proof_is_not_checked() {
        let holder = crate::HolderKey::from_seed([3; 32]);
        let cap = Issuer::from_key(&KEY)
            .and_then(|i| {
                i.issue("a")
                    .holder_of_key(holder.public_key())?
                    .tool_is("checkout.purchase")?
                    .build()
            })
            .expect("token");
        let e = explain(&cap, &call(serde_json::json!({})));
        assert_eq!(e.denied_by, Some(Gate::HolderKey));
        let text = e.to_string();
        assert!(
            text.contains("proof: not checked (a holder-of-key proof cannot be checked offline)"),
            "{text}"
        );
        assert!(text.contains("  caveat: not reached"), "{text}");
    }

    #[test]
    fn a_revoked_token_fails_the_revocation_gate_before_the_caveats() {
        let cap = token(&[r#"tool == "checkout.purchase""#]);
        let ctx = call(serde_json::json!({}));
        let cell = crate::RevocationCell::new(&KEY).expect("cell");
        let mut revoker = crate::Revoker::new(&KEY).expect("revoker");
        revoker.revoke("someone-else");
        cell.install(revoker.publish(1_700_000_000_000))
            .expect("install");
        let verifier = Verifier::new(&KEY)
            .expect("verifier")
            .with_revocations(cell.clone());
        let text = verifier.explain(&cap, &ctx).expect("explain").to_string();
        assert!(
            text.contains("  revocation: passed (not revoked)"),
            "{text}"
        );
        assert!(text.ends_with("decision: allowed"), "{text}");

        revoker.revoke("agent-42");
        cell.install(revoker.publish(1_700_000_000_001))
            .expect("install");
        let e = verifier.explain(&cap, &ctx).expect("explain");
        assert_eq!(e.denied_by, Some(Gate::Revocation));
        let text = e.to_string();
        assert!(text.contains("  revocation: failed ("), "{text}");
        assert!(text.contains("  no_caveats: not reached"), "{text}");
        assert!(
            text.contains("holds (not reached by the verifier)"),
            "{text}"
        );
        // The debug-log form leaves reachability out.
        assert!(
            !e.caveats_text().contains("not reached"),
            "{}",
            e.caveats_text()
        );
    }

    #[test]
    fn long_values_are_cut() {
        let cap = token(&[r#"arg.s == "a""#]);
        let long = "x".repeat(100_000);
        let e = explain(&cap, &call(serde_json::json!({ "s": long })));
        let text = e.to_string();
        assert!(text.len() < 2_000, "{}", text.len());
        assert!(text.contains("…[100000 bytes] == \"a\": false"), "{text}");
    }

    #[test]
    fn decision_equals_verify_with_context() {
        let auditor = Auditor::new(&[9; 32]).expect("auditor");
        let verifier = Verifier::new(&KEY).expect("verifier");
        let tokens = [
            token(&[r#"tool == "checkout.purchase""#]),
            token(&["arg.amount_cents <= 5000"]),
            token(&["arg.amount_cents <= 5000", r#"caller starts_with "agent:""#]),
            token(&["arg.amount_cents <= 5000 OR arg.amount_cents >= 9000"]),
            token(&[r#"env.region == "eu""#]),
            token(&["now <= @2020-01-01T00:00:00Z"]),
            token(&[r#"arg.amount_cents == "1""#]),
        ];
        let contexts = [
            call(serde_json::json!({"amount_cents": 1299})),
            call(serde_json::json!({"amount_cents": 9900})),
            call(serde_json::json!({"amount_cents": 1299.5})),
            call(serde_json::json!({"amount_cents": "1"})),
            call(serde_json::json!({})),
            Context::builder().tool("x").env("region", "eu").build(),
        ];
        for cap in &tokens {
            for ctx in &contexts {
                let receipt = verifier
                    .verify_with_context(cap, ctx, &auditor)
                    .expect("verify");
                let e = verifier.explain(cap, ctx).expect("explain");
                assert_eq!(e.outcome, *receipt.outcome(), "{cap:?}");
                assert_eq!(e.denied_by, receipt.denied_by(), "{cap:?}");
            }
        }
    }
}
