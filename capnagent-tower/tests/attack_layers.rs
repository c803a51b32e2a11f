//! Attacks on the HTTP and MCP layers from the security review (issue 17),
//! each reproduced against a real axum server on 127.0.0.1 with a real
//! HTTP client: a receipt turned into a token, keyless clients writing
//! signed audit records, a caveat parse error passing as "genuine",
//! arguments reaching server code unjudged, and the RFC 6750 challenge.

#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "axum", feature = "mcp"))]

mod support;

use axum::Router;
use axum::routing::{any, post};
use base64::Engine;
use bytes::Bytes;
use capnagent::{Auditor, Capability, Context, Issuer, Outcome, Receipt, Timestamp, Verifier};
use capnagent_tower::{
    Anonymous, AuthenticatedCaller, CapabilityLayer, McpAccess, McpPolicy, PathParam,
    TrustedHeader, Verified,
};
use serde_json::{Value, json};
use support::*;

/// The handler: says which tool the layer allowed.
async fn handler(verified: Verified, _body: Bytes) -> String {
    format!(
        "ran {}",
        verified.receipt().context_summary().tool().to_owned()
    )
}

/// The stand-in MCP server: answers with what the layer let through.
async fn mcp_server(verified: Option<Verified>, body: Bytes) -> String {
    json!({
        "ran": verified.map(|v| v.receipt().context_summary().tool().to_owned()),
        "seen": String::from_utf8_lossy(&body),
    })
    .to_string()
}

/// An HTTP tool API behind `layer`, tool from the path.
fn http_app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route("/tools/{name}", post(handler))
        .route_layer(layer.tool(PathParam::new("name")))
        .route_layer(axum::Extension(AuthenticatedCaller::new("agent:planner")))
}

/// An MCP endpoint behind `layer`.
fn mcp_app(layer: CapabilityLayer, policy: McpPolicy) -> Router {
    Router::new()
        .route("/mcp", any(mcp_server))
        .route_layer(layer.caller(Anonymous).mcp(policy))
}

async fn call(
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Turns a receipt into a token, as an attacker holding no key would: the
/// receipt's signature is HMAC(audit key, "v" || version || canonical
/// JSON without the signature), which is the chain head of a capability
/// whose identifier is that input; one appended caveat (no key needed)
/// gets past the "at least one caveat" gate.
fn token_from_receipt(receipt_json: &str, caveat: &str) -> String {
    let mut value: Value = serde_json::from_str(receipt_json).unwrap();
    let signature = value["signature"].as_str().unwrap().to_owned();
    value.as_object_mut().unwrap().remove("signature");
    // serde_json's maps are sorted: the canonical JSON with sorted keys.
    let body = serde_json::to_string(&value).unwrap();
    let identifier = format!("v\u{1}{body}");
    let wire = json!({"identifier": identifier, "caveats": [], "signature": signature});
    let text =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap());
    Capability::parse(&text)
        .unwrap()
        .attenuate(caveat)
        .unwrap()
        .serialize()
}

// ---------------------------------------------------------------------------
// item 2: a receipt is a capability when the audit key equals the root key

#[test]
fn a_layer_whose_audit_key_is_its_root_key_is_refused_at_construction() {
    // The attack is real: with one key for both, the receipt of a denial
    // (here: a request without any token) verifies as a capability.
    let key = ROOT_KEY;
    let auditor = Auditor::new(&key).unwrap();
    let ctx = Context::builder()
        .timestamp(Timestamp::from_unix_millis(NOW_MS))
        .caller("agent:planner")
        .tool("bank.wire")
        .build();
    let denial = auditor.sign(
        "",
        Vec::new(),
        &ctx,
        Outcome::Denied {
            reason: "missing capability token".into(),
        },
    );
    let forged = Capability::parse(&token_from_receipt(
        &denial.to_json(),
        r#"tool == "bank.wire""#,
    ))
    .unwrap();
    let verifier = Verifier::new(&key).unwrap();
    verifier.verify(&forged).unwrap();
    let judged = verifier
        .verify_with_context(&forged, &ctx, &auditor)
        .unwrap();
    assert!(judged.is_allowed(), "the forged receipt-token is allowed");

    // So the layer refuses such keys, whatever form they take for HMAC.
    let refused = CapabilityLayer::new(Verifier::new(&key).unwrap(), Auditor::new(&key).unwrap());
    let error = refused.unwrap_err();
    assert_eq!(error.code(), "key.audit_is_root");
    assert!(!error.to_string().contains("0707"), "no key in {error}");
    let mut padded = key.to_vec();
    padded.extend_from_slice(&[0, 0, 0]); // HMAC pads keys with zeros
    let refused =
        CapabilityLayer::new(Verifier::new(&key).unwrap(), Auditor::new(&padded).unwrap());
    assert_eq!(refused.unwrap_err().code(), "key.audit_is_root");
    // MCP mode is the same layer, built the same way.
    assert!(
        CapabilityLayer::new(Verifier::new(&key).unwrap(), Auditor::new(&key).unwrap())
            .map(|layer| layer.mcp(McpPolicy::new()))
            .is_err()
    );
}

