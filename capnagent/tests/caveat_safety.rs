//! Attacks through caveats: CPU burned by caveats appended to a token that
//! fails early, values that rewrite a caveat built from text, and the
//! holder-key step's prefix used as a predicate.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{
    Auditor, CaveatError, Context, Error, HolderKey, Issuer, Limits, Predicate, RevocationCell,
    Revoker, Timestamp, Verifier,
};
use serde_json::{Value, json};
use support::{hex, hmac, unhex};

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];
const NOW_MS: u64 = 1_800_000_000_000;

/// What any holder can do without a key: append caveats to a serialized
/// token, one HMAC link each, until the token is as large as `limits`
/// admit. The appended predicates are all different (nothing is cached)
/// and the last one does not parse. Returns the token and how many were
/// appended.
fn append_until_full(token: &str, limits: &Limits) -> (String, usize) {
    let bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
    let mut json: Value = serde_json::from_slice(&bytes).unwrap();
    let mut sig = unhex(json["signature"].as_str().unwrap());
    let mut preds: Vec<String> = Vec::new();
    let base_len = token.len();
    // Each predicate about 160 bytes, ~215 in the token.
    let filler = "x".repeat(120);
    let mut encoded_len = base_len;
    while preds.len() + json["caveats"].as_array().unwrap().len() + 1 < limits.max_caveats
        && encoded_len + 400 < limits.max_token_len
    {
        let p = format!("arg.s{} != \"{filler}\"", preds.len());
        encoded_len += (p.len() + 20) * 4 / 3;
        preds.push(p);
    }
    // The last appended caveat would not even parse.
    preds.push("this is ( not a predicate".to_owned());
    let caveats = json["caveats"].as_array_mut().unwrap();
    for p in &preds {
        sig = hmac(&sig, p.as_bytes()).to_vec();
        caveats.push(json!({ "predicate": p }));
    }
    json["signature"] = json!(hex(&sig));
    let token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
    assert!(token.len() <= limits.max_token_len, "{}", token.len());
    (token, preds.len())
}

/// A live token for agent-42 limited to `checkout.purchase`, with caveats
/// appended by [`append_until_full`] up to the default limits, and how many
/// were appended.
fn live_token_filled_up() -> (capnagent::Capability, usize) {
    let cap = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .tool_is("checkout.purchase")
        .unwrap()
        .build()
        .unwrap();
    let (token, appended) = append_until_full(&cap.serialize(), &Limits::DEFAULT);
    (capnagent::Capability::parse(&token).unwrap(), appended)
}

fn ctx() -> Context {
    Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(json!({ "amount_cents": 100 }))
        .build()
}

fn auditor() -> Auditor {
    Auditor::new(&AUDIT_KEY).unwrap()
}

// ---------------------------------------------------------------------------
// Item 6: appended caveats are never parsed when an earlier gate denies
// ---------------------------------------------------------------------------

#[test]
fn an_expired_token_with_appended_caveats_parses_only_the_expiry() {
    let expired = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .not_after(Timestamp::from_unix_millis(NOW_MS - 1_000))
        .unwrap()
        .tool_is("checkout.purchase")
        .unwrap()
        .build()
        .unwrap();
    let limits = Limits::DEFAULT;
    let (token, appended) = append_until_full(&expired.serialize(), &limits);
    assert!(appended > 1, "appended {appended}");
    let cap = capnagent::Capability::parse(&token).unwrap();

    let verifier = Verifier::new(&ROOT_KEY).unwrap();
    // The chain verifies: the appended caveats are validly linked.
    verifier.verify(&cap).unwrap();
    assert_eq!(verifier.predicates_parsed(), 0, "verify parses nothing");

    let receipt = verifier
        .verify_with_context(&cap, &ctx(), &auditor())
        .unwrap();
    // The expiry denies, and only the expiry was parsed: not the tool
    // caveat after it, nor any appended one (the last would have shown as a
    // parse error had it been reached).
    assert_eq!(
        receipt.outcome().reason(),
        Some("caveat failed: now <= @2027-01-15T07:59:59Z")
    );
    assert_eq!(verifier.predicates_parsed(), 1);

    // The same capability value judged again (the tower layer keeps tokens
    // parsed): still nothing more parsed.
    let again = verifier
        .verify_with_context(&cap, &ctx(), &auditor())
        .unwrap();
    assert_eq!(again.outcome(), receipt.outcome());
    assert_eq!(verifier.predicates_parsed(), 1);

    // With the chain cache and memos off, the same.
    let plain = Verifier::new(&ROOT_KEY)
        .unwrap()
        .with_chain_cache(0)
        .with_cache_capacity(0);
    let receipt = plain.verify_with_context(&cap, &ctx(), &auditor()).unwrap();
    assert!(!receipt.is_allowed());
    assert_eq!(plain.predicates_parsed(), 1);
}

