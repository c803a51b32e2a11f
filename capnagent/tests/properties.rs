//! Property tests: tampering never verifies, attenuation only narrows,
//! tokens round-trip byte for byte, and no parser panics on any input.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{Auditor, Capability, Context, Error, Issuer, Outcome, Predicate, Verifier};
use proptest::prelude::*;
use serde_json::{Value, json};

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];

// ---------------------------------------------------------------------------
// Token JSON helpers
// ---------------------------------------------------------------------------

fn decode_token(token: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(token).expect("token is base64url");
    serde_json::from_slice(&bytes).expect("token is JSON")
}

fn encode_token(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("serializable"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A token JSON with arbitrary field values (not MACed).
fn raw_token(
    identifier: &str,
    predicates: &[String],
    holder: Option<[u8; 32]>,
    sig: [u8; 32],
) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("identifier".into(), json!(identifier));
    if let Some(key) = holder {
        obj.insert("holder_of_key".into(), json!(hex(&key)));
    }
    let caveats: Vec<Value> = predicates
        .iter()
        .map(|p| json!({ "predicate": p }))
        .collect();
    obj.insert("caveats".into(), Value::Array(caveats));
    obj.insert("signature".into(), json!(hex(&sig)));
    encode_token(&Value::Object(obj))
}

// ---------------------------------------------------------------------------
// A small predicate language generator over caller/tool/arg.n/env.k/now
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum P {
    Cmp(String),
    And(Vec<P>),
    Or(Vec<P>),
}

impl P {
    fn render(&self) -> String {
        fn child(p: &P) -> String {
            match p {
                P::Cmp(s) => s.clone(),
                // A space before `)`: a timestamp literal runs to the next
                // whitespace and would swallow the parenthesis.
                other => format!("( {} )", other.render()),
            }
        }
        match self {
            P::Cmp(s) => s.clone(),
            P::And(items) => items.iter().map(child).collect::<Vec<_>>().join(" AND "),
            P::Or(items) => items.iter().map(child).collect::<Vec<_>>().join(" OR "),
        }
    }
}

const CALLERS: &[&str] = &["a", "ab", "b"];
const TOOLS: &[&str] = &["t1", "t2"];
const ENV_VALUES: &[&str] = &["x", "y"];
const TIMES: &[&str] = &[
    "@2025-01-01T00:00:00Z",
    "@2030-01-01T00:00:00Z",
    "@2030-01-01T00:00:00.001Z",
    "@2035-06-01T12:00:00+02:00",
];
/// 2024, 2030 exactly, 2032.
const NOW_MS: &[u64] = &[1_704_067_200_000, 1_893_456_000_000, 1_956_528_000_000];

fn comparison() -> impl Strategy<Value = P> {
    let eq_ops = prop::sample::select(vec!["==", "!="]);
    let str_ops = prop::sample::select(vec!["==", "!=", "starts_with", "matches"]);
    let ord_ops = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    prop_oneof![
        (str_ops, prop::sample::select(CALLERS))
            .prop_map(|(op, v)| P::Cmp(format!("caller {op} \"{v}\""))),
        (eq_ops.clone(), prop::sample::select(TOOLS))
            .prop_map(|(op, v)| P::Cmp(format!("tool {op} \"{v}\""))),
        (ord_ops.clone(), -1i64..7).prop_map(|(op, v)| P::Cmp(format!("arg.n {op} {v}"))),
        (eq_ops, prop::sample::select(ENV_VALUES))
            .prop_map(|(op, v)| P::Cmp(format!("env.k {op} \"{v}\""))),
        (ord_ops, prop::sample::select(TIMES)).prop_map(|(op, v)| P::Cmp(format!("now {op} {v}"))),
    ]
}

fn predicate() -> impl Strategy<Value = P> {
    comparison().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(P::And),
            prop::collection::vec(inner, 2..4).prop_map(P::Or),
        ]
    })
}

fn predicate_text() -> impl Strategy<Value = String> {
    predicate().prop_map(|p| p.render())
}

fn context() -> impl Strategy<Value = Context> {
    (
        prop::sample::select(CALLERS),
        prop::sample::select(TOOLS),
        prop::option::of(-1i64..7),
        prop::option::of(prop::sample::select(ENV_VALUES)),
        prop::sample::select(NOW_MS),
    )
        .prop_map(|(caller, tool, n, env, now)| {
            let args = match n {
                Some(n) => json!({ "n": n }),
                None => json!({}),
            };
            let mut b = Context::builder()
                .now_millis(now)
                .caller(caller)
                .tool(tool)
                .args(args);
            if let Some(v) = env {
                b = b.env("k", v);
            }
            b.build()
        })
}

