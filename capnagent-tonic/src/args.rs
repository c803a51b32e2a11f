//! The `args` fact of a gRPC call: [`Descriptors`] finds a method's input
//! type by its path, and one encoding turns a protobuf message into the
//! JSON the caveats see, on the server ([`Descriptors`] in the layer) and
//! on the client ([`message_to_args`], to sign a holder-of-key proof over
//! exactly the same args).
//!
//! ## The encoding
//!
//! The proto3 JSON mapping (as `prost-reflect` prints it), with three
//! deliberate choices:
//!
//! - **64-bit integers are JSON numbers**, not strings as strict proto3
//!   JSON has them, so that `arg.amount <= 5000` works on an `int64`
//!   field. Number text is kept exactly (no floating point).
//! - **Fields keep their `.proto` names** (`merchant_id`, not
//!   `merchantId`), so caveats use the names in the `.proto` file.
//! - **Fields at their default value are present** (`0`, `""`, `false`,
//!   `[]`, `{}`), so `arg.amount <= 5000` sees `0` for an amount of zero
//!   instead of a missing identifier. (Either way would fail closed: a
//!   missing identifier denies.)
//!
//! Enums are their value names, `bytes` are base64, well-known types use
//! their proto3 JSON forms, and unknown fields are left out (the generated
//! handler ignores them too).
//!
//! The JSON text is bounded ([`DEFAULT_MAX_ARGS_JSON`], 8 MiB, twice the
//! layer's default message limit: room for `bytes` fields, whose base64 is
//! 4/3 of their size); see the crate docs' Args section.

use std::collections::HashMap;
use std::fmt;
use std::io;

use capnagent::Limits;
use capnagent::{JsonLimits, JsonValue};
use prost_reflect::{
    DescriptorError, DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};

/// Default bound on the JSON text of one message's args: 8 MiB (see the
/// [crate docs](crate#args)); set it with
/// [`Grpc::max_args_json`](crate::Grpc::max_args_json).
pub const DEFAULT_MAX_ARGS_JSON: usize = 8 * 1024 * 1024;

/// The one JSON encoding of messages into args (see the module docs).
const ARGS_JSON: SerializeOptions = SerializeOptions::new()
    .stringify_64_bit_integers(false)
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// The services the layer knows, from their file descriptor sets: maps a
/// method path `/package.Service/Method` to its descriptor, so that a
/// unary request can be decoded into args without per-method code.
///
/// Build it from the `FILE_DESCRIPTOR_SET` your build script writes (for
/// example with `protox` and `tonic-prost-build`), once per server.
///
/// ```
/// use capnagent_tonic::Descriptors;
///
/// // An empty set knows no method: every call's args are `null`.
/// let descriptors = Descriptors::decode(&[])?;
/// assert!(descriptors.method("/tools.v1.ToolService/Purchase").is_none());
/// # Ok::<(), capnagent_tonic::prost_reflect::DescriptorError>(())
/// ```
#[derive(Clone, Default)]
pub struct Descriptors {
    pool: DescriptorPool,
    methods: HashMap<Box<str>, MethodDescriptor>,
}

impl Descriptors {
    /// No services: every method is unknown (args `null`).
    pub fn new() -> Descriptors {
        Descriptors::default()
    }

    /// Decodes an encoded `google.protobuf.FileDescriptorSet`.
    pub fn decode(file_descriptor_set: &[u8]) -> Result<Descriptors, DescriptorError> {
        Descriptors::new().with(file_descriptor_set)
    }

    /// Adds the services of another encoded file descriptor set (for a
    /// server hosting services from several `.proto` packages).
    pub fn with(mut self, file_descriptor_set: &[u8]) -> Result<Descriptors, DescriptorError> {
        self.pool.decode_file_descriptor_set(file_descriptor_set)?;
        Ok(Descriptors::from_pool(self.pool))
    }

