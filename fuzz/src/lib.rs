//! Helpers shared by the fuzz targets: the keys of the recorded test
//! vectors (so that seeded tokens and receipts verify), a context to judge
//! tokens against, and the comparison of our JSON values with `serde_json`'s.

use capnagent::{JsonNumber, JsonValue};

/// The root key of `capnagent/tests/vectors/vectors.jsonl`: seeded tokens
/// verify under it and reach their caveats.
pub const ROOT_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];

/// The audit key of the test vectors: seeded receipts verify under it.
pub const AUDIT_KEY: [u8; 32] = [
    0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0x73,
    0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0x82, 0x83,
];

/// A context with every kind of fact a caveat can read.
pub const CONTEXT_JSON: &str = r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount_cents":1299,"price":12.99,"big":123456789012345678901234567890,"path":"/srv/a.txt","flag":true,"none":null,"items":[1,"two",{"three":3}],"nested":{"a":{"b":{"c":"deep"}}},"":"empty"},"env":{"region":"eu","tier":"gold"}}"#;

/// Whether `serde_json` refused `error` only because a number does not fit
/// an `f64`: our reader keeps number text and accepts such numbers (the
/// grammar allows them; `serde_json` with `arbitrary_precision` does too).
pub fn out_of_range(error: &serde_json::Error) -> bool {
    error.to_string().starts_with("number out of range")
}

/// Whether our value means what `serde_json`'s does: the same structure,
/// the same strings, objects with the same keys where the last duplicate
/// wins (as `serde_json` keeps it), and numbers equal as `serde_json`
/// reads them (see [`same_number`]).
pub fn same_value(ours: &JsonValue, theirs: &serde_json::Value) -> bool {
    // Explicit stack: values may be nested 127 deep.
    let mut stack = vec![(ours, theirs)];
    while let Some((a, b)) = stack.pop() {
        match (a, b) {
            (JsonValue::Null, serde_json::Value::Null) => {}
            (JsonValue::Bool(x), serde_json::Value::Bool(y)) if x == y => {}
            (JsonValue::Number(x), serde_json::Value::Number(y)) if same_number(x, y) => {}
            (JsonValue::String(x), serde_json::Value::String(y)) if x == y => {}
            (JsonValue::Array(xs), serde_json::Value::Array(ys)) if xs.len() == ys.len() => {
                stack.extend(xs.iter().zip(ys));
            }
            (JsonValue::Object(xs), serde_json::Value::Object(ys)) => {
                let mut keys: Vec<&str> = xs.iter().map(|(k, _)| k).collect();
                keys.sort_unstable();
                keys.dedup();
                if keys.len() != ys.len() {
                    return false;
                }
                for key in keys {
                    match (xs.get(key), ys.get(key)) {
                        (Some(x), Some(y)) => stack.push((x, y)),
                        _ => return false,
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

/// Whether our number text is the number `serde_json` read: integers that
/// fit `u64` or `i64` exactly; anything else (fractions, exponents,
/// integers beyond 64 bits, and `-0`) as an `f64`, allowing for
/// `serde_json`'s parser, which without `float_roundtrip` may be one unit
/// in the last place off the correctly rounded value (for subnormals, any
/// two subnormals pass).
pub fn same_number(ours: &JsonNumber, theirs: &serde_json::Number) -> bool {
    let text = ours.as_str();
    let integer = ours.is_integer_syntax();
    if let Some(u) = theirs.as_u64() {
        return integer && text.parse::<u64>() == Ok(u);
    }
    if let Some(i) = theirs.as_i64() {
        return integer && text.parse::<i64>() == Ok(i);
    }
    let Some(f) = theirs.as_f64() else {
        return false;
    };
    if integer && text != "-0" && (text.parse::<u64>().is_ok() || text.parse::<i64>().is_ok()) {
        // serde_json keeps these as integers.
        return false;
    }
    let Ok(g) = text.parse::<f64>() else {
        return false;
    };
    let larger = f.abs().max(g.abs());
    // Below f64::MIN_POSITIVE (subnormals) one ulp is no longer relative.
    f == g || (f - g).abs() <= larger * 4.0 * f64::EPSILON || larger < f64::MIN_POSITIVE
}
