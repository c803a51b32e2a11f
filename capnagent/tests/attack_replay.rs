//! Replay of one holder-of-key proof across verifiers whose clocks differ,
//! sharing one in-process nonce store. Time is simulated: each verifier's
//! `now` is the simulated real time plus its clock offset.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capnagent::{Context, HolderKey, InMemoryNonceStore, Verifier};

use support::{ROOT, auditor, bound};

const T0: u64 = 1_700_000_000_000;
const SKEW_MS: u64 = 1_000;
const OFFSET_MS: u64 = 5_000;

fn ctx(now_ms: u64, amount: u64) -> Context {
    Context::builder()
        .now_millis(now_ms)
        .tool("bank.wire")
        .args(serde_json::json!({ "amount_cents": amount }))
        .build()
}

/// Server A runs 5 s ahead of server B. The proof is tried on both every
/// 50 ms across both acceptance windows, while A also serves a stream of
/// other proofs that make the small store sweep what A's clock sees as
/// expired. Exactly one acceptance is allowed.
#[tokio::test]
async fn one_proof_is_allowed_once_by_verifiers_5s_apart_sharing_memory() {
    let store = Arc::new(InMemoryNonceStore::with_capacity(2));
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_proof_skew(Duration::from_millis(SKEW_MS))
        .with_max_clock_offset(Duration::from_millis(OFFSET_MS))
        .with_nonce_store(store);
    assert_eq!(verifier.nonce_ttl_ms(), 2 * SKEW_MS + 1 + OFFSET_MS);
    let auditor = auditor();
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder, r#"tool == "bank.wire""#);
    // Stamped so that A (ahead) accepts it at once, B only 5 s later.
    let ts = T0 + OFFSET_MS + SKEW_MS;
    let proof = holder.prove(&cap, "bank.wire", ctx(0, 1).args(), ts);

    let (mut allowed, mut tries_in_window) = (0, [0u32; 2]);
    let mut real = T0;
    let mut other = 1_000u64;
    while real <= ts + SKEW_MS + 500 {
        for (i, offset) in [(0, OFFSET_MS), (1, 0)] {
            let now = real + offset;
            let receipt = verifier
                .verify_with_proof(&cap, &ctx(now, 1), &auditor, &proof)
                .await
                .expect("chain ok");
            if now.abs_diff(ts) <= SKEW_MS {
                tries_in_window[i] += 1;
            }
            if receipt.is_allowed() {
                allowed += 1;
            }
        }
        // Other traffic on A: fresh proofs, each with its own nonce.
        other += 1;
        let a_now = real + OFFSET_MS;
        // Stamped near the end of A's window: short-lived by A's clock.
        let fresh = holder.prove(&cap, "bank.wire", ctx(0, other).args(), a_now - SKEW_MS + 1);
        let _ = verifier
            .verify_with_proof(&cap, &ctx(a_now, other), &auditor, &fresh)
            .await;
        real += 50;
    }
    assert!(
        tries_in_window[0] > 10 && tries_in_window[1] > 10,
        "{tries_in_window:?}"
    );
    assert_eq!(allowed, 1, "the same proof was accepted {allowed} times");
}
