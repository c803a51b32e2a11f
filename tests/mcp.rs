//! Loopback tests of the guarded MCP server: the real rmcp client over
//! Streamable HTTP against the `mcp-tool-server` application, in process
//! on 127.0.0.1, and once against the binary itself.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use capnagent::{AuditLog, Auditor, Issuer, Receipt, Verifier};
use capnagent_examples::mcp::{self, DEMO_CAVEATS};
use capnagent_tower::mcp::RECEIPT_META_KEY;
use capnagent_tower::{AuditLogSink, CapabilityLayer};
use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig,
};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Value, json};

const ROOT_KEY: [u8; 32] = [1; 32];
const AUDIT_KEY: [u8; 32] = [2; 32];
const TIMEOUT: Duration = Duration::from_secs(20);

/// The example application on a loopback port, with its audit log.
struct Server {
    url: String,
    sink: AuditLogSink,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&log).unwrap()).unwrap();
    let layer = CapabilityLayer::new(
        Verifier::new(&ROOT_KEY).unwrap(),
        Auditor::new(&AUDIT_KEY).unwrap(),
    )
    .unwrap()
    .sink(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{}", listener.local_addr().unwrap(), mcp::PATH);
    tokio::spawn(async move { axum::serve(listener, mcp::app(layer)).await.unwrap() });
    Server {
        url,
        sink,
        log,
        _dir: dir,
    }
}

impl Server {
    /// Every receipt written so far, each checked against the audit key.
    async fn receipts(&self) -> Vec<Receipt> {
        self.sink.flush().await.unwrap();
        let auditor = Auditor::new(&AUDIT_KEY).unwrap();
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|line| auditor.verify(line).unwrap())
            .collect()
    }
}

fn token(caveats: &[&str]) -> String {
    token_under(&ROOT_KEY, caveats)
}

fn token_under(root_key: &[u8; 32], caveats: &[&str]) -> String {
    let issuer = Issuer::from_key(root_key).unwrap();
    let mut builder = issuer.issue("mcp-agent-1");
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    builder.build().unwrap().serialize()
}

/// rmcp's client transport (over its own reqwest) with the capability as
/// the bearer token.
fn transport(
    url: &str,
    token: Option<&str>,
) -> StreamableHttpClientTransport<impl StreamableHttpClient> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    StreamableHttpClientTransport::from_config(config)
}

/// Connects the way rmcp's `serve` does by default: the `initialize`
/// handshake.
async fn connect(
    url: &str,
    token: Option<&str>,
) -> Result<RunningService<RoleClient, ()>, ClientInitializeError> {
    tokio::time::timeout(TIMEOUT, ().serve(transport(url, token)))
        .await
        .expect("connecting timed out")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    arguments: Value,
) -> CallToolResult {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let request = CallToolRequestParams::new(tool).with_arguments(arguments);
    tokio::time::timeout(TIMEOUT, client.call_tool(request))
        .await
        .expect("the call timed out")
        .unwrap()
}

/// The text of a tool result, and its JSON form.
fn text(result: &CallToolResult) -> (String, Value) {
    let value = serde_json::to_value(result).unwrap();
    let text = value["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (text, value)
}

/// The receipt a denied tool result carries, checked against the audit key.
fn receipt_of(result: &Value) -> Receipt {
    let receipt = result["_meta"][RECEIPT_META_KEY].to_string();
    Auditor::new(&AUDIT_KEY).unwrap().verify(&receipt).unwrap()
}

fn tools(receipts: &[Receipt]) -> Vec<String> {
    receipts
        .iter()
        .map(|r| r.context_summary().tool().to_owned())
        .collect()
}

#[tokio::test]
async fn initialize_and_list_the_tools_the_capability_could_allow() {
    let server = start().await;
    let client = connect(&server.url, Some(&token(&DEMO_CAVEATS)))
        .await
        .unwrap();
    // rmcp's default lifecycle is the handshake; with an rmcp server it
    // settles on the newest handshake-era revision.
    let negotiated = client.peer_info().unwrap().protocol_version.clone();
    assert_eq!(negotiated, ProtocolVersion::LATEST_WITH_INITIALIZE);

    let listed = client.list_all_tools().await.unwrap();
    let names: Vec<_> = listed.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        ["checkout_purchase"],
        "only what the capability could allow"
    );

    // A capability for every tool sees all three.
    let everything = connect(&server.url, Some(&token(&["now <= @2099-01-01T00:00:00Z"])))
        .await
        .unwrap();
    let mut names: Vec<_> = everything
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["bank_wire", "checkout_purchase", "files_read"]);
    client.cancel().await.unwrap();
    everything.cancel().await.unwrap();
}

