//! Two separate HTTP servers sharing one Redis: replay protection and
//! revocation hold across the fleet, over real loopback HTTP.
//!
//! Uses `CAPNAGENT_REDIS_URL` (scripts/test.sh starts a Redis); without it
//! the test starts a private `redis-server`, and when `CI` is set and no
//! Redis can be had it fails instead of skipping.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Extension, Router};
use capnagent::{
    Auditor, Capability, HolderKey, Issuer, RevocationCell, RevocationStore, Revoker, Timestamp,
    Verifier,
};
use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};
use capnagent_tower::{AuthenticatedCaller, CapabilityLayer, FixedTool, Verified};

const ROOT_KEY: [u8; 32] = [7; 32];
const FEED_INTERVAL: Duration = Duration::from_millis(100);

async fn wire(verified: Verified) -> String {
    verified.receipt().to_json()
}

/// One server of the fleet: its own Redis connections, revocation cell and
/// feed; the same root and audit keys as the others.
async fn start_server(config: &RedisConfig) -> String {
    let nonces = RedisNonceStore::connect(config).await.unwrap();
    let store: Arc<dyn RevocationStore> =
        Arc::new(RedisRevocationStore::connect(config).await.unwrap());
    let cell = RevocationCell::new(&ROOT_KEY).unwrap();
    capnagent::refresh(store.as_ref(), &cell).await.unwrap();
    spawn_revocation_feed(store, cell.clone(), FEED_INTERVAL);
    let layer = CapabilityLayer::new(
        Verifier::new(&ROOT_KEY).unwrap(),
        Auditor::new(&[9; 32]).unwrap(),
    )
    .unwrap()
    .tool(FixedTool::new("bank.wire"))
    .nonce_store(Arc::new(nonces))
    .revocations(cell);
    let app = Router::new()
        .route("/wire", post(wire))
        .route_layer(layer)
        .route_layer(Extension(AuthenticatedCaller::new("agent:planner")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/wire", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
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

/// Posts a call with a proof made now (or the given proof header).
async fn send(
    client: &reqwest::Client,
    url: &str,
    cap: &Capability,
    body: &str,
    proof: &str,
) -> (u16, serde_json::Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", cap.serialize()))
        .header("capnagent-proof", proof)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let json = serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default();
    (status, json)
}

fn prove(holder: &HolderKey, cap: &Capability, body: &str) -> String {
    let args = capnagent::JsonValue::parse(body, &Default::default()).unwrap();
    holder
        .prove(cap, "bank.wire", &args, Timestamp::now().unix_millis())
        .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_replays_and_revocations_through_one_redis() {
    let Some((url, _server)) = capnagent_tests::redis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Redis is required when CI is set"
        );
        eprintln!("skipping: no Redis");
        return;
    };
    let unique = Timestamp::now().unix_millis();
    let config = RedisConfig::new(url)
        .prefix(format!("capnagent-fleet-test:{unique}"))
        .timeout(Duration::from_secs(5));
    let publisher = RedisRevocationStore::connect(&config).await.unwrap();
    let mut revoker = Revoker::new(&ROOT_KEY).unwrap();
    publisher
        .publish(&revoker.publish(Timestamp::now().unix_millis()))
        .await
        .unwrap();
    let (a, b) = (start_server(&config).await, start_server(&config).await);
    let client = reqwest::Client::new();
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder);

    // A proof accepted by one server is refused by the other.
    let body = r#"{"to":"acct-1","amount_cents":1200}"#;
    let proof = prove(&holder, &cap, body);
    let (status, receipt) = send(&client, &a, &cap, body, &proof).await;
    assert_eq!(status, 200, "{receipt}");
    let (status, problem) = send(&client, &b, &cap, body, &proof).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["detail"], "proof replay detected");

    // A revocation published once is enforced by both within the bound.
    revoker.revoke("agent-42");
    let published = Instant::now();
    publisher
        .publish(&revoker.publish(Timestamp::now().unix_millis()))
        .await
        .unwrap();
    let bound = FEED_INTERVAL * 2 + Duration::from_millis(900);
    for server in [&a, &b] {
        let mut n = 0;
        loop {
            n += 1;
            let body = format!(r#"{{"to":"acct-{n}","amount_cents":1}}"#);
            let proof = prove(&holder, &cap, &body);
            let (status, problem) = send(&client, server, &cap, &body, &proof).await;
            if status == 403 && problem["detail"] == "capability revoked: agent-42" {
                break;
            }
            assert!(
                published.elapsed() < bound,
                "revocation not enforced within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
