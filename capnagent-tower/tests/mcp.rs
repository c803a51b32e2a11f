//! `oneshot` tests of the MCP mode: hand-written JSON-RPC bodies in the
//! shapes of every protocol revision rmcp 3.11 and the Python SDK 2.3
//! speak, against a stand-in MCP server that echoes what it received.

#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "axum", feature = "mcp"))]

mod support;

use axum::Router;
use axum::body::Body;
use axum::routing::any;
use bytes::Bytes;
use capnagent::{Context, HolderKey, Issuer, Receipt, RevocationCell, Revoker, Timestamp};
use capnagent::{JsonLimits, JsonValue};
use capnagent_tower::mcp::{DENIED_ERROR_CODE, RECEIPT_META_KEY};
use capnagent_tower::{Anonymous, CapabilityLayer, McpAccess, McpPolicy, Verified};
use http::{Request, Response, StatusCode, header};
use serde_json::{Value, json};
use support::*;
use tower::ServiceExt;

const CHECKOUT: &[&str] = &[
    r#"tool == "checkout_purchase""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];

/// The stand-in MCP server: answers with what it saw, so tests can tell
/// that a request got through and with which bytes.
async fn server(verified: Option<Verified>, body: Bytes) -> String {
    json!({
        "seen": String::from_utf8_lossy(&body),
        "verified": verified.as_ref().map(|v| v.receipt().context_summary().tool().to_owned()),
        "could_allow": verified.as_ref().map(|v| {
            ["checkout_purchase", "bank_wire"].map(|t| v.could_allow(t))
        }),
    })
    .to_string()
}

fn app(policy: McpPolicy) -> (Router, Receipts) {
    let (layer, receipts) = layer();
    let router = Router::new()
        .route("/mcp", any(server))
        .route_layer(layer.caller(Anonymous).mcp(policy));
    (router, receipts)
}

fn post(token: Option<&str>, body: &str) -> http::request::Builder {
    let mut builder = Request::post("/mcp")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
}

fn request(token: Option<&str>, body: &str) -> Request<Body> {
    post(token, body).body(Body::from(body.to_owned())).unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> Response<String> {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body_text(body).await)
}

fn json_body(response: &Response<String>) -> Value {
    serde_json::from_str(response.body()).unwrap()
}

fn tools_call(id: Value, name: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{arguments}}}}}"#
    )
}

/// The receipt in a JSON-RPC error's `data`, checked against the audit key.
fn error_receipt(body: &Value) -> Receipt {
    let text = body["error"]["data"]["receipt"].to_string();
    auditor().verify(&text).unwrap()
}

#[tokio::test]
async fn an_allowed_tool_call_reaches_the_server_byte_for_byte() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let body = tools_call(
        json!(1),
        "checkout_purchase",
        r#"{"amount_cents":1299,"sku":"cable","weight_kg":1.50}"#,
    );
    let response = send(&app, request(Some(&token), &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json_body(&response);
    assert_eq!(seen["seen"], body.as_str());
    assert_eq!(seen["verified"], "checkout_purchase");
    assert_eq!(seen["could_allow"], json!([true, false]));

    let receipt = receipts.only();
    assert!(receipt.is_allowed());
    assert_eq!(receipt.context_summary().tool(), "checkout_purchase");
    // The args hash is over `params.arguments`, number text kept (1.50).
    let args = JsonValue::parse(
        r#"{"weight_kg":1.50,"sku":"cable","amount_cents":1299}"#,
        &JsonLimits::default(),
    )
    .unwrap();
    let expected = Context::builder().args_json(args).build().args_hash();
    assert_eq!(receipt.context_summary().args_hash(), expected);
}

#[tokio::test]
async fn a_caveat_denial_is_a_tool_error_the_model_can_read() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    for (id, name, arguments, caveat) in [
        (
            json!("req-1"),
            "bank_wire",
            r#"{"to":"x","amount_cents":100}"#,
            r#"tool == "checkout_purchase""#,
        ),
        (
            json!(2),
            "checkout_purchase",
            r#"{"amount_cents":9900}"#,
            "arg.amount_cents <= 5000",
        ),
    ] {
        let response = send(
            &app,
            request(Some(&token), &tools_call(id.clone(), name, arguments)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = json_body(&response);
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], id, "the request's id, as sent");
        let result = &body["result"];
        assert_eq!(result["isError"], true);
        assert!(
            result.get("resultType").is_none(),
            "handshake-era results carry no resultType"
        );
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(&format!("caveat failed: {caveat}")), "{text}");
        let receipt = auditor()
            .verify(&result["_meta"][RECEIPT_META_KEY].to_string())
            .unwrap();
        assert_eq!(
            receipt.outcome().reason(),
            Some(format!("caveat failed: {caveat}").as_str())
        );
        assert_eq!(receipt.context_summary().tool(), name);
        assert_eq!(result["_meta"]["capnagent/code"], "insufficient_scope");
        assert!(body.get("seen").is_none(), "the server never saw it");
    }
    assert_eq!(receipts.len(), 2);
}

