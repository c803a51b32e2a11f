//! Holder-of-key proofs, replay protection and revocation through the
//! verifier's gates.

mod support;

use std::sync::Arc;
use std::time::Duration;

use capnagent::{
    BoxFuture, Capability, Context, Error, HolderKey, InMemoryNonceStore, InMemoryRevocationStore,
    NonceStore, Proof, RevocationCell, RevocationStore, Revoker, StoreError, Verifier,
};

use support::{ROOT, auditor, bearer, bound};

const NOW: u64 = 1_700_000_000_000;

const WIRE: &str = r#"tool == "bank.wire" AND arg.amount_cents <= 5000"#;

fn ctx(now: u64, amount: u64) -> Context {
    Context::builder()
        .now_millis(now)
        .caller("agent:planner")
        .tool("bank.wire")
        .args(serde_json::json!({ "amount_cents": amount, "to": "acct-1" }))
        .build()
}

async fn reason(v: &Verifier, cap: &Capability, ctx: &Context, proof: &Proof) -> Option<String> {
    let receipt = v
        .verify_with_proof(cap, ctx, &auditor(), proof)
        .await
        .expect("chain ok");
    auditor().verify(&receipt.to_json()).expect("signed");
    receipt.outcome().reason().map(str::to_owned)
}

#[tokio::test]
async fn a_valid_proof_is_accepted_and_the_challenge_is_the_verifiers() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder, WIRE);
    let v = Verifier::new(&ROOT).expect("key");
    let call = ctx(NOW, 100);
    let proof = holder.prove(&cap, "bank.wire", call.args(), NOW - 5_000);
    assert_eq!(reason(&v, &cap, &call, &proof).await, None);

    // The same proof presented for a different call (other args or tool)
    // fails: the verifier derives the challenge from what it observes.
    assert_eq!(
        reason(&v, &cap, &ctx(NOW, 101), &proof).await.as_deref(),
        Some("holder-of-key proof failed")
    );
    // Another holder's key fails.
    let thief = HolderKey::from_seed([4; 32]);
    let stolen = thief.prove(&cap, "bank.wire", call.args(), NOW);
    assert_eq!(
        reason(&v, &cap, &call, &stolen).await.as_deref(),
        Some("holder-of-key proof failed")
    );
    // Caveats still apply after a valid proof.
    let big = ctx(NOW, 9_000);
    let proof = holder.prove(&cap, "bank.wire", big.args(), NOW);
    assert!(
        reason(&v, &cap, &big, &proof)
            .await
            .is_some_and(|r| r.starts_with("caveat failed"))
    );
}

#[tokio::test]
async fn timestamps_outside_the_skew_window_are_denied() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder, WIRE);
    let v = Verifier::new(&ROOT)
        .expect("key")
        .with_proof_skew(Duration::from_secs(10));
    let call = ctx(NOW, 100);
    for ts in [NOW - 10_001, NOW + 10_001] {
        let proof = holder.prove(&cap, "bank.wire", call.args(), ts);
        assert!(
            reason(&v, &cap, &call, &proof)
                .await
                .is_some_and(|r| r.starts_with("proof timestamp outside"))
        );
    }
    for ts in [NOW - 10_000, NOW + 10_000] {
        let proof = holder.prove(&cap, "bank.wire", call.args(), ts);
        assert_eq!(reason(&v, &cap, &call, &proof).await, None);
    }
}

