//! No input can crash the process: megabyte predicates, 100 000-deep
//! nesting, oversized tokens and contexts, short keys. Every check runs on a
//! thread with a 2 MiB stack (the default for spawned threads), and is meant
//! to pass in a debug build, where stack frames are largest.
#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{
    Auditor, BuildError, Capability, CaveatError, Context, ContextError, Error, Issuer, KeyError,
    Limits, MIN_AUDIT_KEY_LEN, MIN_ROOT_KEY_LEN, ParseError, Predicate, TokenError, Verifier,
};
use serde_json::{Value, json};
use support::{hex, hmac, unhex};

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];
const MIB: usize = 1024 * 1024;
const SMALL_STACK: usize = 2 * MIB;

/// Runs `f` on a fresh thread with a 2 MiB stack; a panic fails the test,
/// a stack overflow aborts the whole test binary.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .name("2MiB-stack".into())
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawn test thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// 100 000 nested parentheses around one comparison, padded with spaces to
/// exactly 1 MiB.
fn nested_parens_1mib() -> String {
    let depth = 100_000;
    let core = "a == 1";
    let pad = MIB - 2 * depth - core.len();
    let s = format!(
        "{}{}{core}{}",
        "(".repeat(depth),
        " ".repeat(pad),
        ")".repeat(depth)
    );
    assert_eq!(s.len(), MIB);
    s
}

/// `n` terms `term AND term AND ...`.
fn and_chain(term: &str, n: usize) -> String {
    let mut s = String::with_capacity(n * (term.len() + 5));
    for i in 0..n {
        if i > 0 {
            s.push_str(" AND ");
        }
        s.push_str(term);
    }
    s
}

/// The 100 000-term chain `a == 1 AND a == 1 ...` (about 1.05 MiB).
fn and_chain_100k() -> String {
    let s = and_chain("a == 1", 100_000);
    assert!(s.len() > MIB);
    s
}

fn open_parens_1mib() -> String {
    "(".repeat(MIB)
}

fn huge_predicates() -> Vec<(&'static str, String)> {
    vec![
        ("100 000 nested parens", nested_parens_1mib()),
        ("100 000-term AND chain", and_chain_100k()),
        ("1 MiB of `(`", open_parens_1mib()),
    ]
}

fn raised_limits() -> Limits {
    Limits {
        max_predicate_len: 2 << 20,
        max_nesting_depth: 200_000,
        max_terms: 200_000,
        ..Limits::default()
    }
}

fn decode_token(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).expect("base64url")).expect("JSON")
}

fn encode_token(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("serializable"))
}

