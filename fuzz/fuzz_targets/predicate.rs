//! Caveat parsing: `Predicate::parse` never panics, whatever the text and
//! however deep its nesting; what it accepts keeps its text, parses again
//! to the same predicate, and evaluates (never panicking) against a context
//! with every kind of fact.
//!
//! Input: the predicate text. A first byte of 0xFF instead wraps the rest
//! in as many parentheses as the next two bytes say (up to 65 535), to
//! reach and exceed the nesting limit.
#![no_main]

use std::sync::LazyLock;

use capnagent::{Context, Limits, Predicate};
use capnagent_fuzz::CONTEXT_JSON;
use libfuzzer_sys::fuzz_target;

static CONTEXTS: LazyLock<[Context; 2]> = LazyLock::new(|| {
    [
        Context::from_json(CONTEXT_JSON).expect("context"),
        Context::from_json(r#"{"nowMs":0,"caller":"","tool":"","args":null}"#).expect("context"),
    ]
});

/// Small limits, so that the fuzzer reaches every limit check.
const SMALL: Limits = Limits {
    max_predicate_len: 256,
    max_nesting_depth: 8,
    max_terms: 8,
    ..Limits::DEFAULT
};

fuzz_target!(|data: &[u8]| {
    let text = match data {
        [0xff, hi, lo, rest @ ..] => {
            let depth = usize::from(u16::from_be_bytes([*hi, *lo]));
            let Ok(inner) = std::str::from_utf8(rest) else {
                return;
            };
            format!("{}{inner}{}", "(".repeat(depth), ")".repeat(depth))
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
    };
    check(&text, &Limits::DEFAULT);
    check(&text, &SMALL);
});

fn check(text: &str, limits: &Limits) {
    let Ok(predicate) = Predicate::parse_with_limits(text, limits) else {
        return;
    };
    assert_eq!(predicate.as_str(), text);
    let again = Predicate::parse_with_limits(predicate.as_str(), limits)
        .expect("an accepted predicate parses again");
    assert!(again == predicate, "parsing is not deterministic: {text:?}");
    for ctx in CONTEXTS.iter() {
        let _ = predicate.evaluate(ctx);
    }
}
