//! Holder-of-key proofs, replay protection and revocation through the HTTP
//! layer (`oneshot`, no sockets).

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::routing::post;
use axum::{Extension, Router};
use capnagent::{Capability, HolderKey, InMemoryNonceStore, Issuer, RevocationCell, Revoker};
use capnagent_tower::{AuthenticatedCaller, CapabilityLayer, FixedTool, Verified};
use http::{Request, StatusCode, header};
use support::*;
use tower::ServiceExt;

const TOOL: &str = "bank.wire";
const BODY: &str = r#"{"to":"acct-1","amount_cents":1200}"#;

async fn wire(verified: Verified) -> String {
    verified.receipt().to_json()
}

fn app(layer: CapabilityLayer) -> Router {
    Router::new()
        .route("/wire", post(wire))
        .route_layer(layer.tool(FixedTool::new(TOOL)))
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")))
}

fn bound(holder: &HolderKey) -> Capability {
    Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .holder_of_key(holder.public_key())
        .unwrap()
        .caveat(r#"tool == "bank.wire" AND arg.amount_cents <= 5000"#)
        .unwrap()
        .build()
        .unwrap()
}

/// The proof header value for `body` at `ts`, as a client computes it.
fn proof(holder: &HolderKey, cap: &Capability, body: &str, ts: u64) -> String {
    let args = capnagent::JsonValue::parse(body, &Default::default()).unwrap();
    holder.prove(cap, TOOL, &args, ts).encode()
}

fn request(cap: &Capability, body: &str, proof: Option<String>) -> Request<Body> {
    let mut builder = Request::post("/wire")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", cap.serialize()));
    if let Some(proof) = proof {
        builder = builder.header("capnagent-proof", proof);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let text = body_text(response.into_body()).await;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn reason(problem: &serde_json::Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_valid_proof_is_allowed_and_a_missing_or_wrong_one_is_not() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder);
    let (layer, receipts) = layer();
    let app = app(layer);

    let (status, receipt) = send(
        &app,
        request(&cap, BODY, Some(proof(&holder, &cap, BODY, NOW_MS))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["outcome"]["kind"], "allowed");

    let (status, problem) = send(&app, request(&cap, BODY, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Denied by the verifier at the holder-key gate (the renderer reads the
    // gate, not the reason).
    assert_eq!(problem["code"], "invalid_proof");

    let (status, problem) = send(&app, request(&cap, BODY, Some("t=1;sig=AA".into()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reason(&problem).starts_with("malformed holder-of-key proof"));

    // A proof for other args (the verifier derives the challenge from the
    // body it actually received).
    let other = r#"{"to":"acct-1","amount_cents":1201}"#;
    let (status, problem) = send(
        &app,
        request(&cap, BODY, Some(proof(&holder, &cap, other, NOW_MS))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&problem), "holder-of-key proof failed");

    // Another key.
    let thief = HolderKey::from_seed([4; 32]);
    let (status, _) = send(
        &app,
        request(&cap, BODY, Some(proof(&thief, &cap, BODY, NOW_MS))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Exactly one receipt per request, each signed.
    assert_eq!(receipts.len(), 5);
    for r in receipts.all() {
        auditor().verify(&r.to_json()).unwrap();
    }
}

#[tokio::test]
async fn with_a_nonce_store_each_proof_is_accepted_once() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder);
    let (layer, receipts) = layer();
    let app = app(layer.nonce_store(Arc::new(InMemoryNonceStore::new())));
    let header = proof(&holder, &cap, BODY, NOW_MS - 1_000);

    let (status, _) = send(&app, request(&cap, BODY, Some(header.clone()))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = send(&app, request(&cap, BODY, Some(header))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&problem), "proof replay detected");
    // A fresh proof (new timestamp) is fine.
    let (status, _) = send(
        &app,
        request(&cap, BODY, Some(proof(&holder, &cap, BODY, NOW_MS))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipts.len(), 3);
}

#[tokio::test]
async fn revocations_configured_on_the_layer_are_enforced() {
    let bearer = token(&[r#"tool == "bank.wire""#]);
    let cell = RevocationCell::new(&ROOT_KEY).unwrap();
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    cell.install_at(revoker.publish(NOW_MS - 10), NOW_MS)
        .unwrap();
    let (layer, _) = layer();
    let app = app(layer.revocations(cell.clone()));
    let call = || {
        Request::post("/wire")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::from(BODY))
            .unwrap()
    };
    assert_eq!(send(&app, call()).await.0, StatusCode::OK);
    revoker.revoke("agent-42");
    cell.install_at(revoker.publish(NOW_MS - 5), NOW_MS)
        .unwrap();
    let (status, problem) = send(&app, call()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&problem), "capability revoked: agent-42");
}