#[tokio::test]
async fn a_receipt_from_a_401_is_not_a_token_with_separate_keys() {
    let (layer, _) = layer();
    let server = Server::start(http_app(layer)).await;
    let url = server.url("/tools/bank.wire");
    let (status, _, body) = call(&url, None, "{}").await;
    assert_eq!(status, 401);
    let problem: Value = serde_json::from_str(&body).unwrap();
    let receipt = problem["receipt"].to_string();
    let forged = token_from_receipt(&receipt, r#"tool == "bank.wire""#);
    let (status, _, body) = call(&url, Some(&forged), "{}").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("ran "), "the handler never runs");
}

// ---------------------------------------------------------------------------
// item 7: keyless clients write large signed audit records

/// A token minted under a key the server does not have, naming itself
/// "admin (approved by security team)" with ~180 KB of caveats.
fn forged_admin_token() -> String {
    let issuer = Issuer::from_key(&[8; 32]).unwrap();
    let mut builder = issuer.issue("admin (approved by security team)");
    let filler = format!("caller == \"{}\"", "x".repeat(1000));
    // As large as the default limits admit, so that the chain check (not
    // the length limit) is what refuses it.
    for _ in 0..11 {
        builder.caveat(&filler).unwrap();
    }
    let token = builder.build().unwrap().serialize();
    assert!(token.len() > 15_000 && token.len() <= capnagent::Limits::DEFAULT.max_token_len);
    token
}

/// Checks a receipt a layer signed for a token that did not verify.
fn assert_unverified(receipt: &Receipt, token: &str) {
    assert_eq!(
        receipt.capability_identifier(),
        capnagent::unverified_identifier(token)
    );
    assert!(
        receipt
            .capability_identifier()
            .starts_with("unverified:sha256:")
    );
    assert!(receipt.caveats().is_empty(), "no unverified caveats");
    assert!(
        receipt.to_json().len() < 4096,
        "bounded: {} bytes",
        receipt.to_json().len()
    );
    auditor().verify_receipt(receipt).unwrap();
}

#[tokio::test]
async fn a_forged_token_leaves_a_small_receipt_that_names_only_its_hash() {
    let (layer, receipts) = layer();
    let server = Server::start(http_app(layer.clone())).await;
    let token = forged_admin_token();
    let (status, _, body) = call(&server.url("/tools/bank.wire"), Some(&token), "{}").await;
    assert_eq!(status, 401);
    assert!(!body.contains("admin"), "{}", &body[..200.min(body.len())]);
    assert_unverified(&receipts.only(), &token);

    // MCP mode: the same.
    let (layer, receipts) = support::layer();
    let server = Server::start(mcp_app(layer, McpPolicy::new())).await;
    let message = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (status, _, _) = call(&server.url("/mcp"), Some(&token), message).await;
    assert_eq!(status, 401);
    assert_unverified(&receipts.only(), &token);

    // A token that does not even parse (over the length limit, garbage).
    let (layer, receipts) = support::layer();
    let server = Server::start(http_app(layer)).await;
    let too_long = "A".repeat(300 * 1024);
    for bad in [too_long.as_str(), "not-a-token"] {
        let (status, _, _) = call(&server.url("/tools/bank.wire"), Some(bad), "{}").await;
        assert_eq!(status, 401);
    }
    let all = receipts.all();
    assert_eq!(all.len(), 2);
    assert_unverified(&all[0], &too_long);
    assert_unverified(&all[1], "not-a-token");
}

