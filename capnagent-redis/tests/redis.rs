//! Against a real Redis on 127.0.0.1: replay protection and revocation
//! shared by separate verifiers, and fail-closed behaviour while Redis is
//! down.
//!
//! The shared server comes from `CAPNAGENT_REDIS_URL` (scripts/test.sh
//! starts one). Without it the tests start a private `redis-server`; when
//! `CI` is set and no Redis can be had, they fail instead of skipping.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capnagent::{Context, HolderKey, RevocationCell, RevocationStore, Revoker, Verifier};
use capnagent_redis::{RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};

use support::{ROOT, RedisServer, auditor, bound, config, no_redis, now_ms, redis};

fn call(amount: u64) -> Context {
    Context::builder()
        .caller("agent:planner")
        .tool("bank.wire")
        .args(serde_json::json!({ "amount_cents": amount }))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_1000_concurrent_identical_proofs_is_allowed() {
    let Some((url, _server)) = redis() else {
        return;
    };
    // Generous deadline: a debug build verifies 1000 signatures on 2 cores
    // while the Redis calls wait; a timeout would (rightly) deny.
    let store =
        RedisNonceStore::connect(&config(&url, "concurrent").timeout(Duration::from_secs(30)))
            .await
            .expect("redis");
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_nonce_store(Arc::new(store));
    let holder = HolderKey::from_seed([3; 32]);
    let cap = Arc::new(bound(&holder));
    let ctx = Arc::new(call(100));
    let proof = holder.prove(&cap, "bank.wire", ctx.args(), ctx.now().unix_millis());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, cap, ctx) = (verifier.clone(), cap.clone(), ctx.clone());
            tokio::spawn(async move {
                v.verify_with_proof(&cap, &ctx, &auditor(), &proof)
                    .await
                    .expect("chain ok")
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        let receipt = task.await.expect("task");
        if receipt.is_allowed() {
            allowed += 1;
        } else {
            assert_eq!(receipt.outcome().reason(), Some(capnagent::REASON_REPLAY));
        }
    }
    assert_eq!(allowed, 1);
}

#[tokio::test]
async fn two_verifiers_share_replays_and_revocations() {
    let Some((url, _server)) = redis() else {
        return;
    };
    let cfg = config(&url, "fleet");
    let interval = Duration::from_millis(100);
    let publisher = RedisRevocationStore::connect(&cfg).await.expect("redis");
    let mut revoker = Revoker::new(&ROOT).expect("key");
    publisher
        .publish(&revoker.publish(now_ms()))
        .await
        .expect("publish");

    // Two independent servers: their own connections, cells and feeds.
    let mut servers = Vec::new();
    for _ in 0..2 {
        let nonces = RedisNonceStore::connect(&cfg).await.expect("redis");
        let store: Arc<dyn RevocationStore> =
            Arc::new(RedisRevocationStore::connect(&cfg).await.expect("redis"));
        let cell = RevocationCell::new(&ROOT).expect("key");
        capnagent::refresh(store.as_ref(), &cell)
            .await
            .expect("first refresh");
        let feed = spawn_revocation_feed(store, cell.clone(), interval);
        let verifier = Verifier::new(&ROOT)
            .expect("key")
            .with_nonce_store(Arc::new(nonces))
            .with_revocations(cell);
        servers.push((verifier, feed));
    }

    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder);
    let ctx = call(7);
    let proof = holder.prove(&cap, "bank.wire", ctx.args(), ctx.now().unix_millis());
    let first = servers[0]
        .0
        .verify_with_proof(&cap, &ctx, &auditor(), &proof)
        .await
        .expect("chain ok");
    assert!(first.is_allowed(), "{:?}", first.outcome());
    let second = servers[1]
        .0
        .verify_with_proof(&cap, &ctx, &auditor(), &proof)
        .await
        .expect("chain ok");
    assert_eq!(second.outcome().reason(), Some(capnagent::REASON_REPLAY));

    // Revoke once; both servers enforce it within the feed interval plus
    // a round trip (allow generous slack for a loaded CI machine).
    revoker.revoke("agent-42");
    let published = Instant::now();
    publisher
        .publish(&revoker.publish(now_ms()))
        .await
        .expect("publish");
    for (verifier, _) in &servers {
        loop {
            let ctx = call(published.elapsed().as_nanos() as u64);
            let proof = holder.prove(&cap, "bank.wire", ctx.args(), ctx.now().unix_millis());
            let receipt = verifier
                .verify_with_proof(&cap, &ctx, &auditor(), &proof)
                .await
                .expect("chain ok");
            if receipt.outcome().reason() == Some("capability revoked: agent-42") {
                break;
            }
            assert!(
                published.elapsed() < interval * 2 + Duration::from_millis(900),
                "revocation not enforced within the bound"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (_, feed) in servers {
        feed.abort();
    }
}

#[tokio::test]
async fn redis_down_denies_everything_and_service_resumes_after_restart() {
    let Some(mut server) = RedisServer::start() else {
        no_redis("redis-server could not start");
        return;
    };
    let port = server.port;
    let cfg = config(&server.url(), "outage").timeout(Duration::from_millis(200));
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_nonce_store(Arc::new(
            RedisNonceStore::connect(&cfg).await.expect("redis"),
        ));
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder);
    let mut amount = 0;
    let mut attempt = |verifier: Verifier| {
        amount += 1;
        let ctx = call(amount);
        let proof = holder.prove(&cap, "bank.wire", ctx.args(), ctx.now().unix_millis());
        let cap = cap.clone();
        async move {
            verifier
                .verify_with_proof(&cap, &ctx, &auditor(), &proof)
                .await
                .expect("chain ok")
        }
    };
    assert!(attempt(verifier.clone()).await.is_allowed());

    server.stop();
    for _ in 0..20 {
        let started = Instant::now();
        let receipt = attempt(verifier.clone()).await;
        assert!(!receipt.is_allowed());
        let reason = receipt.outcome().reason().unwrap_or_default().to_owned();
        assert!(reason.starts_with("replay check unavailable: "), "{reason}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
    }

    let _restarted = RedisServer::start_on(port).expect("restart on the same port");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if attempt(verifier.clone()).await.is_allowed() {
            break;
        }
        assert!(Instant::now() < deadline, "not served again after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
