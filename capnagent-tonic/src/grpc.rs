//! The gRPC adapter, [`Grpc`]: a call's `tool` is its method path (or the
//! name given to it with [`Grpc::tool_name`]), its `args` the request
//! message of a unary or server-streaming method, decoded with the
//! service's [`Descriptors`] (one frame, decompressed if it is
//! compressed, its JSON form bounded by [`Grpc::max_args_json`]), and its
//! denials are `Status`es ([`status`](crate::status)). Everything else
//! (the token, the proof, the caller, the verifier, the receipt,
//! buffering) is the engine's, in `capnagent_tower`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use capnagent::Receipt;
use capnagent::{JsonLimits, JsonValue};
use capnagent_tower::SinkError;
use capnagent_tower::protocol::{Call, Denial, Need, Protocol, Refusal, RequestBody, ResponseBody};
use http::Response;
use http::request::Parts;
use http_body_util::Full;
use prost_reflect::{DescriptorError, MessageDescriptor};
use tonic::Status;
use tonic::body::Body as TonicBody;

use crate::args::{self, DEFAULT_MAX_ARGS_JSON, Descriptors};
use crate::frame::{self, Encoding, FrameError};
use crate::status;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC protocol adapter: give it to
/// [`CapabilityLayer::with_protocol`](capnagent_tower::CapabilityLayer::with_protocol)
/// (or [`protocol`](capnagent_tower::CapabilityLayer::protocol)).
///
/// Defaults: tool = the method path `/package.Service/Method`, no
/// descriptors (every call's args are `null`: add the service's file
/// descriptor set with [`file_descriptor_set`](Self::file_descriptor_set)),
/// an 8 MiB bound on a message's args JSON, and a 4 MiB body limit
/// ([`DEFAULT_MESSAGE_LIMIT`](Self::DEFAULT_MESSAGE_LIMIT); set another
/// with the layer's `body_limit`).
#[derive(Debug, Clone, Default)]
pub struct Grpc {
    descriptors: Descriptors,
    tools: HashMap<Box<str>, Arc<str>>,
    max_args_json: Option<usize>,
    /// The one tool of every call, for a check that sees no path (the
    /// interceptor).
    fixed_tool: Option<Arc<str>>,
}

impl Grpc {
    /// Default limit on a buffered request (one unary message and its
    /// 5-byte frame header): 4 MiB, tonic's own default decoding limit. A
    /// compressed message may decompress to no more than the limit less
    /// the header.
    pub const DEFAULT_MESSAGE_LIMIT: usize = 4 * 1024 * 1024;

    /// The adapter with its defaults.
    pub fn new() -> Grpc {
        Grpc::default()
    }

    /// Sets the services whose unary requests are decoded into args.
    /// Replaces any set before.
    pub fn descriptors(mut self, descriptors: Descriptors) -> Self {
        self.descriptors = descriptors;
        self
    }

    /// Adds the services of an encoded `FileDescriptorSet` (the
    /// `FILE_DESCRIPTOR_SET` your build script embeds) to the
    /// [descriptors](Self::descriptors).
    pub fn file_descriptor_set(self, bytes: &[u8]) -> Result<Self, DescriptorError> {
        let descriptors = self.descriptors.clone().with(bytes)?;
        Ok(self.descriptors(descriptors))
    }

    /// Names the tool of one method: calls of `path`
    /// (`/package.Service/Method`) are judged with `tool == name`. Methods
    /// without a name keep their path as the tool.
    pub fn tool_name(mut self, path: impl Into<String>, name: impl Into<String>) -> Self {
        let path = path.into().into_boxed_str();
        self.tools.insert(path, Arc::from(name.into()));
        self
    }

    /// Sets the longest JSON text a decoded request message may print as
    /// args; a message whose JSON form is longer is refused with
    /// `RESOURCE_EXHAUSTED` (printing stops at the bound). Default
    /// [`DEFAULT_MAX_ARGS_JSON`](crate::DEFAULT_MAX_ARGS_JSON). A message's
    /// JSON can be many times its wire size (repeated empty messages print
    /// every default field; see the [crate docs](crate#args)). A client
    /// that signs holder-of-key proofs with
    /// [`message_to_args`](crate::message_to_args) uses the default bound.
    pub fn max_args_json(mut self, bytes: usize) -> Self {
        self.max_args_json = Some(bytes);
        self
    }