    /// Uses an existing pool.
    pub fn from_pool(pool: DescriptorPool) -> Descriptors {
        let methods = pool
            .services()
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| (path_of(&method).into_boxed_str(), method))
            .collect();
        Descriptors { pool, methods }
    }

    /// The pool of every file added.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The method served at `path` (`/package.Service/Method`), if known.
    pub fn method(&self, path: &str) -> Option<&MethodDescriptor> {
        self.methods.get(path)
    }

    /// The args the layer will see for a call of `path` with `message`:
    /// the client side of the same encoding. A client-streaming method, or
    /// a method these descriptors do not know, has args `null`. The JSON
    /// text is bounded by [`DEFAULT_MAX_ARGS_JSON`], the layer's default.
    pub fn args_for<M: prost::Message>(
        &self,
        path: &str,
        message: &M,
    ) -> Result<JsonValue, ArgsError> {
        match self.method(path) {
            Some(method) if !method.is_client_streaming() => {
                message_to_args(message, &method.input())
            }
            _ => Ok(JsonValue::Null),
        }
    }
}

impl fmt::Debug for Descriptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<&str> = self.methods.keys().map(|k| &**k).collect();
        paths.sort_unstable();
        f.debug_struct("Descriptors")
            .field("methods", &paths)
            .finish()
    }
}

/// `/package.Service/Method`, as in the HTTP/2 `:path` of a call.
fn path_of(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// The args JSON of `message`, exactly as the layer computes it from the
/// request it receives: encode, decode as `descriptor` (the method's input
/// type), print with the [args encoding](crate#args).
///
/// Use it on the client to sign a holder-of-key proof (see
/// [`client::attach_proof`](crate::client::attach_proof)). The JSON text
/// is bounded by [`DEFAULT_MAX_ARGS_JSON`], as on a layer with default
/// settings; a message over it is refused (see the [crate docs](crate#args)).
pub fn message_to_args<M: prost::Message>(
    message: &M,
    descriptor: &MessageDescriptor,
) -> Result<JsonValue, ArgsError> {
    decode_args(descriptor, &message.encode_to_vec(), &default_limits())
}

fn default_limits() -> JsonLimits {
    JsonLimits {
        max_depth: Limits::DEFAULT.max_json_depth,
        max_len: DEFAULT_MAX_ARGS_JSON,
    }
}

/// Decodes one protobuf message of type `descriptor` and prints it as
/// args, refusing a JSON text longer than `limits.max_len` (printing stops
/// there).
pub(crate) fn decode_args(
    descriptor: &MessageDescriptor,
    bytes: &[u8],
    limits: &JsonLimits,
) -> Result<JsonValue, ArgsError> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)
        .map_err(|e| ArgsError::invalid(format!("request message does not decode: {e}")))?;
    let mut text = BoundedWriter {
        buf: Vec::with_capacity(
            bytes
                .len()
                .saturating_mul(2)
                .saturating_add(16)
                .min(limits.max_len),
        ),
        max: limits.max_len,
        over: false,
    };
    let mut serializer = serde_json::Serializer::new(&mut text);
    if let Err(e) = message.serialize_with_options(&mut serializer, &ARGS_JSON) {
        return Err(if text.over {
            ArgsError::too_large(format!(
                "request message's JSON form exceeds the limit of {} bytes",
                limits.max_len
            ))
        } else {
            ArgsError::invalid(format!("request message has no JSON form: {e}"))
        });
    }
    JsonValue::parse_bytes(&text.buf, limits)
        .map_err(|e| ArgsError::invalid(format!("request message JSON is refused: {e}")))
}

