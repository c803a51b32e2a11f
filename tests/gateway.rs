//! Loopback tests of `capnagent-gateway` started in process through its
//! library API: in front of the example rmcp tool server (mounted without
//! any capability layer, as a Python or TypeScript server would be), with
//! the rmcp client; in front of an axum JSON tool API, with reqwest; and
//! in front of upstreams that are down, slow or reset connections. Two
//! gateways sharing one Redis at the end. The binary itself is tested in
//! `capnagent-gateway/tests/binary.rs`.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use capnagent::{Auditor, HolderKey, Issuer, RevocationStore, Revoker, Timestamp};
use capnagent_examples::mcp;
use capnagent_gateway::{Config, Gateway, RECEIPT_SIGNATURE_HEADER};
use capnagent_tower::AuditLogSink;
use capnagent_tower::mcp::RECEIPT_META_KEY;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const ROOT_KEY: [u8; 32] = [0x11; 32];
const AUDIT_KEY: [u8; 32] = [0x22; 32];
const TIMEOUT: Duration = Duration::from_secs(20);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an upstream saw: method, path, headers, body.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Records every request the upstream receives (the body too, for
/// requests with a small declared body).
async fn record(log: Log, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Serves `app` on a loopback port; its address.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A running gateway: its address, the sink, the log, and what stops it.
struct Running {
    addr: SocketAddr,
    url: String,
    sink: AuditLogSink,
    log: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, &mut self.done)
            .await
            .expect("the gateway stops")
            .unwrap();
    }

    /// The number of records in the audit log, the chain verified.
    async fn audited(&self) -> u64 {
        self.sink.flush().await.unwrap();
        capnagent::verify_audit_log(&[&self.log], &[Auditor::new(&AUDIT_KEY).unwrap()], None)
            .unwrap()
            .records
    }
}

/// Starts a gateway to `upstream` with the config body `rest` (mode,
/// routes, ...) and the test keys.
async fn gateway(upstream: &str, rest: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.env");
    std::fs::write(
        &keys,
        format!(
            "CAPNAGENT_ROOT_KEY={}\nCAPNAGENT_AUDIT_KEY={}\n",
            hex(&ROOT_KEY),
            hex(&AUDIT_KEY)
        ),
    )
    .unwrap();
    let log = dir.path().join("audit.ndjson");
    let text = format!(
        r#"
listen = "127.0.0.1:0"
upstream = "{upstream}"
{rest}
[keys]
root_key_file = "{keys}"
audit_key_file = "{keys}"
[audit]
log = "{log}"
"#,
        keys = keys.display(),
        log = log.display(),
    );
    let config = Config::from_toml(&text).unwrap().validate().unwrap();
    let gateway = Gateway::start(config).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    let url = gateway.url();
    let sink = gateway.sink().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        gateway
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        url,
        sink,
        log,
        stop: Some(stop),
        done,
        _dir: dir,
    }
}

fn token(caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
    let mut builder = issuer.issue("gateway-agent");
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

// ---------------------------------------------------------------------------
// MCP: the example rmcp server, unguarded, behind the gateway

const MCP_CAVEATS: [&str; 2] = [r#"tool == "checkout_purchase""#, "arg.amount_cents <= 5000"];

/// The example MCP server at `/mcp` with no capability layer, recording
/// what reaches it.
async fn mcp_upstream() -> (SocketAddr, Log) {
    let log = Log::default();
    let recorder = Arc::clone(&log);
    let app = Router::new()
        .route_service(mcp::PATH, mcp::service())
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            record(Arc::clone(&recorder), request, next)
        }));
    (serve(app).await, log)
}

async fn connect(
    url: &str,
    token: Option<&str>,
) -> Result<RunningService<RoleClient, ()>, ClientInitializeError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    tokio::time::timeout(
        TIMEOUT,
        ().serve(StreamableHttpClientTransport::from_config(config)),
    )
    .await
    .expect("connecting timed out")
}

async fn call<C: rmcp::ClientHandler>(
    client: &RunningService<RoleClient, C>,
    tool: &'static str,
    args: Value,
) -> Value {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let result: CallToolResult = tokio::time::timeout(
        TIMEOUT,
        client.call_tool(CallToolRequestParams::new(tool).with_arguments(args)),
    )
    .await
    .expect("the call timed out")
    .unwrap();
    serde_json::to_value(result).unwrap()
}