#[tokio::test]
async fn allowed_and_denied_calls_and_one_receipt_per_tool_call() {
    let server = start().await;
    let client = connect(&server.url, Some(&token(&DEMO_CAVEATS)))
        .await
        .unwrap();

    // Allowed: the tool runs and its result comes back untouched.
    let allowed = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "acme", "amount_cents": 1299}),
    )
    .await;
    let (text_allowed, _) = text(&allowed);
    assert_ne!(allowed.is_error, Some(true), "{text_allowed}");
    assert!(
        text_allowed.starts_with("charged 1299 cents at acme (order "),
        "{text_allowed}"
    );

    // Denied by the tool caveat: a tool error with the reason and the receipt.
    let wire = call(
        &client,
        "bank_wire",
        json!({"to": "acct-7731", "amount_cents": 100}),
    )
    .await;
    let (text_wire, value) = text(&wire);
    assert_eq!(wire.is_error, Some(true));
    assert!(
        text_wire.contains(r#"caveat failed: tool == "checkout_purchase""#),
        "{text_wire}"
    );
    let receipt = receipt_of(&value);
    assert_eq!(receipt.context_summary().tool(), "bank_wire");
    assert!(!receipt.is_allowed());

    // Denied by the argument caveat.
    let big = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "acme", "amount_cents": 9900}),
    )
    .await;
    let (text_big, value) = text(&big);
    assert_eq!(big.is_error, Some(true));
    assert!(
        text_big.contains("caveat failed: arg.amount_cents <= 5000"),
        "{text_big}"
    );
    assert_eq!(
        receipt_of(&value).outcome().reason(),
        Some("caveat failed: arg.amount_cents <= 5000")
    );

    // The session is still usable after denials.
    let again = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "b", "amount_cents": 1}),
    )
    .await;
    assert_ne!(again.is_error, Some(true));
    client.cancel().await.unwrap();

    // The audit log: exactly one receipt per tools/call, in order, and one
    // `mcp:` receipt per other message (handshake, list, stream, session end).
    let receipts = server.receipts().await;
    let calls: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| !r.context_summary().tool().starts_with("mcp:"))
        .collect();
    let summary: Vec<(&str, bool)> = calls
        .iter()
        .map(|r| (r.context_summary().tool(), r.is_allowed()))
        .collect();
    assert_eq!(
        summary,
        [
            ("checkout_purchase", true),
            ("bank_wire", false),
            ("checkout_purchase", false),
            ("checkout_purchase", true)
        ]
    );
    let mut others: Vec<String> = tools(&receipts)
        .into_iter()
        .filter(|t| t.starts_with("mcp:"))
        .collect();
    others.sort();
    // The handshake, the server-to-client SSE stream the client opens with
    // GET, and the DELETE that ends the session.
    assert_eq!(
        others,
        [
            "mcp:DELETE",
            "mcp:GET",
            "mcp:initialize",
            "mcp:notifications/initialized"
        ]
    );
    assert!(
        receipts
            .iter()
            .filter(|r| r.context_summary().tool().starts_with("mcp:"))
            .all(|r| r.is_allowed())
    );
    // The denied receipts in the tool results are the ones in the log.
    assert!(receipts.contains(&receipt));
}

