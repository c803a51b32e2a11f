//! Loopback tests: a real axum server on 127.0.0.1, a real HTTP client.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::collections::HashMap;

use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use capnagent::{AuditLog, Auditor, KeyId, KeyRing, KeyRole, Receipt, Timestamp, Verifier};
use capnagent_tower::{
    AuditLogSink, AuthenticatedCaller, CapabilityLayer, FixedTool, PathParam, Verified,
};
use support::*;

const CAVEATS: &[&str] = &[
    r#"caller == "agent:planner""#,
    r#"tool == "checkout.purchase""#,
    "arg.amount_cents <= 5000",
    "now <= @2099-01-01T00:00:00Z",
];

async fn echo_bytes(_: Verified, body: Bytes) -> Bytes {
    body
}

async fn echo_json(
    verified: Verified,
    Json(args): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "args": args, "receipt": verified.receipt().to_json() }))
}

fn app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route("/tools/{name}", post(echo_bytes))
        .route("/json/{name}", post(echo_json))
        .route_layer(layer.tool(PathParam::new("name")))
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")))
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn each_decision_has_its_status_over_real_http() {
    let (layer, receipts) = layer();
    let server = Server::start(app(layer.body_limit(4096))).await;
    let client = reqwest::Client::new();
    let url = server.url("/tools/checkout.purchase");
    let good = token(CAVEATS);
    let body = r#"{"sku":"USB-C cable","amount_cents":1299}"#;

    let ok = send(&client, &url, Some(&good), body).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), body);

    let cases: [(Option<String>, String, u16, Option<&str>); 6] = [
        // RFC 6750 section 3.1: no error code without a token.
        (None, body.into(), 401, Some("Bearer")),
        (
            Some("bm90LWEtdG9rZW4".into()),
            body.into(),
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        (
            Some(forged(CAVEATS)),
            body.into(),
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        (
            Some(good.clone()),
            r#"{"amount_cents":5001}"#.into(),
            403,
            Some(r#"Bearer error="insufficient_scope""#),
        ),
        (Some(good.clone()), "amount_cents=5".into(), 400, None),
        (
            Some(good.clone()),
            format!(r#"{{"amount_cents":1,"pad":"{}"}}"#, "x".repeat(5000)),
            413,
            None,
        ),
    ];
    for (token, body, status, challenge) in cases {
        let response = send(&client, &url, token.as_deref(), body).await;
        assert_eq!(response.status(), status);
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            challenge
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status);
        if let Some(token) = &token {
            assert!(!problem.to_string().contains(token.as_str()));
        }
        auditor().verify(&problem["receipt"].to_string()).unwrap();
    }
    assert_eq!(receipts.len(), 7);
}

#[tokio::test]
async fn the_handler_sees_the_identical_body() {
    let (layer, _) = layer();
    let server = Server::start(app(layer)).await;
    let client = reqwest::Client::new();
    let token = token(&[r#"tool == "checkout.purchase""#, "arg.amount_cents <= 5000"]);
    // Whitespace, key order, number text and escapes all survive.
    let body = "{\n  \"sku\" : \"caf\\u00e9 \u{2615}\",\"amount_cents\":1299, \"price\": 12.50, \"big\": 1e400 }\n";
    let response = send(
        &client,
        &server.url("/tools/checkout.purchase"),
        Some(&token),
        body,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), body.as_bytes());

    // axum's `Json<T>` reads the put-back body as usual.
    let body = r#"{"sku":"cable","amount_cents":1299}"#;
    let response = send(
        &client,
        &server.url("/json/checkout.purchase"),
        Some(&token),
        body,
    )
    .await;
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["args"]["amount_cents"], 1299);
    assert!(
        auditor()
            .verify(echoed["receipt"].as_str().unwrap())
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_the_handler_never_runs() {
    let (layer, receipts) = layer();
    let server = Server::start(app(layer.body_limit(1024))).await;
    let client = reqwest::Client::new();
    let token = token(CAVEATS);
    let big = format!(r#"{{"amount_cents":1,"pad":"{}"}}"#, "x".repeat(2048));
    let response = send(
        &client,
        &server.url("/tools/checkout.purchase"),
        Some(&token),
        big,
    )
    .await;
    assert_eq!(response.status(), 413);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "request body exceeds the limit of 1024 bytes"
    );
    assert_eq!(
        receipts.only().outcome().reason(),
        Some("request body exceeds the limit of 1024 bytes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mixed_requests_one_receipt_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.ndjson");
    // A small queue, so that some requests wait for room under load.
    let sink = AuditLogSink::with_capacity(AuditLog::open(&path).unwrap(), 8).unwrap();
    let layer = CapabilityLayer::new(Verifier::new(&ROOT_KEY).unwrap(), auditor())
        .unwrap()
        .clock(|| Timestamp::from_unix_millis(NOW_MS))
        .sink(sink.clone());
    let server = Server::start(app(layer)).await;
    let client = reqwest::Client::new();
    let url = server.url("/tools/checkout.purchase");
    let good = token(CAVEATS);
    let bad = forged(CAVEATS);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let (client, url, good, bad) = (client.clone(), url.clone(), good.clone(), bad.clone());
        tasks.spawn(async move {
            // 0: allowed, 1: no token, 2: forged, 3: over the amount caveat.
            let (token, amount, status) = match i % 4 {
                0 => (Some(good), 1000 + i, 200),
                1 => (None, i, 401),
                2 => (Some(bad), i, 401),
                _ => (Some(good), 10_000 + i, 403),
            };
            let body = format!(r#"{{"amount_cents":{amount},"n":{i}}}"#);
            let response = send(&client, &url, token.as_deref(), body).await;
            assert_eq!(response.status(), status, "request {i}");
            (i, status)
        });
    }
    let mut statuses = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (_, status) = done.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses[&200], 50);
    assert_eq!(statuses[&401], 100);
    assert_eq!(statuses[&403], 50);

    sink.flush().await.unwrap();
    let receipts: Vec<Receipt> = AuditLog::open(&path)
        .unwrap()
        .iter()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(receipts.len(), 200);
    let auditor = auditor();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for receipt in &receipts {
        auditor.verify_receipt(receipt).unwrap();
        let reason = receipt.outcome().reason().unwrap_or("allowed").to_owned();
        *reasons.entry(reason).or_insert(0) += 1;
    }
    assert_eq!(reasons["allowed"], 50);
    assert_eq!(reasons["missing capability token"], 50);
    assert_eq!(reasons["capability chain integrity: invalid signature"], 50);
    assert_eq!(reasons["caveat failed: arg.amount_cents <= 5000"], 50);
    // Each checked call's receipt hashes its own args: one receipt per request.
    let mut hashes: Vec<&str> = receipts
        .iter()
        .filter(|r| {
            r.is_allowed()
                || r.outcome()
                    .reason()
                    .is_some_and(|r| r.starts_with("caveat"))
        })
        .map(|r| r.context_summary().args_hash())
        .collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 100);
    let stats = sink.stats();
    assert_eq!(stats.written, 200);
    assert_eq!(stats.failed, 0);
}

#[tokio::test]
async fn a_token_minted_by_the_reference_package_is_accepted() {
    let vectors = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../capnagent/tests/vectors/vectors.jsonl"
    ))
    .unwrap();
    // The first plain allowed verification with a tool and object args.
    let row: serde_json::Value = vectors
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|row| {
            row["op"] == "verify"
                && row["expected_outcome"]["kind"] == "allowed"
                && row.get("volatile_fields").is_none()
                && row["predicates"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p.as_str().unwrap().starts_with("tool ==")))
                && capnagent::Context::from_json(row["ctx_json"].as_str().unwrap())
                    .is_ok_and(|ctx| ctx.args().as_object().is_some_and(|a| !a.is_empty()))
        })
        .unwrap();
    let ctx = capnagent::Context::from_json(row["ctx_json"].as_str().unwrap()).unwrap();
    let now = ctx.now();
    let layer = CapabilityLayer::new(
        Verifier::new(&hex(row["root_key_hex"].as_str().unwrap())).unwrap(),
        Auditor::new(&hex(row["audit_key_hex"].as_str().unwrap())).unwrap(),
    )
    .unwrap()
    .clock(move || now)
    .tool(FixedTool::new(ctx.tool().to_owned()));
    let app = Router::new()
        .route(
            "/call",
            post(|verified: Verified| async move { verified.receipt().to_json() }),
        )
        .route_layer(layer)
        .route_layer(Extension(AuthenticatedCaller::new(ctx.caller())));
    let server = Server::start(app).await;

    let body = ctx.args().canonical_string();
    let response = send(
        &reqwest::Client::new(),
        &server.url("/call"),
        Some(row["token"].as_str().unwrap()),
        body,
    )
    .await;
    assert_eq!(response.status(), 200, "{}", row["id"]);
    assert_eq!(
        response.text().await.unwrap(),
        row["expected"]["receipt"].as_str().unwrap(),
        "{}",
        row["id"]
    );
}