fn issuer() -> Issuer {
    Issuer::from_key(&ROOT_KEY).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(&ROOT_KEY).unwrap()
}

fn auditor() -> Auditor {
    Auditor::new(&AUDIT_KEY).unwrap()
}

fn build(identifier: &str, holder: Option<[u8; 32]>, predicates: &[String]) -> Capability {
    let mut b = issuer().issue(identifier);
    if let Some(key) = holder {
        b.holder_of_key(key).unwrap();
    }
    for p in predicates {
        b.caveat(p).unwrap();
    }
    b.build().unwrap()
}

fn allowed(v: &Verifier, cap: &Capability, ctx: &Context, auditor: &Auditor) -> bool {
    v.verify_with_context(cap, ctx, auditor)
        .unwrap()
        .is_allowed()
}

// ---------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
}

impl Edit {
    fn apply(&self, s: &str) -> String {
        let mut chars: Vec<char> = s.chars().collect();
        let len = chars.len();
        match *self {
            Edit::Replace(i, c) if len > 0 => chars[i % len] = c,
            Edit::Insert(i, c) => chars.insert(i % (len + 1), c),
            Edit::Delete(i) if len > 0 => {
                chars.remove(i % len);
            }
            _ => {}
        }
        chars.into_iter().collect()
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

#[derive(Debug, Clone)]
enum Tamper {
    Identifier(Edit),
    DropCaveat(usize),
    SwapCaveats(usize, usize),
    EditCaveat(usize, Edit),
    /// Append a caveat without extending the MAC chain.
    AppendUnsigned(String),
    /// Set, clear or change the holder key.
    HolderKey([u8; 32]),
    Signature(usize, u8),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        edit().prop_map(Tamper::Identifier),
        any::<usize>().prop_map(Tamper::DropCaveat),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Tamper::SwapCaveats(i, j)),
        (any::<usize>(), edit()).prop_map(|(i, e)| Tamper::EditCaveat(i, e)),
        predicate_text().prop_map(Tamper::AppendUnsigned),
        any::<[u8; 32]>().prop_map(Tamper::HolderKey),
        (0usize..32, 1u8..=255).prop_map(|(i, m)| Tamper::Signature(i, m)),
    ]
}

/// Applies the tamper to the token's JSON; `None` when it would not change
/// anything (for example swapping two identical caveats).
fn apply_tamper(token: &str, t: &Tamper) -> Option<String> {
    let original = decode_token(token);
    let mut json = original.clone();
    let obj = json.as_object_mut()?;
    let caveats = obj.get_mut("caveats")?.as_array_mut()?;
    let n = caveats.len();
    match t {
        Tamper::Identifier(e) => {
            let id = obj.get("identifier")?.as_str()?;
            let new = e.apply(id);
            obj.insert("identifier".into(), json!(new));
        }
        Tamper::DropCaveat(i) => {
            caveats.remove(i % n);
        }
        Tamper::SwapCaveats(i, j) => caveats.swap(i % n, j % n),
        Tamper::EditCaveat(i, e) => {
            let c = &mut caveats[i % n];
            let new = e.apply(c["predicate"].as_str()?);
            c["predicate"] = json!(new);
        }
        Tamper::AppendUnsigned(p) => caveats.push(json!({ "predicate": p })),
        Tamper::HolderKey(key) => match obj.get("holder_of_key").and_then(Value::as_str) {
            // Bound: unbind when the random key starts with an even byte,
            // otherwise change it.
            Some(_) if key[0] % 2 == 0 => {
                obj.remove("holder_of_key");
            }
            Some(old) => {
                let mut bytes = unhex(old);
                for (b, k) in bytes.iter_mut().zip(key) {
                    *b ^= k;
                }
                obj.insert("holder_of_key".into(), json!(hex(&bytes)));
            }
            None => {
                obj.insert("holder_of_key".into(), json!(hex(key)));
            }
        },
        Tamper::Signature(i, mask) => {
            let mut sig = unhex(obj.get("signature")?.as_str()?);
            sig[*i] ^= mask;
            obj.insert("signature".into(), json!(hex(&sig)));
        }
    }
    (json != original).then(|| encode_token(&json))
}

fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9:-]{0,16}",
        any::<String>(),
        "[\\x00-\\x1f\"\\\\é😀\u{2028}]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any change to the identifier, the caveats, the holder key or the
    /// signature makes the chain fail: nobody can broaden a token.
    #[test]
    fn tampering_breaks_the_chain(
        id in identifier(),
        holder in prop::option::of(any::<[u8; 32]>()),
        predicates in prop::collection::vec(predicate_text(), 1..5),
        t in tamper(),
        ctx in context(),
    ) {
        let cap = build(&id, holder, &predicates);
        let v = verifier();
        prop_assert_eq!(v.verify(&cap), Ok(()));
        let Some(forged) = apply_tamper(&cap.serialize(), &t) else {
            return Err(TestCaseError::reject("tamper is a no-op"));
        };
        let forged = Capability::parse(&forged).expect("tampered token still decodes");
        prop_assert_ne!(&forged, &cap);
        prop_assert_eq!(v.verify(&forged), Err(Error::InvalidChain));
        prop_assert_eq!(
            v.verify_with_context(&forged, &ctx, &auditor()).err(),
            Some(Error::InvalidChain)
        );
    }

    /// Any single-byte change to the decoded token JSON is refused by
    /// `parse` or by `verify`, unless it decodes to the very same token
    /// (for example a hex digit changing case).
    #[test]
    fn any_byte_change_is_refused_or_harmless(
        id in identifier(),
        holder in prop::option::of(any::<[u8; 32]>()),
        predicates in prop::collection::vec(predicate_text(), 1..4),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let cap = build(&id, holder, &predicates);
        let mut bytes = URL_SAFE_NO_PAD.decode(cap.serialize()).unwrap();
        let i = pos % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        if let Ok(forged) = Capability::parse(&URL_SAFE_NO_PAD.encode(&bytes))
            && forged != cap
        {
            prop_assert_eq!(verifier().verify(&forged), Err(Error::InvalidChain));
        }
    }

    /// Swapping in another token's signature, or minting under another key,
    /// never verifies.
    #[test]
    fn other_keys_and_signatures_do_not_verify(
        id in identifier(),
        predicates in prop::collection::vec(predicate_text(), 1..4),
        other_key in any::<[u8; 32]>(),
    ) {
        prop_assume!(other_key != ROOT_KEY);
        let cap = build(&id, None, &predicates);
        prop_assert_eq!(
            Verifier::new(&other_key).unwrap().verify(&cap),
            Err(Error::InvalidChain)
        );
        let mut b = Issuer::from_key(&other_key).unwrap().issue(id.as_str());
        for p in &predicates {
            b.caveat(p).unwrap();
        }
        prop_assert_eq!(verifier().verify(&b.build().unwrap()), Err(Error::InvalidChain));
    }
}

