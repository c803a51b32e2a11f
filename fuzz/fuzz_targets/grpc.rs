//! gRPC frame and args decoding, as the tonic layer does it for a unary
//! request body (`capnagent_tonic::fuzzing::request_args`: one frame, then
//! the message decoded with the method's input type and printed as args):
//! never panics; accepted args are an object (or `null` for an unknown
//! method); and the client side of the encoding, `message_to_args`, gives
//! the same args (in canonical form: map fields have no stable order) for
//! the decoded message, so a holder-of-key proof signed by a client
//! matches what the server judges (up to the sign of a float zero, see
//! `unsigned_zeros`).
//!
//! Descriptors: the example service (`examples/proto/tools.proto`) and
//! `fuzz/proto/fuzz.proto`, compiled with protox at startup.
//!
//! Input: a byte choosing the method (and whether the target frames the
//! rest itself, so that most inputs reach the message decoder), then the
//! body or the message.
#![no_main]

use std::sync::LazyLock;

use bytes::Bytes;
use capnagent::{JsonLimits, JsonValue};
use capnagent_tonic::Descriptors;
use capnagent_tonic::fuzzing::request_args;
use capnagent_tonic::message_to_args;
use capnagent_tonic::prost_reflect::DynamicMessage;
use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "/tools.v1.ToolService/Purchase",
    "/tools.v1.ToolService/Wire",
    "/tools.v1.ToolService/UploadLogs",
    "/fuzz.v1.Fuzz/Call",
    "/fuzz.v1.Fuzz/Nothing",
    "/fuzz.v1.Fuzz/Meta",
    "/no.such.Service/Method",
];

static DESCRIPTORS: LazyLock<Descriptors> = LazyLock::new(|| {
    let root = env!("CARGO_MANIFEST_DIR");
    let set = |file: &str, include: String| {
        let fds = protox::compile([file], [include]).expect("the .proto compiles");
        prost::Message::encode_to_vec(&fds)
    };
    Descriptors::decode(&set("tools.proto", format!("{root}/../examples/proto")))
        .and_then(|d| d.with(&set("fuzz.proto", format!("{root}/proto"))))
        .expect("the descriptor sets decode")
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(selector & 0x7f) % PATHS.len()];
    let body = if selector & 0x80 == 0 {
        let mut framed = Vec::with_capacity(rest.len() + 5);
        framed.push(0);
        framed.extend_from_slice(&u32::try_from(rest.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(rest);
        Bytes::from(framed)
    } else {
        Bytes::copy_from_slice(rest)
    };
    let descriptors = &*DESCRIPTORS;
    let limits = JsonLimits {
        max_depth: capnagent::Limits::DEFAULT.max_json_depth,
        max_len: usize::MAX,
    };
    let Ok(args) = request_args(descriptors, path, &body, &limits) else {
        return;
    };
    let Some(method) = descriptors.method(path) else {
        assert_eq!(args, JsonValue::Null);
        return;
    };
    assert!(
        matches!(args, JsonValue::Object(_)),
        "args are not an object"
    );
    let input = method.input();
    let message = DynamicMessage::decode(input.clone(), body.slice(5..))
        .expect("a message the layer decoded decodes");
    let client = message_to_args(&message, &input).expect("the client encodes what the server did");
    // Map fields come out in the order of prost-reflect's hash map, which
    // differs from one decode to the next; what a caveat reads (lookups)
    // and what a proof and a receipt sign (the canonical form, keys
    // sorted) do not depend on it.
    assert_eq!(
        unsigned_zeros(&client.canonical_string()),
        unsigned_zeros(&args.canonical_string()),
        "client and server args differ"
    );
});

/// `text` with every `-0.0` number written `0.0`. A proto3 float or double
/// field without presence that holds -0.0 on the wire decodes as -0.0
/// (the handler sees the same), but encoding skips it as a zero, so the
/// re-encoded message reads 0.0: the only value that does not survive
/// decode then encode. (`message_to_args` encodes the very message the
/// client sends, so client and server still agree on every real call.)
fn unsigned_zeros(text: &str) -> String {
    let mut out = text.to_owned();
    loop {
        let mut next = out.clone();
        for end in [",", "]", "}"] {
            for start in [":", "[", ","] {
                next = next.replace(&format!("{start}-0.0{end}"), &format!("{start}0.0{end}"));
            }
        }
        if next == out {
            return out;
        }
        out = next;
    }
}
