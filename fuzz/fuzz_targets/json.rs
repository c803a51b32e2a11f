//! The JSON reader (`capnagent::JsonValue::parse_bytes`) against `serde_json`: on any bytes,
//! both accept or both reject, and accepted documents hold the same values.
//!
//! Where the two differ by design, the comparison follows our documented
//! semantics: numbers keep their text (so a number `serde_json` cannot
//! hold in an `f64`, such as `1e400`, is accepted by us and refused by
//! `serde_json` built without `arbitrary_precision`: no decision is
//! compared for such input), and duplicate keys are kept, with the last
//! one winning on lookup, as in `serde_json`. Both refuse nesting deeper
//! than 127.
//!
//! The tree reader (`JsonValue::parse_bytes`) and the flat one
//! (`Args::from_json_bytes`) must also agree with each other, errors
//! included, a tree must write the canonical form its text does, and the
//! canonical form must be a fixed point.
#![no_main]

use capnagent::{Args, JsonLimits, JsonValue};
use capnagent_fuzz::{out_of_range, same_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = JsonLimits::default();
    let ours = JsonValue::parse_bytes(data, &limits);
    let doc = Args::from_json_bytes(bytes::Bytes::copy_from_slice(data), &limits);
    match (&ours, &doc) {
        (Ok(value), Ok(doc)) => {
            assert_eq!(doc.value(), value, "Args and parse disagree");
            let canonical = value.canonical_string();
            assert_eq!(doc.canonical_string(), canonical);
            assert_eq!(
                doc.sha256_canonical_hex(),
                value.sha256_canonical_hex()
            );
            let reparsed = JsonValue::parse(&canonical, &limits).expect("canonical JSON parses");
            assert_eq!(reparsed.canonical_string(), canonical);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "Args and parse fail differently"),
        _ => panic!(
            "Args and parse disagree: {ours:?} vs {:?}",
            doc.as_ref().err()
        ),
    }

    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert!(
            same_value(a, b),
            "values differ: ours {a:?}, serde_json {b}"
        ),
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) if out_of_range(e) => {}
        _ => panic!(
            "accept/reject differs on {:?}: ours {:?}, serde_json {:?}",
            String::from_utf8_lossy(data),
            ours.as_ref().map(|_| ()),
            theirs.as_ref().map(|_| ())
        ),
    }
});
