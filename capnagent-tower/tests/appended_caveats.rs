//! Caveats appended to an expired token (anyone may append, no key
//! needed) cost the HTTP layer nothing: the expiry denies and nothing
//! after it is parsed.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use capnagent::{Issuer, Limits, Receipt, Timestamp, Verifier};
use capnagent_tower::{AuthenticatedCaller, CapabilityLayer, FixedTool, Verified};
use http::{Request, StatusCode, header};
use support::*;
use tower::ServiceExt;

#[tokio::test]
async fn an_expired_token_full_of_appended_caveats_is_refused_without_parsing_them() {
    let mut cap = Issuer::from_key(&ROOT_KEY)
        .unwrap()
        .issue("agent-42")
        .not_after(Timestamp::from_unix_millis(NOW_MS - 1_000))
        .unwrap()
        .build()
        .unwrap();
    // The holder appends unique caveats (no key needed) up to the default
    // limits.
    let limits = Limits::DEFAULT;
    let mut appended = 0;
    while let Ok(next) = cap.attenuate(&format!("arg.a{appended} != \"{}\"", "x".repeat(20))) {
        if next.serialize().len() > limits.max_token_len {
            break;
        }
        (cap, appended) = (next, appended + 1);
    }
    assert!(appended > 100, "{appended}");
    let token = cap.serialize();

    let verifier = Verifier::new(&ROOT_KEY).unwrap();
    let receipts = Arc::new(Mutex::new(Vec::<Receipt>::new()));
    let sink = Arc::clone(&receipts);
    let layer = CapabilityLayer::new(verifier.clone(), auditor())
        .unwrap()
        .clock(|| Timestamp::from_unix_millis(NOW_MS))
        .sink(move |receipt: &Receipt| sink.lock().unwrap().push(receipt.clone()));
    let app = Router::new()
        .route("/buy", post(|_: Verified| async { "ran" }))
        .route_layer(layer.tool(FixedTool::new("checkout.purchase")))
        .route_layer(axum::Extension(AuthenticatedCaller::new("agent:planner")));
    for _ in 0..3 {
        let request = Request::post("/buy")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from("{}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let receipts = receipts.lock().unwrap();
    assert_eq!(receipts.len(), 3);
    let receipt = receipts.last().unwrap();
    assert_eq!(
        receipt.outcome().reason(),
        Some("caveat failed: now <= @2027-01-15T07:59:59Z")
    );
    // Three requests, one parse: the expiry. None of the appended caveats.
    assert_eq!(verifier.predicates_parsed(), 1);
}
