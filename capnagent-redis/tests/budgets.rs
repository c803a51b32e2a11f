//! Budget caveats against a real Redis: exact counts for 1000 concurrent
//! calls across two verifiers ("servers") sharing one Redis, windows that
//! roll over on the context's clock, budgets that survive a restart of the
//! verifiers, all or nothing across the budgets of a decision, and
//! fail-closed denials while Redis is down or does not answer in time.
//!
//! The shared server comes from `CAPNAGENT_REDIS_URL` (scripts/test.sh
//! starts one). Without it the tests start a private `redis-server`; when
//! `CI` is set and no Redis can be had, they fail instead of skipping.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capnagent::{
    BudgetCharge, BudgetStore, Capability, CaveatFailure, Context, Gate, Issuer, Receipt,
    Reservation, Verifier,
};
use capnagent_redis::{RedisBudgetStore, RedisConfig};

use support::{ROOT, RedisServer, auditor, config, no_redis, redis};

const NOW: u64 = 1_700_000_000_000;

fn cap(identifier: &str, caveats: &[&str]) -> Capability {
    let issuer = Issuer::from_key(&ROOT).expect("key");
    let mut builder = issuer.issue(identifier);
    for caveat in caveats {
        builder.caveat(caveat).expect("valid caveat");
    }
    builder.build().expect("builds")
}

fn call_at(now: u64, amount: u64) -> Context {
    Context::builder()
        .now_millis(now)
        .caller("agent:planner")
        .tool("checkout.purchase")
        .args(serde_json::json!({ "amount_cents": amount }))
        .build()
}

async fn verifier(cfg: &RedisConfig) -> Verifier {
    let store = RedisBudgetStore::connect(cfg).await.expect("redis");
    Verifier::new(&ROOT)
        .expect("key")
        .with_budget_store(Arc::new(store))
}

async fn decide(verifier: &Verifier, cap: &Capability, ctx: &Context) -> Receipt {
    verifier
        .verify_with_context_async(cap, ctx, &auditor())
        .await
        .expect("genuine chain")
}

fn gate(index: usize, failure: CaveatFailure) -> Option<Gate> {
    Some(Gate::Caveat { index, failure })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_100_of_1000_concurrent_calls_across_two_servers_are_allowed() {
    let Some((url, _server)) = redis() else {
        return;
    };
    // Generous deadline: 1000 decisions on 2 cores in a debug build; a
    // timeout would (rightly) deny and fail the count.
    let cfg = config(&url, "budget-concurrent").timeout(Duration::from_secs(30));
    let servers = [verifier(&cfg).await, verifier(&cfg).await];
    let cap = Arc::new(cap("agent-42", &["calls <= 100"]));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (verifier, cap) = (servers[i % 2].clone(), cap.clone());
            tokio::spawn(async move {
                let receipt = decide(&verifier, &cap, &call_at(NOW, 1)).await;
                (i % 2, receipt)
            })
        })
        .collect();
    let mut allowed = [0, 0];
    for task in tasks {
        let (server, receipt) = task.await.expect("task");
        if receipt.is_allowed() {
            allowed[server] += 1;
        } else {
            assert_eq!(
                receipt.outcome().reason(),
                Some("budget exhausted: calls <= 100 (used 100 of 100)")
            );
        }
    }
    assert_eq!(allowed[0] + allowed[1], 100, "{allowed:?}");
}

#[tokio::test]
async fn windows_roll_over_and_budgets_survive_a_restart() {
    let Some((url, _server)) = redis() else {
        return;
    };
    let cfg = config(&url, "budget-window");
    let caveats = ["calls <= 2 per 60s", "sum(arg.amount_cents) <= 500"];
    let cap = cap("agent-42", &caveats);
    let minute = NOW - NOW % 60_000;
    let first = verifier(&cfg).await;
    assert!(
        decide(&first, &cap, &call_at(minute, 100))
            .await
            .is_allowed()
    );
    assert!(
        decide(&first, &cap, &call_at(minute + 59_999, 100))
            .await
            .is_allowed()
    );
    assert_eq!(
        decide(&first, &cap, &call_at(minute + 1, 100))
            .await
            .outcome()
            .reason(),
        Some("budget exhausted: calls <= 2 per 60s (used 2 of 2)")
    );
    drop(first);

    // A "restart": a new verifier and a new store on the same Redis.
    let second = verifier(&cfg).await;
    assert!(
        !decide(&second, &cap, &call_at(minute + 30_000, 100))
            .await
            .is_allowed()
    );
    // The next minute is a new window for the call budget; the sum (no
    // window) still holds the 200 spent before the restart.
    assert!(
        decide(&second, &cap, &call_at(minute + 60_000, 250))
            .await
            .is_allowed()
    );
    let over = decide(&second, &cap, &call_at(minute + 60_001, 100)).await;
    assert_eq!(
        (over.denied_by(), over.outcome().reason()),
        (
            gate(1, CaveatFailure::BudgetExhausted),
            Some("budget exhausted: sum(arg.amount_cents) <= 500 (used 450, this call 100)")
        )
    );
    // That refusal counted nothing against the call budget either.
    assert!(
        decide(&second, &cap, &call_at(minute + 60_002, 50))
            .await
            .is_allowed()
    );
    assert!(
        !decide(&second, &cap, &call_at(minute + 60_003, 0))
            .await
            .is_allowed()
    );
}