#[test]
fn a_revoked_token_with_appended_caveats_parses_nothing() {
    let (cap, _) = live_token_filled_up();
    let cell = RevocationCell::new(&ROOT_KEY)
        .unwrap()
        .with_max_age(Duration::from_secs(3600));
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    revoker.revoke("agent-42");
    assert!(
        cell.install_at(revoker.publish(NOW_MS - 1_000), NOW_MS)
            .unwrap()
    );
    let verifier = Verifier::new(&ROOT_KEY).unwrap().with_revocations(cell);

    let receipt = verifier
        .verify_with_context(&cap, &ctx(), &auditor())
        .unwrap();
    assert_eq!(
        receipt.outcome().reason(),
        Some("capability revoked: agent-42")
    );
    assert_eq!(verifier.predicates_parsed(), 0);
}

#[test]
fn a_live_token_parses_caveats_up_to_the_first_that_fails() {
    let (cap, appended) = live_token_filled_up();
    let verifier = Verifier::new(&ROOT_KEY).unwrap();
    let receipt = verifier
        .verify_with_context(&cap, &ctx(), &auditor())
        .unwrap();
    // `arg.s0 != "..."` has no `s0` argument: an evaluation error, which
    // denies; the caveats after it are never reached.
    assert_eq!(
        receipt
            .outcome()
            .reason()
            .map(|r| r.starts_with("caveat eval error in \"arg.s0")),
        Some(true),
        "{:?}",
        receipt.outcome()
    );
    assert_eq!(verifier.predicates_parsed(), 2);
    // With every argument present, every caveat is reached, and the last
    // (unparseable) one denies.
    let mut args = serde_json::Map::new();
    for i in 0..appended {
        args.insert(format!("s{i}"), json!("y"));
    }
    let full = Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(Value::Object(args))
        .build();
    let receipt = verifier
        .verify_with_context(&cap, &full, &auditor())
        .unwrap();
    assert!(
        receipt
            .outcome()
            .reason()
            .is_some_and(|r| r.starts_with("caveat parse error in \"this is ( not")),
        "{:?}",
        receipt.outcome()
    );
    assert_eq!(verifier.predicates_parsed(), 1 + appended as u64);
}

// ---------------------------------------------------------------------------
// Item 8a: typed helpers quote values
// ---------------------------------------------------------------------------

const NASTY: [&str; 10] = [
    r#"x" OR tool != ""#,
    r#"x" OR caller != "x"#,
    "back\\slash",
    "trailing backslash\\",
    "quote\"inside",
    "line\nbreak",
    "tab\there",
    "ünïcødé 日本語 🚀",
    "",
    r#"\" OR "" == ""#,
];

fn caller_ctx(caller: &str, tool: &str) -> Context {
    Context::builder()
        .now_millis(NOW_MS)
        .caller(caller)
        .tool(tool)
        .build()
}