    /// Every call is `tool`, whatever its path: what an interceptor, which
    /// never sees the path, judges.
    pub(crate) fn fixed_tool(tool: Arc<str>) -> Grpc {
        Grpc {
            fixed_tool: Some(tool),
            ..Grpc::default()
        }
    }

    /// The tool fact of a call of `path`.
    fn tool_for(&self, path: &str) -> Arc<str> {
        match self.fixed_tool.as_ref().or_else(|| self.tools.get(path)) {
            Some(name) => Arc::clone(name),
            None => Arc::from(path),
        }
    }
}

/// What the gRPC adapter learned from a call's head: its tool, the
/// input type of its one request message (none for client streaming,
/// bidi, or a method the descriptors do not know), and the encoding of
/// its messages.
pub struct GrpcHead {
    tool: Arc<str>,
    input: Option<MessageDescriptor>,
    encoding: Encoding,
}

impl Protocol for Grpc {
    type Head = GrpcHead;
    type Reply = ();
    type Answer = Status;

    const DEFAULT_BODY_LIMIT: usize = Grpc::DEFAULT_MESSAGE_LIMIT;

    fn head(&self, parts: &mut Parts) -> Result<GrpcHead, Refusal<()>> {
        let path = parts.uri.path();
        // Refused for every call, streaming ones included: tonic would
        // refuse it too, after an allowed receipt for a call that never ran.
        let encoding = Encoding::of(&parts.headers).map_err(|unknown| Refusal {
            denial: Denial::Unclassified(status::UNSUPPORTED_ENCODING),
            reason: unknown.to_string(),
            tool: self.tool_for(path),
            reply: (),
        })?;
        // Unary and server-streaming calls carry one request message.
        let input = self
            .descriptors
            .method(path)
            .filter(|method| !method.is_client_streaming())
            .map(|method| method.input());
        Ok(GrpcHead {
            tool: self.tool_for(path),
            input,
            encoding,
        })
    }

    fn reads_body(&self, head: &GrpcHead) -> bool {
        head.input.is_some()
    }

    fn early_tool(&self, head: &GrpcHead) -> Arc<str> {
        Arc::clone(&head.tool)
    }

    fn early_reply(&self, _head: &GrpcHead) {}

    fn call(
        &self,
        head: GrpcHead,
        _parts: &mut Parts,
        body: &Bytes,
        limits: &JsonLimits,
    ) -> Result<Call<()>, Refusal<()>> {
        let args = match &head.input {
            None => JsonValue::Null,
            Some(input) => {
                // The engine's JSON limits carry the body limit: a message
                // decompresses to no more than an uncompressed one carries.
                let max_message = limits.max_len.saturating_sub(frame::HEADER_LEN);
                let frame = (head.encoding, max_message);
                let limits = JsonLimits {
                    max_depth: limits.max_depth,
                    max_len: self.max_args_json.unwrap_or(DEFAULT_MAX_ARGS_JSON),
                };
                match decode_body(body, frame, input, &limits) {
                    Ok(args) => args,
                    Err((denial, reason)) => {
                        let tool = head.tool;
                        return Err(Refusal {
                            denial,
                            reason,
                            tool,
                            reply: (),
                        });
                    }
                }
            }
        };
        Ok(Call {
            tool: head.tool,
            args: args.into(),
            need: Need::Caveats,
            reply: (),
        })
    }

    fn deny(&self, denial: Denial, receipt: &Receipt, _reply: &()) -> Status {
        status::denial(denial, receipt)
    }

    fn unavailable(error: &SinkError, _reply: &()) -> Status {
        status::unavailable(error)
    }
}

/// Any request body passes on as tonic's `Body`: for a buffered unary call,
/// rebuilt from exactly the bytes that were checked.
impl<B> RequestBody<B> for Grpc
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = TonicBody;

    fn pass(body: B) -> TonicBody {
        TonicBody::new(body)
    }

    fn rebuild(bytes: Bytes) -> TonicBody {
        TonicBody::new(Full::new(bytes))
    }
}