#[tokio::test]
async fn a_missing_token_is_refused_at_connect_with_a_bearer_challenge() {
    let server = start().await;
    let error = connect(&server.url, None).await.unwrap_err();
    assert!(error.is_authorization_required(), "{error}");
    assert_eq!(error.auth_challenge(), Some("Bearer"));
    let receipts = server.receipts().await;
    assert_eq!(receipts.len(), 1, "{:?}", tools(&receipts));
    assert_eq!(
        receipts[0].outcome().reason(),
        Some("missing capability token")
    );
}

#[tokio::test]
async fn a_forged_token_is_refused_at_connect_as_invalid() {
    let server = start().await;
    let forged = token_under(&[3; 32], &DEMO_CAVEATS);
    let error = connect(&server.url, Some(&forged)).await.unwrap_err();
    assert!(error.is_authorization_required(), "{error}");
    assert_eq!(
        error.auth_challenge(),
        Some("Bearer error=\"invalid_token\"")
    );
    let receipts = server.receipts().await;
    assert_eq!(receipts.len(), 1);
    // The forged identifier and caveats are not signed: a hash names it.
    assert_eq!(
        receipts[0].capability_identifier(),
        capnagent::unverified_identifier(&forged)
    );
    assert!(receipts[0].caveats().is_empty());
    assert!(!receipts[0].is_allowed());
}

#[tokio::test]
async fn the_2026_revision_discovers_without_a_session() {
    let server = start().await;
    let client = tokio::time::timeout(
        TIMEOUT,
        ().serve_with_lifecycle(
            transport(&server.url, Some(&token(&DEMO_CAVEATS))),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    let listed = client.list_all_tools().await.unwrap();
    assert_eq!(listed.len(), 1);

    let allowed = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "acme", "amount_cents": 100}),
    )
    .await;
    assert_ne!(allowed.is_error, Some(true), "{}", text(&allowed).0);
    let denied = call(&client, "files_read", json!({"path": "/etc/passwd"})).await;
    let (reason, value) = text(&denied);
    assert_eq!(denied.is_error, Some(true));
    assert!(
        reason.contains(r#"caveat failed: tool == "checkout_purchase""#),
        "{reason}"
    );
    assert_eq!(value["resultType"], "complete");
    client.cancel().await.unwrap();

    let receipts = server.receipts().await;
    // No handshake, no session: no GET stream, no DELETE.
    assert_eq!(
        tools(&receipts),
        [
            "mcp:server/discover",
            "mcp:tools/list",
            "checkout_purchase",
            "files_read"
        ]
    );
}