#[tokio::test]
async fn a_missing_token_is_401_with_a_bare_bearer_challenge() {
    let (app, receipts) = app(McpPolicy::new());
    let body = tools_call(json!(5), "checkout_purchase", "{}");
    let response = send(&app, request(None, &body)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body = json_body(&response);
    // Refused from the head: the body (and its id) was never read.
    assert_eq!(body["id"], Value::Null);
    assert_eq!(body["error"]["code"], DENIED_ERROR_CODE);
    assert_eq!(body["error"]["message"], "missing capability token");
    assert_eq!(body["error"]["data"]["code"], "missing_token");
    assert!(!error_receipt(&body).is_allowed());
    assert_eq!(receipts.only().capability_identifier(), "");
}

#[tokio::test]
async fn a_forged_or_malformed_token_is_401_invalid_token() {
    let (app, receipts) = app(McpPolicy::new().resource_metadata(
        "https://mcp.example/.well-known/oauth-protected-resource"
            .parse()
            .unwrap(),
    ));
    let body = tools_call(json!(5), "checkout_purchase", "{}");
    for (token, code) in [
        (forged(CHECKOUT), "invalid_token"),
        ("not-a-token".to_owned(), "malformed_token"),
    ] {
        let response = send(&app, request(Some(&token), &body)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", resource_metadata=\"https://mcp.example/.well-known/oauth-protected-resource\""
        );
        let body = json_body(&response);
        assert_eq!(body["error"]["data"]["code"], code);
        assert!(
            !response.body().contains(&token),
            "the token is never echoed"
        );
    }
    assert_eq!(receipts.len(), 2);
}

#[tokio::test]
async fn other_messages_need_a_genuine_capability_but_not_its_caveats() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let messages = [
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
    ];
    for message in messages {
        let response = send(&app, request(Some(&token), message)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{message}: {}",
            response.body()
        );
        assert_eq!(json_body(&response)["seen"], message);
    }
    let tools: Vec<String> = receipts
        .all()
        .iter()
        .map(|r| {
            assert!(r.is_allowed());
            assert_eq!(r.capability_identifier(), "agent-42");
            auditor().verify(&r.to_json()).unwrap();
            r.context_summary().tool().to_owned()
        })
        .collect();
    assert_eq!(
        tools,
        [
            "mcp:initialize",
            "mcp:notifications/initialized",
            "mcp:tools/list",
            "mcp:ping",
            "mcp:notifications/cancelled"
        ]
    );

    // Without a token, none of them passes.
    let response = send(&app, request(None, messages[2])).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A client's answer to a server request reaches the tool that asked:
    // judged by default (args = its result), authenticated on request.
    let answer = r#"{"jsonrpc":"2.0","id":3,"result":{"action":"accept"}}"#;
    let response = send(&app, request(Some(&token), answer)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (open, _) = self::app(McpPolicy::new().client_responses(McpAccess::Authenticated));
    let response = send(&open, request(Some(&token), answer)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(&response)["seen"], answer);
}

#[tokio::test]
async fn a_token_refused_before_its_caveats_is_401() {
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    revoker.revoke("agent-42");
    let cell = RevocationCell::new(&ROOT_KEY).unwrap();
    cell.install_at(revoker.publish(NOW_MS), NOW_MS).unwrap();
    let (layer, receipts) = layer();
    let app = Router::new().route("/mcp", any(server)).route_layer(
        layer
            .caller(Anonymous)
            .revocations(cell)
            .mcp(McpPolicy::new()),
    );
    let revoked = token(CHECKOUT);
    let message = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let response = send(&app, request(Some(&revoked), message)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    let body = json_body(&response);
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["data"]["code"], "token_rejected");
    assert_eq!(
        receipts.only().outcome().reason(),
        Some("capability revoked: agent-42")
    );
    // The same for a tool call: not a tool error, the token is unusable.
    let call = tools_call(json!(2), "checkout_purchase", "{}");
    let response = send(&app, request(Some(&revoked), &call)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_methods_batches_and_garbage_are_refused() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let cases: &[(&str, StatusCode, i64, Value)] = &[
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/execute","params":{"name":"bank_wire"}}"#,
            StatusCode::FORBIDDEN,
            -32601,
            json!(9),
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"checkout_purchase"}}]"#,
            StatusCode::BAD_REQUEST,
            -32600,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call""#,
            StatusCode::BAD_REQUEST,
            -32700,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"checkout_purchase","arguments":"amount_cents=1"}}"#,
            StatusCode::BAD_REQUEST,
            -32602,
            json!(4),
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","method":"ping"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
            Value::Null,
        ),
    ];
    for (message, status, code, id) in cases {
        let response = send(&app, request(Some(&token), message)).await;
        assert_eq!(response.status(), *status, "{message}");
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body = json_body(&response);
        assert_eq!(body["error"]["code"], *code, "{message}");
        assert_eq!(body["id"], *id, "{message}");
        assert!(!error_receipt(&body).is_allowed());
    }
    assert_eq!(receipts.len(), cases.len(), "one receipt per request");
    assert_eq!(
        receipts.all()[0].context_summary().tool(),
        "mcp:tools/execute"
    );
    assert_eq!(
        receipts.all()[0].outcome().reason(),
        Some("MCP: `tools/execute` is not allowed on this server")
    );
    assert_eq!(receipts.all()[1].context_summary().tool(), "");
}