/// A body that never finishes: the request is dropped while the layer
/// reads it (an outer timeout), which still leaves a receipt.
#[tokio::test]
async fn a_cancelled_request_names_only_verified_tokens() {
    use std::time::Duration;
    use tower::ServiceExt;

    let (layer, receipts) = support::layer();
    let app = Router::new()
        .route("/tools/{name}", post(handler))
        .route_layer(layer.tool(PathParam::new("name")).caller(Anonymous));
    let genuine = token(&[r#"tool == "bank.wire""#]);
    for (token, verified) in [(genuine.as_str(), true), ("not-a-token", false)] {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = tokio_stream_from(rx);
        let request = http::Request::post("/tools/bank.wire")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(stream))
            .unwrap();
        let outcome =
            tokio::time::timeout(Duration::from_millis(50), app.clone().oneshot(request)).await;
        assert_eq!(outcome.is_err(), verified, "still reading the body");
        let receipt = receipts.all().pop().unwrap();
        if verified {
            assert_eq!(
                receipt.outcome().reason(),
                Some("request cancelled before a decision (body not fully read)")
            );
            assert_eq!(receipt.capability_identifier(), "agent-42");
        } else {
            // A malformed token is refused before the body is read.
            assert_unverified(&receipt, token);
        }
    }
}

/// A stream of the channel's items.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn request_facts_in_receipts_are_bounded() {
    // The caller from a gateway header, 100 KB long: refused, and the
    // receipt keeps 1 KiB of it.
    let (layer, receipts) = support::layer();
    let app = Router::new()
        .route("/tools/{name}", post(handler))
        .route_layer(
            layer
                .tool(PathParam::new("name"))
                .caller(TrustedHeader::new(http::HeaderName::from_static("x-agent"))),
        );
    let server = Server::start(app).await;
    let genuine = token(&[r#"tool == "bank.wire""#]);
    let response = reqwest::Client::new()
        .post(server.url("/tools/bank.wire"))
        .bearer_auth(&genuine)
        .header("x-agent", "a".repeat(100_000))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(!response.text().await.unwrap().contains("ran "));
    let receipt = receipts.only();
    assert!(receipt.context_summary().caller().len() <= capnagent::MAX_RECEIPT_TEXT + 24);
    assert!(receipt.to_json().len() < 4096 + genuine.len());

    // An MCP tool name of 200 KB, and a method name of 200 KB.
    let (layer, receipts) = support::layer();
    let server = Server::start(mcp_app(layer, McpPolicy::new())).await;
    let long = "n".repeat(200_000);
    let call_long = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{long}","arguments":{{}}}}}}"#
    );
    let method_long = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"{long}"}}"#);
    for message in [call_long, method_long] {
        let (status, _, body) = call(&server.url("/mcp"), Some(&genuine), message).await;
        assert!(status == 400 || status == 403, "{status}");
        assert!(!body.contains("\"ran\":\"n"), "never reaches the server");
    }
    for receipt in receipts.all() {
        let json = receipt.to_json();
        assert!(json.len() < 8192, "receipt of {} bytes", json.len());
        assert!(!receipt.is_allowed());
    }
}

// ---------------------------------------------------------------------------
// item 8b: a caveat parse error is never "genuine"

