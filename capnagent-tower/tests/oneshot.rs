//! `oneshot` tests: one behaviour each, against an axum `Router` or a plain
//! `tower::service_fn`, no sockets.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use capnagent::{Auditor, Receipt, Timestamp, Verifier};
use capnagent_tower::{
    Anonymous, AuthenticatedCaller, CapabilityLayer, ExtractError, FixedTool, NoArgs, PathArgs,
    PathParam, QueryArgs, Record, RouteOverride, TokenSource, TrustedHeader, Verified,
};
use http::{HeaderName, Request, Response, StatusCode, header};
use http_body_util::Full;
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const CAVEATS: &[&str] = &[
    r#"caller == "agent:planner""#,
    r#"tool == "checkout.purchase""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];

/// Returns the receipt JSON, a newline, and the body it received.
async fn echo(verified: Verified, body: Bytes) -> String {
    format!(
        "{}\n{}",
        verified.receipt().to_json(),
        String::from_utf8_lossy(&body)
    )
}

/// `/tools/{name}` behind the layer, with an "authentication layer" that
/// says every caller is `agent:planner`.
fn app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route("/tools/{name}", post(echo))
        .route_layer(layer.tool(PathParam::new("name")))
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")))
}

fn post_json(uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

struct Denial {
    status: StatusCode,
    challenge: Option<String>,
    content_type: String,
    problem: serde_json::Value,
}

async fn call(app: Router, request: Request<Body>) -> Response<String> {
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body_text(body).await)
}

async fn denial(app: Router, request: Request<Body>) -> Denial {
    let response = call(app, request).await;
    Denial {
        status: response.status(),
        challenge: response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned()),
        content_type: response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned(),
        problem: serde_json::from_str(response.body()).unwrap(),
    }
}

const PURCHASE: &str = "/tools/checkout.purchase";
const GOOD_BODY: &str = r#"{"sku":"USB-C cable","amount_cents":1299}"#;

#[tokio::test]
async fn allowed_call_reaches_the_handler_with_its_receipt() {
    let (layer, receipts) = layer();
    let response = call(
        app(layer),
        post_json(PURCHASE, Some(&token(CAVEATS)), GOOD_BODY),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let (receipt_json, body) = response.body().split_once('\n').unwrap();
    assert_eq!(body, GOOD_BODY);
    let receipt = auditor().verify(receipt_json).unwrap();
    assert!(receipt.is_allowed());
    assert_eq!(receipt.capability_identifier(), "agent-42");
    assert_eq!(receipt.context_summary().tool(), "checkout.purchase");
    assert_eq!(receipt.context_summary().caller(), "agent:planner");
    assert_eq!(receipt.timestamp_ms(), NOW_MS);
    assert_eq!(receipts.only(), receipt);
}

#[tokio::test]
async fn missing_token_is_401_bare_bearer_with_a_denied_receipt() {
    let (layer, receipts) = layer();
    let denied = denial(app(layer), post_json(PURCHASE, None, GOOD_BODY)).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    // RFC 6750 section 3.1: no error code when no token was sent.
    assert_eq!(denied.challenge.as_deref(), Some("Bearer"));
    assert_eq!(denied.content_type, "application/problem+json");
    assert_eq!(denied.problem["status"], 401);
    assert_eq!(denied.problem["code"], "missing_token");
    assert_eq!(denied.problem["detail"], "missing capability token");
    let receipt = receipts.only();
    assert_eq!(receipt.outcome().reason(), Some("missing capability token"));
    assert_eq!(receipt.capability_identifier(), "");
    assert!(receipt.caveats().is_empty());
    assert_eq!(receipt.context_summary().tool(), "checkout.purchase");
    assert_eq!(receipt.context_summary().caller(), "agent:planner");
    assert_eq!(
        denied.problem["receipt"]["signature"],
        receipt.signature_hex()
    );
}

#[tokio::test]
async fn malformed_token_is_401_and_never_echoed() {
    let (layer, receipts) = layer();
    let bad = "not-a-token-SECRET";
    let response = call(app(layer), post_json(PURCHASE, Some(bad), GOOD_BODY)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!response.body().contains("SECRET"));
    let reason = receipts.only().outcome().reason().unwrap().to_owned();
    assert!(
        reason.starts_with("malformed capability token: "),
        "{reason}"
    );
    assert!(!reason.contains("SECRET"));
}

#[tokio::test]
async fn non_bearer_authorization_is_401() {
    let (layer, receipts) = layer();
    let mut request = post_json(PURCHASE, None, GOOD_BODY);
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Basic {}", token(CAVEATS)).parse().unwrap(),
    );
    let denied = denial(app(layer), request).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(denied.problem["code"], "malformed_token");
    assert_eq!(
        receipts.only().outcome().reason(),
        Some("malformed capability token: expected `Authorization: Bearer <token>`")
    );
}