#[tokio::test]
async fn mcp_calls_are_judged_and_the_token_never_reaches_the_server() {
    let (upstream, seen) = mcp_upstream().await;
    let gw = gateway(&format!("http://{upstream}"), "mode = \"mcp\"").await;
    let token = token(&MCP_CAVEATS);
    let client = connect(&gw.url, Some(&token)).await.unwrap();

    let allowed = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "acme", "amount_cents": 1299}),
    )
    .await;
    assert_ne!(allowed["isError"], json!(true), "{allowed}");
    let text = allowed["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("charged 1299 cents at acme"), "{text}");

    // Denied by a caveat: a tool error the model can read, with the receipt.
    let denied = call(&client, "bank_wire", json!({"to": "x", "amount_cents": 1})).await;
    assert_eq!(denied["isError"], json!(true), "{denied}");
    let receipt = Auditor::new(&AUDIT_KEY)
        .unwrap()
        .verify(&denied["_meta"][RECEIPT_META_KEY].to_string())
        .unwrap();
    assert!(!receipt.is_allowed());
    assert_eq!(receipt.context_summary().tool(), "bank_wire");

    // Ending the session: rmcp's client sends DELETE, forwarded.
    client.cancel().await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !seen.lock().unwrap().iter().any(|s| s.method == "DELETE") {
        assert!(Instant::now() < deadline, "no DELETE reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let seen = seen.lock().unwrap().clone();
    // The denied call never reached the server; the allowed one did, with
    // its body byte for byte as the client sent it.
    let bodies: Vec<String> = seen
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert!(bodies.iter().any(|b| b.contains("checkout_purchase")));
    assert!(
        !bodies.iter().any(|b| b.contains("bank_wire")),
        "{bodies:?}"
    );
    assert!(
        seen.iter().any(|s| s.method == "GET"),
        "the SSE stream of the session"
    );
    for request in &seen {
        assert_eq!(request.path, "/mcp");
        assert!(
            !request.headers.contains_key("authorization"),
            "the token reached the upstream: {request:?}"
        );
        assert!(!request.headers.contains_key("capnagent-proof"));
        // Every request the layer allowed carries its receipt's signature.
        let signature = request.headers[RECEIPT_SIGNATURE_HEADER].to_str().unwrap();
        assert_eq!(signature.len(), 64, "{signature}");
        assert_eq!(request.headers["x-forwarded-for"], "127.0.0.1");
        assert!(
            request.headers["forwarded"]
                .to_str()
                .unwrap()
                .starts_with("for=127.0.0.1;proto=http")
        );
    }
    // One receipt per request the layer saw, in a chain that verifies.
    assert_eq!(gw.audited().await, seen.len() as u64 + 1);
    gw.stop().await;
}

/// Connects through `url` speaking `version`: the `initialize` handshake
/// up to 2025-11-25, `server/discover` (no handshake, no session) from
/// 2026-07-28.
async fn connect_speaking(
    url: &str,
    token: &str,
    version: &ProtocolVersion,
) -> RunningService<RoleClient, ClientConfig> {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = ClientConfig::default().with_protocol_version(version.clone());
    let lifecycle = if version.has_initialize() {
        ClientLifecycleMode::Initialize
    } else {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![version.clone()],
        }
    };
    tokio::time::timeout(TIMEOUT, client.serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("connecting timed out")
        .unwrap_or_else(|e| panic!("{version}: {e}"))
}

/// Every protocol revision rmcp speaks, through the gateway to the
/// unchanged server: the revision is negotiated end to end, the tools are
/// listed, a call within the caveats runs and one outside them comes back
/// as a tool error with its receipt, never reaching the server.
#[tokio::test]
async fn mcp_every_protocol_revision_passes_through_the_gateway() {
    let (upstream, seen) = mcp_upstream().await;
    let gw = gateway(&format!("http://{upstream}"), "mode = \"mcp\"").await;
    let token = token(&MCP_CAVEATS);
    let auditor = Auditor::new(&AUDIT_KEY).unwrap();
    for version in ProtocolVersion::KNOWN_VERSIONS {
        let client = connect_speaking(&gw.url, &token, version).await;
        assert_eq!(
            &client.peer_info().unwrap().protocol_version,
            version,
            "negotiated through the gateway"
        );
        let listed = client.list_all_tools().await.unwrap();
        assert!(!listed.is_empty(), "{version}");
        let allowed = call(
            &client,
            "checkout_purchase",
            json!({"merchant": "acme", "amount_cents": 42}),
        )
        .await;
        assert_ne!(allowed["isError"], json!(true), "{version}: {allowed}");
        let denied = call(&client, "files_read", json!({"path": "/etc/passwd"})).await;
        assert_eq!(denied["isError"], json!(true), "{version}: {denied}");
        let receipt = auditor
            .verify(&denied["_meta"][RECEIPT_META_KEY].to_string())
            .unwrap();
        assert_eq!(receipt.context_summary().tool(), "files_read");
        client.cancel().await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let bodies: Vec<String> = seen
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("server/discover")),
        "{bodies:?}"
    );
    assert!(
        !bodies
            .iter()
            .any(|b| b.contains("files_read") && b.contains("tools/call"))
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("\"tools/call\"") && b.contains("checkout_purchase"))
            .count(),
        ProtocolVersion::KNOWN_VERSIONS.len()
    );
    assert!(
        seen.iter()
            .all(|s| !s.headers.contains_key("authorization"))
    );
    gw.stop().await;
}