/// Denials are trailers-only gRPC responses (`Status::into_http`).
impl<R: Default> ResponseBody<R> for Grpc {
    fn respond(status: Status) -> Response<R> {
        status.into_http()
    }
}

/// Decodes a buffered unary request body (exactly one frame, in the
/// encoding and under the decompressed size bound of `frame`) into args
/// under `limits`.
pub(crate) fn decode_body(
    bytes: &Bytes,
    (encoding, max_message): (Encoding, usize),
    input: &MessageDescriptor,
    limits: &JsonLimits,
) -> Result<JsonValue, (Denial, String)> {
    let message = frame::single_message(bytes, encoding, max_message)
        .map_err(|e| (frame_denial(&e), e.to_string()))?;
    args::decode_args(input, &message, limits).map_err(|e| {
        let denial = if e.is_too_large() {
            Denial::TooLarge
        } else {
            Denial::BadRequest
        };
        (denial, e.to_string())
    })
}

/// The denial of a frame the layer cannot read.
fn frame_denial(error: &FrameError) -> Denial {
    match error {
        FrameError::TooLarge { .. } => Denial::TooLarge,
        FrameError::CompressedWithoutEncoding => {
            Denial::Unclassified(status::COMPRESSED_WITHOUT_ENCODING)
        }
        _ => Denial::BadRequest,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use capnagent::{Auditor, Issuer, Receipt, Timestamp, Verifier};
    use capnagent_tower::Anonymous;
    use http::{Request, Response};
    use http_body_util::BodyExt;
    use tonic::{Code, Status};
    use tower::ServiceExt;
    use tower_layer::Layer;

    use std::task::{Context as TaskContext, Poll};

    use tower_service::Service;

    use super::*;
    use crate::args::tests::{descriptor_set, payment};
    use crate::{CapabilityLayer, Verified};

    const ROOT: [u8; 32] = [7; 32];
    const NOW_MS: u64 = 1_800_000_000_000;

    /// What the inner service saw: the receipt's outcome and the body.
    type Seen = Arc<Mutex<Vec<(bool, Bytes)>>>;

    /// The receipts the sink got.
    type Receipts = Arc<Mutex<Vec<Receipt>>>;

    fn token(caveats: &[&str]) -> String {
        let issuer = Issuer::from_key(&ROOT).unwrap();
        let mut builder = issuer.issue("agent-7");
        for caveat in caveats {
            builder.caveat(caveat).unwrap();
        }
        builder.build().unwrap().serialize()
    }

    /// A layer for the test root key whose descriptors are `descriptors`.
    fn layer(descriptors: &[u8]) -> CapabilityLayer {
        let grpc = Grpc::new().file_descriptor_set(descriptors).unwrap();
        CapabilityLayer::with_protocol(
            Verifier::new(&ROOT).unwrap(),
            Auditor::new(&[9; 32]).unwrap(),
            grpc,
        )
        .unwrap()
    }

    /// The layer over an inner service that records what it was given,
    /// and the receipts the sink got.
    fn service(
        limit: usize,
    ) -> (
        impl Service<
            Request<TonicBody>,
            Response = Response<TonicBody>,
            Error = Infallible,
            Future: Send,
        > + Clone,
        Seen,
        Receipts,
    ) {
        let layer = layer(&descriptor_set())
            .map_protocol(|grpc| grpc.tool_name("/test.v1.Pay/Send", "pay.send"))
            .body_limit(limit);
        stack(layer)
    }

    /// `layer`, with the anonymous caller, the test clock and a sink that
    /// keeps every receipt, over an inner service that records what it was
    /// given; and what it saw and the receipts the sink got.
    fn stack(
        layer: CapabilityLayer,
    ) -> (
        impl Service<
            Request<TonicBody>,
            Response = Response<TonicBody>,
            Error = Infallible,
            Future: Send,
        > + Clone,
        Seen,
        Receipts,
    ) {
        let seen: Seen = Arc::default();
        let receipts: Receipts = Arc::default();
        let sink = {
            let receipts = Arc::clone(&receipts);
            move |receipt: &Receipt| receipts.lock().unwrap().push(receipt.clone())
        };
        let layer = layer
            .caller(Anonymous)
            .clock(|| Timestamp::from_unix_millis(NOW_MS))
            .sink(sink);
        let inner = {
            let seen = Arc::clone(&seen);
            tower::service_fn(move |request: Request<TonicBody>| {
                let seen = Arc::clone(&seen);
                async move {
                    let allowed = request
                        .extensions()
                        .get::<Verified>()
                        .is_some_and(|v| v.receipt().is_allowed());
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    seen.lock().unwrap().push((allowed, body));
                    Ok::<_, Infallible>(Response::new(TonicBody::empty()))
                }
            })
        };
        (layer.layer(inner), seen, receipts)
    }

    fn call(path: &str, token: Option<&str>, body: Bytes) -> Request<TonicBody> {
        let mut builder = Request::post(path).header("content-type", "application/grpc");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(TonicBody::new(Full::new(body))).unwrap()
    }

    /// `request` with its messages in `encoding`.
    fn encoded(mut request: Request<TonicBody>, encoding: &'static str) -> Request<TonicBody> {
        let value = http::HeaderValue::from_static(encoding);
        request.headers_mut().insert(frame::ENCODING_HEADER, value);
        request
    }

    fn code(response: &Response<TonicBody>) -> Option<Code> {
        Status::from_header_map(response.headers()).map(|status| status.code())
    }

    #[tokio::test]
    async fn unary_args_are_checked_and_the_message_passes_intact() {
        let (svc, seen, receipts) = service(1024);
        let token = token(&[r#"tool == "pay.send""#, "arg.amount <= 5000"]);
        let small = frame::encode(&payment("bob", 1200, 1)).unwrap();

        let response = svc
            .clone()
            .oneshot(call("/test.v1.Pay/Send", Some(&token), small.clone()))
            .await
            .unwrap();
        assert_eq!(code(&response), None);
        assert_eq!(*seen.lock().unwrap(), vec![(true, small)]);

        let big = frame::encode(&payment("bob", 9000, 1)).unwrap();
        let response = svc
            .oneshot(call("/test.v1.Pay/Send", Some(&token), big))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "caveat failed: arg.amount <= 5000");
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "a denied call never reaches the handler"
        );

        let receipts = receipts.lock().unwrap();
        assert_eq!(receipts.len(), 2);
        assert_eq!(receipts[1].context_summary().tool(), "pay.send");
    }

    #[tokio::test]
    async fn each_cause_maps_to_its_code_with_one_receipt() {
        let (svc, seen, receipts) = service(64);
        let token = token(&[r#"tool == "pay.send""#]);
        let path = "/test.v1.Pay/Send";
        let cases = [
            (call(path, None, Bytes::new()), Code::Unauthenticated),
            (
                call(path, Some("not-a-token"), Bytes::new()),
                Code::Unauthenticated,
            ),
            (
                call(
                    path,
                    Some(&token),
                    Bytes::from_static(b"\x00\x00\x00\x00\x03\xff\xff\xff"),
                ),
                Code::InvalidArgument,
            ),
            (
                // Compressed flag, no grpc-encoding: a protocol error.
                call(
                    path,
                    Some(&token),
                    Bytes::from_static(b"\x01\x00\x00\x00\x01a"),
                ),
                Code::Internal,
            ),
            (
                call(path, Some(&token), Bytes::from(vec![0; 100])),
                Code::ResourceExhausted,
            ),
            (
                encoded(call(path, Some(&token), Bytes::new()), "snappy"),
                Code::Unimplemented,
            ),
            (
                // 100 bytes once decompressed: over the limit of 64.
                encoded(
                    call(
                        path,
                        Some(&token),
                        frame::encode_compressed(&[0; 100], Encoding::Gzip).unwrap(),
                    ),
                    "gzip",
                ),
                Code::ResourceExhausted,
            ),
            (
                // Not gzip at all.
                encoded(
                    call(
                        path,
                        Some(&token),
                        Bytes::from_static(b"\x01\x00\x00\x00\x01a"),
                    ),
                    "gzip",
                ),
                Code::InvalidArgument,
            ),
        ];
        let n = cases.len();
        for (request, expected) in cases {
            let response = svc.clone().oneshot(request).await.unwrap();
            assert_eq!(code(&response), Some(expected));
            assert!(response.headers().contains_key(crate::RECEIPT_METADATA));
        }
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(receipts.lock().unwrap().len(), n);
    }

    /// A compressed message is judged on its decompressed args and passes
    /// to the service as it was sent, in every encoding the layer reads.
    #[tokio::test]
    async fn compressed_messages_are_judged_and_pass_as_sent() {
        let (svc, seen, receipts) = service(1024);
        let token = token(&[r#"tool == "pay.send""#, "arg.amount <= 5000"]);
        let path = "/test.v1.Pay/Send";
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Zstd] {
            let small = frame::encode_compressed(&payment("bob", 1200, 1), encoding).unwrap();
            let request = encoded(call(path, Some(&token), small.clone()), encoding.name());
            let response = svc.clone().oneshot(request).await.unwrap();
            assert_eq!(code(&response), None, "{encoding:?}");
            assert_eq!(seen.lock().unwrap().pop(), Some((true, small)));

            let big = frame::encode_compressed(&payment("bob", 9000, 1), encoding).unwrap();
            let request = encoded(call(path, Some(&token), big), encoding.name());
            let response = svc.clone().oneshot(request).await.unwrap();
            assert_eq!(code(&response), Some(Code::PermissionDenied));
            assert!(seen.lock().unwrap().is_empty());

            // Legal: an uncompressed frame under a compressing encoding.
            let plain = frame::encode(&payment("bob", 1200, 1)).unwrap();
            let request = encoded(call(path, Some(&token), plain.clone()), encoding.name());
            let response = svc.clone().oneshot(request).await.unwrap();
            assert_eq!(code(&response), None, "{encoding:?}");
            assert_eq!(seen.lock().unwrap().pop(), Some((true, plain)));
        }
        let outcomes: Vec<bool> = receipts
            .lock()
            .unwrap()
            .iter()
            .map(|receipt| receipt.is_allowed())
            .collect();
        assert_eq!(outcomes, [true, false, true].repeat(3));
    }

    /// An encoding the layer cannot read is refused from the head, for a
    /// streaming call too, with the encodings it reads and a receipt.
    #[tokio::test]
    async fn an_unknown_encoding_is_unimplemented_with_the_accepted_ones() {
        let (svc, seen, receipts) = service(1024);
        let token = token(&[r#"tool == "/test.v1.Pay/Stream""#]);
        let body = Bytes::from_static(b"not even a frame");
        let request = encoded(call("/test.v1.Pay/Stream", Some(&token), body), "snappy");
        let response = svc.oneshot(request).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(
            status.message().contains("\"snappy\""),
            "{}",
            status.message()
        );
        assert_eq!(
            response.headers()[frame::ACCEPT_ENCODING_HEADER],
            "gzip,deflate,zstd,identity"
        );
        assert!(response.headers().contains_key(crate::RECEIPT_METADATA));
        assert!(seen.lock().unwrap().is_empty());
        let receipts = receipts.lock().unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].outcome().reason(), Some(status.message()));
    }

    #[tokio::test]
    async fn streaming_calls_have_null_args() {
        let (svc, seen, _) = service(1024);
        let body = Bytes::from_static(b"not even a frame");
        let by_tool = token(&[r#"tool == "/test.v1.Pay/Stream""#]);
        let response = svc
            .clone()
            .oneshot(call("/test.v1.Pay/Stream", Some(&by_tool), body.clone()))
            .await
            .unwrap();
        assert_eq!(code(&response), None);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(true, body.clone())],
            "not buffered, not parsed"
        );

        let by_arg = token(&["arg.amount <= 5000"]);
        let response = svc
            .oneshot(call("/test.v1.Pay/Stream", Some(&by_arg), body))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("unknown identifier"),
            "{}",
            status.message()
        );
    }

    /// Issue 17 item 8c: over a real tower stack, a message whose JSON
    /// form is over the bound is `RESOURCE_EXHAUSTED`, never handled.
    #[tokio::test]
    async fn a_message_whose_json_expands_past_the_bound_is_refused() {
        let layer = layer(&crate::args::tests::bulk_descriptor_set())
            .map_protocol(|grpc| grpc.max_args_json(64 * 1024));
        let (svc, seen, receipts) = stack(layer);
        let token = token(&[r#"tool == "/test.v1.Bulk/Send""#]);
        // 8 KiB on the wire, about 120 KiB of JSON.
        let big = frame::encode(&[0x0a, 0x00].repeat(4096)).unwrap();
        let response = svc
            .clone()
            .oneshot(call("/test.v1.Bulk/Send", Some(&token), big))
            .await
            .unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{}",
            status.message()
        );
        assert!(seen.lock().unwrap().is_empty());
        // A small batch passes.
        let small = frame::encode(&[0x0a, 0x00].repeat(16)).unwrap();
        let response = svc
            .oneshot(call("/test.v1.Bulk/Send", Some(&token), small))
            .await
            .unwrap();
        assert_eq!(code(&response), None);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(receipts.lock().unwrap().len(), 2);
    }

    /// Issue 17 item 2: the layer refuses an audit key that is the root key
    /// (a receipt would be a capability); the interceptor is built from a
    /// layer.
    #[test]
    fn an_audit_key_equal_to_the_root_key_is_refused() {
        let same = || (Verifier::new(&ROOT).unwrap(), Auditor::new(&ROOT).unwrap());
        let (verifier, auditor) = same();
        let error = CapabilityLayer::with_protocol(verifier, auditor, Grpc::new()).unwrap_err();
        assert_eq!(error.code(), "key.audit_is_root");
    }

    /// Issue 17 item 7: a forged or malformed token's receipt carries a
    /// hash of the token, never its identifier or caveats.
    #[tokio::test]
    async fn a_forged_token_receipt_names_only_its_hash() {
        let (svc, seen, receipts) = service(1024);
        let issuer = Issuer::from_key(&[8; 32]).unwrap();
        let mut builder = issuer.issue("admin (approved by security team)");
        for _ in 0..11 {
            builder
                .caveat(&format!("caller == \"{}\"", "x".repeat(1000)))
                .unwrap();
        }
        let forged = builder.build().unwrap().serialize();
        let body = frame::encode(&payment("bob", 1, 1)).unwrap();
        for token in [forged.as_str(), "not-a-token"] {
            let response = svc
                .clone()
                .oneshot(call("/test.v1.Pay/Send", Some(token), body.clone()))
                .await
                .unwrap();
            assert_eq!(code(&response), Some(Code::Unauthenticated));
            let receipt = receipts.lock().unwrap().pop().unwrap();
            assert_eq!(
                receipt.capability_identifier(),
                capnagent::unverified_identifier(token)
            );
            assert!(receipt.caveats().is_empty());
            assert!(receipt.to_json().len() < 1024);
        }
        assert!(seen.lock().unwrap().is_empty());
    }

    /// A body that never yields: the client stalls mid-message.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_call_dropped_while_its_message_is_read_is_recorded() {
        let (mut svc, seen, receipts) = service(1024);
        let token = token(&[r#"tool == "pay.send""#]);
        let request = Request::post("/test.v1.Pay/Send")
            .header("authorization", format!("Bearer {token}"))
            .body(TonicBody::new(Stalled))
            .unwrap();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
        let mut future = Box::pin(svc.call(request));
        let waker = std::task::Waker::noop();
        assert!(
            future
                .as_mut()
                .poll(&mut TaskContext::from_waker(waker))
                .is_pending()
        );
        drop(future);
        assert!(seen.lock().unwrap().is_empty());
        let receipts = receipts.lock().unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(
            receipts[0].outcome().reason(),
            Some(crate::REASON_CANCELLED)
        );
    }
}
