//! [`CapabilityService`]: finds the call's tool and args, runs the gates
//! (token, caller, chain, proof, args, verifier), signs and records a
//! receipt, then calls the inner service or answers with a gRPC status.
//!
//! A call is decided in `call`, synchronously, when nothing has to be
//! awaited: a streaming or unknown method (args `null`) with a bearer
//! token. Otherwise the ready inner service is moved into the response
//! future while the request message is buffered and decoded, or the
//! holder-of-key proof is checked (the nonce store may be remote).

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use capnagent::{JsonLimits, JsonValue};
use http::request::Parts;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use prost_reflect::MessageDescriptor;
use tonic::body::Body as TonicBody;
use tonic::server::NamedService;
use tower_service::Service;

use crate::args;
use crate::frame;
use crate::future::{Decided, ResponseFuture};
use crate::gate::{Admitted, Verdict};
use crate::layer::{CapabilityLayer, Shared};
use crate::status::DenialKind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Middleware that checks every gRPC call's capability; see
/// [`CapabilityLayer`] and the [crate docs](crate) for an example.
///
/// Accepts any request body (tonic's `Body`, hyper's `Incoming`, ...) and
/// hands the inner service a `tonic::body::Body`: for a buffered unary
/// call, rebuilt from exactly the bytes that were checked. Denials are
/// trailers-only gRPC responses (`Status::into_http`), so the inner error
/// type is kept.
#[derive(Clone)]
pub struct CapabilityService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> CapabilityService<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> CapabilityService<S> {
        CapabilityService { inner, shared }
    }

    /// Wraps `inner` with `layer`'s configuration.
    pub fn new(inner: S, layer: &CapabilityLayer) -> CapabilityService<S> {
        CapabilityService::from_shared(inner, Arc::clone(&layer.shared))
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Required to add a single wrapped service to tonic's router.
impl<S: NamedService> NamedService for CapabilityService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: std::fmt::Debug> std::fmt::Debug for CapabilityService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityService")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for CapabilityService<S>
where
    S: Service<Request<TonicBody>, Response = Response<ResBody>> + Clone,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path();
        let tool = self.shared.tool_for(path);
        // Unary and server-streaming calls carry one request message.
        let input = self
            .shared
            .descriptors
            .method(path)
            .filter(|method| !method.is_client_streaming())
            .map(|method| method.input());

        let admitted = match self.shared.gate.admit(&mut parts, tool, true) {
            Ok(admitted) => admitted,
            Err(denial) => return ResponseFuture::decided(denial.record, Err(denial.status)),
        };

        if input.is_none() && admitted.proof.is_none() {
            // Nothing to read, nothing to await: decide here.
            let verdict = self.shared.gate.decide_bearer(&admitted, JsonValue::Null);
            return match verdict {
                Verdict::Allow { record, verified } => {
                    parts.extensions.insert(verified);
                    let request = Request::from_parts(parts, TonicBody::new(body));
                    if record.is_done() {
                        ResponseFuture::inner(self.inner.call(request))
                    } else {
                        let inner = take_ready(&mut self.inner);
                        ResponseFuture::decided_call(record, inner, request)
                    }
                }
                Verdict::Deny(denial) => ResponseFuture::decided(denial.record, Err(denial.status)),
            };
        }

        let limit = self.shared.message_limit;
        if input.is_some() && content_length(&parts).is_some_and(|len| len > limit as u64) {
            let denial =
                self.shared
                    .gate
                    .deny_admitted(&admitted, DenialKind::TooLarge, too_large(limit));
            return ResponseFuture::decided(denial.record, Err(denial.status));
        }

        // Something must be awaited: move the service `poll_ready` was
        // called on into the future, and keep its clone.
        let inner = take_ready(&mut self.inner);
        let deciding = decide(Arc::clone(&self.shared), admitted, parts, body, input);
        ResponseFuture::deciding(Box::pin(deciding), inner)
    }
}

/// Takes the service `poll_ready` was called on, leaving a clone behind
/// (see "Be careful when cloning inner services" in the tower docs).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let not_ready = inner.clone();
    std::mem::replace(inner, not_ready)
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large(limit: usize) -> String {
    format!("request message exceeds the limit of {limit} bytes")
}