#[tokio::test]
async fn mcp_answers_stream_as_sse_through_the_gateway() {
    let (upstream, _) = mcp_upstream().await;
    let gw = gateway(&format!("http://{upstream}"), "mode = \"mcp\"").await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}
    });
    let response = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(token(&MCP_CAVEATS))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let session = response.headers()["mcp-session-id"].clone();
    let body = tokio::time::timeout(TIMEOUT, response.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.contains("data:") && body.contains("\"serverInfo\""),
        "{body}"
    );

    // The session ends with a DELETE through the gateway.
    let deleted = reqwest::Client::new()
        .delete(&gw.url)
        .bearer_auth(token(&MCP_CAVEATS))
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    gw.stop().await;
}

#[tokio::test]
async fn mcp_without_a_genuine_token_is_refused_before_the_server() {
    let (upstream, seen) = mcp_upstream().await;
    let gw = gateway(&format!("http://{upstream}"), "mode = \"mcp\"").await;
    let missing = connect(&gw.url, None).await.unwrap_err();
    assert!(missing.is_authorization_required(), "{missing}");
    let forged = {
        let issuer = Issuer::from_key(&[0x33; 32]).unwrap();
        let mut builder = issuer.issue("forged");
        builder.caveat(MCP_CAVEATS[0]).unwrap();
        builder.build().unwrap().serialize()
    };
    let error = connect(&gw.url, Some(&forged)).await.unwrap_err();
    assert!(error.is_authorization_required(), "{error}");
    assert_eq!(
        error.auth_challenge(),
        Some("Bearer error=\"invalid_token\"")
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reaches the server"
    );
    assert_eq!(gw.audited().await, 2);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// HTTP: an axum JSON tool API behind the gateway

/// Bytes of the streamed download.
const BIG: usize = 64 << 20;
const CHUNK: usize = 64 << 10;

struct HttpUpstream {
    addr: SocketAddr,
    seen: Log,
    produced: Arc<AtomicUsize>,
}

async fn http_upstream() -> HttpUpstream {
    let seen = Log::default();
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&produced);
    let recorder = Arc::clone(&seen);
    let echo = |request: Request| async move {
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let app = Router::new()
        .route("/tools/{name}", post(echo))
        .route("/files", get(|| async { "file contents" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            record(Arc::clone(&recorder), request, next)
        }))
        // The download is generated as it is read, outside the recorder.
        .route(
            "/big",
            get(move || {
                let counter = Arc::clone(&counter);
                async move {
                    let chunks = tokio_stream::StreamExt::map(
                        tokio_stream::iter(0..BIG / CHUNK),
                        move |_| {
                            counter.fetch_add(CHUNK, Ordering::SeqCst);
                            Ok::<_, Infallible>(Bytes::from(vec![b'x'; CHUNK]))
                        },
                    );
                    Body::from_stream(chunks)
                }
            }),
        );
    HttpUpstream {
        addr: serve(app).await,
        seen,
        produced,
    }
}

const HTTP_ROUTES: &str = r#"
mode = "http"
[timeouts]
request_ms = 500
[[http.routes]]
path = "/tools/{name}"
tool_param = "name"
args = "json"
[[http.routes]]
path = "/files"
tool = "files.read"
args = "query"
[[http.routes]]
path = "/big"
tool = "files.download"
args = "none"
[[http.routes]]
path = "/slow"
tool = "slow.call"
args = "none"
"#;

#[tokio::test]
async fn http_routes_are_judged_and_the_judged_body_is_forwarded_byte_for_byte() {
    let upstream = http_upstream().await;
    let gw = gateway(&format!("http://{}", upstream.addr), HTTP_ROUTES).await;
    let base = format!("http://{}", gw.addr);
    let client = reqwest::Client::new();
    let purchase = token(&[r#"tool == "checkout.purchase""#, "arg.amount_cents <= 5000"]);

    // Odd spacing and number text: forwarded exactly as sent.
    let body = "{ \"amount_cents\" : 1299 ,\"sku\":\"caf\\u00e9\", \"ratio\": 1.50 }";
    let response = client
        .post(format!("{base}/tools/checkout.purchase"))
        .bearer_auth(&purchase)
        .header("content-type", "application/json")
        .header("connection", "close, x-hop")
        .header("x-hop", "must not pass")
        .header("x-forwarded-for", "6.6.6.6")
        .header(RECEIPT_SIGNATURE_HEADER, "forged")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), body);

    // Denied by the args caveat, by the tool caveat: never forwarded.
    let too_much = client
        .post(format!("{base}/tools/checkout.purchase"))
        .bearer_auth(&purchase)
        .body(r#"{"amount_cents": 9900}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 403);
    let problem: Value = too_much.json().await.unwrap();
    assert_eq!(problem["detail"], "caveat failed: arg.amount_cents <= 5000");
    assert!(problem["receipt"]["signature"].is_string(), "{problem}");
    let wire = client
        .post(format!("{base}/tools/bank.wire"))
        .bearer_auth(&purchase)
        .body(r#"{"amount_cents": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(wire.status(), 403);

    // Query args on a fixed-tool route.
    let files = token(&[r#"tool == "files.read""#, r#"arg.path == "/srv/a.txt""#]);
    let read = |path: &'static str| {
        client
            .get(format!("{base}/files"))
            .query(&[("path", path)])
            .bearer_auth(&files)
            .send()
    };
    let allowed = read("/srv/a.txt").await.unwrap();
    assert_eq!(allowed.status(), 200, "{}", allowed.text().await.unwrap());
    assert_eq!(read("/etc/passwd").await.unwrap().status(), 403);
    // No token; an unknown path (404 from the gateway, not forwarded).
    assert_eq!(
        client
            .get(format!("{base}/files"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let unknown = client
        .get(format!("{base}/admin"))
        .bearer_auth(&files)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let seen = upstream.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/tools/checkout.purchase", "/files"]);
    let first = &seen[0];
    assert_eq!(first.body, body.as_bytes());
    assert!(!first.headers.contains_key("authorization"));
    assert!(!first.headers.contains_key("x-hop"), "named by Connection");
    assert!(!first.headers.contains_key("connection"));
    // The client's own x-forwarded-for is not trusted; the receipt header
    // is the gateway's.
    assert_eq!(first.headers["x-forwarded-for"], "127.0.0.1");
    let signature = first.headers[RECEIPT_SIGNATURE_HEADER].to_str().unwrap();
    assert_ne!(signature, "forged");
    assert_eq!(signature.len(), 64);
    assert_eq!(first.headers["host"], upstream.addr.to_string());
    gw.stop().await;
}

#[tokio::test]
async fn a_large_response_streams_through_without_being_buffered() {
    let upstream = http_upstream().await;
    let gw = gateway(&format!("http://{}", upstream.addr), HTTP_ROUTES).await;
    let mut response = reqwest::Client::new()
        .get(format!("http://{}/big", gw.addr))
        .bearer_auth(token(&[r#"tool == "files.download""#]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(TIMEOUT, response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!first.is_empty());
    // The client has its first bytes before the upstream is done.
    assert!(upstream.produced.load(Ordering::SeqCst) < BIG);
    // With nobody reading, the upstream stalls once the socket buffers
    // along the way are full (a few MiB each on loopback), far from done:
    // nothing, the gateway included, buffers the response as a whole.
    let mut produced = upstream.produced.load(Ordering::SeqCst);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = upstream.produced.load(Ordering::SeqCst);
        if now == produced {
            break;
        }
        assert!(Instant::now() < deadline, "the upstream never stalled");
        produced = now;
    }
    assert!(
        produced < BIG / 2,
        "the upstream produced {produced} bytes already"
    );

    let mut total = first.len();
    while let Some(chunk) = tokio::time::timeout(TIMEOUT, response.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        total += chunk.len();
    }
    assert_eq!(total, BIG);
    assert_eq!(upstream.produced.load(Ordering::SeqCst), BIG);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// upstream failures

async fn assert_problem(response: reqwest::Response, status: u16) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body.get("receipt").is_none(), "{body}");
}

#[tokio::test]
async fn an_upstream_that_is_down_is_a_502() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let gw = gateway(&format!("http://{closed}"), HTTP_ROUTES).await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{}/files?path=x", gw.addr))
        .bearer_auth(token(&[r#"tool == "files.read""#]))
        .send()
        .await
        .unwrap();
    assert_problem(response, 502).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_and_does_not_hold_other_calls() {
    let upstream = http_upstream().await;
    let gw = gateway(&format!("http://{}", upstream.addr), HTTP_ROUTES).await;
    let client = reqwest::Client::new();
    let slow_token = token(&[r#"tool == "slow.call""#]);
    let slow = client
        .get(format!("http://{}/slow", gw.addr))
        .bearer_auth(&slow_token)
        .send();
    let fast = async {
        // Started while the slow call waits, answered at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let response = client
            .get(format!("http://{}/files?path=x", gw.addr))
            .bearer_auth(token(&[r#"tool == "files.read""#]))
            .send()
            .await
            .unwrap();
        (response.status(), started.elapsed())
    };
    let started = Instant::now();
    let (slow, (fast_status, fast_took)) = tokio::join!(slow, fast);
    assert_problem(slow.unwrap(), 504).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(fast_status, 200);
    assert!(fast_took < Duration::from_millis(400), "{fast_took:?}");
    gw.stop().await;
}

/// A client that sends its head and then trickles its body (or stalls)
/// holds only its own connection: other calls are judged and answered at
/// once, and the slow call itself is answered once its body is complete.
#[tokio::test]
async fn a_slow_client_does_not_hold_other_calls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = http_upstream().await;
    let gw = gateway(&format!("http://{}", upstream.addr), HTTP_ROUTES).await;
    let body = r#"{"amount_cents":1}"#;
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /tools/checkout.purchase HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        token(&[r#"tool == "checkout.purchase""#]),
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body.as_bytes()[..3]).await.unwrap();

    // While the slow client's body is incomplete, other calls go through.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = client
            .get(format!("http://{}/files?path=x", gw.addr))
            .bearer_auth(token(&[r#"tool == "files.read""#]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    // The rest of the body arrives: the slow call is judged and forwarded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    slow.write_all(&body.as_bytes()[3..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        assert!(Instant::now() < deadline, "no answer to the slow call");
        let n = tokio::time::timeout(TIMEOUT, slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let bodies: Vec<Vec<u8>> = upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.to_vec())
        .collect();
    assert!(
        bodies.iter().any(|b| b == body.as_bytes()),
        "the judged body, whole"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_resets_the_connection_is_a_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            // Read the request head, then reset.
            let mut buffer = [0u8; 1024];
            let _ = stream.readable().await;
            let _ = stream.try_read(&mut buffer);
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    let gw = gateway(&format!("http://{addr}"), HTTP_ROUTES).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/files?path=x", gw.addr))
        .bearer_auth(token(&[r#"tool == "files.read""#]))
        .send()
        .await
        .unwrap();
    assert_problem(response, 502).await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// operations

#[tokio::test]
async fn health_and_readiness_answer_outside_the_layer() {
    let upstream = http_upstream().await;
    let gw = gateway(&format!("http://{}", upstream.addr), HTTP_ROUTES).await;
    for path in ["healthz", "readyz"] {
        let response = reqwest::get(format!("http://{}/{path}", gw.addr))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // No receipt for either: the layer never saw them.
    assert_eq!(gw.audited().await, 0);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_drains_a_call_in_flight() {
    // An upstream that answers after 300 ms.
    let app = Router::new().route(
        "/files",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "finished"
        }),
    );
    let upstream = serve(app).await;
    let gw = gateway(&format!("http://{upstream}"), HTTP_ROUTES).await;
    let url = format!("http://{}/files?path=x", gw.addr);
    let call = tokio::spawn(
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token(&[r#"tool == "files.read""#]))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = gw.addr;
    gw.stop().await;
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    // Stopped: no longer accepting.
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------------------
// two gateways, one Redis

#[tokio::test]
async fn two_gateways_sharing_redis_refuse_a_replayed_proof_and_both_honour_a_revocation() {
    let Some((redis_url, _guard)) = capnagent_tests::redis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Redis is required when CI is set"
        );
        eprintln!("skipped: no Redis (set CAPNAGENT_REDIS_URL or install redis-server)");
        return;
    };
    let upstream = http_upstream().await;
    // A prefix of this run's own: the revocation list of other tests
    // sharing the Redis is not ours.
    let prefix = format!("gw-test-{}", Timestamp::now().unix_millis());
    let redis = format!(
        "[redis]\nurl = \"{redis_url}\"\nrevocation_poll_ms = 100\nprefix = \"{prefix}\"\n"
    );
    let config = format!("{HTTP_ROUTES}\n{redis}");
    let one = gateway(&format!("http://{}", upstream.addr), &config).await;
    let two = gateway(&format!("http://{}", upstream.addr), &config).await;
    for gw in [&one, &two] {
        let ready = reqwest::get(format!("http://{}/readyz", gw.addr))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }

    // A holder-bound capability, one proof, sent to both gateways.
    let holder = HolderKey::from_seed([0x44; 32]);
    let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
    let mut builder = issuer.issue("held-by-agent");
    builder.holder_of_key(holder.public_key()).unwrap();
    builder.caveat(r#"tool == "checkout.purchase""#).unwrap();
    let held = builder.build().unwrap();
    let body = r#"{"amount_cents":100}"#;
    let args = capnagent::JsonValue::parse(body, &Default::default()).unwrap();
    let proof = holder
        .prove(
            &held,
            "checkout.purchase",
            &args,
            Timestamp::now().unix_millis(),
        )
        .encode();
    let send = |gw: &Running| {
        reqwest::Client::new()
            .post(format!("http://{}/tools/checkout.purchase", gw.addr))
            .bearer_auth(held.serialize())
            .header("capnagent-proof", proof.clone())
            .body(body)
            .send()
    };
    assert_eq!(send(&one).await.unwrap().status(), 200);
    let replay = send(&two).await.unwrap();
    assert_eq!(
        replay.status(),
        403,
        "a proof is single-use across the fleet"
    );
    let problem: Value = replay.json().await.unwrap();
    assert_eq!(problem["detail"], "proof replay detected");

    // A revocation published to Redis reaches both gateways.
    let purchase = token(&[r#"tool == "checkout.purchase""#]);
    let call = |gw: &Running| {
        reqwest::Client::new()
            .post(format!("http://{}/tools/checkout.purchase", gw.addr))
            .bearer_auth(&purchase)
            .body("{}")
            .send()
    };
    assert_eq!(call(&one).await.unwrap().status(), 200);
    assert_eq!(call(&two).await.unwrap().status(), 200);
    let store = capnagent_redis::RedisRevocationStore::connect(
        &capnagent_redis::RedisConfig::new(redis_url.as_str()).prefix(prefix.as_str()),
    )
    .await
    .unwrap();
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    revoker.revoke("gateway-agent");
    store
        .publish(&revoker.publish(Timestamp::now().unix_millis()))
        .await
        .unwrap();
    for gw in [&one, &two] {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let status = call(gw).await.unwrap().status();
            if status == 403 {
                let problem: Value = call(gw).await.unwrap().json().await.unwrap();
                assert_eq!(problem["detail"], "capability revoked: gateway-agent");
                break;
            }
            assert_eq!(status, 200);
            assert!(Instant::now() < deadline, "the revocation never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    one.stop().await;
    two.stop().await;
}

// ---------------------------------------------------------------------------
// caller from a trusted proxy's header; the layer switched off

#[tokio::test]
async fn the_caller_header_counts_only_from_a_trusted_proxy() {
    let upstream = http_upstream().await;
    let token = token(&[r#"tool == "files.read""#, r#"caller == "agent:planner""#]);
    let read = |gw: SocketAddr, caller: &'static str| {
        reqwest::Client::new()
            .get(format!("http://{gw}/files?path=x"))
            .bearer_auth(&token)
            .header("x-caller", caller)
            .send()
    };
    let trusted = gateway(
        &format!("http://{}", upstream.addr),
        &format!(
            "{HTTP_ROUTES}\n[caller]\nheader = \"x-caller\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n"
        ),
    )
    .await;
    assert_eq!(
        read(trusted.addr, "agent:planner").await.unwrap().status(),
        200
    );
    assert_eq!(
        read(trusted.addr, "agent:intruder").await.unwrap().status(),
        403
    );
    // The proxy's x-forwarded-for is extended, not replaced.
    let extended = reqwest::Client::new()
        .get(format!("http://{}/files?path=x", trusted.addr))
        .bearer_auth(&token)
        .header("x-caller", "agent:planner")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(extended.status(), 200);
    let last = upstream.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");

    // The same header from a peer that is not a trusted proxy: refused.
    let untrusted = gateway(
        &format!("http://{}", upstream.addr),
        &format!(
            "{HTTP_ROUTES}\n[caller]\nheader = \"x-caller\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n"
        ),
    )
    .await;
    let refused = read(untrusted.addr, "agent:planner").await.unwrap();
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not a trusted proxy"),
        "{problem}"
    );
    trusted.stop().await;
    untrusted.stop().await;
}

#[tokio::test]
async fn with_the_layer_off_the_gateway_only_forwards() {
    let upstream = http_upstream().await;
    let gw = gateway(
        &format!("http://{}", upstream.addr),
        &HTTP_ROUTES.replace("mode = \"http\"", "mode = \"http\"\nlayer = false"),
    )
    .await;
    // No token at all, and still forwarded: benchmarks only.
    let response = reqwest::get(format!("http://{}/files?path=x", gw.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.seen.lock().unwrap().clone();
    assert!(!seen[0].headers.contains_key(RECEIPT_SIGNATURE_HEADER));
    assert_eq!(gw.audited().await, 0);
    gw.stop().await;
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused_at_the_gateway() {
    let upstream = http_upstream().await;
    let gw = gateway(
        &format!("http://{}", upstream.addr),
        &HTTP_ROUTES.replace(
            "[timeouts]",
            "[limits]\nbody_bytes = 1024\nheader_bytes = 8192\nmax_headers = 20\n[timeouts]",
        ),
    )
    .await;
    let client = reqwest::Client::new();
    let purchase = token(&[r#"tool == "checkout.purchase""#]);
    let url = format!("http://{}/tools/checkout.purchase", gw.addr);

    // A head over 8 KiB: refused by the HTTP server, before the layer.
    let big_head = client
        .post(&url)
        .bearer_auth(&purchase)
        .header("x-padding", "p".repeat(16 * 1024))
        .body("{}")
        .send()
        .await;
    match big_head {
        Ok(response) => assert_eq!(response.status(), 431),
        // hyper may close the connection before the client reads the 431.
        Err(error) => assert!(!error.is_timeout(), "{error}"),
    }
    // More headers than allowed: likewise.
    let mut many = client.post(&url).bearer_auth(&purchase).body("{}");
    for i in 0..40 {
        many = many.header(format!("x-h{i}"), "1");
    }
    match many.send().await {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => assert!(!error.is_timeout(), "{error}"),
    }
    // A body over 1 KiB: the layer refuses it (413, with a receipt).
    let big_body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let response = client
        .post(&url)
        .bearer_auth(&purchase)
        .body(big_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Under the limits: forwarded.
    let fine = client
        .post(&url)
        .bearer_auth(&purchase)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        1,
        "only the call within the limits"
    );
    gw.stop().await;
}

#[tokio::test]
async fn readiness_follows_redis() {
    // A Redis of this test's own, to stop halfway.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(child) = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is required when CI is set"
        );
        eprintln!("skipped: no redis-server");
        return;
    };
    let mut redis = capnagent_tests::RedisChild::from(child);
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let upstream = http_upstream().await;
    let gw = gateway(
        &format!("http://{}", upstream.addr),
        &format!("{HTTP_ROUTES}\n[redis]\nurl = \"redis://127.0.0.1:{port}/\"\n"),
    )
    .await;
    let readyz = format!("http://{}/readyz", gw.addr);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    redis.stop();
    let started = Instant::now();
    let not_ready = reqwest::get(&readyz).await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert!(not_ready.text().await.unwrap().contains("redis"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Live all the same.
    let healthz = format!("http://{}/healthz", gw.addr);
    assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);
    gw.stop().await;
}