/// A validly MACed token: a normal token (`tool == "t"`) extended by hand
/// with `extra` caveats, whose chain links are computed here with
/// `hmac`/`sha2` (attenuate would refuse them).
fn forge_valid_token(extra: &[&str]) -> String {
    let base = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .caveat(r#"tool == "t""#)
        .unwrap()
        .build()
        .unwrap();
    let mut json = decode_token(&Capability::parse(&base.serialize()).unwrap().serialize());
    // Our own chain agrees with the issuer's for the valid part.
    let s0 = hmac(&ROOT_KEY, b"agent-42");
    let mut sig = hmac(&s0, br#"tool == "t""#);
    assert_eq!(json["signature"].as_str(), Some(hex(&sig).as_str()));
    assert_eq!(unhex(json["signature"].as_str().unwrap()), sig.to_vec());
    let caveats = json["caveats"].as_array_mut().unwrap();
    for p in extra {
        sig = hmac(&sig, p.as_bytes());
        caveats.push(json!({ "predicate": p }));
    }
    json["signature"] = json!(hex(&sig));
    encode_token(&json)
}

fn parse_big(token: &str) -> Capability {
    let limits = Limits {
        max_token_len: 16 * MIB,
        max_caveats: 1 << 20,
        ..Limits::default()
    };
    Capability::parse_with_limits(token, &limits).unwrap()
}

fn ctx(args: Value) -> Context {
    Context::builder()
        .now_millis(1_700_000_000_000)
        .caller("agent:planner")
        .tool("t")
        .args(args)
        .build()
}

fn ctx_json(args: &str) -> String {
    format!(r#"{{"nowMs":1700000000000,"caller":"agent:planner","tool":"t","args":{args}}}"#)
}

fn auditor() -> Auditor {
    Auditor::new(&AUDIT_KEY).unwrap()
}

fn is_too_long(e: &ParseError) -> bool {
    matches!(e, ParseError::TooLong { max, .. } if *max == Limits::default().max_predicate_len)
}

// ---------------------------------------------------------------------------
// Huge predicates under the default limits
// ---------------------------------------------------------------------------

#[test]
fn huge_predicates_are_refused_by_the_parser() {
    on_small_stack(|| {
        for (name, p) in huge_predicates() {
            let err = Predicate::parse(&p).unwrap_err();
            assert!(is_too_long(&err), "{name}: {err:?}");
            assert_eq!(err.code(), "caveat.too_long");
            assert_eq!(
                err.to_string(),
                format!(
                    "parse error: predicate is {} bytes, limit is {}",
                    p.len(),
                    Limits::DEFAULT.max_predicate_len
                )
            );
        }
    });
}

#[test]
fn huge_predicates_are_refused_by_the_builder_and_attenuate() {
    on_small_stack(|| {
        let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
        let cap = issuer
            .issue("agent-42")
            .caveat(r#"tool == "t""#)
            .unwrap()
            .build()
            .unwrap();
        for (name, p) in huge_predicates() {
            let mut builder = issuer.issue("agent-42");
            match builder.caveat(&p) {
                Err(Error::Caveat(CaveatError::Parse(e))) => assert!(is_too_long(&e), "{name}"),
                other => panic!("{name}: builder gave {other:?}"),
            }
            // The refused call left the builder unchanged.
            assert_eq!(
                builder.build().unwrap_err(),
                Error::Build(BuildError::ZeroCaveats)
            );
            match cap.attenuate(&p) {
                Err(Error::Caveat(CaveatError::Parse(e))) => assert!(is_too_long(&e), "{name}"),
                other => panic!("{name}: attenuate gave {other:?}"),
            }
        }
    });
}

#[test]
fn huge_predicates_in_a_valid_token_deny_with_a_signed_receipt() {
    on_small_stack(|| {
        let verifier = Verifier::new(&ROOT_KEY).unwrap();
        let auditor = auditor();
        for (name, p) in huge_predicates() {
            let token = forge_valid_token(&[&p]);
            // Too long for the default token limit...
            match Capability::parse(&token) {
                Err(Error::Token(TokenError::TooLong { max, .. })) => {
                    assert_eq!(max, Limits::DEFAULT.max_token_len);
                }
                other => panic!("{name}: parse gave {other:?}"),
            }
            // ...but a verifier handed such a capability still decides.
            let cap = parse_big(&token);
            assert_eq!(verifier.verify(&cap), Ok(()), "{name}: chain is valid");
            let receipt = verifier
                .verify_with_context(&cap, &ctx(json!({})), &auditor)
                .unwrap();
            assert!(!receipt.is_allowed(), "{name}");
            let reason = receipt.outcome().reason().unwrap();
            assert!(
                reason.starts_with("caveat parse error in"),
                "{name}: {}",
                &reason[..80]
            );
            assert!(
                reason.ends_with(&format!(
                    ": parse error: predicate is {} bytes, limit is {}",
                    p.len(),
                    Limits::DEFAULT.max_predicate_len
                )),
                "{name}"
            );
            let json = receipt.to_json();
            assert_eq!(auditor.verify(&json).unwrap(), receipt);

            let receipt = verifier
                .verify_with_context_json(&cap, &ctx_json("{}"), &auditor)
                .unwrap();
            assert!(
                receipt
                    .outcome()
                    .reason()
                    .unwrap()
                    .starts_with("caveat parse error in")
            );
            // Twice: the second answer comes from the predicate cache.
            let again = verifier
                .verify_with_context(&cap, &ctx(json!({})), &auditor)
                .unwrap();
            assert_eq!(again.outcome(), receipt.outcome());
        }
    });
}

#[test]
fn deep_nesting_in_a_valid_token_denies_with_too_deep() {
    on_small_stack(|| {
        // Short enough for the length limit, far too deep.
        let p = format!("{}a == 1{}", "(".repeat(4_000), ")".repeat(4_000));
        assert!(p.len() < Limits::default().max_predicate_len);
        assert_eq!(
            Predicate::parse(&p).unwrap_err(),
            ParseError::TooDeep { max: 1024 }
        );
        let cap = parse_big(&forge_valid_token(&[&p]));
        let receipt = Verifier::new(&ROOT_KEY)
            .unwrap()
            .verify_with_context(&cap, &ctx(json!({})), &auditor())
            .unwrap();
        let reason = receipt.outcome().reason().unwrap();
        assert!(reason.starts_with("caveat parse error in"));
        assert!(reason.ends_with("parse error: parentheses nest deeper than the limit of 1024"));
    });
}

// ---------------------------------------------------------------------------
// Raised limits
// ---------------------------------------------------------------------------

#[test]
fn raised_limits_parse_and_evaluate_a_100k_term_and_chain() {
    on_small_stack(|| {
        let limits = raised_limits();
        // The brief's literal chain parses (its identifier is unknown, so it
        // evaluates to an error, never a crash).
        let p = Predicate::parse_with_limits(&and_chain_100k(), &limits).unwrap();
        assert!(p.evaluate(&ctx(json!({}))).is_err());

        let chain = and_chain("arg.a == 1", 100_000);
        let p = Predicate::parse_with_limits(&chain, &limits).unwrap();
        assert_eq!(p.evaluate(&ctx(json!({"a": 1}))), Ok(true));
        assert_eq!(p.evaluate(&ctx(json!({"a": 2}))), Ok(false));
        let ors = chain
            .replace(" AND ", " OR ")
            .replace("arg.a == 1", "arg.a == 0");
        let p = Predicate::parse_with_limits(&ors, &limits).unwrap();
        assert_eq!(p.evaluate(&ctx(json!({"a": 1}))), Ok(false));

        // And through a verifier with the same limits.
        let verifier = Verifier::new(&ROOT_KEY).unwrap().with_limits(limits);
        let cap = parse_big(&forge_valid_token(&[&chain]));
        let receipt = verifier
            .verify_with_context(&cap, &ctx(json!({"a": 1})), &auditor())
            .unwrap();
        assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
    });
}

#[test]
fn raised_limits_still_refuse_100k_nesting_beyond_the_depth_limit() {
    on_small_stack(|| {
        let limits = Limits {
            max_nesting_depth: 2000,
            ..raised_limits()
        };
        for p in [nested_parens_1mib(), open_parens_1mib()] {
            assert_eq!(
                Predicate::parse_with_limits(&p, &limits).unwrap_err(),
                ParseError::TooDeep { max: 2000 }
            );
        }
    });
}

/// `(((...(arg.a == 1)...)))`: nested groups collapse to one comparison.
fn nested_groups(depth: usize) -> String {
    format!("{}arg.a == 1{}", "(".repeat(depth), ")".repeat(depth))
}

/// `arg.a == 1 AND (arg.a == 1 AND (...))`: an AST `depth` levels deep.
fn nested_ands(depth: usize, op: &str) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push_str("arg.a == 1 ");
        s.push_str(op);
        s.push_str(" (");
    }
    s.push_str("arg.a == 1");
    s.push_str(&")".repeat(depth));
    s
}

/// `arg.a == 0 OR arg.a == 1 AND (...)`: the deepest AST per parenthesis
/// (an OR and an AND level for each), `2 * depth + 1` levels.
fn nested_or_and(depth: usize) -> String {
    let mut s = "arg.a == 0 OR arg.a == 1 AND (".repeat(depth);
    s.push_str("arg.a == 1");
    s.push_str(&")".repeat(depth));
    s
}

#[test]
fn default_depth_limit_parses_and_evaluates_on_a_2mib_stack() {
    on_small_stack(|| {
        let depth = Limits::default().max_nesting_depth;
        assert_eq!(depth, 1024);
        // At this depth the predicates are longer than the default length
        // limit: raise that one (and the token's) only.
        let limits = Limits {
            max_predicate_len: 64 * 1024,
            max_token_len: 256 * 1024,
            max_terms: 4096,
            ..Limits::default()
        };
        let yes = ctx(json!({"a": 1}));
        let no = ctx(json!({"a": 2}));
        for p in [
            nested_groups(depth),
            nested_ands(depth, "AND"),
            nested_ands(depth, "OR"),
            nested_or_and(depth),
        ] {
            let parsed = Predicate::parse_with_limits(&p, &limits).unwrap();
            assert_eq!(parsed.evaluate(&yes), Ok(true));
            assert!(parsed.evaluate(&no).is_ok());
            // One more level is refused.
            let deeper = format!("({p})");
            assert_eq!(
                Predicate::parse_with_limits(&deeper, &limits).unwrap_err(),
                ParseError::TooDeep { max: 1024 }
            );
        }
        // End to end: build, serialize, parse, verify, sign.
        let mut builder = Issuer::from_key(&ROOT_KEY)
            .unwrap()
            .with_limits(limits)
            .issue("deep");
        builder.caveat(&nested_ands(depth, "AND")).unwrap();
        builder.caveat(&nested_groups(depth)).unwrap();
        builder.caveat(&nested_or_and(depth)).unwrap();
        let token = builder.build().unwrap().serialize();
        let cap = Capability::parse_with_limits(&token, &limits).unwrap();
        let receipt = Verifier::new(&ROOT_KEY)
            .unwrap()
            .with_limits(limits)
            .verify_with_context(&cap, &yes, &auditor())
            .unwrap();
        assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
    });
}

// ---------------------------------------------------------------------------
// Token limits
// ---------------------------------------------------------------------------

#[test]
fn a_1mib_token_is_refused() {
    on_small_stack(|| {
        let token = "A".repeat(MIB);
        assert_eq!(
            Capability::parse(&token).unwrap_err(),
            Error::Token(TokenError::TooLong {
                len: MIB,
                max: Limits::DEFAULT.max_token_len
            })
        );
    });
}

#[test]
fn too_many_caveats_are_refused() {
    on_small_stack(|| {
        let max = Limits::default().max_caveats;
        let many: Vec<&str> = vec!["arg.a == 1"; max];
        // Exactly the limit: accepted.
        let cap = Capability::parse(&forge_valid_token(&many[..max - 1])).unwrap();
        assert_eq!(cap.caveats().len(), max);
        let verifier = Verifier::new(&ROOT_KEY).unwrap();
        assert!(
            verifier
                .verify_with_context(&cap, &ctx(json!({"a": 1})), &auditor())
                .unwrap()
                .is_allowed()
        );
        // One more: refused by parse, attenuate and the builder.
        assert_eq!(
            Capability::parse(&forge_valid_token(&many)).unwrap_err(),
            Error::Token(TokenError::TooManyCaveats {
                count: max + 1,
                max
            })
        );
        assert_eq!(
            cap.attenuate("arg.a == 1").unwrap_err(),
            Error::Build(BuildError::TooManyCaveats { max })
        );
        let mut builder = Issuer::from_key(&ROOT_KEY).unwrap().issue("x");
        for _ in 0..max {
            builder.caveat("arg.a == 1").unwrap();
        }
        assert_eq!(
            builder.caveat("arg.a == 1").unwrap_err(),
            Error::Build(BuildError::TooManyCaveats { max })
        );
        // A custom limit.
        let strict = Limits {
            max_caveats: 16,
            ..Limits::default()
        };
        assert!(matches!(
            Capability::parse_with_limits(&forge_valid_token(&many[..16]), &strict),
            Err(Error::Token(TokenError::TooManyCaveats {
                count: 17,
                max: 16
            }))
        ));
    });
}

#[test]
fn deeply_nested_token_and_receipt_json_is_refused() {
    on_small_stack(|| {
        let deep = format!("{}{}", "[".repeat(90_000), "]".repeat(90_000));
        let token = URL_SAFE_NO_PAD.encode(&deep);
        // Over the default length limit; with that limit raised, the JSON
        // reader still refuses the depth.
        let long = Limits {
            max_token_len: 256 * 1024,
            ..Limits::default()
        };
        assert!(token.len() < long.max_token_len);
        assert!(matches!(
            Capability::parse_with_limits(&token, &long),
            Err(Error::Token(TokenError::Format(_)))
        ));
        let deep_field = format!(
            r#"{{"identifier":{}1{},"caveats":[],"signature":""}}"#,
            "[".repeat(45_000),
            "]".repeat(45_000)
        );
        assert!(
            Capability::parse_with_limits(&URL_SAFE_NO_PAD.encode(&deep_field), &long).is_err()
        );
        assert!(auditor().verify(&deep).is_err());
        assert!(auditor().verify(&deep_field).is_err());
    });
}

// ---------------------------------------------------------------------------
// Context limits
// ---------------------------------------------------------------------------

#[test]
fn context_json_nested_200k_deep_is_refused() {
    on_small_stack(|| {
        let depth = 200_000;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", r#"{"":"#.repeat(depth), "}".repeat(depth));
        let unclosed = "[".repeat(depth);
        let verifier = Verifier::new(&ROOT_KEY).unwrap();
        let cap = Capability::parse(&forge_valid_token(&[])).unwrap();
        for args in [arrays, objects, unclosed] {
            let text = ctx_json(&args);
            assert!(text.len() < Limits::default().max_context_len);
            match Context::from_json(&text) {
                Err(ContextError::Json(msg)) => assert!(msg.contains("recursion limit"), "{msg}"),
                other => panic!("expected a depth error, got {other:?}"),
            }
            assert!(matches!(
                verifier.verify_with_context_json(&cap, &text, &auditor()),
                Err(Error::Context(ContextError::Json(_)))
            ));
            // Raising the limit does not lift the hard cap.
            let loose = Limits {
                max_json_depth: usize::MAX,
                ..Limits::default()
            };
            assert!(Context::from_json_with_limits(&text, &loose).is_err());
        }
    });
}

#[test]
fn context_json_at_the_supported_depth_is_judged_on_a_2mib_stack() {
    on_small_stack(|| {
        // Well past the default: parse, hash (canonical JSON recurses),
        // evaluate, sign, clone, compare and drop a deep context.
        let loose = Limits {
            max_json_depth: usize::MAX,
            ..Limits::default()
        };
        // The outer object and `args` count, so `d` nested `depth` deep
        // makes a document `depth + 2` deep; the hard cap is 512.
        for depth in [125, 510] {
            let args = format!(
                r#"{{"a":1,"d":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let text = ctx_json(&args);
            let context = Context::from_json_with_limits(&text, &loose).unwrap();
            assert_eq!(context.args_hash().len(), 64);
            let copy = context.clone();
            assert_eq!(copy, context);
            let verifier = Verifier::new(&ROOT_KEY).unwrap().with_limits(loose);
            let cap = Capability::parse(&forge_valid_token(&["arg.a == 1"])).unwrap();
            let receipt = verifier
                .verify_with_context_json(&cap, &text, &auditor())
                .unwrap();
            assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
        }
        for depth in [511, 4096, 100_000] {
            let args = format!(
                r#"{{"a":1,"d":{}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            assert!(Context::from_json_with_limits(&ctx_json(&args), &loose).is_err());
        }
    });
}

#[test]
fn a_2mib_context_is_refused_by_size() {
    on_small_stack(|| {
        let text = ctx_json(&format!(r#"{{"blob":"{}"}}"#, "x".repeat(2 * MIB)));
        match Context::from_json(&text) {
            Err(ContextError::Json(msg)) => {
                assert!(
                    msg.contains("exceeding the limit of 1048576 bytes"),
                    "{msg}"
                );
            }
            other => panic!("expected a size error, got {other:?}"),
        }
        let cap = Capability::parse(&forge_valid_token(&[])).unwrap();
        assert!(matches!(
            Verifier::new(&ROOT_KEY)
                .unwrap()
                .verify_with_context_json(&cap, &text, &auditor()),
            Err(Error::Context(ContextError::Json(_)))
        ));
        // Garbage of the same size is refused the same way, before parsing.
        assert!(Context::from_json(&"[".repeat(2 * MIB)).is_err());
    });
}

// ---------------------------------------------------------------------------
// Keys and builder misuse
// ---------------------------------------------------------------------------

#[test]
fn short_keys_are_errors_not_panics() {
    on_small_stack(|| {
        for len in 0..MIN_ROOT_KEY_LEN {
            let key = vec![1u8; len];
            let expected = Error::Key(KeyError::TooShort {
                role: "root",
                got: len,
                min: 32,
            });
            assert_eq!(Issuer::from_key(&key).unwrap_err(), expected);
            assert_eq!(Verifier::new(&key).unwrap_err(), expected);
        }
        assert!(Issuer::from_key(&[1; MIN_ROOT_KEY_LEN]).is_ok());
        for len in 0..MIN_AUDIT_KEY_LEN {
            assert_eq!(
                Auditor::new(&vec![1u8; len]).unwrap_err(),
                Error::Key(KeyError::TooShort {
                    role: "audit",
                    got: len,
                    min: 16,
                })
            );
        }
        assert!(Auditor::new(&[1; MIN_AUDIT_KEY_LEN]).is_ok());
        // Very long keys are fine (HMAC hashes them).
        assert!(Issuer::from_key(&vec![1u8; MIB]).is_ok());
        assert!(Auditor::new(&vec![1u8; MIB]).is_ok());
    });
}

#[test]
fn holder_of_key_misuse_is_an_error_not_a_panic() {
    on_small_stack(|| {
        let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
        let mut after_caveat = issuer.issue("x");
        after_caveat.caveat("arg.a == 1").unwrap();
        assert_eq!(
            after_caveat.holder_of_key([1; 32]).unwrap_err(),
            Error::Build(BuildError::HolderKeyAfterCaveat)
        );
        let mut twice = issuer.issue("x");
        twice.holder_of_key([1; 32]).unwrap();
        assert_eq!(
            twice.holder_of_key([2; 32]).unwrap_err(),
            Error::Build(BuildError::HolderKeyTwice)
        );
        // Both builders are still usable and unchanged.
        assert!(after_caveat.build().unwrap().holder_of_key().is_none());
        twice.caveat("arg.a == 1").unwrap();
        assert_eq!(twice.build().unwrap().holder_of_key(), Some(&[1; 32]));
    });
}

/// With the nesting limit raised past the supported maximum it is clamped:
/// a predicate at the clamp parses, evaluates and drops on a 2 MiB debug
/// stack (evaluation and drop use the heap), and deeper ones are refused.
#[test]
fn raised_nesting_limit_is_clamped_and_deep_asts_do_not_overflow() {
    on_small_stack(|| {
        let max = Limits::MAX_NESTING_DEPTH;
        let p = nested_ands(max, "AND");
        let parsed = Predicate::parse_with_limits(&p, &raised_limits()).unwrap();
        assert_eq!(parsed.evaluate(&ctx(json!({"a": 1}))), Ok(true));
        drop(parsed);
        let p = nested_ands(30_000, "AND");
        assert_eq!(
            Predicate::parse_with_limits(&p, &raised_limits()).unwrap_err(),
            ParseError::TooDeep { max }
        );
    });
}