/// The `mcp-tool-server` binary started with `args`, once it has printed
/// its ready line: the server, the line, and the text printed before it.
fn start_binary(args: &[&str]) -> (capnagent_tests::Server, Value, Vec<String>) {
    let mut server = capnagent_tests::Server::start("mcp-tool-server", args);
    let (ready, text) = server.ready(TIMEOUT);
    (server, ready, text)
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_binary_prints_a_url_and_a_token_an_mcp_client_can_use() {
    let (server, ready, _) = tokio::task::spawn_blocking(|| start_binary(&["--port", "0"]))
        .await
        .unwrap();
    let url = ready["url"].as_str().unwrap();
    let token = ready["tokens"]["agent"].as_str().unwrap();
    // No keys given: random ones, in private files.
    let key_files: Vec<PathBuf> = ["root_key_file", "audit_key_file"]
        .iter()
        .map(|field| PathBuf::from(ready[*field].as_str().unwrap()))
        .collect();
    #[cfg(unix)]
    for file in &key_files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let log = PathBuf::from(ready["audit_log"].as_str().unwrap());

    let client = connect(url, Some(token)).await.unwrap();
    let allowed = call(
        &client,
        "checkout_purchase",
        json!({"merchant": "acme", "amount_cents": 4999}),
    )
    .await;
    assert_ne!(allowed.is_error, Some(true), "{}", text(&allowed).0);
    let denied = call(&client, "bank_wire", json!({"to": "x", "amount_cents": 1})).await;
    assert_eq!(denied.is_error, Some(true));
    client.cancel().await.unwrap();

    // SIGTERM: the server stops gracefully, reports what it wrote and
    // removes its private directory (the keys and the audit log).
    let (status, rest) = server.stop(TIMEOUT);
    assert!(status.success(), "{status}");
    let report = rest
        .iter()
        .find_map(|line| line.strip_prefix("stopped; "))
        .unwrap_or_else(|| panic!("no report after SIGTERM: {rest:?}"));
    let (count, path) = report.split_once(" receipts written to ").unwrap();
    assert!(count.parse::<u64>().unwrap() >= 2, "{report}");
    assert_eq!(std::path::Path::new(path), log);
    for file in key_files.iter().chain([&log]) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Key rotation through the binary: given a ring in a `capnagent keygen`
/// style file, it mints under the first key and accepts tokens under both.
#[tokio::test]
async fn the_binary_takes_a_key_ring_and_accepts_tokens_under_every_key() {
    const NEW_KEY: [u8; 32] = [0x5a; 32];
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.env");
    std::fs::write(
        &keys,
        format!(
            "# rotation: k2 issues, k1 still accepted\nCAPNAGENT_ROOT_KEY=k2:{},k1:{}\nCAPNAGENT_AUDIT_KEY=a1:{}\n",
            hex(&NEW_KEY),
            hex(&ROOT_KEY),
            hex(&AUDIT_KEY)
        ),
    )
    .unwrap();
    let keys = keys.to_str().unwrap();
    let log = dir.path().join("audit.ndjson");
    let log_arg = log.to_str().unwrap().to_owned();
    let args = [
        "--port",
        "0",
        "--root-key-file",
        keys,
        "--audit-key-file",
        keys,
        "--audit-log",
        &log_arg,
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .map(str::to_owned);
    let (server, ready, printed) = tokio::task::spawn_blocking(move || {
        start_binary(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(ready["root_key_ids"], json!(["k2", "k1"]), "{ready}");
    assert_eq!(ready["root_key_file"], json!(keys));
    assert_eq!(ready["audit_log"], json!(log_arg));
    assert!(
        printed
            .iter()
            .any(|line| line == "root keys accepted: k2, k1 (the capability is under k2)"),
        "{printed:?}"
    );
    let url = ready["url"].as_str().unwrap();
    let token = ready["tokens"]["agent"].as_str().unwrap();
    // The printed capability is under the new key.
    let cap = capnagent::Capability::parse(token).unwrap();
    assert!(Verifier::new(&NEW_KEY).unwrap().verify(&cap).is_ok());
    assert!(Verifier::new(&ROOT_KEY).unwrap().verify(&cap).is_err());

    // Tokens under both keys are allowed; one under neither is refused.
    for root_key in [NEW_KEY, ROOT_KEY] {
        let client = connect(url, Some(&token_under(&root_key, &DEMO_CAVEATS)))
            .await
            .unwrap();
        let allowed = call(
            &client,
            "checkout_purchase",
            json!({"merchant": "acme", "amount_cents": 4999}),
        )
        .await;
        assert_ne!(allowed.is_error, Some(true), "{}", text(&allowed).0);
        client.cancel().await.unwrap();
    }
    let stranger = connect(url, Some(&token_under(&[0x77; 32], &DEMO_CAVEATS))).await;
    assert!(stranger.unwrap_err().is_authorization_required());

    // The scrape: two allowed tool calls, per tool; the refused connect
    // counted by its gate.
    let metrics = reqwest::get(ready["metrics_url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"capnagent_decisions_total{decision="allowed",gate="none",tool="checkout_purchase"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"decision="denied",gate="chain""#),
        "{metrics}"
    );
    assert!(metrics.contains("capnagent_decision_duration_seconds_bucket"));

    // Stopped, the log it kept verifies under the audit key file.
    let (status, _) = tokio::task::spawn_blocking(move || server.stop(TIMEOUT))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let verify = capnagent_tests::cli(&["audit", "verify", &log_arg, "--audit-key-file", keys]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