/// Buffers and decodes the request message (when `input` is known), then
/// asks the verifier (with the proof, when the token is bound).
async fn decide<B>(
    shared: Arc<Shared>,
    admitted: Admitted,
    mut parts: Parts,
    body: B,
    input: Option<MessageDescriptor>,
) -> Decided
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    {
        // Dropped before the decision (the client went away, the server
        // shut down): the call still leaves a denied receipt.
        let mut pending = Undecided {
            shared: &shared,
            admitted: &admitted,
            armed: true,
        };
        let (args, body) = match input {
            None => (JsonValue::Null, TonicBody::new(body)),
            Some(input) => match read_args(&shared, body, &input).await {
                Ok((args, bytes)) => (args, TonicBody::new(Full::new(bytes))),
                Err((kind, reason)) => {
                    pending.armed = false;
                    let denial = shared.gate.deny_admitted(&admitted, kind, reason);
                    return (denial.record, Err(denial.status));
                }
            },
        };
        let verdict = shared.gate.decide(&admitted, args).await;
        pending.armed = false;
        match verdict {
            Verdict::Allow { record, verified } => {
                parts.extensions.insert(verified);
                // The handler gets exactly the bytes that were checked.
                (record, Ok(Request::from_parts(parts, body)))
            }
            Verdict::Deny(denial) => (denial.record, Err(denial.status)),
        }
    }
}

/// Reads one unary request message under the limit and decodes it into
/// args; returns the buffered bytes too.
async fn read_args<B>(
    shared: &Shared,
    body: B,
    input: &MessageDescriptor,
) -> Result<(JsonValue, Bytes), (DenialKind, String)>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limit = shared.message_limit;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err((DenialKind::TooLarge, too_large(limit)));
        }
        Err(error) => {
            return Err((
                DenialKind::InvalidArgument,
                format!("request body could not be read: {error}"),
            ));
        }
    };
    let args = decode_body(&bytes, input, &shared.json_limits())?;
    Ok((args, bytes))
}

/// Decodes a buffered unary request body (exactly one frame) into args
/// under `limits`.
pub(crate) fn decode_body(
    bytes: &Bytes,
    input: &MessageDescriptor,
    limits: &JsonLimits,
) -> Result<JsonValue, (DenialKind, String)> {
    let message =
        frame::single_message(bytes).map_err(|e| (DenialKind::InvalidArgument, e.to_string()))?;
    args::decode_args(input, &message, limits).map_err(|e| {
        let kind = if e.is_too_large() {
            DenialKind::TooLarge
        } else {
            DenialKind::InvalidArgument
        };
        (kind, e.to_string())
    })
}

/// Signs a "cancelled" denial if dropped while armed.
struct Undecided<'a> {
    shared: &'a Shared,
    admitted: &'a Admitted,
    armed: bool,
}

impl Drop for Undecided<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.gate.cancel(self.admitted);
        }
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

    use super::*;
    use crate::args::tests::{descriptor_set, payment};
    use crate::verified::Verified;

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
        CapabilityLayer::new(
            Verifier::new(&ROOT).unwrap(),
            Auditor::new(&[9; 32]).unwrap(),
        )
        .unwrap()
        .file_descriptor_set(descriptors)
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
            .tool_name("/test.v1.Pay/Send", "pay.send")
            .message_limit(limit);
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
                call(
                    path,
                    Some(&token),
                    Bytes::from_static(b"\x01\x00\x00\x00\x01a"),
                ),
                Code::InvalidArgument,
            ),
            (
                call(path, Some(&token), Bytes::from(vec![0; 100])),
                Code::ResourceExhausted,
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
        let layer = layer(&crate::args::tests::bulk_descriptor_set()).max_args_json(64 * 1024);
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

    /// Issue 17 item 2: the layer and the interceptor refuse an audit key
    /// that is the root key (a receipt would be a capability).
    #[test]
    fn an_audit_key_equal_to_the_root_key_is_refused() {
        let same = || (Verifier::new(&ROOT).unwrap(), Auditor::new(&ROOT).unwrap());
        let (verifier, auditor) = same();
        let error = CapabilityLayer::new(verifier, auditor).unwrap_err();
        assert_eq!(error.code(), "key.audit_is_root");
        let (verifier, auditor) = same();
        let error = crate::CapabilityInterceptor::new(verifier, auditor, "t").unwrap_err();
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
            Some(crate::gate::REASON_CANCELLED)
        );
    }
}
