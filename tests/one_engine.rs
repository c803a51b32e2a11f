//! One engine behind three transports: a single `Verifier`, `Auditor` and
//! audit log shared by an axum HTTP route (`capnagent_tower`), an MCP
//! endpoint (the same layer in MCP mode, rmcp client and server) and a
//! tonic gRPC service (`capnagent_tonic`), all on 127.0.0.1 with real
//! clients. One capability (`tool` and `arg.amount` caveats) allows the
//! in-bounds purchase and denies the out-of-bounds one on each; the log
//! ends up with exactly one verifiable receipt per call, the very receipt
//! the client was shown.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::request::Parts;
use axum::routing::post;
use capnagent::{AuditLog, Auditor, Issuer, Receipt, Verifier};
use capnagent_examples::grpc::pb::PurchaseRequest;
use capnagent_examples::grpc::pb::tool_service_client::ToolServiceClient;
use capnagent_examples::grpc::pb::tool_service_server::ToolServiceServer;
use capnagent_examples::grpc::{self, Tools};
use capnagent_tower::mcp::RECEIPT_META_KEY;
use capnagent_tower::{Anonymous, AuditLogSink, CapabilityLayer, FixedTool, McpPolicy, Verified};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

const ROOT: [u8; 32] = [7; 32];
const AUDIT: [u8; 32] = [9; 32];
/// The tool name is the gRPC example's friendly name for `Purchase`; the
/// HTTP route and the MCP tool use it too.
const TOOL: &str = grpc::PURCHASE_TOOL;

/// `checkout.purchase` as an MCP tool, with the gRPC message's fields.
#[derive(Debug, serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[allow(dead_code)] // the caveats read the arguments, the tool does not
struct Purchase {
    merchant: String,
    amount: i64,
}

#[derive(Debug, Clone)]
struct Checkout {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Checkout {
    /// Answers with the signature of the receipt that allowed the call.
    #[tool(name = "checkout.purchase", description = "Pay a merchant.")]
    async fn purchase(
        &self,
        Parameters(_): Parameters<Purchase>,
        Extension(parts): Extension<Parts>,
    ) -> String {
        parts
            .extensions
            .get::<Verified>()
            .unwrap()
            .receipt()
            .signature_hex()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Checkout {}

/// The HTTP handler: the same answer.
async fn purchase(verified: Verified) -> String {
    verified.receipt().signature_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mcp_and_grpc_share_one_engine_and_one_audit_log() {
    // The engine and the audit log, shared by every transport.
    let (verifier, auditor) = (Verifier::new(&ROOT).unwrap(), Auditor::new(&AUDIT).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.ndjson");
    let sink = AuditLogSink::new(AuditLog::open(&log).unwrap()).unwrap();
    let tower_layer = || {
        CapabilityLayer::new(verifier.clone(), auditor.clone())
            .unwrap()
            .caller(Anonymous)
            .sink(sink.clone())
    };

    // HTTP and MCP on one axum server.
    let mcp = StreamableHttpService::new(
        || {
            Ok(Checkout {
                tool_router: Checkout::tool_router(),
            })
        },
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = Router::new()
        .route("/purchase", post(purchase))
        .route_layer(tower_layer().tool(FixedTool::new(TOOL)))
        .merge(
            Router::new()
                .route_service("/mcp", mcp)
                .route_layer(tower_layer().mcp(McpPolicy::new())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // gRPC: the example service behind the tonic layer.
    let grpc_layer = grpc::capability_layer(verifier.clone(), auditor.clone())
        .unwrap()
        .caller(capnagent_tonic::Anonymous)
        .sink(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_url = format!("http://{}", listener.local_addr().unwrap());
    let router = Server::builder()
        .layer(grpc_layer)
        .add_service(ToolServiceServer::new(Tools::protected()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));

    // One capability for all three.
    let token = Issuer::from_key(&ROOT)
        .unwrap()
        .issue("agent-42")
        .caveat(&format!(r#"tool == "{TOOL}""#))
        .unwrap()
        .caveat("arg.amount <= 5000")
        .unwrap()
        .build()
        .unwrap()
        .serialize();

    // Each call yields (allowed, signature of the receipt the client got).
    let mut seen: Vec<(bool, String)> = Vec::new();

    // HTTP: 200 with the receipt's signature, or 403 with the receipt.
    let client = reqwest::Client::new();
    for amount in [1200, 9000] {
        let response = client
            .post(format!("{http}/purchase"))
            .bearer_auth(&token)
            .json(&json!({"merchant": "acme", "amount": amount}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        match status {
            200 => seen.push((true, body)),
            403 => {
                let problem: Value = serde_json::from_str(&body).unwrap();
                let receipt = auditor.verify(&problem["receipt"].to_string()).unwrap();
                seen.push((false, receipt.signature_hex()));
            }
            _ => panic!("HTTP {status}: {body}"),
        }
    }

    // MCP: the rmcp client; a denial is a tool error carrying the receipt.
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{http}/mcp"))
        .auth_header(token.clone());
    let mcp = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    for amount in [1200, 9000] {
        let arguments = json!({"merchant": "acme", "amount": amount});
        let request = CallToolRequestParams::new(TOOL)
            .with_arguments(arguments.as_object().cloned().unwrap());
        let result = serde_json::to_value(mcp.call_tool(request).await.unwrap()).unwrap();
        if result["isError"] == true {
            let receipt = result["_meta"][RECEIPT_META_KEY].to_string();
            seen.push((false, auditor.verify(&receipt).unwrap().signature_hex()));
        } else {
            let text = result["content"][0]["text"].as_str().unwrap();
            seen.push((true, text.to_owned()));
        }
    }
    mcp.cancel().await.unwrap();

    // gRPC: the reply names the receipt; a denial carries it in metadata.
    let mut tools = ToolServiceClient::connect(grpc_url).await.unwrap();
    for amount in [1200, 9000] {
        let mut request = tonic::Request::new(PurchaseRequest {
            merchant: "acme".into(),
            amount,
            currency: "EUR".into(),
        });
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
        match tools.purchase(request).await {
            Ok(reply) => seen.push((true, reply.into_inner().receipt_signature)),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                let receipt = capnagent_tonic::client::denied_receipt(&status).unwrap();
                seen.push((false, auditor.verify(&receipt).unwrap().signature_hex()));
            }
        }
    }

    // In bounds allowed, out of bounds denied, on every transport.
    let outcomes: Vec<bool> = seen.iter().map(|(allowed, _)| *allowed).collect();
    assert_eq!(outcomes, [true, false, true, false, true, false]);

    // The shared log: every line verifies; exactly one receipt per call (the
    // MCP session's own messages are logged as `mcp:<method>`), in order,
    // each the one its client saw.
    sink.flush().await.unwrap();
    let receipts: Vec<Receipt> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| auditor.verify(line).unwrap())
        .collect();
    let calls: Vec<(bool, String)> = receipts
        .iter()
        .filter(|r| !r.context_summary().tool().starts_with("mcp:"))
        .map(|r| {
            assert_eq!(r.context_summary().tool(), TOOL);
            (r.is_allowed(), r.signature_hex())
        })
        .collect();
    assert_eq!(calls, seen);
    for denied in receipts.iter().filter(|r| !r.is_allowed()) {
        assert_eq!(
            denied.outcome().reason(),
            Some("caveat failed: arg.amount <= 5000")
        );
    }
}
