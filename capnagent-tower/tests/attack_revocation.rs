//! A published revocation list turned into a capability, sent to a real
//! axum server on 127.0.0.1 by a real HTTP client: refused as a forgery.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{
    Auditor, Capability, RevocationCell, RevocationList, Revoker, Timestamp, Verifier,
};
use capnagent_tower::{AuthenticatedCaller, CapabilityLayer, FixedTool, Verified};

const ROOT_KEY: [u8; 32] = [7; 32];

async fn handler(_: Verified) -> &'static str {
    "handler ran"
}

/// The list's signing body as identifier and its signature as chain head,
/// plus one caveat appended without any key.
fn forge_from_list(list: &RevocationList, predicate: &str) -> String {
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(list.serialize()).unwrap()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let signature = value["signature"].as_str().unwrap().to_owned();
    let body = json.replace(
        &format!("\"signature\":\"{signature}\""),
        "\"signature\":\"\"",
    );
    let token = serde_json::json!({ "identifier": body, "caveats": [], "signature": signature });
    let wire = URL_SAFE_NO_PAD.encode(serde_json::to_string(&token).unwrap());
    Capability::parse(&wire)
        .unwrap()
        .attenuate(predicate)
        .unwrap()
        .serialize()
}

#[tokio::test]
async fn a_capability_forged_from_a_published_list_gets_401_over_http() {
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    revoker.revoke("agent-7");
    let list = revoker.publish(Timestamp::now().unix_millis());
    let cell = RevocationCell::new(&ROOT_KEY).unwrap();
    assert_eq!(cell.install(list.clone()), Ok(true));
    let layer = CapabilityLayer::new(
        Verifier::new(&ROOT_KEY).unwrap(),
        Auditor::new(&[9; 32]).unwrap(),
    )
    .unwrap()
    .tool(FixedTool::new("bank.wire"))
    .revocations(cell);
    let app = Router::new()
        .route("/wire", post(handler))
        .route_layer(layer)
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wire", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let forged = forge_from_list(&list, r#"tool == "bank.wire""#);
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {forged}"))
        .body(r#"{"to":"attacker","amount_cents":999999}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 401, "forged capability answered: {text}");
    assert_ne!(text, "handler ran");
}