// ---------------------------------------------------------------------------
// Attenuation only narrows
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the attenuated token allows, the original allows too; the
    /// attenuated token still verifies and the original is unchanged.
    #[test]
    fn attenuation_only_narrows(
        root in prop::collection::vec(predicate_text(), 1..3),
        steps in prop::collection::vec(predicate_text(), 1..4),
        contexts in prop::collection::vec(context(), 1..8),
    ) {
        let v = verifier();
        let a = auditor();
        let mut chain = vec![build("agent-42", None, &root)];
        for p in &steps {
            let parent = chain.last().unwrap();
            let before = parent.clone();
            let child = parent.attenuate(p).unwrap();
            prop_assert_eq!(parent, &before);
            prop_assert_eq!(child.caveats().len(), parent.caveats().len() + 1);
            prop_assert_eq!(child.identifier(), parent.identifier());
            prop_assert_eq!(v.verify(&child), Ok(()));
            // Through the wire as well.
            let reparsed = Capability::parse(&child.serialize()).unwrap();
            prop_assert_eq!(v.verify(&reparsed), Ok(()));
            chain.push(child);
        }
        for ctx in &contexts {
            for pair in chain.windows(2) {
                let (parent, child) = (&pair[0], &pair[1]);
                if allowed(&v, child, ctx, &a) {
                    prop_assert!(
                        allowed(&v, parent, ctx, &a),
                        "child allows but parent denies: {:?} {:?}", child, ctx
                    );
                }
            }
        }
    }

    /// At the predicate level: `p AND q` holds only where `p` holds, and
    /// `p` holds only where `p OR q` holds.
    #[test]
    fn and_narrows_or_widens(p in predicate(), q in predicate(), ctx in context()) {
        let p_text = p.render();
        let and = P::And(vec![p.clone(), q.clone()]).render();
        let or = P::Or(vec![p, q]).render();
        let holds = |text: &str| Predicate::parse(text).unwrap().evaluate(&ctx) == Ok(true);
        if holds(&and) {
            prop_assert!(holds(&p_text));
        }
        if holds(&p_text) {
            prop_assert!(holds(&or));
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// A DSL string literal for arbitrary text: escapes `\` and `"`; every other
/// character (newlines and control characters included) may appear raw.
fn dsl_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Built tokens: `parse(serialize(cap)) == cap` and the encoding is
    /// stable byte for byte.
    #[test]
    fn built_tokens_round_trip(
        id in identifier(),
        holder in prop::option::of(any::<[u8; 32]>()),
        literals in prop::collection::vec(any::<String>(), 1..4),
    ) {
        let predicates: Vec<String> = literals
            .iter()
            .map(|l| format!("caller == {}", dsl_string(l)))
            .collect();
        let cap = build(&id, holder, &predicates);
        let token = cap.serialize();
        let back = Capability::parse(&token).unwrap();
        prop_assert_eq!(&back, &cap);
        prop_assert_eq!(back.serialize(), token.clone());
        prop_assert_eq!(back.identifier(), id.as_str());
        let texts: Vec<&str> = back.caveats().iter().map(|c| c.predicate()).collect();
        prop_assert_eq!(texts, predicates.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(verifier().verify(&back), Ok(()));
        // The token is valid JSON carrying exactly these strings.
        let json = decode_token(&token);
        prop_assert_eq!(json["identifier"].as_str(), Some(id.as_str()));
        // A string literal with arbitrary content evaluates as equality.
        let p = Predicate::parse(&predicates[0]).unwrap();
        let ctx = Context::builder().now_millis(0).caller(literals[0].as_str()).build();
        prop_assert_eq!(p.evaluate(&ctx), Ok(true));
    }

    /// Decoded tokens with arbitrary identifier and predicate text (which
    /// parsing does not check): the re-encoding is canonical and stable.
    #[test]
    fn arbitrary_tokens_round_trip(
        id in any::<String>(),
        predicates in prop::collection::vec(any::<String>(), 0..4),
        holder in prop::option::of(any::<[u8; 32]>()),
        sig in any::<[u8; 32]>(),
    ) {
        let cap = Capability::parse(&raw_token(&id, &predicates, holder, sig)).unwrap();
        prop_assert_eq!(cap.identifier(), id.as_str());
        prop_assert_eq!(cap.caveats().len(), predicates.len());
        prop_assert_eq!(cap.holder_of_key(), holder.as_ref());
        let token = cap.serialize();
        let back = Capability::parse(&token).unwrap();
        prop_assert_eq!(&back, &cap);
        prop_assert_eq!(back.serialize(), token);
    }
}

// ---------------------------------------------------------------------------
// Parsers never panic
// ---------------------------------------------------------------------------

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "(",
    ")",
    "AND",
    "OR",
    " AND ",
    " OR ",
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "matches",
    "starts_with",
    "\"",
    "\"",
    "\\",
    "\\\"",
    "\\n",
    "\\q",
    "@2099-01-01T00:00:00Z",
    "@",
    "@2030-02-30T00:00:00Z",
    "@9999-12-31T23:59:60.999999999+23:59",
    "0",
    "1",
    "7",
    "42",
    "99999999999999999999999999999999",
    "-",
    ".",
    "_usd",
    "_cents",
    "_ms",
    "_s",
    "_xyz",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "a",
    "arg",
    "arg.",
    "arg.n",
    "arg.n.m",
    "env.",
    "env.k",
    "now",
    "caller",
    "tool",
    "x",
    "é",
    "\u{0}",
    "\u{2028}",
    "😀",
    "NOT",
    "e5",
    "1e5",
    "_",
];

/// Random concatenations of grammar fragments: mostly syntax errors.
fn fragment_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..48).prop_map(|v| v.concat())
}