#[test]
fn caller_is_and_tool_is_mean_exact_equality_for_any_name() {
    for name in NASTY {
        let p = Predicate::caller_is(name).unwrap();
        assert_eq!(Predicate::parse(p.as_str()).unwrap(), p, "{name:?}");
        assert_eq!(p.evaluate(&caller_ctx(name, "t")), Ok(true), "{name:?}");
        for other in NASTY.iter().chain(&["x", "agent:planner", "y"]) {
            if *other != name {
                assert_eq!(
                    p.evaluate(&caller_ctx(other, "t")),
                    Ok(false),
                    "caller_is({name:?}) must not admit {other:?}"
                );
            }
        }
        let t = Predicate::tool_is(name).unwrap();
        assert_eq!(t.evaluate(&caller_ctx("c", name)), Ok(true), "{name:?}");
        assert_eq!(t.evaluate(&caller_ctx("c", "other")), Ok(false));
    }
}

#[test]
fn an_injected_name_does_not_widen_a_built_capability() {
    let attacker_name = r#"x" OR tool != ""#;
    let cap = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .caller_is(attacker_name)
        .unwrap()
        .tool_is("files.read")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(cap.caveats().len(), 2);
    assert_eq!(
        cap.caveats()[0].predicate(),
        r#"caller == "x\" OR tool != \"""#
    );
    let verifier = Verifier::new(&ROOT_KEY).unwrap();
    // Formatted by hand, this caveat would read `caller == "x" OR tool !=
    // ""` and admit every caller.
    for caller in ["x", "agent:evil", ""] {
        let receipt = verifier
            .verify_with_context(&cap, &caller_ctx(caller, "files.read"), &auditor())
            .unwrap();
        assert!(!receipt.is_allowed(), "caller {caller:?} admitted");
    }
    let receipt = verifier
        .verify_with_context(&cap, &caller_ctx(attacker_name, "files.read"), &auditor())
        .unwrap();
    assert!(receipt.is_allowed());

    // The same through attenuation, and with the hand-formatted text for
    // contrast.
    let base = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .tool_is("files.read")
        .unwrap()
        .build()
        .unwrap();
    let typed = base
        .attenuate(Predicate::caller_is(attacker_name).unwrap().as_str())
        .unwrap();
    let formatted = base
        .attenuate(&format!("caller == \"{attacker_name}\""))
        .unwrap();
    let evil = caller_ctx("agent:evil", "files.read");
    let judge = |c| verifier.verify_with_context(c, &evil, &auditor()).unwrap();
    assert!(!judge(&typed).is_allowed());
    assert!(
        judge(&formatted).is_allowed(),
        "the attack the helpers stop"
    );
}

#[test]
fn arg_helpers_quote_values_and_check_paths() {
    for value in NASTY {
        let p = Predicate::arg_is("order.note", value).unwrap();
        let with = |v: &str| {
            Context::builder()
                .tool("t")
                .args(json!({ "order": { "note": v } }))
                .build()
        };
        assert_eq!(p.evaluate(&with(value)), Ok(true), "{value:?}");
        assert_eq!(p.evaluate(&with("something else")), Ok(false), "{value:?}");
    }
    let at_most = Predicate::arg_at_most("amount_cents", 5000).unwrap();
    assert_eq!(at_most.as_str(), "arg.amount_cents <= 5000");
    let amount = |n: i64| {
        Context::builder()
            .args(json!({ "amount_cents": n }))
            .build()
    };
    assert_eq!(at_most.evaluate(&amount(5000)), Ok(true));
    assert_eq!(at_most.evaluate(&amount(5001)), Ok(false));
    let at_least = Predicate::arg_at_least("amount_cents", -20).unwrap();
    assert_eq!(at_least.as_str(), "arg.amount_cents >= -20");
    assert_eq!(at_least.evaluate(&amount(-20)), Ok(true));
    assert_eq!(at_least.evaluate(&amount(-21)), Ok(false));
    let extreme = Predicate::arg_at_most("n", i64::MIN).unwrap();
    assert_eq!(extreme.as_str(), format!("arg.n <= {}", i64::MIN));

    for bad in [
        "",
        "amount cents",
        "a..b",
        ".a",
        "a.",
        "1a",
        "a-b",
        "a == 1 OR arg.b",
        "é",
        "a\"",
    ] {
        assert!(
            matches!(
                Predicate::arg_at_most(bad, 1),
                Err(CaveatError::Unrepresentable(_))
            ),
            "path {bad:?}"
        );
        assert!(Predicate::arg_is(bad, "v").is_err(), "path {bad:?}");
    }
}

