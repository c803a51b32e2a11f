//! `Context::from_json` against a serde model of the context (the
//! reference's serde struct: `nowMs` an optional `u64`, `caller` and
//! `tool` strings, `args` any value, `env` an optional map of strings,
//! unknown fields ignored, a repeated known field refused), on a document
//! that `serde_json` reads as a whole. Our deliberate deviation: the
//! positional array form is refused (README, deviation 7). As in the JSON
//! target, no decision is compared where `serde_json` refuses a number
//! only because it does not fit an `f64`.
//!
//! Accepted contexts must carry the model's facts, and their `args_hash`
//! must be the hash of the canonical args.
#![no_main]

use std::collections::BTreeMap;

use capnagent::{Context, Limits};
use capnagent_fuzz::{out_of_range, same_value};
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Model {
    #[serde(rename = "nowMs")]
    now_ms: Option<u64>,
    caller: String,
    tool: String,
    args: serde_json::Value,
    env: Option<BTreeMap<String, String>>,
}

const SMALL: Limits = Limits {
    max_context_len: 64,
    max_json_depth: 3,
    ..Limits::DEFAULT
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Context::from_json_with_limits(text, &SMALL);
    let ours = Context::from_json(text);

    let whole = serde_json::from_str::<serde_json::Value>(text);
    let model = serde_json::from_str::<Model>(text);
    let skip =
        matches!(&whole, Err(e) if out_of_range(e)) || matches!(&model, Err(e) if out_of_range(e));
    let array = matches!(&whole, Ok(serde_json::Value::Array(_)));
    let accepted = whole.is_ok() && model.is_ok() && !array;
    if !skip {
        assert_eq!(
            ours.is_ok(),
            accepted,
            "accept/reject differs on {text:?}: ours {:?}, model {:?}",
            ours.as_ref().err(),
            model.as_ref().err().map(ToString::to_string)
        );
    }
    let (Ok(ctx), Ok(model)) = (ours, model) else {
        return;
    };
    assert_eq!(ctx.caller(), model.caller);
    assert_eq!(ctx.tool(), model.tool);
    if let Some(ms) = model.now_ms {
        assert_eq!(ctx.now().unix_millis(), ms);
    }
    assert_eq!(ctx.env(), &model.env.unwrap_or_default());
    assert!(
        same_value(ctx.args(), &model.args),
        "args differ on {text:?}"
    );
    assert_eq!(ctx.args_hash(), ctx.args().sha256_canonical_hex());
});