const IDENTS: &[&str] = &[
    "now",
    "caller",
    "tool",
    "arg.n",
    "arg.m",
    "arg.n.m",
    "arg.f",
    "arg.big",
    "arg.x",
    "arg.arr",
    "env.k",
    "env.missing",
    "a",
    "arg",
    "env.k.j",
    "_x",
    "x1",
];
const OPS: &[&str] = &[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    " matches ",
    " starts_with ",
];
const LITERALS: &[&str] = &[
    "0",
    "3",
    "-7",
    "12.50",
    "1.5",
    "007",
    "-0",
    "5000",
    "50_usd",
    "100_cents",
    "3_ms",
    "2_s",
    "99999999999999999999999999999",
    "\"x\"",
    "\"\"",
    "\"a\\\"b\"",
    "\"\\\\\"",
    "\"é\\n\\t\"",
    "@2099-01-01T00:00:00Z",
    "@1970-01-01T00:00:00Z",
    "@2030-01-01T00:00:00.001+02:00",
    "@2024-02-29T23:59:60Z",
];
const JOINERS: &[&str] = &[
    " AND ", " OR ", "AND ", " AND", " OR(", " AND ( ", " ) OR ", "\tAND\t",
];

/// Mostly well-formed predicates: comparisons over real identifiers,
/// operators and literals, joined by AND/OR, with random parentheses and
/// the occasional stray fragment.
fn grammar_biased() -> impl Strategy<Value = String> {
    let cmp = (
        prop::sample::select(IDENTS),
        prop::sample::select(OPS),
        prop::sample::select(LITERALS),
        prop::sample::select(&[" ", "", "\t", "  "][..]),
    )
        .prop_map(|(i, o, l, w)| format!("{i}{w}{o}{w}{l}"));
    let piece = (
        0usize..3,
        cmp,
        prop::option::weighted(0.1, prop::sample::select(FRAGMENTS)),
        prop::sample::select(JOINERS),
    );
    (prop::collection::vec(piece, 1..6), 0u8..6).prop_map(|(pieces, skew)| {
        let mut s = String::new();
        let mut opens = 0i32;
        for (i, (open, c, noise, join)) in pieces.iter().enumerate() {
            if i > 0 {
                s.push_str(join);
            }
            opens += i32::try_from(*open).unwrap_or(0);
            s.push_str(&"( ".repeat(*open));
            s.push_str(c);
            s.push_str(noise.unwrap_or(""));
        }
        // Usually balanced, sometimes one off either way.
        let off = match skew {
            0 => -1,
            1 => 1,
            _ => 0,
        };
        let close = usize::try_from(opens + off).unwrap_or(0);
        s.push_str(&" )".repeat(close));
        s
    })
}

fn grammarish() -> impl Strategy<Value = String> {
    prop_oneof![fragment_soup(), grammar_biased()]
}