#[test]
fn control_characters_are_refused_not_written_raw() {
    for value in ["nul\0", "cr\r", "esc\u{1b}[31m", "del\u{7f}", "c1\u{85}"] {
        let err = Predicate::caller_is(value).unwrap_err();
        assert!(
            matches!(&err, CaveatError::Unrepresentable(m) if m.contains("control character")),
            "{value:?}: {err:?}"
        );
        assert_eq!(err.code(), "caveat.unrepresentable");
        let mut builder = Issuer::from_key(&ROOT_KEY).unwrap().issue("agent-42");
        assert!(matches!(
            builder.caller_is(value),
            Err(Error::Caveat(CaveatError::Unrepresentable(_)))
        ));
        // The refused call left the builder unchanged.
        assert!(builder.build().is_err());
    }
}

#[test]
fn time_helpers_round_trip_and_refuse_what_the_syntax_cannot_hold() {
    let deadline = Timestamp::from_unix_millis(NOW_MS + 1);
    let p = Predicate::not_after(deadline).unwrap();
    assert_eq!(p.as_str(), "now <= @2027-01-15T08:00:00.001Z");
    let at = |ms| Context::builder().now_millis(ms).build();
    assert_eq!(p.evaluate(&at(NOW_MS + 1)), Ok(true));
    assert_eq!(p.evaluate(&at(NOW_MS + 2)), Ok(false));
    let q = Predicate::not_before(deadline).unwrap();
    assert_eq!(q.evaluate(&at(NOW_MS)), Ok(false));
    assert_eq!(q.evaluate(&at(NOW_MS + 1)), Ok(true));
    // Year 10000 has no four-digit form.
    let far = Timestamp::from_unix_millis(253_402_300_800_000);
    assert!(matches!(
        Predicate::not_after(far),
        Err(CaveatError::Unrepresentable(_) | CaveatError::Parse(_))
    ));
}

#[test]
fn a_value_longer_than_the_limits_is_an_error() {
    let long = "a".repeat(Limits::DEFAULT.max_predicate_len);
    assert!(matches!(
        Predicate::caller_is(&long),
        Err(CaveatError::Parse(_))
    ));
}

// ---------------------------------------------------------------------------
// Item 8b: the holder-key step's prefix is not a predicate
// ---------------------------------------------------------------------------

#[test]
fn a_predicate_with_the_holder_key_prefix_is_refused() {
    let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
    let key = HolderKey::from_seed([3; 32]).public_key();
    // The bytes of the holder-key step, where they happen to be text.
    let mut step = b"__hok:".to_vec();
    step.extend_from_slice(&[b'a'; 32]);
    let step = String::from_utf8(step).unwrap();
    for predicate in [step.as_str(), "__hok:", "__hok: == 1", "__hok:x == \"y\""] {
        let mut builder = issuer.issue("agent-42");
        let err = builder.caveat(predicate).unwrap_err();
        assert_eq!(
            err,
            Error::Caveat(CaveatError::ReservedPrefix),
            "{predicate:?}"
        );
        assert_eq!(err.code(), "caveat.reserved_prefix");
        assert!(err.to_string().contains("__hok:"), "{err}");

        let cap = issuer
            .issue("agent-42")
            .holder_of_key(key)
            .unwrap()
            .tool_is("t")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            cap.attenuate(predicate).unwrap_err(),
            Error::Caveat(CaveatError::ReservedPrefix)
        );
    }
    // Only the exact prefix is reserved: an identifier that merely starts
    // with `__hok` is an ordinary (unknown) name.
    let mut builder = issuer.issue("agent-42");
    assert!(builder.caveat("__hok == 1").is_ok());
}
