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