fn probe_contexts() -> Vec<Context> {
    vec![
        Context::builder().build(),
        Context::builder()
            .now_millis(1_893_456_000_000)
            .caller("a")
            .tool("t1")
            .args(json!({"n": 3, "m": "x", "f": 1.5, "big": 1e300, "neg": -7, "arr": [1]}))
            .env("k", "x")
            .build(),
        Context::from_json(
            r#"{"nowMs":0,"caller":"","tool":"","args":{"n":{"m":12.50},"x":99999999999999999999999999999}}"#,
        )
        .unwrap(),
        Context::from_json(r#"{"nowMs":18446744073709551615,"caller":"é","tool":"\u0000","args":[1,2]}"#)
            .unwrap(),
    ]
}

fn parse_and_probe(text: &str, contexts: &[Context]) {
    if let Ok(p) = Predicate::parse(text) {
        assert_eq!(p.as_str(), text);
        for ctx in contexts {
            let _ = p.evaluate(ctx);
        }
        // Whatever parses is accepted as a caveat unless it uses a unit.
        let built = issuer().issue("x").caveat(text).map(|_| ());
        if let Err(e) = built {
            assert_eq!(e.code(), "caveat.unit_literal", "{text:?}: {e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn dsl_parser_never_panics_on_any_string(s in any::<String>()) {
        parse_and_probe(&s, &probe_contexts());
    }

    #[test]
    fn dsl_parser_never_panics_on_grammarish_strings(s in grammarish()) {
        parse_and_probe(&s, &probe_contexts());
    }

    #[test]
    fn dsl_parser_never_panics_on_mutated_valid_predicates(
        p in predicate_text(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let mut s = p;
        for e in &edits {
            s = e.apply(&s);
        }
        parse_and_probe(&s, &probe_contexts());
    }

    #[test]
    fn context_from_json_never_panics(s in any::<String>()) {
        let _ = Context::from_json(&s);
    }

    #[test]
    fn context_from_json_never_panics_on_jsonish_strings(
        parts in prop::collection::vec(
            prop::sample::select(&[
                "{", "}", "[", "]", ",", ":", "\"nowMs\"", "\"caller\"", "\"tool\"", "\"args\"",
                "\"env\"", "\"k\"", "\"x\"", "1", "-0", "1.5", "1e400", "18446744073709551616",
                "null", "true", "\"\\ud800\"", "\"\\u00e9\"", " ", "\n", "\"", "\\",
            ][..]),
            0..40,
        ),
    ) {
        let s = parts.concat();
        if let Ok(ctx) = Context::from_json(&s) {
            let _ = ctx.args_hash();
        }
    }

    #[test]
    fn auditor_verify_never_panics(s in any::<String>()) {
        prop_assert!(auditor().verify(&s).is_err());
    }
}

// ---------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Allowed),
        any::<String>().prop_map(|reason| Outcome::Denied { reason }),
    ]
}

/// One signed receipt with arbitrary content.
fn receipt_json(
    id: &str,
    predicates: &[String],
    caller: &str,
    tool: &str,
    n: i64,
    now: u64,
    outcome: Outcome,
) -> String {
    // Caveats with arbitrary text come from a decoded token.
    let cap = Capability::parse(&raw_token(id, predicates, None, [0; 32])).unwrap();
    let ctx = Context::builder()
        .now_millis(now)
        .caller(caller)
        .tool(tool)
        .args(json!({ "n": n }))
        .build();
    auditor()
        .sign(id, cap.caveats().to_vec(), &ctx, outcome)
        .to_json()
}

/// Changes one byte; returns the receipt only if the result is still UTF-8.
fn mutate(json: &str, pos: usize, byte: u8) -> Option<String> {
    let mut bytes = json.as_bytes().to_vec();
    let i = pos % bytes.len();
    if bytes[i] == byte {
        return None;
    }
    bytes[i] = byte;
    String::from_utf8(bytes).ok()
}

fn check_mutation(original: &str, mutated: &str) {
    let a = auditor();
    let expected = a.verify(original).expect("original verifies");
    if let Ok(r) = a.verify(mutated) {
        assert_eq!(
            r, expected,
            "a one-byte change verified with different content:\n{original}\n{mutated}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A one-byte change to a signed receipt either fails verification or
    /// leaves it semantically identical.
    #[test]
    fn receipt_byte_changes_are_detected(
        id in identifier(),
        predicates in prop::collection::vec(any::<String>(), 0..3),
        caller in identifier(),
        tool in "[a-z.]{0,12}",
        n in any::<i64>(),
        now in any::<u64>(),
        outcome in outcome(),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let json = receipt_json(&id, &predicates, &caller, &tool, n, now, outcome);
        let parsed = auditor().verify(&json).unwrap();
        prop_assert_eq!(parsed.to_json(), json.clone());
        if let Some(mutated) = mutate(&json, pos, byte) {
            check_mutation(&json, &mutated);
        }
    }
}

/// Exhaustive version for two fixed receipts: every position, every byte.
#[test]
fn receipt_every_single_byte_change_is_detected() {
    let receipts = [
        receipt_json(
            "agent-42",
            &[
                r#"tool == "checkout.purchase""#.to_owned(),
                "arg.n <= 5000".to_owned(),
            ],
            "agent:planner",
            "checkout.purchase",
            1299,
            1_700_000_000_000,
            Outcome::Allowed,
        ),
        receipt_json(
            "id-é\u{1}",
            &["a == \"\\\"x\"".to_owned()],
            "c",
            "t",
            -3,
            0,
            Outcome::Denied {
                reason: "caveat failed: é".to_owned(),
            },
        ),
    ];
    let mut survivors = 0usize;
    for json in &receipts {
        for pos in 0..json.len() {
            for byte in 0..=255u8 {
                if let Some(mutated) = mutate(json, pos, byte) {
                    check_mutation(json, &mutated);
                    if auditor().verify(&mutated).is_ok() {
                        survivors += 1;
                    }
                }
            }
        }
    }
    // Only hex digits changing case survive: 64 digits, a-f only.
    assert!(survivors <= 2 * 64, "{survivors}");
}
