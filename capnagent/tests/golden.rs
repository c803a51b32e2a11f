//! Golden vectors restated in the reference specification (tokens T1–T3,
//! receipt signatures, args hashes, reason strings), checked byte for byte.

use capnagent::{Auditor, Capability, Caveat, Context, Error, Issuer, Outcome, Verifier};

const T1_CAVEATS: [&str; 5] = [
    r#"caller == "agent:planner""#,
    r#"tool == "checkout.purchase""#,
    r#"arg.merchant == "amazon.com""#,
    "arg.amount <= 50",
    "now <= @2099-01-01T00:00:00Z",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signature_of(cap: &Capability) -> String {
    // The signature is not exposed; read it from the wire form.
    use base64::Engine as _;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cap.serialize())
        .expect("our tokens are base64url");
    let value: serde_json::Value = serde_json::from_slice(&json).expect("our tokens are JSON");
    value["signature"].as_str().expect("signature").to_owned()
}

fn t1() -> Capability {
    let issuer = Issuer::from_key(&[0xC1; 32]).expect("32-byte key");
    let mut builder = issuer.issue("buy-broadening-test");
    for caveat in T1_CAVEATS {
        builder.caveat(caveat).expect("valid caveat");
    }
    builder.build().expect("builds")
}

#[test]
fn t1_chain_signature_and_wire_form() {
    let cap = t1();
    assert_eq!(
        signature_of(&cap),
        "2e7c67f490dcb8aadb650dbae327fcb5148b7885e249aca012859c4fdc229216"
    );
    let token = cap.serialize();
    assert_eq!(token.len(), 456);
    assert_eq!(Capability::parse(&token).expect("parses"), cap);
    Verifier::new(&[0xC1; 32])
        .expect("key")
        .verify(&cap)
        .expect("chain verifies");
}

