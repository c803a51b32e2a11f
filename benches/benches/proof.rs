//! Holder-of-key proofs and replay stores, in one criterion run:
//!
//! - `proof/sign`: the client's `HolderKey::prove` (challenge + Ed25519 sign);
//! - `proof/verify/floor`: what any proof check must at least do: one
//!   `VerifyingKey::verify_strict` of the same challenge, key parsed
//!   beforehand;
//! - `proof/verify/no_store`: `Verifier::verify_with_proof` with 4 short
//!   caveats and the receipt, no nonce store (challenge, strict Ed25519,
//!   caveats, receipt);
//! - `proof/verify/in_memory_store`: the same with an `InMemoryNonceStore`
//!   (a fresh proof every iteration, so every call records a nonce);
//! - `redis/set_nx_px`: one `RedisNonceStore::try_record` round trip on
//!   loopback; `proof/verify/redis_store`: the whole proof path with it.
//!
//! The Redis benches use `CAPNAGENT_REDIS_URL` or start a private
//! `redis-server` on a free loopback port; without either they are skipped
//! (with a message).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::sync::Arc;

use capnagent::{
    Auditor, Capability, Context, HolderKey, InMemoryNonceStore, Issuer, NonceStore, Verifier,
};
use capnagent_redis::{RedisConfig, RedisNonceStore};
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, VerifyingKey};

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];
const NOW_MS: u64 = 1_800_000_000_000;

fn capability(holder: &HolderKey) -> Capability {
    let issuer = Issuer::from_key(&ROOT_KEY).expect("32-byte key");
    let mut builder = issuer.issue("agent-42");
    builder
        .holder_of_key(holder.public_key())
        .expect("first step");
    for caveat in [
        r#"tool == "bank.wire""#,
        r#"caller == "agent:planner""#,
        "arg.amount_cents <= 5000",
        "now <= @2099-01-01T00:00:00Z",
    ] {
        builder.caveat(caveat).expect("valid caveat");
    }
    builder.build().expect("builds")
}

fn context(to: u64) -> Context {
    Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("bank.wire")
        .args(serde_json::json!({ "to": format!("acct-{to}"), "amount_cents": 1200 }))
        .build()
}

/// A call never seen before and its proof (made outside the measurement).
fn fresh_call(holder: &HolderKey, cap: &Capability, n: &mut u64) -> (Context, capnagent::Proof) {
    *n += 1;
    let ctx = context(*n);
    let proof = holder.prove(cap, "bank.wire", ctx.args(), NOW_MS);
    (ctx, proof)
}

fn bench_proofs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let holder = HolderKey::from_seed([3; 32]);
    let cap = capability(&holder);
    let auditor = Auditor::new(&AUDIT_KEY).expect("key");
    let ctx = context(0);

    c.bench_function("proof/sign", |b| {
        b.iter(|| holder.prove(black_box(&cap), "bank.wire", ctx.args(), NOW_MS))
    });

    let plain = Verifier::new(&ROOT_KEY).expect("key");
    let proof = holder.prove(&cap, "bank.wire", ctx.args(), NOW_MS);
    let check = runtime
        .block_on(plain.verify_with_proof(&cap, &ctx, &auditor, &proof))
        .expect("chain ok");
    assert!(check.is_allowed(), "{:?}", check.outcome());

    let mut group = c.benchmark_group("proof/verify");
    // The floor: the strict signature check alone, on the challenge the
    // verifier derives for this call.
    let key = VerifyingKey::from_bytes(&holder.public_key()).expect("valid key");
    let challenge = capnagent::pop_challenge_for(&cap, &ctx);
    let signature = Signature::from_bytes(proof.signature());
    key.verify_strict(&challenge, &signature)
        .expect("the proof signs the derived challenge");
    group.bench_function("floor", |b| {
        b.iter(|| black_box(&key).verify_strict(black_box(&challenge), black_box(&signature)))
    });
    group.bench_function("no_store", |b| {
        b.iter(|| {
            runtime
                .block_on(plain.verify_with_proof(black_box(&cap), &ctx, &auditor, &proof))
                .expect("chain ok")
        })
    });

    // A fresh call per iteration, so every call records a new nonce.
    let stored = Verifier::new(&ROOT_KEY)
        .expect("key")
        .with_nonce_store(Arc::new(InMemoryNonceStore::new()));
    let mut n = 0;
    group.bench_function("in_memory_store", |b| {
        b.iter_batched(
            || fresh_call(&holder, &cap, &mut n),
            |(ctx, proof)| {
                let receipt = runtime
                    .block_on(stored.verify_with_proof(&cap, &ctx, &auditor, &proof))
                    .expect("chain ok");
                assert!(receipt.is_allowed());
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    let Some((url, _server)) = capnagent_tests::redis() else {
        eprintln!("skipping the Redis benches: no CAPNAGENT_REDIS_URL and no redis-server");
        return;
    };
    let store = runtime
        .block_on(RedisNonceStore::connect(
            &RedisConfig::new(url).prefix(format!("capnagent-bench:{}", std::process::id())),
        ))
        .expect("redis");
    let mut k = 0u64;
    c.bench_function("redis/set_nx_px", |b| {
        b.iter(|| {
            k += 1;
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&k.to_le_bytes());
            let fresh = runtime
                .block_on(store.try_record(&nonce, 0, 60_000))
                .expect("redis answers");
            assert!(fresh);
        })
    });
    let redis_verifier = Verifier::new(&ROOT_KEY)
        .expect("key")
        .with_nonce_store(Arc::new(store));
    c.bench_function("proof/verify/redis_store", |b| {
        b.iter_batched(
            || fresh_call(&holder, &cap, &mut n),
            |(ctx, proof)| {
                let receipt = runtime
                    .block_on(redis_verifier.verify_with_proof(&cap, &ctx, &auditor, &proof))
                    .expect("chain ok");
                assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench_proofs);
criterion_main!(benches);
