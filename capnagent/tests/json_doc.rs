//! Arguments read from JSON text (the tape the tower layer reads request
//! bodies into) must mean exactly what `JsonValue::parse` means: the same
//! accept/reject decisions and errors, the same value, and the canonical
//! text and hash of a reference writer (a naive recursive one, below),
//! whether they were read from text or converted from a tree.

#![allow(clippy::unwrap_used)]

use capnagent::{Args, JsonLimits, JsonValue};
use proptest::prelude::*;

fn limits() -> JsonLimits {
    JsonLimits::default()
}

/// The canonical form written the obvious way, to check the crate's writer
/// against: keys sorted by bytes, the last of repeated keys kept, strings
/// escaped like `serde_json`, the integer `-0` written `0`.
fn naive_canonical(value: &JsonValue) -> String {
    match value {
        JsonValue::Null => "null".to_owned(),
        JsonValue::Bool(b) => b.to_string(),
        JsonValue::Number(n) if n.as_str() == "-0" => "0".to_owned(),
        JsonValue::Number(n) => n.as_str().to_owned(),
        JsonValue::String(s) => quoted(s),
        JsonValue::Array(items) => {
            let items: Vec<String> = items.iter().map(naive_canonical).collect();
            format!("[{}]", items.join(","))
        }
        JsonValue::Object(obj) => {
            let mut members: std::collections::BTreeMap<&str, &JsonValue> = Default::default();
            for (k, v) in obj.iter() {
                members.insert(k, v);
            }
            let members: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}:{}", quoted(k), naive_canonical(v)))
                .collect();
            format!("{{{}}}", members.join(","))
        }
    }
}

fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn kept(text: &[u8]) -> Result<Args, capnagent::JsonError> {
    Args::from_json_bytes(bytes::Bytes::copy_from_slice(text), &limits())
}

/// Checks one input every way.
fn same_meaning(text: &str) {
    let value = JsonValue::parse(text, &limits());
    let args = Args::from_json(text, &limits());
    match (&value, &args) {
        (Ok(value), Ok(args)) => {
            assert_eq!(args.value(), value, "{text:?}");
            let expected = naive_canonical(value);
            assert_eq!(args.canonical_string(), expected, "{text:?}");
            assert_eq!(
                args.sha256_canonical_hex(),
                sha256_hex(&expected),
                "{text:?}"
            );
            assert_eq!(value.canonical_string(), expected, "{text:?}");
            assert_eq!(
                value.sha256_canonical_hex(),
                sha256_hex(&expected),
                "{text:?}"
            );
            let from_tree = Args::from(value.clone());
            assert_eq!(&from_tree, args, "{text:?}");
            assert_eq!(from_tree.canonical_string(), expected, "{text:?}");
            // Kept without a copy: the same arguments.
            let kept = kept(text.as_bytes()).unwrap();
            assert_eq!(&kept, args);
            assert_eq!(kept.sha256_canonical_hex(), args.sha256_canonical_hex());
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "{text:?}");
            assert_eq!(kept(text.as_bytes()).err().as_ref(), Some(a), "{text:?}");
        }
        _ => panic!("{text:?}: {value:?} vs {args:?}"),
    }
}

#[test]
fn fixed_cases() {
    for text in [
        "null",
        "true",
        " false ",
        "-0",
        "[-0, 0, -0.0, 1e400]",
        r#""plain""#,
        r#""a\"\\\/\b\f\n\r\tz\u0041\u00e9\u20AC\ud834\udd1e""#,
        r#"{"b":1,"a":2,"b":3}"#,
        r#"{"\u0062":1,"a":2,"b":3,"\u0061":4}"#,
        r#"{"z":{"y":1,"x":[1,{"b":1,"a":2}]},"a":null,"é":"\u00e9","e":"é"}"#,
        r#"{"a":{"a":{"a":[[],{},[{}]]}},"":""}"#,
        "[1,[2,[3,[4,[5]]]],{\"k\":[6]}]",
        "\u{feff}null",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "\"\\ud800\"",
        "\"a\u{1}\"",
        "[1 2]",
        "",
        // Strings whose end, escape or control character falls on either
        // side of the 8- and 16-byte marks, and strings that end the input.
        "[\"0123456\",\"01234567\",\"0123456789abcde\",\"0123456789abcdef\"]",
        "[\"012345\\n\",\"0123456\\n\",\"01234567\\u0041\",\"0123456789abcd\\t\"]",
        "[\"0123456789abcde\u{1}\"]",
        "[\"0123456\u{1f}\"]",
        "\"01234\"",
        "\"0123456789abcdef0\"",
        "{\"k\":\"v\"}",
        "\"0123",
        // Past the first 16 bytes of a string the scan changes method.
        "[\"0123456789abcdefghij\u{1}k\"]",
        "[\"0123456789abcdefghij\\n\\u00e9 and more text\", \"0123456789abcdefg",
        "{\"0123456789abcdefghij\":\"0123456789abcdefghijklmnopqrstuvwxyz0123456789\\\"\"}",
    ] {
        same_meaning(text);
    }
    let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
    same_meaning(&deep);
    let too_deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
    same_meaning(&too_deep);
}

#[test]
fn bytes_must_be_utf8() {
    let a = JsonValue::parse_bytes(b"[\"\xff\"]", &limits()).unwrap_err();
    let b = kept(b"[\"\xff\"]").unwrap_err();
    assert_eq!(a, b);
    let tight = JsonLimits {
        max_len: 3,
        ..limits()
    };
    assert!(Args::from_json("[1,2]", &tight).is_err());
}