/// A `Vec` that refuses to grow past `max` bytes.
struct BoundedWriter {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.max.saturating_sub(self.buf.len()) {
            self.over = true;
            return Err(io::Error::other("args JSON over its limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A message could not be turned into args: it does not decode as the
/// method's input type, its JSON form is deeper than the limits allow, or
/// longer ([`is_too_large`](Self::is_too_large)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError {
    message: String,
    too_large: bool,
}

impl ArgsError {
    fn invalid(message: String) -> ArgsError {
        ArgsError {
            message,
            too_large: false,
        }
    }

    fn too_large(message: String) -> ArgsError {
        ArgsError {
            message,
            too_large: true,
        }
    }

    /// True when the message's JSON form is over its size bound (the layer
    /// answers `RESOURCE_EXHAUSTED`; other errors are `INVALID_ARGUMENT`).
    pub fn is_too_large(&self) -> bool {
        self.too_large
    }
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgsError {}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        MethodDescriptorProto, ServiceDescriptorProto, field_descriptor_proto,
    };

    /// `test.v1.Pay` with `Send(Payment) returns (Payment)` (unary) and
    /// `Stream(stream Payment) returns (Payment)`; `Payment { string to = 1;
    /// int64 amount = 2; uint64 big = 3; }`.
    pub(crate) fn descriptor_set() -> Vec<u8> {
        use prost::Message as _;
        let field =
            |name: &str, number, r#type: field_descriptor_proto::Type| FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(field_descriptor_proto::Label::Optional as i32),
                r#type: Some(r#type as i32),
                json_name: Some(name.into()),
                ..Default::default()
            };
        let method = |name: &str, streaming: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(".test.v1.Payment".into()),
            output_type: Some(".test.v1.Payment".into()),
            client_streaming: Some(streaming),
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("test.proto".into()),
                package: Some("test.v1".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("Payment".into()),
                    field: vec![
                        field("to", 1, field_descriptor_proto::Type::String),
                        field("amount", 2, field_descriptor_proto::Type::Int64),
                        field("big", 3, field_descriptor_proto::Type::Uint64),
                    ],
                    ..Default::default()
                }],
                service: vec![ServiceDescriptorProto {
                    name: Some("Pay".into()),
                    method: vec![method("Send", false), method("Stream", true)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// `test.v1.Bulk` with `Send(Batch) returns (Batch)`; `Batch {
    /// repeated Payment items = 1; repeated int64 zeros = 2; }` (packed),
    /// plus `Payment` as in [`descriptor_set`]: a schema whose JSON form
    /// can be many times its wire size.
    pub(crate) fn bulk_descriptor_set() -> Vec<u8> {
        use prost::Message as _;
        let mut set = FileDescriptorSet::decode(descriptor_set().as_slice()).unwrap();
        let file = &mut set.file[0];
        let repeated =
            |name: &str, number, r#type: field_descriptor_proto::Type| FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(field_descriptor_proto::Label::Repeated as i32),
                r#type: Some(r#type as i32),
                json_name: Some(name.into()),
                ..Default::default()
            };
        let mut items = repeated("items", 1, field_descriptor_proto::Type::Message);
        items.type_name = Some(".test.v1.Payment".into());
        file.message_type.push(DescriptorProto {
            name: Some("Batch".into()),
            field: vec![
                items,
                repeated("zeros", 2, field_descriptor_proto::Type::Int64),
            ],
            ..Default::default()
        });
        file.service.push(ServiceDescriptorProto {
            name: Some("Bulk".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Send".into()),
                input_type: Some(".test.v1.Batch".into()),
                output_type: Some(".test.v1.Batch".into()),
                client_streaming: Some(false),
                ..Default::default()
            }],
            ..Default::default()
        });
        set.encode_to_vec()
    }

    /// Issue 17 item 8c: a message whose JSON form expands far beyond its
    /// size (repeated empty messages print every default field; packed
    /// zeros print as `0,`) is refused at the bound, and printing stops
    /// there.
    #[test]
    fn the_json_form_of_a_message_is_bounded() {
        let descriptors = Descriptors::decode(&bulk_descriptor_set()).unwrap();
        let input = descriptors.method("/test.v1.Bulk/Send").unwrap().input();
        // 4096 empty `items` (2 bytes each): 8 KiB on the wire.
        let items: Vec<u8> = [0x0a, 0x00].repeat(4096);
        // 8192 packed zeros: 8 KiB (+ 3 bytes of header).
        let mut zeros = vec![0x12, 0x80, 0x40];
        zeros.extend(std::iter::repeat_n(0u8, 8192));
        let limits = |max_len| JsonLimits {
            max_depth: Limits::DEFAULT.max_json_depth,
            max_len,
        };
        for wire in [&items, &zeros] {
            let full = decode_args(&input, wire, &limits(usize::MAX)).unwrap();
            let len = full.canonical_string().len();
            assert!(len > 2 * wire.len(), "{len} vs {}", wire.len());
            let refused = decode_args(&input, wire, &limits(len / 2)).unwrap_err();
            assert!(refused.is_too_large(), "{refused}");
            assert!(
                refused.to_string().contains("JSON form exceeds"),
                "{refused}"
            );
        }
        // The items expand about 14 times.
        let full = decode_args(&input, &items, &limits(usize::MAX)).unwrap();
        assert!(full.canonical_string().len() > 12 * items.len());
        // Garbage is still "does not decode", not "too large".
        let garbage = decode_args(&input, b"\xff\xff\xff", &limits(10)).unwrap_err();
        assert!(!garbage.is_too_large());
    }

    /// The wire form of `Payment { to, amount, big }`.
    pub(crate) fn payment(to: &str, amount: i64, big: u64) -> Vec<u8> {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        let desc = descriptors
            .pool()
            .get_message_by_name("test.v1.Payment")
            .unwrap();
        let mut message = DynamicMessage::new(desc);
        message.set_field_by_name("to", prost_reflect::Value::String(to.into()));
        message.set_field_by_name("amount", prost_reflect::Value::I64(amount));
        message.set_field_by_name("big", prost_reflect::Value::U64(big));
        prost::Message::encode_to_vec(&message)
    }

    #[test]
    fn methods_are_found_by_path() {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        assert!(
            !descriptors
                .method("/test.v1.Pay/Send")
                .unwrap()
                .is_client_streaming()
        );
        assert!(
            descriptors
                .method("/test.v1.Pay/Stream")
                .unwrap()
                .is_client_streaming()
        );
        assert!(descriptors.method("/test.v1.Pay/Nope").is_none());
        assert!(format!("{descriptors:?}").contains("/test.v1.Pay/Send"));
    }

    #[test]
    fn sixty_four_bit_integers_are_numbers_and_defaults_are_present() {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        let input = descriptors.method("/test.v1.Pay/Send").unwrap().input();
        let args = decode_args(
            &input,
            &payment("bob", 9_007_199_254_740_993, u64::MAX),
            &default_limits(),
        )
        .unwrap();
        assert_eq!(
            args.canonical_string(),
            r#"{"amount":9007199254740993,"big":18446744073709551615,"to":"bob"}"#
        );
        let zero = decode_args(&input, &[], &default_limits()).unwrap();
        assert_eq!(zero.canonical_string(), r#"{"amount":0,"big":0,"to":""}"#);
    }

    #[test]
    fn garbage_does_not_decode() {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        let input = descriptors.method("/test.v1.Pay/Send").unwrap().input();
        let err = decode_args(&input, b"\xff\xff\xff", &default_limits()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("request message does not decode")
        );
    }

    #[test]
    fn client_side_args_match_the_server_side() {
        let descriptors = Descriptors::decode(&descriptor_set()).unwrap();
        let desc = descriptors
            .pool()
            .get_message_by_name("test.v1.Payment")
            .unwrap();
        let mut message = DynamicMessage::new(desc.clone());
        message.set_field_by_name("amount", prost_reflect::Value::I64(-5));
        let client = message_to_args(&message, &desc).unwrap();
        let server = decode_args(
            &desc,
            &prost::Message::encode_to_vec(&message),
            &default_limits(),
        )
        .unwrap();
        assert_eq!(client, server);
        assert_eq!(
            descriptors
                .args_for("/test.v1.Pay/Stream", &message)
                .unwrap(),
            JsonValue::Null
        );
        assert_eq!(
            descriptors.args_for("/test.v1.Pay/Send", &message).unwrap(),
            client
        );
    }
}