/// Sends `tokens` (with their expected statuses) concurrently, `rounds`
/// times each, and returns how many requests got each status.
async fn concurrently(server: &Server, tokens: &[(&str, u16)], rounds: u32) -> HashMap<u16, u32> {
    let client = reqwest::Client::new();
    let url = server.url("/tools/checkout.purchase");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..rounds {
        for &(token, status) in tokens {
            let (client, url, token) = (client.clone(), url.clone(), token.to_owned());
            tasks.spawn(async move {
                let body = format!(r#"{{"amount_cents":{i},"n":{i}}}"#);
                let response = send(&client, &url, Some(&token), body).await;
                assert_eq!(response.status(), status, "request {i}");
                status
            });
        }
    }
    let mut statuses = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        *statuses.entry(done.unwrap()).or_insert(0) += 1;
    }
    statuses
}

/// A root key rotation over real HTTP: during the overlap the servers hold
/// [new, old] and tokens under both keys, in flight together, are
/// allowed; once the old key is retired its tokens are refused as forged
/// and the new key's still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_key_rotation_with_tokens_under_both_keys_in_flight() {
    const NEW_KEY: [u8; 32] = [0x2a; 32];
    let new_only = KeyRing::new(KeyRole::Root, Some(KeyId::new("k2").unwrap()), &NEW_KEY).unwrap();
    let overlap = new_only
        .clone()
        .with_key(Some(KeyId::new("k1").unwrap()), &ROOT_KEY)
        .unwrap();
    let old_token = token(CAVEATS);
    let new_token = token_under(&NEW_KEY, CAVEATS);
    assert_ne!(old_token, new_token);

    // Overlap: both accepted, concurrently, one allowed receipt each.
    let verifier = Verifier::from_keys(&overlap).unwrap();
    let (layer, receipts) = layer_with(verifier.clone());
    let server = Server::start(app(layer)).await;
    let statuses = concurrently(&server, &[(&old_token, 200), (&new_token, 200)], 40).await;
    assert_eq!(statuses[&200], 80, "{statuses:?}");
    let all = receipts.all();
    assert_eq!(all.len(), 80);
    assert!(all.iter().all(Receipt::is_allowed));
    // Operators see which key each token is under (not in the receipt).
    for (token, id) in [(&old_token, "k1"), (&new_token, "k2")] {
        let cap = capnagent::Capability::parse(token).unwrap();
        assert_eq!(verifier.key_id_for(&cap).map(KeyId::as_str), Some(id));
    }
    drop(server);

    // An audit key equal to the old root key is refused too.
    let same = CapabilityLayer::new(
        Verifier::from_keys(&overlap).unwrap(),
        Auditor::new(&ROOT_KEY).unwrap(),
    );
    assert_eq!(same.err().map(|e| e.code()), Some("key.audit_is_root"));

    // The old key retired: its tokens are refused (401, as forged), with
    // a receipt each; the new key's are allowed.
    let (layer, receipts) = layer_with(Verifier::from_keys(&new_only).unwrap());
    let server = Server::start(app(layer)).await;
    let statuses = concurrently(&server, &[(&old_token, 401), (&new_token, 200)], 40).await;
    assert_eq!((statuses[&200], statuses[&401]), (40, 40), "{statuses:?}");
    let all = receipts.all();
    assert_eq!(all.iter().filter(|r| r.is_allowed()).count(), 40);
    let refused: Vec<_> = all.iter().filter(|r| !r.is_allowed()).collect();
    assert_eq!(refused.len(), 40);
    assert!(
        refused
            .iter()
            .all(|r| r.capability_identifier().starts_with("unverified:")),
        "{refused:?}"
    );
}
