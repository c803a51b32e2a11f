//! Entry points for the fuzz targets in the repository's `fuzz/` folder.
//! Not part of the API: hidden from the docs, and free to change with the
//! layer's internals.

use bytes::Bytes;
use capnagent::json::{JsonLimits, JsonValue};

use crate::{Descriptors, args, frame};

/// What the layer makes of a buffered unary request body for the method at
/// `path`: the one frame's message decoded into args (`null` for a method
/// `descriptors` does not know), or the reason the call is refused.
pub fn request_args(
    descriptors: &Descriptors,
    path: &str,
    body: &Bytes,
    limits: &JsonLimits,
) -> Result<JsonValue, String> {
    let message = frame::single_message(body).map_err(|e| e.to_string())?;
    match descriptors.method(path) {
        Some(method) => {
            args::decode_args(&method.input(), &message, limits).map_err(|e| e.to_string())
        }
        None => Ok(JsonValue::Null),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::args::tests::{descriptor_set, payment};

    #[test]
    fn request_args_frames_then_decodes() {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        let limits = JsonLimits::default();
        let body = frame::encode(&payment("acct-1", 1200, 7)).unwrap();
        let args = request_args(&descriptors, "/test.v1.Pay/Send", &body, &limits).unwrap();
        assert_eq!(
            capnagent::json::canonical_string(&args),
            r#"{"amount":1200,"big":7,"to":"acct-1"}"#
        );
        assert_eq!(
            request_args(&descriptors, "/no.Such/Method", &body, &limits),
            Ok(JsonValue::Null)
        );
        let short = Bytes::from_static(b"\x00\x00");
        assert!(request_args(&descriptors, "/test.v1.Pay/Send", &short, &limits).is_err());
        let garbage = frame::encode(b"\xff\xff\xff").unwrap();
        assert!(request_args(&descriptors, "/test.v1.Pay/Send", &garbage, &limits).is_err());
    }
}
