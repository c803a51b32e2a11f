//! Entry points for the fuzz targets in the repository's `fuzz/` folder.
//! Not part of the API: hidden from the docs, and free to change with the
//! layer's internals.

use bytes::Bytes;
use capnagent::{JsonLimits, JsonValue};

use crate::frame::{self, Encoding};
use crate::{Descriptors, grpc};

/// What the layer makes of a buffered unary request body for the method at
/// `path`: the one frame's message decoded into args (`null` for a method
/// `descriptors` does not know), or the reason the call is refused.
pub fn request_args(
    descriptors: &Descriptors,
    path: &str,
    body: &Bytes,
    limits: &JsonLimits,
) -> Result<JsonValue, String> {
    match descriptors.method(path) {
        Some(method) => {
            let frame = (Encoding::Identity, limits.max_len);
            grpc::decode_body(body, frame, &method.input(), limits).map_err(|(_, reason)| reason)
        }
        None => frame::single_message(body, Encoding::Identity, limits.max_len)
            .map(|_| JsonValue::Null)
            .map_err(|e| e.to_string()),
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
            args.canonical_string(),
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

    /// `test.v1.Tags` with `Set(Tagged) returns (Tagged)`; `Tagged {
    /// map<string, string> tags = 1; }`.
    fn map_descriptor_set() -> Vec<u8> {
        use prost::Message as _;
        use prost_reflect::prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
            MessageOptions, MethodDescriptorProto, ServiceDescriptorProto,
            field_descriptor_proto::{Label, Type},
        };
        let field = |name: &str, number, label: Label, r#type: Type, type_name: Option<&str>| {
            FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(label as i32),
                r#type: Some(r#type as i32),
                type_name: type_name.map(Into::into),
                json_name: Some(name.into()),
                ..Default::default()
            }
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("tags.proto".into()),
                package: Some("test.v1".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("Tagged".into()),
                    field: vec![field(
                        "tags",
                        1,
                        Label::Repeated,
                        Type::Message,
                        Some(".test.v1.Tagged.TagsEntry"),
                    )],
                    nested_type: vec![DescriptorProto {
                        name: Some("TagsEntry".into()),
                        field: vec![
                            field("key", 1, Label::Optional, Type::String, None),
                            field("value", 2, Label::Optional, Type::String, None),
                        ],
                        options: Some(MessageOptions {
                            map_entry: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                service: vec![ServiceDescriptorProto {
                    name: Some("Tags".into()),
                    method: vec![MethodDescriptorProto {
                        name: Some("Set".into()),
                        input_type: Some(".test.v1.Tagged".into()),
                        output_type: Some(".test.v1.Tagged".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// Found by the `grpc` fuzz target: map fields come out of
    /// prost-reflect in hash-map order, which differs between two decodes
    /// of the same bytes. What is signed and hashed (the canonical form)
    /// and what caveats read (lookups) must not depend on it, on the
    /// server or on the client.
    #[test]
    fn map_fields_have_one_canonical_form() {
        let descriptors = Descriptors::decode(&map_descriptor_set()).unwrap();
        let limits = JsonLimits::default();
        let mut message = Vec::new();
        for i in 0..16u8 {
            let key = format!("k{i:02}");
            let mut entry = vec![0x0a, 3];
            entry.extend_from_slice(key.as_bytes());
            entry.extend_from_slice(&[0x12, 1, b'a' + i]);
            message.extend_from_slice(&[0x0a, u8::try_from(entry.len()).unwrap()]);
            message.extend_from_slice(&entry);
        }
        let body = frame::encode(&message).unwrap();
        let expected: String = (0..16u8)
            .map(|i| format!("\"k{i:02}\":\"{}\"", char::from(b'a' + i)))
            .collect::<Vec<_>>()
            .join(",");
        let expected = format!("{{\"tags\":{{{expected}}}}}");
        let input = descriptors.method("/test.v1.Tags/Set").unwrap().input();
        for _ in 0..8 {
            let args = request_args(&descriptors, "/test.v1.Tags/Set", &body, &limits).unwrap();
            assert_eq!(args.canonical_string(), expected);
            let tags = args.as_object().unwrap().get("tags").unwrap();
            assert_eq!(
                tags.as_object().unwrap().get("k07").unwrap().as_str(),
                Some("h")
            );
            let decoded =
                prost_reflect::DynamicMessage::decode(input.clone(), &message[..]).unwrap();
            let client = crate::message_to_args(&decoded, &input).unwrap();
            assert_eq!(client.canonical_string(), expected);
        }
    }
}