#[tokio::test]
async fn bearer_tokens_on_the_proof_path_and_forged_chains() {
    let holder = HolderKey::from_seed([3; 32]);
    let bearer = bearer("b", r#"tool == "bank.wire""#);
    let v = Verifier::new(&ROOT).expect("key");
    let call = ctx(NOW, 1);
    let proof = holder.prove(&bearer, "bank.wire", call.args(), NOW);
    assert_eq!(
        reason(&v, &bearer, &call, &proof).await.as_deref(),
        Some(capnagent::REASON_NOT_HOLDER_BOUND)
    );
    let other = Verifier::new(&[8; 32]).expect("key");
    let cap = bound(&holder, WIRE);
    let proof = holder.prove(&cap, "bank.wire", call.args(), NOW);
    assert_eq!(
        other
            .verify_with_proof(&cap, &call, &auditor(), &proof)
            .await
            .err(),
        Some(Error::InvalidChain)
    );
}

#[tokio::test]
async fn exactly_one_of_1000_concurrent_identical_proofs_is_allowed() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = Arc::new(bound(&holder, WIRE));
    let store = Arc::new(InMemoryNonceStore::new());
    let v = Verifier::new(&ROOT)
        .expect("key")
        .with_nonce_store(store.clone());
    let call = Arc::new(ctx(NOW, 100));
    let proof = holder.prove(&cap, "bank.wire", call.args(), NOW);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, cap, call) = (v.clone(), cap.clone(), call.clone());
            tokio::spawn(async move {
                v.verify_with_proof(&cap, &call, &auditor(), &proof)
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
    assert_eq!(store.len(), 1);
    // Outside the window the same proof fails on time, not on replay.
    let later = ctx(NOW + 61_000, 100);
    assert!(
        reason(&v, &cap, &later, &proof)
            .await
            .is_some_and(|r| r.starts_with("proof timestamp outside"))
    );
}

struct DownStore;

impl NonceStore for DownStore {
    fn try_record<'a>(
        &'a self,
        _: &'a [u8; 32],
        _: u64,
        _: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async { Err(StoreError::Unavailable("connection refused".into())) })
    }
}

#[tokio::test]
async fn a_failing_nonce_store_denies() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder, WIRE);
    let v = Verifier::new(&ROOT)
        .expect("key")
        .with_nonce_store(Arc::new(DownStore));
    let call = ctx(NOW, 1);
    let proof = holder.prove(&cap, "bank.wire", call.args(), NOW);
    assert_eq!(
        reason(&v, &cap, &call, &proof).await.as_deref(),
        Some("replay check unavailable: store unavailable: connection refused")
    );
}

#[tokio::test]
async fn revocation_kills_every_attenuation_and_fails_closed() {
    let cap = bearer("agent-42", r#"tool == "bank.wire""#);
    let narrower = cap.attenuate("arg.amount_cents <= 10").expect("valid");
    let cell = RevocationCell::new(&ROOT)
        .expect("key")
        .with_max_age(Duration::from_secs(60));
    let v = Verifier::new(&ROOT)
        .expect("key")
        .with_revocations(cell.clone());
    let call = ctx(NOW, 1);
    let decide = |c: &Capability| {
        v.verify_with_context(c, &call, &auditor())
            .expect("chain ok")
            .outcome()
            .reason()
            .map(str::to_owned)
    };
    // No list yet: fail closed.
    assert_eq!(
        decide(&cap).as_deref(),
        Some("no revocation list installed")
    );

    let store = InMemoryRevocationStore::new();
    let mut revoker = Revoker::new(&ROOT).expect("key");
    store
        .publish(&revoker.publish(NOW - 1_000))
        .await
        .expect("publish");
    assert!(capnagent::refresh(&store, &cell).await.expect("refresh"));
    assert_eq!(decide(&cap), None);
    assert_eq!(decide(&narrower), None);

    revoker.revoke("agent-42");
    store.publish(&revoker.publish(NOW)).await.expect("publish");
    assert!(capnagent::refresh(&store, &cell).await.expect("refresh"));
    for c in [&cap, &narrower] {
        assert_eq!(decide(c).as_deref(), Some("capability revoked: agent-42"));
    }
    // An older list arriving late does not roll the revocation back.
    revoker.unrevoke("agent-42");
    assert!(!cell.install(revoker.publish(NOW - 500)).expect("signed"));
    assert_eq!(
        decide(&cap).as_deref(),
        Some("capability revoked: agent-42")
    );

    // A list older than max_age denies everything.
    let stale = ctx(NOW + 61_000, 1);
    let receipt = v
        .verify_with_context(&cap, &stale, &auditor())
        .expect("chain ok");
    assert!(
        receipt
            .outcome()
            .reason()
            .is_some_and(|r| r.starts_with("revocation list is stale"))
    );
}