#[tokio::test]
async fn a_holder_bound_token_stripped_of_its_key_is_not_genuine() {
    // A token bound to a holder key whose 32 bytes happen to be text: its
    // holder-key chain step is HMAC(sig, "__hok:" || key), exactly the
    // step of a caveat with that text. Someone who stole the token (but
    // not the private key) drops the key and adds the caveat: the chain
    // still verifies, no proof is asked for, and the first caveat does
    // not parse.
    let key = *b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let issuer = Issuer::from_key(&ROOT_KEY).unwrap();
    let mut builder = issuer.issue("agent-42");
    builder.holder_of_key(key).unwrap();
    builder.caveat(r#"tool == "checkout_purchase""#).unwrap();
    let bound = builder.build().unwrap();
    let wire: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(bound.serialize())
            .unwrap(),
    )
    .unwrap();
    let stripped = json!({
        "identifier": wire["identifier"],
        "caveats": [
            {"predicate": format!("__hok:{}", std::str::from_utf8(&key).unwrap())},
            {"predicate": "tool == \"checkout_purchase\""},
        ],
        "signature": wire["signature"],
    });
    let stripped = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&stripped).unwrap());
    let cap = Capability::parse(&stripped).unwrap();
    assert!(cap.holder_of_key().is_none());
    Verifier::new(&ROOT_KEY).unwrap().verify(&cap).unwrap();

    let (layer, receipts) = support::layer();
    let server = Server::start(mcp_app(layer, McpPolicy::new())).await;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let (status, _, body) = call(&server.url("/mcp"), Some(&stripped), list).await;
    assert_ne!(status, 200, "{body}");
    assert!(!body.contains("\"ran\""), "{body}");
    let receipt = receipts.only();
    assert!(!receipt.is_allowed());
    assert!(
        receipt
            .outcome()
            .reason()
            .unwrap()
            .starts_with("caveat parse error in")
    );

    // A caveat that cannot be evaluated against the message stops it too;
    // one that is simply false does not (a token for one tool lists them).
    let by_arg = token(&["arg.amount_cents <= 5000", r#"tool == "checkout_purchase""#]);
    let (status, _, _) = call(&server.url("/mcp"), Some(&by_arg), list).await;
    assert_eq!(status, 403);
    let by_tool = token(&[r#"tool == "checkout_purchase""#, "arg.amount_cents <= 5000"]);
    let (status, _, body) = call(&server.url("/mcp"), Some(&by_tool), list).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ran\":\"mcp:tools/list\""), "{body}");
}

// ---------------------------------------------------------------------------
// item 8d: arguments that reach server code are judged or refused

#[tokio::test]
async fn arguments_to_server_code_are_not_passed_on_a_genuine_token_alone() {
    let (layer, receipts) = support::layer();
    let server = Server::start(mcp_app(layer, McpPolicy::new())).await;
    let url = server.url("/mcp");
    let wire = token(&[r#"tool == "bank_wire""#, "arg.amount_cents <= 5000"]);

    // The allowed call, then its retry with the user's "answers" that
    // raise the amount: the answers reach the tool, so they are refused.
    let first = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bank_wire","arguments":{"to":"bob","amount_cents":100}}}"#;
    let (status, _, body) = call(&url, Some(&wire), first).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"ran\":\"bank_wire\""), "{body}");
    let retry = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"bank_wire","arguments":{"to":"bob","amount_cents":100},"inputResponses":{"confirm":{"action":"accept","content":{"amount_cents":900000}}},"requestState":"s1"}}"#;
    let tasks = r#"{"jsonrpc":"2.0","id":3,"method":"tasks/update","params":{"taskId":"t1","inputResponses":{"confirm":{"action":"accept"}}}}"#;
    let prompt = r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"wire","arguments":{"amount_cents":"900000"}}}"#;
    let complete = r#"{"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"wire"},"argument":{"name":"to","value":"b"}}}"#;
    let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"action":"accept","content":{"amount_cents":900000}}}"#;
    let level =
        r#"{"jsonrpc":"2.0","id":8,"method":"logging/setLevel","params":{"level":"debug"}}"#;
    for message in [retry, tasks, prompt, complete, answer, level] {
        let (status, _, body) = call(&url, Some(&wire), message).await;
        assert_eq!(status, 403, "{message}: {body}");
        assert!(!body.contains("\"ran\""), "{message}: {body}");
    }
    assert_eq!(receipts.len(), 7);
    assert_eq!(receipts.all().iter().filter(|r| r.is_allowed()).count(), 1);

    // Judged as args when the policy says so: a caveat on the answers.
    let (layer, _) = support::layer();
    let policy = McpPolicy::new().input_responses(McpAccess::Judged);
    let server = Server::start(mcp_app(layer, policy)).await;
    let (status, _, body) = call(&server.url("/mcp"), Some(&wire), retry).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"ran\":\"bank_wire\""),
        "no caveat on the answers: {body}"
    );
    let confirm = token(&[
        r#"tool == "bank_wire""#,
        "arg.amount_cents <= 5000",
        r#"arg.inputResponses.confirm.action == "decline""#,
    ]);
    let (_, _, body) = call(&server.url("/mcp"), Some(&confirm), retry).await;
    assert!(body.contains("isError"), "{body}");
    let declined = retry.replace("\"accept\"", "\"decline\"");
    let (_, _, body) = call(&server.url("/mcp"), Some(&confirm), declined).await;
    assert!(body.contains("\"ran\":\"bank_wire\""), "{body}");
}

// ---------------------------------------------------------------------------
// item 8e: RFC 6750 section 3.1

#[tokio::test]
async fn no_token_gets_a_bare_bearer_challenge_in_http_and_mcp_modes() {
    let (layer, _) = support::layer();
    let http = Server::start(http_app(layer.clone())).await;
    let mcp = Server::start(mcp_app(layer, McpPolicy::new())).await;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for url in [http.url("/tools/bank.wire"), mcp.url("/mcp")] {
        let (status, headers, _) = call(&url, None, list).await;
        assert_eq!(status, 401, "{url}");
        let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
        assert_eq!(challenges.len(), 1);
        assert_eq!(
            challenges[0], "Bearer",
            "{url}: no error code without a token"
        );

        let (status, headers, _) = call(&url, Some("not-a-token"), list).await;
        assert_eq!(status, 401);
        assert_eq!(
            headers["www-authenticate"], "Bearer error=\"invalid_token\"",
            "{url}"
        );
    }
}