#[test]
fn equality_ignores_whitespace_and_escapes() {
    let a = Args::from_json(r#"{"a": [1, "é"]}"#, &limits()).unwrap();
    let b = Args::from_json("{\"\\u0061\":[1,\"\\u00e9\"]}", &limits()).unwrap();
    let c = Args::from_json(r#"{"a": [1.0, "é"]}"#, &limits()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        // Escapes the writer never produces.
        prop::sample::select(vec![
            r#""\u0041\/\u00E9""#,
            r#""\ud83d\ude00""#,
            r#""tab\there""#,
            r#""""#,
        ])
        .prop_map(str::to_owned),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "aa", "é", "", "B"]).prop_map(|k| format!("\"{k}\"")),
        // Keys that agree on their first eight bytes (or are exactly eight
        // long), often repeated: the canonical writer orders keys by an
        // 8-byte prefix first.
        prop::sample::select(vec![
            "prefix__",
            "prefix__a",
            "prefix__b",
            "prefix__ab",
            "prefix_"
        ])
        .prop_map(|k| format!("\"{k}\"")),
        prop::sample::select(vec![r#""\u0061""#, r#""\u00e9""#, r#""a\"""#])
            .prop_map(str::to_owned),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn document() -> impl Strategy<Value = String> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(" , "))),
            prop::collection::vec((key(), inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{ {} }}", members.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn documents_mean_the_same(text in document()) {
        same_meaning(&text);
    }

    /// Objects on both sides of the size where member sorting changes
    /// method (insertion up to 16 members, the standard sort above).
    #[test]
    fn wide_objects_mean_the_same(members in prop::collection::vec((key(), leaf()), 0..40)) {
        let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
        same_meaning(&format!("{{{}}}", members.join(",")));
    }

    #[test]
    fn any_text_means_the_same(text in any::<String>()) {
        same_meaning(&text);
    }

    #[test]
    fn damaged_documents_mean_the_same(text in document(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = text.into_bytes();
        if !bytes.is_empty() {
            let i = cut.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(text) = String::from_utf8(bytes.clone()) {
            same_meaning(&text);
        }
        let a = JsonValue::parse_bytes(&bytes, &limits());
        let b = kept(&bytes);
        prop_assert_eq!(a.map(|_| ()), b.map(|_| ()));
    }
}

/// A context whose args were read from the text and one whose args were
/// converted from the tree decide every caveat the same way, with the same
/// error, and hash alike.
#[test]
fn contexts_with_either_form_decide_alike() {
    use capnagent::{Context, Predicate};
    let bodies = [
        r#"{"amount_cents":1299,"merchant":"shop.example","nested":{"a":{"b":"x"}},"f":1.5,"big":1e400,"list":[1],"n":null,"t":true}"#,
        r#"{"amount_cents":"1299","merch\u0061nt":"sh\u006fp.example","nested":{"a":{"b":1}},"amount_cents":7000}"#,
        r#"{"amount_cents":-0,"merchant":"","nested":[],"f":2}"#,
        "[1,2]",
        "null",
    ];
    let predicates = [
        "arg.amount_cents <= 5000",
        "arg.amount_cents == 1299",
        r#"arg.merchant == "shop.example""#,
        r#"arg.merchant starts_with "shop""#,
        r#"arg.merchant matches "example""#,
        r#"arg.nested.a.b == "x""#,
        "arg.nested.a.b == 1",
        "arg.f < 2",
        "arg.f < 2.0",
        "arg.big > 1",
        "arg.list == 1",
        "arg.n == 1",
        "arg.t == 1",
        "arg.missing == 1",
        r#"arg.amount_cents <= 5000 AND arg.merchant == "shop.example""#,
    ];
    for body in bodies {
        let doc = Args::from_json(body, &limits()).unwrap();
        let value = JsonValue::parse(body, &limits()).unwrap();
        let with_doc = Context::builder().now_millis(1).args_json(doc).build();
        let with_value = Context::builder().now_millis(1).args_json(value).build();
        assert_eq!(with_doc.args_hash(), with_value.args_hash(), "{body}");
        assert_eq!(with_doc.args(), with_value.args(), "{body}");
        assert_eq!(with_doc, with_value, "{body}");
        for text in predicates {
            let predicate = Predicate::parse(text).unwrap();
            let a = predicate.evaluate(&with_doc).map_err(|e| e.to_string());
            let b = predicate.evaluate(&with_value).map_err(|e| e.to_string());
            assert_eq!(a, b, "{text} on {body}");
        }
    }
}

/// A large object in reverse key order (every key repeated, all of them
/// sharing their first eight bytes) sorts to the same canonical text, in
/// O(n log n): the insertion sort this replaced took 1.5 s on a
/// 40 000-member object in reverse order, in a release build.
#[test]
fn a_large_object_in_reverse_order_is_canonical() {
    let members: Vec<String> = (0..40_000u32)
        .rev()
        .map(|i| format!("\"key-{:08}\":{i}", i / 2))
        .collect();
    let text = format!("{{{}}}", members.join(","));
    let value = JsonValue::parse(&text, &limits()).unwrap();
    let doc = Args::from_json(&text, &limits()).unwrap();
    assert_eq!(doc.canonical_string(), naive_canonical(&value));
    assert_eq!(
        doc.sha256_canonical_hex(),
        Args::from(value).sha256_canonical_hex()
    );
    // Each repeated key keeps its last value: the even one of each pair.
    let canonical = doc.canonical_string();
    assert!(
        canonical.starts_with(r#"{"key-00000000":0,"key-00000001":2,"#),
        "{}",
        &canonical[..60]
    );
}
