//! Write-ahead, fail-closed audit over real HTTP: an allowed call reaches
//! its handler only once its receipt is written; when the audit log cannot
//! be written (a full disk, `/dev/full`; a stopped writer) the call is
//! refused with 503 (an MCP JSON-RPC error on an MCP endpoint) and the
//! handler never runs, not even for the first call; service resumes when
//! recording works again; `fail_open` keeps serving.

#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "axum", feature = "mcp"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::{any, post};
use axum::{Extension, Router};
use capnagent::{AuditLog, Receipt};
use capnagent_tower::mcp::AUDIT_UNAVAILABLE_ERROR_CODE;
use capnagent_tower::{
    Anonymous, AuditLogSink, AuthenticatedCaller, CapabilityLayer, McpPolicy, NoArgs, PathParam,
    ReceiptSink, Record, SinkError, Verified,
};
use serde_json::{Value, json};
use support::*;

const CAVEATS: &[&str] = &[
    r#"caller == "agent:planner""#,
    r#"tool == "checkout.purchase""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];
const BODY: &str = r#"{"sku":"USB-C cable","amount_cents":1299}"#;

/// Handler invocations, counted by the handlers themselves.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Two tool routes behind `sink`: `/tools/{name}` takes its args from the
/// JSON body (the layer buffers it first), `/noargs/{name}` decides from
/// the head alone (the layer decides inside `call`).
fn app(sink: impl ReceiptSink + Clone, calls: &Calls) -> Router {
    let layer = layer().0.sink(sink).tool(PathParam::new("name"));
    let handler = {
        let calls = calls.clone();
        move |_: Verified| async move {
            calls.0.fetch_add(1, Ordering::SeqCst);
            "ran"
        }
    };
    let with_args = Router::new()
        .route("/tools/{name}", post(handler.clone()))
        .route_layer(layer.clone());
    let without_args = Router::new()
        .route("/noargs/{name}", post(handler))
        .route_layer(layer.args(NoArgs));
    with_args
        .merge(without_args)
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")))
}

/// A token for `path`: the `arg.*` caveat only where args are read.
fn token_for(path: &str) -> String {
    if path.starts_with("/noargs/") {
        token(&[CAVEATS[0], CAVEATS[1], CAVEATS[3]])
    } else {
        token(CAVEATS)
    }
}

async fn call(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(BODY);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A 503 refusal: problem+json with code `audit_unavailable`, the reason,
/// `Retry-After`, and no receipt.
async fn assert_refused(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 503);
    assert_eq!(body["code"], "audit_unavailable");
    assert!(body.get("receipt").is_none(), "{body}");
    let detail = body["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("audit log unavailable"), "{detail}");
    detail
}

#[tokio::test]
async fn a_full_disk_refuses_every_allowed_call_before_its_handler_runs() {
    // `/dev/full` opens, and every write to it fails with ENOSPC.
    let sink = AuditLogSink::new(AuditLog::open("/dev/full").unwrap()).unwrap();
    let calls = Calls::default();
    let server = Server::start(app(sink.clone(), &calls)).await;

    for (round, path) in ["/tools/checkout.purchase", "/noargs/checkout.purchase"]
        .into_iter()
        .cycle()
        .take(4)
        .enumerate()
    {
        let good = token_for(path);
        let detail = assert_refused(call(&server, path, Some(&good)).await).await;
        assert!(detail.contains("could not be written"), "{detail}");
        assert_eq!(calls.get(), 0, "the handler ran in round {round}");
    }

    // A denial is still the denial it was (it does not wait for the write).
    let denied = call(&server, "/tools/checkout.purchase", None).await;
    assert_eq!(denied.status(), 401);
    assert_eq!(calls.get(), 0);

    sink.flush().await.unwrap();
    let stats = sink.stats();
    assert_eq!(stats.refused, 4);
    assert_eq!(stats.written, 0);
    assert_eq!(stats.failed, 5);
}

#[tokio::test]
async fn a_stopped_writer_refuses_every_allowed_call_before_its_handler_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    // The writer thread is gone: its queue is closed.
    sink.close().await.unwrap();
    let calls = Calls::default();
    let server = Server::start(app(sink.clone(), &calls)).await;

    for path in ["/tools/checkout.purchase", "/noargs/checkout.purchase"] {
        let good = token_for(path);
        let detail = assert_refused(call(&server, path, Some(&good)).await).await;
        assert_eq!(
            detail,
            "audit log unavailable: the audit writer thread has stopped"
        );
    }
    assert_eq!(calls.get(), 0);
    assert_eq!(sink.stats().refused, 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn the_handler_finds_its_receipt_already_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let layer = layer().0.sink(sink.clone()).tool(PathParam::new("name"));
    let log_path = path.clone();
    // Reads the log from inside the handler: the receipt that allowed this
    // call must be there already (write-ahead), without any flush.
    let handler = move |verified: Verified| async move {
        let signature = verified.receipt().signature_hex();
        let logged: Vec<Receipt> = AuditLog::open(&log_path)
            .unwrap()
            .iter()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let found = logged.iter().any(|r| r.signature_hex() == signature);
        if found { "logged" } else { "missing" }
    };
    let app = Router::new()
        .route("/tools/{name}", post(handler))
        .route_layer(layer)
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")));
    let server = Server::start(app).await;
    let good = token(CAVEATS);
    for _ in 0..20 {
        let response = call(&server, "/tools/checkout.purchase", Some(&good)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "logged");
    }
}

/// A sink that cannot record the first `failures` allowed receipts, then
/// hands every receipt to the audit log: a log that recovers.
#[derive(Clone)]
struct Recovering {
    failures: Arc<AtomicUsize>,
    log: AuditLogSink,
}

impl ReceiptSink for Recovering {
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        let failing = receipt.is_allowed()
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            return Record::failed(SinkError::new("audit log unavailable: disk detached"));
        }
        self.log.record(receipt)
    }
}