#[tokio::test]
async fn forged_token_is_401_and_its_receipt_names_only_its_hash() {
    let (layer, receipts) = layer();
    let token = forged(CAVEATS);
    let denied = denial(app(layer), post_json(PURCHASE, Some(&token), GOOD_BODY)).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied.challenge.as_deref(),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(denied.problem["code"], "invalid_token");
    let receipt = receipts.only();
    assert_eq!(
        receipt.outcome().reason(),
        Some("capability chain integrity: invalid signature")
    );
    // The identifier and caveats are the client's claims: not signed.
    assert_eq!(
        receipt.capability_identifier(),
        capnagent::unverified_identifier(&token)
    );
    assert!(receipt.caveats().is_empty());
}

#[tokio::test]
async fn forged_token_with_args_off_the_body_is_401_too() {
    let (layer, receipts) = layer();
    let app = app(layer.args(NoArgs));
    let denied = denial(app, post_json(PURCHASE, Some(&forged(CAVEATS)), "")).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        receipts.only().outcome().reason(),
        Some("capability chain integrity: invalid signature")
    );
}

#[tokio::test]
async fn caveat_denial_is_403_insufficient_scope_with_the_receipt() {
    let (layer, receipts) = layer();
    let body = r#"{"sku":"TV","amount_cents":9900}"#;
    let denied = denial(app(layer), post_json(PURCHASE, Some(&token(CAVEATS)), body)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied.challenge.as_deref(),
        Some(r#"Bearer error="insufficient_scope""#)
    );
    assert_eq!(
        denied.problem["detail"],
        "caveat failed: arg.amount_cents <= 5000"
    );
    let receipt = receipts.only();
    assert_eq!(
        denied.problem["receipt"]["signature"],
        receipt.signature_hex()
    );
    auditor()
        .verify(&denied.problem["receipt"].to_string())
        .unwrap();
}

#[tokio::test]
async fn wrong_tool_is_403() {
    let (layer, receipts) = layer();
    let denied = denial(
        app(layer),
        post_json("/tools/bank.wire", Some(&token(CAVEATS)), GOOD_BODY),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(receipts.only().context_summary().tool(), "bank.wire");
}

#[tokio::test]
async fn body_that_is_not_json_is_400() {
    let (layer, receipts) = layer();
    let denied = denial(
        app(layer),
        post_json(PURCHASE, Some(&token(CAVEATS)), "amount_cents=1"),
    )
    .await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(denied.challenge, None);
    assert_eq!(denied.problem["code"], "bad_request");
    let reason = receipts.only().outcome().reason().unwrap().to_owned();
    assert!(
        reason.starts_with("args: request body is not JSON: "),
        "{reason}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413_by_content_length() {
    let (layer, receipts) = layer();
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
    let mut request = post_json(PURCHASE, Some(&token(CAVEATS)), &body);
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    let denied = denial(app(layer.body_limit(256)), request).await;
    assert_eq!(denied.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(denied.problem["code"], "payload_too_large");
    assert_eq!(
        receipts.only().outcome().reason(),
        Some("request body exceeds the limit of 256 bytes")
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413_while_reading() {
    let (layer, receipts) = layer();
    // No Content-Length: the limit trips while the body is read.
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
    let denied = denial(
        app(layer.body_limit(256)),
        post_json(PURCHASE, Some(&token(CAVEATS)), &body),
    )
    .await;
    assert_eq!(denied.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(receipts.len(), 1);
}

/// A test body, with no size known up front: one that never yields
/// (reading it would hang the test), or frames handed out one by one.
enum TestBody {
    Never,
    Frames(std::collections::VecDeque<Bytes>),
}

impl From<Bytes> for TestBody {
    fn from(bytes: Bytes) -> Self {
        TestBody::Frames(std::iter::once(bytes).filter(|b| !b.is_empty()).collect())
    }
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TestBody::Never => Poll::Pending,
            TestBody::Frames(frames) => {
                Poll::Ready(frames.pop_front().map(|b| Ok(http_body::Frame::data(b))))
            }
        }
    }
}

fn chunked_request(token: &str, body: &str, pieces: usize) -> Request<Body> {
    let step = body.len().div_ceil(pieces);
    let chunks = body
        .as_bytes()
        .chunks(step)
        .map(Bytes::copy_from_slice)
        .collect();
    Request::post(PURCHASE)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::new(TestBody::Frames(chunks)))
        .unwrap()
}

#[tokio::test]
async fn a_body_in_several_chunks_is_judged_whole_and_handed_on_whole() {
    let (layer, receipts) = layer();
    for pieces in [1, 2, 3, 7] {
        let response = call(
            app(layer.clone()),
            chunked_request(&token(CAVEATS), GOOD_BODY, pieces),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{pieces} pieces");
        assert_eq!(response.body().split_once('\n').unwrap().1, GOOD_BODY);
    }
    let expensive = r#"{"sku":"laptop","amount_cents":250000}"#;
    let denied = denial(
        app(layer.clone()),
        chunked_request(&token(CAVEATS), expensive, 4),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    // Over the limit with no size known: found while reading.
    let long = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300));
    let denied = denial(
        app(layer.body_limit(256)),
        chunked_request(&token(CAVEATS), &long, 5),
    )
    .await;
    assert_eq!(denied.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(receipts.len(), 6);
}

#[tokio::test]
async fn body_reaches_the_handler_byte_for_byte_and_numbers_keep_their_text() {
    let (layer, receipts) = layer();
    let caveats = [r#"tool == "checkout.purchase""#, "arg.amount_cents <= 5000"];
    // 1299.0 is not an integer: the integer-domain rule must see its text.
    let body =
        "{ \"amount_cents\" : 1299 ,\n \"big\": 1e400, \"price\": 12.50, \"name\": \"caf\u{e9}\" }";
    let response = call(
        app(layer.clone().caller(Anonymous)),
        post_json(PURCHASE, Some(&token(&caveats)), body),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().split_once('\n').unwrap().1, body);

    let fractional = r#"{"amount_cents":1299.0}"#;
    let response = call(
        app(layer.caller(Anonymous)),
        post_json(PURCHASE, Some(&token(&caveats)), fractional),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(receipts.len(), 2);
    assert_ne!(
        receipts.all()[0].context_summary().args_hash(),
        receipts.all()[1].context_summary().args_hash()
    );
}

// ---------------------------------------------------------------------------
// plain tower services

/// A `service_fn` that counts its calls and echoes the body.
#[allow(clippy::type_complexity)]
fn counting() -> (
    impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            assert!(request.extensions().get::<Verified>().is_some());
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        }
    });
    (service, calls)
}

fn tower_request(token: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut builder = Request::post("/anything");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn tower_layer() -> (CapabilityLayer, Receipts) {
    let (layer, receipts) = layer();
    (
        layer
            .tool(FixedTool::new("checkout.purchase"))
            .caller(|_: &mut http::request::Parts| Ok("agent:planner".to_owned())),
        receipts,
    )
}

#[tokio::test]
async fn plain_tower_service_with_full_bytes_bodies() {
    let (layer, receipts) = tower_layer();
    let (inner, calls) = counting();
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let response = service
        .oneshot(tower_request(Some(&token(CAVEATS)), GOOD_BODY))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response.into_body()).await, GOOD_BODY);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(receipts.only().is_allowed());
}

#[tokio::test]
async fn a_denied_request_never_reaches_the_inner_service() {
    let cases: Vec<(Request<Full<Bytes>>, StatusCode)> = vec![
        (tower_request(None, GOOD_BODY), StatusCode::UNAUTHORIZED),
        (
            tower_request(Some("@@@"), GOOD_BODY),
            StatusCode::UNAUTHORIZED,
        ),
        (
            tower_request(Some(&forged(CAVEATS)), GOOD_BODY),
            StatusCode::UNAUTHORIZED,
        ),
        (
            tower_request(Some(&token(CAVEATS)), r#"{"amount_cents":5001}"#),
            StatusCode::FORBIDDEN,
        ),
        (
            tower_request(Some(&token(CAVEATS)), "{not json"),
            StatusCode::BAD_REQUEST,
        ),
        (
            tower_request(
                Some(&token(CAVEATS)),
                r#"{"amount_cents":1,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    let count = cases.len();
    let (layer, receipts) = tower_layer();
    let (inner, calls) = counting();
    let mut service = ServiceBuilder::new()
        .layer(layer.body_limit(64))
        .service(inner);
    for (request, status) in cases {
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), status);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(receipts.len(), count);
    assert!(receipts.all().iter().all(|r| !r.is_allowed()));
}

/// A service that is ready only after `pending` polls, and counts polls.
#[derive(Clone)]
struct SlowReady {
    polls: Arc<AtomicUsize>,
    pending: usize,
}

impl Service<Request<Full<Bytes>>> for SlowReady {
    type Response = Response<Full<Bytes>>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let n = self.polls.fetch_add(1, Ordering::SeqCst);
        if n < self.pending {
            cx.waker().wake_by_ref();
            Poll::Pending
        } else if n == self.pending {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err("inner not ready"))
        }
    }

    fn call(&mut self, _request: Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

#[tokio::test]
async fn poll_ready_is_forwarded() {
    let (layer, _receipts) = tower_layer();
    let polls = Arc::new(AtomicUsize::new(0));
    let mut service = ServiceBuilder::new().layer(layer).service(SlowReady {
        polls: Arc::clone(&polls),
        pending: 2,
    });
    // Pending twice, then ready: the layer passes each poll through.
    service.ready().await.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    let response = service
        .call(tower_request(Some(&token(CAVEATS)), GOOD_BODY))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The inner error comes through unchanged.
    assert_eq!(service.ready().await.err(), Some("inner not ready"));
}

#[tokio::test]
async fn a_forged_token_is_refused_before_its_body_is_read() {
    let (layer, receipts) = tower_layer();
    let inner = service_fn(|_: Request<TestBody>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    });
    let service = ServiceBuilder::new().layer(layer).service(inner);
    let request = Request::post("/")
        .header(header::AUTHORIZATION, format!("Bearer {}", forged(CAVEATS)))
        .body(TestBody::Never)
        .unwrap();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(5), service.oneshot(request))
            .await
            .expect("the body must not be read")
            .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(receipts.len(), 1);
}

#[tokio::test]
async fn a_sink_that_makes_requests_wait_delays_them_but_loses_nothing() {
    let (layer, _) = tower_layer();
    let recorded = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&recorded);
    struct Slow(Arc<AtomicUsize>);
    impl capnagent_tower::ReceiptSink for Slow {
        fn record(&self, _receipt: &Arc<Receipt>) -> Record {
            let counter = Arc::clone(&self.0);
            Record::wait(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }
    let (inner, calls) = counting();
    let mut service = ServiceBuilder::new()
        .layer(layer.sink(Slow(counter)).args(NoArgs))
        .service(inner);
    for (token, status) in [
        (Some(token(&CAVEATS[..2])), StatusCode::OK),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(tower_request(token.as_deref(), ""))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    assert_eq!(recorded.load(Ordering::SeqCst), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// where the facts come from

#[tokio::test]
async fn token_from_a_custom_header() {
    let (layer, receipts) = layer();
    let layer = layer.token_source(TokenSource::header(HeaderName::from_static("x-capability")));
    let mut request = post_json(PURCHASE, None, GOOD_BODY);
    request
        .headers_mut()
        .insert("x-capability", token(CAVEATS).parse().unwrap());
    let response = call(app(layer.clone()), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The Authorization header is ignored once a custom header is chosen.
    let denied = denial(
        app(layer),
        post_json(PURCHASE, Some(&token(CAVEATS)), GOOD_BODY),
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(receipts.len(), 2);
}

#[tokio::test]
async fn tool_from_a_closure() {
    let (layer, receipts) = layer();
    let layer = layer
        .tool(|parts: &mut http::request::Parts| {
            parts
                .headers
                .get("x-tool")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| ExtractError::bad_request("tool: no x-tool header"))
        })
        .caller(Anonymous)
        .args(NoArgs);
    let app = Router::new().route("/rpc", post(echo)).route_layer(layer);
    let mut request = post_json("/rpc", Some(&token(&[r#"tool == "files.read""#])), "");
    request
        .headers_mut()
        .insert("x-tool", "files.read".parse().unwrap());
    assert_eq!(call(app.clone(), request).await.status(), StatusCode::OK);
    let denied = denial(
        app,
        post_json("/rpc", Some(&token(&[r#"tool == "files.read""#])), ""),
    )
    .await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(denied.problem["detail"], "tool: no x-tool header");
    assert_eq!(receipts.len(), 2);
}

/// A layer without a tool source is a wiring bug found when the router is
/// built, never a 500 on each request.
#[test]
#[should_panic(expected = "needs a tool source: call `.tool(...)`")]
fn no_tool_configured_fails_when_the_router_is_built() {
    let (layer, _receipts) = layer();
    let _app: Router = Router::new()
        .route(PURCHASE, post(echo))
        .route_layer(layer.caller(Anonymous));
}

#[tokio::test]
async fn caller_comes_from_the_authentication_layer_and_its_absence_is_a_500() {
    let (layer, receipts) = layer();
    // No authentication layer in front.
    let app = Router::new()
        .route("/tools/{name}", post(echo))
        .route_layer(layer.tool(PathParam::new("name")));
    let denied = denial(app, post_json(PURCHASE, Some(&token(CAVEATS)), GOOD_BODY)).await;
    assert_eq!(denied.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        denied.problem["detail"]
            .as_str()
            .unwrap()
            .contains("AuthenticatedCaller")
    );
    assert_eq!(receipts.only().context_summary().caller(), "");
}

#[tokio::test]
async fn caller_never_comes_from_the_body() {
    let (layer, receipts) = layer();
    let app = Router::new()
        .route("/tools/{name}", post(echo))
        .route_layer(layer.tool(PathParam::new("name")))
        .route_layer(Extension(AuthenticatedCaller::new("agent:intern")));
    let body = r#"{"caller":"agent:planner","amount_cents":1}"#;
    let denied = denial(app, post_json(PURCHASE, Some(&token(CAVEATS)), body)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(receipts.only().context_summary().caller(), "agent:intern");
}

#[tokio::test]
async fn caller_from_a_trusted_header() {
    let (layer, receipts) = layer();
    let app = Router::new()
        .route("/tools/{name}", post(echo))
        .route_layer(
            layer
                .tool(PathParam::new("name"))
                .caller(TrustedHeader::new(HeaderName::from_static(
                    "x-verified-caller",
                ))),
        );
    let mut request = post_json(PURCHASE, Some(&token(CAVEATS)), GOOD_BODY);
    request
        .headers_mut()
        .insert("x-verified-caller", "agent:planner".parse().unwrap());
    assert_eq!(call(app, request).await.status(), StatusCode::OK);
    assert_eq!(receipts.only().context_summary().caller(), "agent:planner");
}

/// `GET /files` answering with its receipt, behind `layer` as the
/// anonymous `files.read` tool with the given args extractor.
fn files_app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route(
            "/files",
            get(|verified: Verified| async move { verified.receipt().to_json() }),
        )
        .route_layer(layer.tool(FixedTool::new("files.read")).caller(Anonymous))
}

#[tokio::test]
async fn args_from_a_closure() {
    // A closure may return a `JsonValue` (or anything `Into<Args>`); here
    // the args come from a header the server set itself.
    let (layer, receipts) = layer();
    let app = files_app(layer.args(|parts: &mut http::request::Parts| {
        let path = parts
            .headers
            .get("x-resolved-path")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ExtractError::bad_request("args: no resolved path"))?;
        let mut object = capnagent::JsonObject::new();
        object.insert(
            "path".to_owned(),
            capnagent::JsonValue::String(path.to_owned()),
        );
        Ok::<_, ExtractError>(capnagent::JsonValue::Object(object))
    }));
    let token = token(&[r#"arg.path starts_with "/srv/""#]);
    let get = |path: Option<&str>| {
        let mut request =
            Request::get("/files").header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(path) = path {
            request = request.header("x-resolved-path", path);
        }
        request.body(Body::empty()).unwrap()
    };
    assert_eq!(
        call(app.clone(), get(Some("/srv/a"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        call(app.clone(), get(Some("/etc/passwd"))).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(denial(app, get(None)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(receipts.len(), 3);
}

#[tokio::test]
async fn args_from_the_query_string() {
    let (layer, receipts) = layer();
    let app = files_app(layer.args(QueryArgs));
    let token = token(&[r#"arg.path starts_with "/srv/""#]);
    let get = |uri: &str| {
        Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call(app.clone(), get("/files?path=%2Fsrv%2Fa.txt"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(app.clone(), get("/files?path=/etc/passwd"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let denied = denial(app, get("/files?path=/srv/a&path=/etc/passwd")).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(receipts.len(), 3);
}

#[tokio::test]
async fn args_from_path_parameters() {
    let (layer, receipts) = layer();
    let app = Router::new()
        .route(
            "/accounts/{account}/wire",
            post(|verified: Verified| async move { verified.receipt().to_json() }),
        )
        .route_layer(
            layer
                .tool(FixedTool::new("bank.wire"))
                .caller(Anonymous)
                .args(PathArgs),
        );
    let token = token(&[r#"arg.account == "acct 1""#]);
    let response = call(
        app.clone(),
        post_json("/accounts/acct%201/wire", Some(&token), ""),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(app, post_json("/accounts/acct2/wire", Some(&token), "")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(receipts.len(), 2);
}

#[tokio::test]
async fn no_args_passes_the_body_through_unread() {
    let (layer, receipts) = layer();
    let app = app(layer.args(NoArgs));
    let response = call(
        app,
        post_json(
            PURCHASE,
            Some(&token(&[r#"tool == "checkout.purchase""#])),
            "not json at all",
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.body().split_once('\n').unwrap().1,
        "not json at all"
    );
    assert_eq!(
        receipts.only().context_summary().args_hash(),
        capnagent::Context::builder().build().args_hash()
    );
}

#[tokio::test]
async fn now_is_the_layers_clock_never_the_requests() {
    let (layer, receipts) = layer();
    let expired = token(&[
        r#"tool == "checkout.purchase""#,
        "now <= @2020-01-01T00:00:00Z",
    ]);
    let mut request = post_json(PURCHASE, Some(&expired), GOOD_BODY);
    request.headers_mut().insert(
        header::DATE,
        "Wed, 01 Jan 2019 00:00:00 GMT".parse().unwrap(),
    );
    let denied = denial(app(layer.clone()), request).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(receipts.only().timestamp_ms(), NOW_MS);

    // An injected clock before the deadline allows it.
    let early = layer.clock(|| Timestamp::from_unix_millis(1_500_000_000_000));
    let response = call(app(early), post_json(PURCHASE, Some(&expired), GOOD_BODY)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn env_facts_come_from_the_layer() {
    let (layer, _) = layer();
    let token = token(&[r#"env.region == "eu-west-1""#]);
    let eu = app(layer.clone().env("region", "eu-west-1"));
    let us = app(layer.env("region", "us-east-1"));
    assert_eq!(
        call(eu, post_json(PURCHASE, Some(&token), GOOD_BODY))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(us, post_json(PURCHASE, Some(&token), GOOD_BODY))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

// ---------------------------------------------------------------------------
// per route

#[tokio::test]
async fn one_layer_per_route_with_route_layer() {
    let (base, receipts) = layer();
    let base = base.caller(Anonymous);
    let app = Router::new()
        .merge(
            Router::new()
                .route("/wire", post(echo))
                .route_layer(base.clone().tool(FixedTool::new("bank.wire"))),
        )
        .merge(
            Router::new()
                .route(
                    "/files",
                    get(|v: Verified| async move { v.receipt().to_json() }),
                )
                .route_layer(base.tool(FixedTool::new("files.read")).args(QueryArgs)),
        );
    let files_only = token(&[r#"tool == "files.read""#]);
    let get = Request::get("/files?path=/srv/a")
        .header(header::AUTHORIZATION, format!("Bearer {files_only}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app.clone(), get).await.status(), StatusCode::OK);
    let wire = post_json("/wire", Some(&files_only), r#"{"amount_cents":1}"#);
    assert_eq!(
        call(app.clone(), wire).await.status(),
        StatusCode::FORBIDDEN
    );
    // Unknown routes are not behind a route_layer: a plain 404.
    let missing = post_json("/nope", None, "");
    assert_eq!(call(app, missing).await.status(), StatusCode::NOT_FOUND);
    let tools: Vec<_> = receipts
        .all()
        .iter()
        .map(|r| r.context_summary().tool().to_owned())
        .collect();
    assert_eq!(tools, ["files.read", "bank.wire"]);
}

#[tokio::test]
async fn one_router_wide_layer_with_per_route_overrides() {
    let (base, receipts) = layer();
    let layer = base.caller(Anonymous).tool(PathParam::new("name")).route(
        "/files",
        RouteOverride::new()
            .tool(FixedTool::new("files.read"))
            .args(QueryArgs),
    );
    let app = Router::new()
        .route("/tools/{name}", post(echo))
        .route(
            "/files",
            get(|v: Verified| async move { v.receipt().to_json() }),
        )
        .route_layer(layer);

    let purchase = token(&[r#"tool == "checkout.purchase""#, "arg.amount_cents <= 5000"]);
    let files = token(&[r#"tool == "files.read""#, r#"arg.path starts_with "/srv/""#]);
    // Default extractors: tool from the path, args from the JSON body.
    let response = call(app.clone(), post_json(PURCHASE, Some(&purchase), GOOD_BODY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Override: fixed tool, args from the query, no body needed.
    let get = |uri: &str| {
        Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {files}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call(app.clone(), get("/files?path=/srv/a")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        call(app.clone(), get("/files?path=/etc/passwd"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // The default path-param tool on another route still applies.
    let wire = post_json("/tools/bank.wire", Some(&purchase), GOOD_BODY);
    assert_eq!(call(app, wire).await.status(), StatusCode::FORBIDDEN);

    let tools: Vec<_> = receipts
        .all()
        .iter()
        .map(|r| r.context_summary().tool().to_owned())
        .collect();
    assert_eq!(
        tools,
        ["checkout.purchase", "files.read", "files.read", "bank.wire"]
    );
}

#[tokio::test]
async fn the_verified_extractor_without_the_layer_is_a_500_naming_the_fix() {
    let app = Router::new().route("/x", post(|_: Verified| async { "unreachable" }));
    let response = call(app, post_json("/x", None, "")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        response.body().contains("CapabilityLayer"),
        "{}",
        response.body()
    );
    assert!(response.body().contains("route_layer"));
}

#[tokio::test]
async fn optional_verified_is_none_without_the_layer() {
    let app = Router::new().route(
        "/x",
        post(|v: Option<Verified>| async move { format!("{}", v.is_some()) }),
    );
    let response = call(app, post_json("/x", None, "")).await;
    assert_eq!(response.body(), "false");
}

#[test]
fn debug_output_never_shows_keys() {
    let root = [0xAB; 32];
    let audit = [0xCD; 32];
    let layer = CapabilityLayer::new(Verifier::new(&root).unwrap(), Auditor::new(&audit).unwrap())
        .unwrap()
        .tool(FixedTool::new("t"))
        .env("region", "eu");
    let text = format!("{layer:?}");
    assert!(!text.to_lowercase().contains("abab"), "{text}");
    assert!(!text.to_lowercase().contains("cdcd"), "{text}");
    assert!(!text.contains("171"), "{text}");
    assert!(text.contains("FixedTool"), "{text}");
}

// ---------------------------------------------------------------------------
// conformance vectors, replayed through the layer

#[tokio::test]
async fn conformance_vectors_replay_through_the_layer() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../capnagent/tests/vectors");
    let deviations: Vec<String> = std::fs::read_to_string(format!("{dir}/deviations.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let text = std::fs::read_to_string(format!("{dir}/vectors.jsonl")).unwrap();
    let (mut allowed, mut denied) = (0, 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = row["id"].as_str().unwrap();
        let Some(expected) = row["expected"]["receipt"].as_str() else {
            continue;
        };
        if row["op"] != "verify"
            || row.get("volatile_fields").is_some()
            || deviations.iter().any(|d| d == id)
        {
            continue;
        }
        let ctx_json = row["ctx_json"].as_str().unwrap();
        // Read the facts with the engine's own parser: it keeps number text.
        let Ok(ctx) = capnagent::Context::from_json(ctx_json) else {
            continue;
        };
        let parsed = capnagent::JsonValue::parse(ctx_json, &Default::default()).unwrap();
        let fields = parsed.as_object().unwrap();
        if !matches!(fields.get("nowMs"), Some(capnagent::JsonValue::Number(_))) {
            continue;
        }
        let now = ctx.now();
        let body = ctx.args().canonical_string();

        let receipts = Receipts::default();
        let sink = receipts.clone();
        let mut layer = CapabilityLayer::new(
            Verifier::new(&hex(row["root_key_hex"].as_str().unwrap())).unwrap(),
            Auditor::new(&hex(row["audit_key_hex"].as_str().unwrap())).unwrap(),
        )
        .unwrap()
        .clock(move || now)
        .tool(FixedTool::new(ctx.tool().to_owned()))
        .sink(move |r: &Receipt| sink.push(r));
        for (k, v) in ctx.env() {
            layer = layer.env(k.clone(), v.clone());
        }
        let app = Router::new()
            .route("/call", post(echo))
            .route_layer(layer)
            .route_layer(Extension(AuthenticatedCaller::new(ctx.caller())));
        let request = post_json("/call", Some(row["token"].as_str().unwrap()), &body);
        let response = call(app, request).await;
        let receipt = receipts.only();
        // The layer decides exactly as the engine does on the same facts...
        let cap = capnagent::Capability::parse(row["token"].as_str().unwrap()).unwrap();
        let direct = Verifier::new(&hex(row["root_key_hex"].as_str().unwrap()))
            .unwrap()
            .verify_with_context_json(
                &cap,
                ctx_json,
                &Auditor::new(&hex(row["audit_key_hex"].as_str().unwrap())).unwrap(),
            )
            .unwrap();
        assert_eq!(receipt, direct, "{id}");
        // ...and an allowed receipt is byte for byte the reference's.
        if receipt.is_allowed() {
            assert_eq!(receipt.to_json(), expected, "{id}");
            allowed += 1;
            assert_eq!(response.status(), StatusCode::OK, "{id}");
            assert_eq!(
                response.body().split_once('\n').unwrap().0,
                expected,
                "{id}"
            );
        } else {
            denied += 1;
            // A holder-bound token without a proof is an invalid credential
            // (401); every other verifier denial is a 403.
            let expected_status = if cap.holder_of_key().is_some() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(response.status(), expected_status, "{id}");
        }
    }
    assert!(allowed >= 100, "only {allowed} allowed rows replayed");
    assert!(denied >= 100, "only {denied} denied rows replayed");
}

#[tokio::test]
async fn router_layer_also_judges_unknown_paths_route_layer_does_not() {
    let (base, receipts) = layer();
    let base = base.caller(Anonymous).tool(PathParam::new("name"));
    let routes = || Router::new().route("/tools/{name}", post(echo));
    let with_route_layer = routes().route_layer(base.clone());
    let with_layer = routes().layer(base);
    let missing = || post_json("/nope", None, GOOD_BODY);
    assert_eq!(
        call(with_route_layer, missing()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(receipts.len(), 0);
    assert_eq!(
        call(with_layer, missing()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(receipts.len(), 1);
}

#[tokio::test]
async fn a_cached_token_is_still_judged_on_every_call() {
    let (layer, receipts) = layer();
    let app = app(layer);
    let token = token(CAVEATS);
    for (body, status) in [
        (GOOD_BODY, StatusCode::OK),
        (r#"{"amount_cents":9999}"#, StatusCode::FORBIDDEN),
        (GOOD_BODY, StatusCode::OK),
    ] {
        let response = call(app.clone(), post_json(PURCHASE, Some(&token), body)).await;
        assert_eq!(response.status(), status);
    }
    // A forged token differs in its text: never a cache hit.
    let denied = denial(app, post_json(PURCHASE, Some(&forged(CAVEATS)), GOOD_BODY)).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(receipts.len(), 4);
}

#[tokio::test]
async fn a_request_dropped_while_its_body_is_read_still_leaves_a_receipt() {
    let (layer, receipts) = tower_layer();
    let inner = service_fn(|_: Request<TestBody>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    });
    let mut service = ServiceBuilder::new().layer(layer).service(inner);
    let request = Request::post("/")
        .header(header::AUTHORIZATION, format!("Bearer {}", token(CAVEATS)))
        .body(TestBody::Never)
        .unwrap();
    let future = service.ready().await.unwrap().call(request);
    let outcome = tokio::time::timeout(std::time::Duration::from_millis(20), future).await;
    assert!(outcome.is_err(), "the body never ends");
    let receipt = receipts.only();
    assert_eq!(
        receipt.outcome().reason(),
        Some("request cancelled before a decision (body not fully read)")
    );
    assert_eq!(receipt.capability_identifier(), "agent-42");
}