#[tokio::test]
async fn every_handshake_era_revision_initializes_and_calls() {
    for version in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
        let (app, receipts) = app(McpPolicy::new());
        let token = token(CHECKOUT);
        let initialize = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{"roots":{{"listChanged":true}}}},"clientInfo":{{"name":"test","version":"1.0"}}}}}}"#
        );
        let mut builder = post(Some(&token), &initialize);
        if version >= "2025-06-18" {
            builder = builder.header("mcp-protocol-version", version);
        }
        let response = send(&app, builder.body(Body::from(initialize.clone())).unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK, "{version}");

        let call = tools_call(json!(1), "checkout_purchase", r#"{"amount_cents":6000}"#);
        let response = send(&app, request(Some(&token), &call)).await;
        let body = json_body(&response);
        assert_eq!(body["result"]["isError"], true, "{version}");
        assert_eq!(receipts.len(), 2);
    }
}

#[tokio::test]
async fn the_2026_revision_discovers_and_calls_with_routing_headers() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"}}"#;
    let modern = |method: &str, name: Option<&str>, body: &str| {
        let mut builder = post(Some(&token), body)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            builder = builder.header("mcp-name", name);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    };

    let discover =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{meta}}}}}"#);
    let response = send(&app, modern("server/discover", None, &discover)).await;
    assert_eq!(response.status(), StatusCode::OK);

    let allowed = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"checkout_purchase","arguments":{{"amount_cents":100}},{meta}}}}}"#
    );
    let response = send(
        &app,
        modern("tools/call", Some("checkout_purchase"), &allowed),
    )
    .await;
    assert_eq!(json_body(&response)["verified"], "checkout_purchase");

    let denied = allowed.replace("checkout_purchase", "bank_wire");
    let response = send(&app, modern("tools/call", Some("bank_wire"), &denied)).await;
    let body = json_body(&response);
    assert_eq!(body["result"]["isError"], true);
    assert_eq!(body["result"]["resultType"], "complete");

    // A routing header that disagrees with the body is refused: the body
    // was judged, so nothing may route on another name.
    let response = send(
        &app,
        modern("tools/call", Some("checkout_purchase"), &denied),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(&response);
    assert_eq!(body["error"]["code"], -32020);
    assert_eq!(body["id"], 2);

    let tools: Vec<String> = receipts
        .all()
        .iter()
        .map(|r| r.context_summary().tool().to_owned())
        .collect();
    assert_eq!(
        tools,
        [
            "mcp:server/discover",
            "checkout_purchase",
            "bank_wire",
            "bank_wire"
        ]
    );
}