#[test]
fn t1_tampering_fails_the_chain_without_saying_why() {
    let cap = t1();
    let verifier = Verifier::new(&[0xC1; 32]).expect("key");
    let other = Verifier::new(&[0xC2; 32]).expect("key");
    assert_eq!(other.verify(&cap), Err(Error::InvalidChain));

    let token = cap.serialize();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = String::from_utf8(engine.decode(&token).expect("b64")).expect("utf8");
    let tampered = [
        json.replace(r#"{"predicate":"arg.amount <= 50"},"#, ""),
        json.replace("arg.amount <= 50", "arg.amount <= 5000"),
        json.replace(&signature_of(&cap), &"0".repeat(64)),
        json.replace("buy-broadening-test", "buy-broadening-tesT"),
    ];
    for forged in tampered {
        assert_ne!(forged, json);
        let cap = Capability::parse(&engine.encode(&forged)).expect("still well-formed");
        assert_eq!(verifier.verify(&cap), Err(Error::InvalidChain));
        assert_eq!(
            Error::InvalidChain.to_string(),
            "capability chain integrity: invalid signature"
        );
    }
}

#[test]
fn the_chain_cache_never_vouches_for_different_content() {
    let cap = t1();
    let verifier = Verifier::new(&[0xC1; 32]).expect("key");
    verifier.verify(&cap).expect("verifies, and is now cached");
    verifier.verify(&cap).expect("cached hit");

    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = String::from_utf8(engine.decode(cap.serialize()).expect("b64")).expect("utf8");
    // Same signature bytes, different content: must still fail.
    for forged in [
        json.replace("arg.amount <= 50", "arg.amount <= 5000"),
        json.replace(r#"{"predicate":"arg.amount <= 50"},"#, ""),
        json.replace("buy-broadening-test", "other"),
    ] {
        let forged = Capability::parse(&engine.encode(&forged)).expect("well-formed");
        assert_eq!(verifier.verify(&forged), Err(Error::InvalidChain));
    }
    let uncached = Verifier::new(&[0xC1; 32]).expect("key").with_chain_cache(0);
    uncached.verify(&cap).expect("verifies without a cache");
}

#[test]
fn t2_holder_of_key_chain_step() {
    let issuer = Issuer::from_key(&[0xE1; 32]).expect("key");
    let pk: [u8; 32] = [
        0x4d, 0xd9, 0xb6, 0x49, 0x6a, 0x27, 0x57, 0x1a, 0xcb, 0x08, 0x9a, 0x5e, 0x34, 0x82, 0xdf,
        0xc8, 0x6a, 0xcd, 0xed, 0xdc, 0x4d, 0x1f, 0x28, 0xe1, 0x5a, 0x9b, 0x04, 0xf0, 0x26, 0xd7,
        0xf2, 0x26,
    ];
    let mut builder = issuer.issue("buy-replay-test");
    builder.holder_of_key(pk).expect("first");
    for caveat in T1_CAVEATS {
        builder.caveat(caveat).expect("valid");
    }
    let cap = builder.build().expect("builds");
    assert_eq!(
        signature_of(&cap),
        "06eee6b54457cf4a8baa55569f5e70a33af8c295c4f8b8955c84d8631f09f36e"
    );
    let token = cap.serialize();
    assert_eq!(token.len(), 562);
    assert!(
        token.starts_with(
            "eyJpZGVudGlmaWVyIjoiYnV5LXJlcGxheS10ZXN0IiwiaG9sZGVyX29mX2tleSI6IjRkZDli"
        )
    );
    assert_eq!(cap.holder_of_key(), Some(&pk));

    // The bearer path denies a bound token before any caveat.
    let ctx = Context::builder().now_millis(1_700_000_000_000).build();
    let receipt = Verifier::new(&[0xE1; 32])
        .expect("key")
        .verify_with_context(&cap, &ctx, &Auditor::new(&[0xE2; 32]).expect("key"))
        .expect("chain ok");
    assert_eq!(
        receipt.outcome().reason(),
        Some("capability is bound to a holder key; use verify_with_proof")
    );
}

#[test]
fn t3_zero_caveat_token_verifies_its_chain_but_is_denied() {
    let token = "eyJpZGVudGlmaWVyIjoiYnV5LXN0b2xlbi10b2tlbiIsImNhdmVhdHMiOltdLCJzaWduYXR1cmUiOiJkNzNhYzE5YWY4ZTIzY2RmODAwMjAyZDY4YjVhMGExOTY4OTliNmU2NjgzYTliM2JkNDUwMGQyYWQ5ZWY0OWRmIn0";
    let cap = Capability::parse(token).expect("parses");
    assert_eq!(cap.serialize(), token);
    let verifier = Verifier::new(b"round04-revocation-root-key-32b!").expect("key");
    verifier.verify(&cap).expect("chain is valid");
    let ctx = Context::builder()
        .now_millis(1)
        .caller("x")
        .tool("y")
        .build();
    let receipt = verifier
        .verify_with_context(&cap, &ctx, &Auditor::new(&[1; 16]).expect("key"))
        .expect("chain ok");
    assert!(!receipt.is_allowed());
    assert_eq!(
        receipt.outcome().reason(),
        Some(capnagent::REASON_ZERO_CAVEATS)
    );
}

fn summary_ctx(caller: &str, tool: &str, args: &str) -> Context {
    Context::from_json(&format!(
        r#"{{"nowMs":1700000000000,"caller":"{caller}","tool":"{tool}","args":{args}}}"#
    ))
    .expect("context")
}

#[test]
fn receipt_signatures_match_the_reference() {
    let args = r#"{"merchant":"amazon.com","amount":20}"#;
    let ctx = summary_ctx("agent:planner", "checkout.purchase", args);
    assert_eq!(
        ctx.args_hash(),
        "e52fbb7e3d37b667d250b2691ae61a2f5040a72a32b25289ba41f02f5fccc8e6"
    );

    let r1 = Auditor::new(&[0xE2; 32]).expect("key").sign(
        "buy-replay-test",
        T1_CAVEATS
            .iter()
            .map(|c| Caveat::new(*c))
            .collect::<Vec<_>>(),
        &ctx,
        Outcome::Denied {
            reason: "proof replay detected".into(),
        },
    );
    assert_eq!(
        r1.signature_hex(),
        "4bc3495c7fc8d1a7862653317e7798fc25dc4194a2d1b98c9c841d62da6a57a7"
    );

    let r2 = Auditor::new(b"round04-revocation-audit-key-32!")
        .expect("key")
        .sign(
            "buy-stolen-token",
            Vec::new(),
            &ctx,
            Outcome::Denied {
                reason: "capability revoked: buy-stolen-token".into(),
            },
        );
    assert_eq!(
        r2.signature_hex(),
        "663e210fecfeec44160a7edafdd27b38702d01b4f4970bcb62d42ea7682d0db8"
    );

    let auditor = Auditor::new(&[0xA3; 32]).expect("key");
    let r3 = auditor.sign(
        "buy-stolen-token",
        vec![
            Caveat::new(r#"caller == "agent:test""#),
            Caveat::new(r#"tool == "x""#),
            Caveat::new("now <= @2099-01-01T00:00:00Z"),
        ],
        &summary_ctx("agent:test", "x", "{}"),
        Outcome::Allowed,
    );
    assert_eq!(
        r3.signature_hex(),
        "19e9865add351f90a5bfa6cbd0efdb070a2c451f158bd0ab9634d1362627a645"
    );
    // Round trip through the wire form, and tamper detection.
    let json = r3.to_json();
    assert_eq!(auditor.verify(&json).expect("valid"), r3);
    let forged = json.replace(r#""tool":"x""#, r#""tool":"y""#);
    assert!(auditor.verify(&forged).is_err());
    let unknown = json.replacen('{', r#"{"reason":"forged","#, 1);
    assert!(auditor.verify(&unknown).is_err());
    let v2 = json.replace(r#""version":1"#, r#""version":2"#);
    assert_eq!(
        auditor.verify(&v2).map_err(|e| e.to_string()),
        Err("unsupported receipt schema version: got 2, expected 1".to_owned())
    );
}

#[test]
fn args_hash_vectors() {
    for (args, hash) in [
        (
            "{}",
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        ),
        (
            "null",
            "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b",
        ),
        (
            "[]",
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
        ),
    ] {
        assert_eq!(summary_ctx("c", "t", args).args_hash(), hash);
    }
    // Number text matters; `-0` is the one rewrite.
    let h = |args: &str| summary_ctx("c", "t", args).args_hash();
    assert_ne!(h(r#"{"a":1}"#), h(r#"{"a":1.0}"#));
    assert_eq!(h(r#"{"a":-0}"#), h(r#"{"a":0}"#));
    assert_ne!(h(r#"{"a":-0.0}"#), h(r#"{"a":0}"#));
    assert_eq!(h(r#"{"b":1,"a":2}"#), h(r#"{"a":2,"b":1}"#));
}

#[test]
fn denial_reasons_are_the_references() {
    let issuer = Issuer::from_key(&[3; 32]).expect("key");
    let verifier = Verifier::new(&[3; 32]).expect("key");
    let auditor = Auditor::new(&[4; 16]).expect("key");
    let ctx = Context::from_json(
        r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount":12.99,"flag":true}}"#,
    )
    .expect("ctx");
    let reason = |predicate: &str| {
        let cap = issuer
            .issue("r")
            .caveat(predicate)
            .expect("valid")
            .build()
            .expect("builds");
        let receipt = verifier
            .verify_with_context(&cap, &ctx, &auditor)
            .expect("chain ok");
        receipt.outcome().reason().map(str::to_owned)
    };
    assert_eq!(reason(r#"tool == "checkout.purchase""#), None);
    assert_eq!(
        reason(r#"tool == "bank.wire""#).as_deref(),
        Some(r#"caveat failed: tool == "bank.wire""#)
    );
    assert_eq!(
        reason("arg.missing == 1").as_deref(),
        Some(r#"caveat eval error in "arg.missing == 1": unknown identifier: arg.missing"#)
    );
    assert_eq!(
        reason("arg.amount <= 50").as_deref(),
        Some(
            "caveat eval error in \"arg.amount <= 50\": type mismatch: expected integer-syntactic numeric arg (caveat literal is integer-domain; use _cents form for sub-unit precision, or reject non-integer args at the tool boundary \u{2014} closes angle finding A.1), got float-syntactic numeric arg"
        )
    );
    assert_eq!(reason("arg.amount <= 50.0"), None);
    assert_eq!(
        reason("arg.flag == 1").as_deref(),
        Some(
            r#"caveat eval error in "arg.flag == 1": type mismatch: expected string or integer at arg path, got bool at arg.flag"#
        )
    );
    assert_eq!(
        reason(r#"caller < "b""#).as_deref(),
        Some(
            r#"caveat eval error in "caller < \"b\"": type mismatch: expected number or timestamp on left for ordering operator, got string vs string with `<`"#
        )
    );
    // Short-circuit: the error on the right is never evaluated.
    assert_eq!(
        reason(r#"tool == "checkout.purchase" OR arg.missing == 1"#),
        None
    );
    assert_eq!(
        reason("now <= @2023-01-01T00:00:00Z").as_deref(),
        Some("caveat failed: now <= @2023-01-01T00:00:00Z")
    );
}

#[test]
fn builder_misuse_is_an_error_and_leaves_the_builder_usable() {
    let issuer = Issuer::from_key(&[3; 32]).expect("key");
    let mut builder = issuer.issue("b");
    assert!(builder.caveat("not a predicate").is_err());
    assert!(matches!(
        builder.caveat("arg.x <= 50_usd"),
        Err(Error::Caveat(capnagent::CaveatError::UnitLiteral { .. }))
    ));
    assert!(matches!(
        builder.build(),
        Err(Error::Build(capnagent::BuildError::ZeroCaveats))
    ));
    builder.caveat(r#"tool == "t""#).expect("valid");
    assert!(builder.holder_of_key([1; 32]).is_err());
    let cap = builder.build().expect("builds");
    assert_eq!(cap.caveats().len(), 1);
    assert!(Issuer::from_key(&[0; 31]).is_err());
    assert!(Auditor::new(&[0; 15]).is_err());
    assert!(Verifier::new(&[]).is_err());
    assert_eq!(hex(&[0xab]), "ab");
}

#[test]
fn secrets_stay_out_of_debug() {
    let issuer = Issuer::from_key(&[0x5a; 32]).expect("key");
    let cap = issuer
        .issue("id")
        .caveat(r#"tool == "t""#)
        .expect("valid")
        .build()
        .expect("builds");
    let sig = signature_of(&cap);
    for text in [
        format!("{issuer:?}"),
        format!("{cap:?}"),
        format!("{:?}", Verifier::new(&[0x5a; 32]).expect("key")),
        format!("{:?}", Auditor::new(&[0x5a; 32]).expect("key")),
    ] {
        assert!(!text.contains(&sig), "{text}");
        assert!(!text.contains("5a5a5a"), "{text}");
        assert!(!text.contains("90, 90"), "{text}");
    }
}

/// A capability checked once carries a memo for that verifier (chain and
/// parsed caveats). The memo must never vouch for it to another root key,
/// to a verifier without caches, or after `clear_cache`, and the decisions
/// it gives must be the ones made without it.
#[test]
fn verifier_memos_stay_with_their_verifier() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let issuer = Issuer::from_key(&[0x51; 32]).expect("key");
    let mut builder = issuer.issue("memo");
    builder.caveat("arg.n <= 5").expect("valid");
    let cap = builder.build().expect("builds");
    let auditor = Auditor::new(&[0x52; 32]).expect("key");
    let small = Context::builder().args(serde_json::json!({"n": 3})).build();
    let large = Context::builder().args(serde_json::json!({"n": 9})).build();

    let verifier = Verifier::new(&[0x51; 32]).expect("key");
    for _ in 0..3 {
        let allowed = verifier.verify_with_context(&cap, &small, &auditor);
        assert!(allowed.expect("genuine").is_allowed());
        let denied = verifier.verify_with_context(&cap, &large, &auditor);
        assert!(!denied.expect("genuine").is_allowed());
    }
    // Another root key: the memo left by the first verifier is not its own.
    let other = Verifier::new(&[0x53; 32]).expect("key");
    assert_eq!(other.verify(&cap), Err(Error::InvalidChain));
    assert_eq!(
        other.verify_with_context(&cap, &small, &auditor).err(),
        Some(Error::InvalidChain)
    );
    // Same key, caches off: decides the same, from scratch.
    let uncached = Verifier::new(&[0x51; 32])
        .expect("key")
        .with_chain_cache(0)
        .with_cache_capacity(0);
    assert!(
        uncached
            .verify_with_context(&cap, &large, &auditor)
            .is_ok_and(|r| !r.is_allowed())
    );
    // A forged copy (other signature, same caveats) never shares the memo:
    // it is a different value, parsed from its own text.
    let mut json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(cap.serialize()).expect("b64"))
            .expect("json");
    json["signature"] = serde_json::Value::String("00".repeat(32));
    let forged = Capability::parse(&URL_SAFE_NO_PAD.encode(json.to_string())).expect("parses");
    assert_eq!(verifier.verify(&forged), Err(Error::InvalidChain));
    // After clear_cache the verifier still decides correctly.
    verifier.clear_cache();
    assert!(
        verifier
            .verify_with_context(&cap, &small, &auditor)
            .is_ok_and(|r| r.is_allowed())
    );
    assert!(verifier.verify(&forged).is_err());
}