#[tokio::test]
async fn service_resumes_when_receipts_can_be_recorded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    let log = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
    let sink = Recovering {
        failures: Arc::new(AtomicUsize::new(3)),
        log: log.clone(),
    };
    let calls = Calls::default();
    let server = Server::start(app(sink, &calls)).await;
    let good = token(CAVEATS);

    for _ in 0..3 {
        let detail =
            assert_refused(call(&server, "/tools/checkout.purchase", Some(&good)).await).await;
        assert_eq!(detail, "audit log unavailable: disk detached");
    }
    assert_eq!(calls.get(), 0);
    for n in 1..=3 {
        let response = call(&server, "/tools/checkout.purchase", Some(&good)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(calls.get(), n);
    }
    assert_eq!(log.stats().written, 3);
}

#[tokio::test]
async fn fail_open_keeps_serving_when_the_disk_is_full() {
    let sink = AuditLogSink::builder(AuditLog::open("/dev/full").unwrap())
        .fail_open()
        .build()
        .unwrap();
    let calls = Calls::default();
    let server = Server::start(app(sink.clone(), &calls)).await;
    for path in ["/tools/checkout.purchase", "/noargs/checkout.purchase"] {
        let good = token_for(path);
        let response = call(&server, path, Some(&good)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(calls.get(), 2);
    sink.flush().await.unwrap();
    let stats = sink.stats();
    assert_eq!((stats.written, stats.failed, stats.refused), (0, 2, 0));
}

// ---------------------------------------------------------------------------
// MCP

const MCP_CAVEATS: &[&str] = &[
    r#"tool == "checkout_purchase""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];

fn mcp_app(sink: AuditLogSink, calls: &Calls) -> Router {
    let layer: CapabilityLayer = layer().0.sink(sink);
    let calls = calls.clone();
    let server = move |_: Verified| async move {
        calls.0.fetch_add(1, Ordering::SeqCst);
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#
    };
    Router::new()
        .route("/mcp", any(server))
        .route_layer(layer.caller(Anonymous).mcp(McpPolicy::new()))
}

async fn mcp_post(server: &Server, token: &str, message: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .body(message.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_mcp_message_is_refused_with_a_json_rpc_error_when_the_disk_is_full() {
    let sink = AuditLogSink::new(AuditLog::open("/dev/full").unwrap()).unwrap();
    let calls = Calls::default();
    let server = Server::start(mcp_app(sink.clone(), &calls)).await;
    let good = token(MCP_CAVEATS);

    let messages = [
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "checkout_purchase", "arguments": {"amount_cents": 100}}}),
        // Needs only a genuine capability: allowed, so it waits for its
        // receipt too.
        json!({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"}),
    ];
    for message in &messages {
        let response = mcp_post(&server, &good, message).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], message["id"]);
        assert_eq!(body["error"]["code"], AUDIT_UNAVAILABLE_ERROR_CODE);
        assert_eq!(body["error"]["data"]["code"], "audit_unavailable");
        assert!(body["error"]["data"].get("receipt").is_none());
        let reason = body["error"]["message"].as_str().unwrap();
        assert!(reason.starts_with("audit log unavailable"), "{reason}");
        assert_eq!(calls.get(), 0);
    }

    // A caveat denial is still the tool error it was.
    let over = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                      "params": {"name": "checkout_purchase", "arguments": {"amount_cents": 9900}}});
    let response = mcp_post(&server, &good, &over).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(calls.get(), 0);
    assert_eq!(sink.stats().refused, 2);
}