#[tokio::test]
async fn resource_reads_are_judged_with_the_mcp_tool_name() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(&[r#"tool == "mcp:resources/read" AND arg.uri starts_with "file:///srv/""#]);
    let read = |uri: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{{"uri":"{uri}"}}}}"#
        )
    };
    let response = send(&app, request(Some(&token), &read("file:///srv/a.txt"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&app, request(Some(&token), &read("file:///etc/passwd"))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\""
    );
    let body = json_body(&response);
    assert_eq!(body["id"], "r");
    assert_eq!(body["error"]["code"], DENIED_ERROR_CODE);
    assert_eq!(body["error"]["data"]["code"], "insufficient_scope");
    assert_eq!(receipts.len(), 2);
    // That token may list tools (authenticated) but call none.
    let call = tools_call(json!(1), "checkout_purchase", "{}");
    let body = json_body(&send(&app, request(Some(&token), &call)).await);
    assert_eq!(body["result"]["isError"], true);
}

#[tokio::test]
async fn open_messages_pass_without_a_token_and_leave_a_receipt() {
    let (app, receipts) = app(McpPolicy::new().method("ping", McpAccess::Open));
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let response = send(&app, request(None, ping)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(&response)["verified"], Value::Null);
    let receipt = receipts.only();
    assert!(receipt.is_allowed());
    assert_eq!(receipt.capability_identifier(), "");
    assert_eq!(receipt.context_summary().tool(), "mcp:ping");

    // With an open method, a request without a token is read first, so its
    // refusal answers the request's id.
    let call = tools_call(json!(77), "checkout_purchase", "{}");
    let response = send(&app, request(None, &call)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(&response)["id"], 77);

    // A forged token is refused even on an open message.
    let response = send(&app, request(Some(&forged(CHECKOUT)), ping)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Without a token, a denied method is a missing token, not a policy
    // answer: anonymous clients learn nothing of the policy.
    let unknown = r#"{"jsonrpc":"2.0","id":1,"method":"x/y"}"#;
    let response = send(&app, request(None, unknown)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(receipts.len(), 4);
}

#[tokio::test]
async fn a_server_whose_tools_nobody_may_call() {
    let (app, receipts) = app(McpPolicy::new().method("tools/call", McpAccess::Denied));
    let call = tools_call(json!(1), "checkout_purchase", r#"{"amount_cents":1}"#);
    let response = send(&app, request(Some(&token(CHECKOUT)), &call)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = json_body(&response);
    assert_eq!(body["error"]["code"], -32601);
    assert_eq!(
        body["error"]["message"],
        "MCP: `tools/call` is not allowed on this server"
    );
    assert_eq!(
        receipts.only().context_summary().tool(),
        "checkout_purchase"
    );
}

#[tokio::test]
async fn get_and_delete_need_a_capability_other_http_methods_are_405() {
    let (app, receipts) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let with = |method: &str, token: Option<&str>| {
        let mut builder = Request::builder()
            .method(method)
            .uri("/mcp")
            .header(header::ACCEPT, "text/event-stream")
            .header("mcp-session-id", "s-1");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Body::empty()).unwrap()
    };
    assert_eq!(
        send(&app, with("GET", Some(&token))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with("DELETE", Some(&token))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, with("GET", None)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = send(&app, with("PUT", Some(&token))).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()[header::ALLOW], "GET, POST, DELETE");
    let tools: Vec<String> = receipts
        .all()
        .iter()
        .map(|r| r.context_summary().tool().to_owned())
        .collect();
    assert_eq!(tools, ["mcp:GET", "mcp:DELETE", "mcp:GET", "mcp:PUT"]);
}

#[tokio::test]
async fn a_client_that_accepts_only_sse_gets_one_event() {
    let (app, _) = app(McpPolicy::new());
    let token = token(CHECKOUT);
    let body = tools_call(json!(3), "bank_wire", "{}");
    let request = post(Some(&token), &body)
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::from(body.clone()));
    let mut request = request.unwrap();
    // `post` set both media types; keep only the last `Accept`.
    request
        .headers_mut()
        .insert(header::ACCEPT, "text/event-stream".parse().unwrap());
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let data = response
        .body()
        .strip_prefix("event: message\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["id"], 3);
    assert_eq!(event["result"]["isError"], true);
}

#[tokio::test]
async fn an_oversized_body_is_413_before_it_is_read() {
    let (layer, receipts) = layer();
    let app = Router::new()
        .route("/mcp", any(server))
        .route_layer(layer.caller(Anonymous).body_limit(64).mcp(McpPolicy::new()));
    let body = tools_call(
        json!(1),
        "checkout_purchase",
        &format!(r#"{{"pad":"{}"}}"#, "x".repeat(100)),
    );
    let response = send(&app, request(Some(&token(CHECKOUT)), &body)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_body(&response)["error"]["code"], -32600);
    assert_eq!(receipts.len(), 1);
}

#[test]
fn debug_names_the_policy() {
    let layer = CapabilityLayer::new(capnagent::Verifier::new(&ROOT_KEY).unwrap(), auditor())
        .unwrap()
        .clock(|| Timestamp::from_unix_millis(NOW_MS))
        .mcp(McpPolicy::new());
    assert!(format!("{layer:?}").contains("McpPolicy"));
}

#[tokio::test]
async fn holder_bound_capabilities_prove_each_message() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .holder_of_key(holder.public_key())
        .unwrap()
        .caveat(r#"tool == "bank_wire" AND arg.amount_cents <= 5000"#)
        .unwrap()
        .build()
        .unwrap();
    let token = cap.serialize();
    let (app, receipts) = app(McpPolicy::new());
    let with_proof = |body: &str, tool: &str, args: &str| {
        let args = JsonValue::parse(args, &JsonLimits::default()).unwrap();
        let proof = holder.prove(&cap, tool, &args, NOW_MS).encode();
        post(Some(&token), body)
            .header("capnagent-proof", proof)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };

    // A tool call, proved over its tool and arguments.
    let allowed = tools_call(json!(1), "bank_wire", r#"{"amount_cents":100}"#);
    let response = send(
        &app,
        with_proof(&allowed, "bank_wire", r#"{"amount_cents":100}"#),
    )
    .await;
    assert_eq!(json_body(&response)["verified"], "bank_wire");
    // Proved, but over the limit: a tool error, like any caveat denial.
    let over = tools_call(json!(2), "bank_wire", r#"{"amount_cents":9000}"#);
    let response = send(
        &app,
        with_proof(&over, "bank_wire", r#"{"amount_cents":9000}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(&response)["result"]["isError"], true);
    // Another message, proved over `mcp:<method>` and its params.
    let list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#;
    let response = send(&app, with_proof(list, "mcp:tools/list", "{}")).await;
    assert_eq!(json_body(&response)["verified"], "mcp:tools/list");
    // Without a proof, a holder-bound capability is not usable.
    let response = send(&app, request(Some(&token), list)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&response)["error"]["data"]["code"],
        "invalid_proof"
    );
    // A proof over other arguments fails: 401, not a tool error.
    let response = send(
        &app,
        with_proof(&over, "bank_wire", r#"{"amount_cents":100}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(&response)["error"]["data"]["code"],
        "token_rejected"
    );
    assert_eq!(receipts.len(), 5);
}

/// `tools/list` filtered with `could_allow` over many tools parses each
/// caveat once (the verifier's predicate cache), not once per tool, and
/// under the verifier's limits (here wider than the defaults: a caveat of
/// 300 comparisons, which the default limits would refuse).
#[tokio::test]
async fn could_allow_parses_each_caveat_once_for_a_whole_listing() {
    let limits = capnagent::Limits {
        max_terms: 1024,
        ..capnagent::Limits::default()
    };
    let verifier = capnagent::Verifier::new(&ROOT_KEY)
        .unwrap()
        .with_limits(limits);
    let tools: Vec<String> = (0..50).map(|i| format!("tool_{i}")).collect();
    let listed = tools.clone();
    let router = Router::new()
        .route(
            "/mcp",
            any(move |verified: Option<Verified>| {
                let tools = listed.clone();
                async move {
                    let verified = verified.unwrap();
                    let allowed: Vec<&String> =
                        tools.iter().filter(|t| verified.could_allow(t)).collect();
                    json!({ "allowed": allowed }).to_string()
                }
            }),
        )
        .route_layer(
            CapabilityLayer::new(verifier.clone(), auditor())
                .unwrap()
                .clock(|| Timestamp::from_unix_millis(NOW_MS))
                .caller(Anonymous)
                .mcp(McpPolicy::new()),
        );
    let mut allowed_tools =
        r#"tool == "tool_7" OR tool == "tool_9" OR tool == "mcp:tools/list""#.to_owned();
    for i in 0..297 {
        allowed_tools.push_str(&format!(r#" OR tool == "other_{i}""#));
    }
    let caveats = [
        allowed_tools.as_str(),
        "now <= @2099-01-01T00:00:00Z",
        // An `arg.*` check cannot be evaluated on `tools/list` (no args),
        // and a caveat that cannot be evaluated stops the message.
        r#"tool != "admin.reset""#,
    ];
    let mut builder = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .with_limits(limits)
        .issue("agent-42");
    for caveat in caveats {
        builder.caveat(caveat).unwrap();
    }
    let token = builder.build().unwrap().serialize();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;
    let response = send(&router, request(Some(&token), body)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
    assert_eq!(json_body(&response)["allowed"], json!(["tool_7", "tool_9"]));
    // Three caveats, 50 tools: three parses in all.
    assert_eq!(verifier.predicates_parsed(), caveats.len() as u64);
}
