//! Attacks on a fleet sharing one real Redis on 127.0.0.1: a proof
//! replayed on a server whose clock is behind, and a revocation list dated
//! in the future that would freeze revocation.
//!
//! The shared server comes from `CAPNAGENT_REDIS_URL` (scripts/test.sh
//! starts one). Without it the tests start a private `redis-server`; when
//! `CI` is set and no Redis can be had, they fail instead of skipping.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capnagent::{
    Capability, Context, HolderKey, Issuer, RevocationCell, RevocationStore, Revoker, StoreError,
    Verifier,
};
use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore};

use support::{ROOT, auditor, bound, config, now_ms, redis};

fn call(now_ms: u64, tool: &str) -> Context {
    Context::builder()
        .now_millis(now_ms)
        .caller("agent:planner")
        .tool(tool)
        .args(serde_json::json!({ "amount_cents": 700, "to": "acct-1" }))
        .build()
}

/// Two servers on one Redis, A's clock 5 s ahead of B's (the contexts'
/// `nowMs` differ by 5 s), proof skew 500 ms, clock-offset bound 5 s. The
/// proof is stamped so that A accepts it at once and B's window opens 5 s
/// later in real time; both try it every 20 ms until B's window has
/// closed, while Redis expires records in real time. Allowed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proof_is_allowed_once_by_two_servers_5s_apart_on_one_redis() {
    let Some((url, _server)) = redis() else {
        return;
    };
    const SKEW_MS: u64 = 500;
    const OFFSET_MS: u64 = 5_000;
    let cfg = config(&url, "clock-offset").timeout(Duration::from_secs(5));
    let holder = HolderKey::from_seed([3; 32]);
    let cap: Capability = bound(&holder);
    let mut servers = Vec::new();
    for clock_ahead_ms in [OFFSET_MS, 0] {
        let store = RedisNonceStore::connect(&cfg).await.expect("redis");
        let verifier = Verifier::new(&ROOT)
            .expect("key")
            .with_proof_skew(Duration::from_millis(SKEW_MS))
            .with_max_clock_offset(Duration::from_millis(OFFSET_MS))
            .with_nonce_store(Arc::new(store));
        servers.push((verifier, clock_ahead_ms));
    }

    let t0 = now_ms();
    let ts = t0 + OFFSET_MS + SKEW_MS;
    let proof = holder.prove(&cap, "bank.wire", call(0, "bank.wire").args(), ts);
    let (mut allowed, mut in_window) = (Vec::new(), [0u32; 2]);
    let mut round = 0u64;
    loop {
        let real = now_ms();
        if real > ts + SKEW_MS + 300 {
            break;
        }
        // Alternate which server goes first.
        round += 1;
        let order: [usize; 2] = if round.is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for i in order {
            let (verifier, ahead) = &servers[i];
            let now = now_ms() + ahead;
            let receipt = verifier
                .verify_with_proof(&cap, &call(now, "bank.wire"), &auditor(), &proof)
                .await
                .expect("chain ok");
            if now.abs_diff(ts) <= SKEW_MS {
                in_window[i] += 1;
            }
            if receipt.is_allowed() {
                allowed.push((i, now));
            } else if now.abs_diff(ts) <= SKEW_MS {
                assert_eq!(receipt.outcome().reason(), Some(capnagent::REASON_REPLAY));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        in_window[0] >= 5 && in_window[1] >= 5,
        "too few attempts inside the windows: {in_window:?}"
    );
    assert_eq!(
        allowed.len(),
        1,
        "the same proof was allowed {} times (server, its now): {allowed:?}",
        allowed.len()
    );
}

/// A list dated 30 days ahead is refused by Redis (an error, not a silent
/// Ok) and by the servers; real lists keep being published and installed,
/// and a revoked agent is denied.
#[tokio::test]
async fn a_future_dated_list_is_refused_and_revocation_keeps_working() {
    let Some((url, _server)) = redis() else {
        return;
    };
    let prefix = format!("capnagent-test:future-list:{}", now_ms());
    let cfg = RedisConfig::new(url.as_str()).prefix(prefix.as_str());
    let publisher = RedisRevocationStore::connect(&cfg).await.expect("redis");
    let mut revoker = Revoker::new(&ROOT).expect("key");
    publisher
        .publish(&revoker.publish(now_ms()))
        .await
        .expect("a current list is published");

    let server_store = RedisRevocationStore::connect(&cfg).await.expect("redis");
    let cell = RevocationCell::new(&ROOT)
        .expect("key")
        .with_max_age(Duration::from_secs(60));
    assert!(
        capnagent::refresh(&server_store, &cell)
            .await
            .expect("refresh")
    );
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_revocations(cell.clone());
    let cap = Issuer::from_key(&ROOT)
        .expect("key")
        .issue("agent-42")
        .caveat(r#"tool == "bank.read""#)
        .expect("valid")
        .build()
        .expect("builds");
    let decide = || {
        verifier
            .verify_with_context(&cap, &call(now_ms(), "bank.read"), &auditor())
            .expect("chain ok")
            .outcome()
            .reason()
            .map(str::to_owned)
    };
    assert_eq!(decide(), None);

    // A clock glitch: a correctly signed list dated 30 days ahead.
    let future = revoker.publish(now_ms() + 30 * 24 * 3_600_000);
    let refused = publisher.publish(&future).await;
    assert!(
        matches!(&refused, Err(StoreError::Refused(reason)) if reason.contains("Redis server's clock")),
        "a future-dated list was taken: {refused:?}"
    );
    assert!(cell.install(future.clone()).is_err());

    // The next real list, revoking the agent, is published and enforced.
    revoker.revoke("agent-42");
    let revoking = revoker.publish(now_ms());
    publisher
        .publish(&revoking)
        .await
        .expect("a real list after a refused future one");
    assert!(
        capnagent::refresh(&server_store, &cell)
            .await
            .expect("refresh")
    );
    assert_eq!(decide().as_deref(), Some("capability revoked: agent-42"));
    // Publishing the same list again is refused, with the reason.
    assert!(matches!(
        publisher.publish(&revoking).await,
        Err(StoreError::Refused(reason)) if reason.contains("not older")
    ));

    // A future list already sitting in Redis (written before this check
    // existed, or while Redis's clock was wrong): servers refuse it and
    // keep their list; the next real list replaces it.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{prefix}:revocations");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("issued_at_ms")
        .arg(future.issued_at_ms())
        .arg("list")
        .arg(future.serialize())
        .query_async(&mut raw)
        .await
        .expect("hset");
    assert!(matches!(
        capnagent::refresh(&server_store, &cell).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(decide().as_deref(), Some("capability revoked: agent-42"));
    revoker.unrevoke("agent-42");
    revoker.revoke("agent-43");
    publisher
        .publish(&revoker.publish(now_ms()))
        .await
        .expect("replaces the future list");
    assert!(
        capnagent::refresh(&server_store, &cell)
            .await
            .expect("refresh")
    );
    assert_eq!(decide(), None);

    // A server that took a future list while its own clock was wrong
    // denies every call once its clock is right again (stale), instead of
    // freezing on that list.
    let glitched = RevocationCell::new(&ROOT).expect("key");
    assert_eq!(
        glitched.install_at(future.clone(), future.issued_at_ms()),
        Ok(true)
    );
    let receipt = Verifier::new(&ROOT)
        .expect("key")
        .with_revocations(glitched)
        .verify_with_context(&cap, &call(now_ms(), "bank.read"), &auditor())
        .expect("chain ok");
    assert!(
        receipt
            .outcome()
            .reason()
            .is_some_and(|r| r.starts_with("revocation list is stale")),
        "{:?}",
        receipt.outcome()
    );
}