#[tokio::test]
async fn keys_expire_after_their_window_and_unwindowed_keys_are_kept() {
    let Some((url, _server)) = redis() else {
        return;
    };
    let cfg = config(&url, "budget-ttl");
    let store = RedisBudgetStore::connect(&cfg).await.expect("redis");
    let now = NOW + 20_000;
    let windowed = BudgetCharge {
        scope: [1; 32],
        window_start_ms: NOW,
        expires_at_ms: Some(NOW + 60_000 + 10_000),
        limit: 5,
        amount: 2,
    };
    let kept = BudgetCharge {
        scope: [2; 32],
        window_start_ms: 0,
        expires_at_ms: None,
        limit: 5,
        amount: 5,
    };
    assert_eq!(
        store.try_reserve(&[windowed, kept], now).await,
        Ok(Reservation::Reserved)
    );
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let pttl = |key: String| {
        let mut conn = conn.clone();
        async move {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("pttl");
            ttl
        }
    };
    let ttl = pttl(store.key(&[1; 32], NOW)).await;
    assert!((49_000..=50_000).contains(&ttl), "{ttl}");
    assert_eq!(pttl(store.key(&[2; 32], 0)).await, -1);
    let used: i64 = redis::cmd("GET")
        .arg(store.key(&[2; 32], 0))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(used, 5);
    // Full: refused, and the windowed budget was not charged either.
    assert_eq!(
        store.try_reserve(&[windowed, kept], now).await,
        Ok(Reservation::Exhausted { index: 1, used: 5 })
    );
    let used: i64 = redis::cmd("GET")
        .arg(store.key(&[1; 32], NOW))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(used, 2);
}

#[tokio::test]
async fn a_call_denied_by_another_caveat_consumes_no_redis_budget() {
    let Some((url, _server)) = redis() else {
        return;
    };
    let cfg = config(&url, "budget-all-or-nothing");
    let verifier = verifier(&cfg).await;
    let cap = cap("agent-42", &["calls <= 1", "arg.amount_cents <= 5"]);
    let denied = decide(&verifier, &cap, &call_at(NOW, 9)).await;
    assert_eq!(denied.denied_by(), gate(1, CaveatFailure::False));
    assert!(decide(&verifier, &cap, &call_at(NOW, 1)).await.is_allowed());
    assert_eq!(
        decide(&verifier, &cap, &call_at(NOW, 1)).await.denied_by(),
        gate(0, CaveatFailure::BudgetExhausted)
    );
}

#[tokio::test]
async fn redis_down_or_too_slow_denies_and_service_resumes() {
    let Some(mut server) = RedisServer::start() else {
        no_redis("redis-server could not start");
        return;
    };
    let port = server.port;
    let cfg = config(&server.url(), "budget-outage").timeout(Duration::from_millis(200));
    let verifier = verifier(&cfg).await;
    let cap = cap("agent-42", &["calls <= 100"]);
    assert!(decide(&verifier, &cap, &call_at(NOW, 1)).await.is_allowed());

    // Too slow: the server is paused longer than the deadline.
    let client = redis::Client::open(server.url()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("pause");
    let started = Instant::now();
    let receipt = decide(&verifier, &cap, &call_at(NOW, 1)).await;
    assert_eq!(
        receipt.denied_by(),
        gate(0, CaveatFailure::BudgetUnavailable)
    );
    // The store's deadline or the connection's response timeout (the same
    // 200 ms), whichever fires first.
    let reason = receipt.outcome().reason().unwrap_or_default();
    assert!(
        reason.starts_with("budget store unavailable: ")
            && reason.contains("timed out")
            && reason.ends_with(": calls <= 100"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "bounded by the deadline"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;

    server.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let receipt = decide(&verifier, &cap, &call_at(NOW, 1)).await;
        assert_eq!(
            receipt.denied_by(),
            gate(0, CaveatFailure::BudgetUnavailable)
        );
        let reason = receipt.outcome().reason().unwrap_or_default();
        assert!(reason.starts_with("budget store unavailable: "), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(2), "bounded");
    }

    let _restarted = RedisServer::start_on(port).expect("restart on the same port");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if decide(&verifier, &cap, &call_at(NOW, 1)).await.is_allowed() {
            break;
        }
        assert!(Instant::now() < deadline, "not served again after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `INFO commandstats` calls of `command` (0 when never called).
async fn calls_of(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("info");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_round_trip_per_decision_whatever_the_number_of_budgets() {
    // A private server: its command counters see this test's calls only.
    let Some(server) = RedisServer::start() else {
        no_redis("redis-server could not start");
        return;
    };
    let cfg = config(&server.url(), "budget-round-trips");
    let verifier = verifier(&cfg).await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let cap = cap(
        "agent-42",
        &[
            "calls <= 100",
            r#"tool == "checkout.purchase""#,
            "calls <= 100 per 1h",
            "sum(arg.amount_cents) <= 1000",
        ],
    );
    // The first decision loads the script.
    assert!(decide(&verifier, &cap, &call_at(NOW, 1)).await.is_allowed());
    let counted = ["evalsha", "eval", "script|load", "get", "incrby", "pexpire"];
    let mut before = Vec::new();
    for command in counted {
        before.push(calls_of(&mut admin, command).await);
    }
    for _ in 0..10 {
        assert!(decide(&verifier, &cap, &call_at(NOW, 1)).await.is_allowed());
    }
    let mut delta = Vec::new();
    for (command, before) in counted.into_iter().zip(before) {
        delta.push(calls_of(&mut admin, command).await - before);
    }
    // One EVALSHA per decision, no script reload; inside each, the three
    // budgets read, charged, and the windowed one given its expiry.
    assert_eq!(delta, [10, 0, 0, 30, 30, 10]);
}
