//! Budget caveats (`calls <= N`, `sum(arg.x) <= N`, see docs/caveats.md):
//!
//! - `budget/redis/reserve/{1,3}`: one `RedisBudgetStore::try_reserve` of
//!   1 or 3 budgets on loopback: one Lua script, one round trip either way;
//! - `budget/verify/redis/{1,3}`: the whole decision,
//!   `verify_with_context_async` with a `tool ==` caveat and 1 or 3
//!   budget caveats, receipt included;
//! - `budget/verify/in_memory/{1,3}`: the same with an
//!   `InMemoryBudgetStore` (no I/O: the decision's own cost).
//!
//! Limits of 10^15, so no call is ever refused. The Redis benches use
//! `CAPNAGENT_REDIS_URL` or start a private `redis-server` on a free
//! loopback port; without either they are skipped (with a message).
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::sync::Arc;

use capnagent::{
    Auditor, BudgetCharge, BudgetStore, Capability, Context, InMemoryBudgetStore, Issuer,
    Reservation, Verifier,
};
use capnagent_redis::{RedisBudgetStore, RedisConfig};
use criterion::{Criterion, criterion_group, criterion_main};

const ROOT_KEY: [u8; 32] = [7; 32];
const AUDIT_KEY: [u8; 32] = [9; 32];
const NOW_MS: u64 = 1_800_000_000_000;

const BUDGETS: [&str; 3] = [
    "calls <= 1000000000000000",
    "calls <= 1000000000000000 per 1d",
    "sum(arg.amount_cents) <= 1000000000000000",
];

fn capability(budgets: usize) -> Capability {
    let issuer = Issuer::from_key(&ROOT_KEY).expect("32-byte key");
    let mut builder = issuer.issue(format!("agent-bench-{}", std::process::id()));
    builder
        .caveat(r#"tool == "checkout.purchase""#)
        .expect("valid caveat");
    for caveat in &BUDGETS[..budgets] {
        builder.caveat(caveat).expect("valid caveat");
    }
    builder.build().expect("builds")
}

fn context() -> Context {
    Context::builder()
        .now_millis(NOW_MS)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(serde_json::json!({ "sku": "cable", "amount_cents": 1299 }))
        .build()
}

fn charges(n: usize) -> Vec<BudgetCharge> {
    BUDGETS[..n]
        .iter()
        .map(|text| BudgetCharge {
            scope: BudgetCharge::scope_of("agent-bench-store", text),
            window_start_ms: 0,
            expires_at_ms: None,
            limit: 1_000_000_000_000_000,
            amount: 1,
        })
        .collect()
}

fn bench_budgets(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let auditor = Auditor::new(&AUDIT_KEY).expect("key");
    let ctx = context();
    let caps = [capability(1), capability(3)];

    let in_memory = Verifier::new(&ROOT_KEY)
        .expect("key")
        .with_budget_store(Arc::new(InMemoryBudgetStore::new()));
    let mut group = c.benchmark_group("budget/verify/in_memory");
    for (cap, n) in caps.iter().zip([1, 3]) {
        group.bench_function(n.to_string(), |b| {
            b.iter(|| {
                let receipt = runtime
                    .block_on(in_memory.verify_with_context_async(black_box(cap), &ctx, &auditor))
                    .expect("chain ok");
                assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
            })
        });
    }
    group.finish();

    let Some((url, _server)) = capnagent_tests::redis() else {
        eprintln!("skipping the Redis benches: no CAPNAGENT_REDIS_URL and no redis-server");
        return;
    };
    let config = RedisConfig::new(url).prefix(format!("capnagent-bench:{}", std::process::id()));
    let store = runtime
        .block_on(RedisBudgetStore::connect(&config))
        .expect("redis");
    let mut group = c.benchmark_group("budget/redis/reserve");
    for n in [1, 3] {
        let charges = charges(n);
        group.bench_function(n.to_string(), |b| {
            b.iter(|| {
                let reserved = runtime
                    .block_on(store.try_reserve(black_box(&charges), NOW_MS))
                    .expect("redis answers");
                assert_eq!(reserved, Reservation::Reserved);
            })
        });
    }
    group.finish();

    let redis = Verifier::new(&ROOT_KEY)
        .expect("key")
        .with_budget_store(Arc::new(store));
    let mut group = c.benchmark_group("budget/verify/redis");
    for (cap, n) in caps.iter().zip([1, 3]) {
        group.bench_function(n.to_string(), |b| {
            b.iter(|| {
                let receipt = runtime
                    .block_on(redis.verify_with_context_async(black_box(cap), &ctx, &auditor))
                    .expect("chain ok");
                assert!(receipt.is_allowed(), "{:?}", receipt.outcome());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_budgets);
criterion_main!(benches);
