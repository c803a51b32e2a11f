//! Budget caveats (`calls <= N`, `sum(arg.x) <= N`, `per` windows; see
//! docs/caveats.md) with the in-memory store: exact counts under
//! concurrency, windows rolling over on the context's clock, all or
//! nothing across the caveats of a decision, delegates that can only
//! tighten, and fail-closed denials without a store or when it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use capnagent::{
    Auditor, BoxFuture, BudgetCharge, BudgetStore, Capability, CaveatFailure, Context, EvalError,
    Gate, HolderKey, InMemoryBudgetStore, Issuer, Predicate, Receipt, Reservation, StoreError,
    Verifier,
};

const ROOT: [u8; 32] = [7; 32];
const NOW: u64 = 1_700_000_000_000;

fn auditor() -> Auditor {
    Auditor::new(&[9; 32]).expect("key")
}

fn cap(caveats: &[&str]) -> Capability {
    let issuer = Issuer::from_key(&ROOT).expect("key");
    let mut builder = issuer.issue("agent-42");
    for caveat in caveats {
        builder.caveat(caveat).expect("valid caveat");
    }
    builder.build().expect("builds")
}

fn call_at(now: u64, amount: i64) -> Context {
    Context::builder()
        .now_millis(now)
        .tool("checkout.purchase")
        .args(serde_json::json!({ "amount_cents": amount }))
        .build()
}

fn call(amount: i64) -> Context {
    call_at(NOW, amount)
}

fn budgeted() -> (Verifier, Arc<InMemoryBudgetStore>) {
    let store = Arc::new(InMemoryBudgetStore::new());
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_budget_store(store.clone());
    (verifier, store)
}

async fn decide(verifier: &Verifier, cap: &Capability, ctx: &Context) -> Receipt {
    verifier
        .verify_with_context_async(cap, ctx, &auditor())
        .await
        .expect("genuine chain")
}

fn judged(receipt: &Receipt) -> (Option<Gate>, Option<&str>) {
    (receipt.denied_by(), receipt.outcome().reason())
}

fn gate(index: usize, failure: CaveatFailure) -> Option<Gate> {
    Some(Gate::Caveat { index, failure })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_100_of_1000_concurrent_calls_are_allowed() {
    let (verifier, _store) = budgeted();
    let cap = Arc::new(cap(&[r#"tool == "checkout.purchase""#, "calls <= 100"]));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (verifier, cap) = (verifier.clone(), cap.clone());
            tokio::spawn(async move { decide(&verifier, &cap, &call(1)).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        let receipt = task.await.expect("task");
        if receipt.is_allowed() {
            allowed += 1;
        } else {
            assert_eq!(
                judged(&receipt),
                (
                    gate(1, CaveatFailure::BudgetExhausted),
                    Some("budget exhausted: calls <= 100 (used 100 of 100)")
                )
            );
        }
    }
    assert_eq!(allowed, 100);
}

#[tokio::test]
async fn a_sum_budget_counts_amounts_exactly_and_says_what_it_saw() {
    let (verifier, _store) = budgeted();
    let cap = cap(&["sum(arg.amount_cents) <= 500"]);
    assert!(decide(&verifier, &cap, &call(450)).await.is_allowed());
    let over = decide(&verifier, &cap, &call(100)).await;
    assert_eq!(
        judged(&over),
        (
            gate(0, CaveatFailure::BudgetExhausted),
            Some("budget exhausted: sum(arg.amount_cents) <= 500 (used 450, this call 100)")
        )
    );
    // Exactly up to the limit, then nothing more.
    assert!(decide(&verifier, &cap, &call(50)).await.is_allowed());
    assert!(decide(&verifier, &cap, &call(0)).await.is_allowed());
    assert!(!decide(&verifier, &cap, &call(1)).await.is_allowed());
}

#[tokio::test]
async fn a_sum_needs_a_non_negative_integer_argument() {
    let (verifier, store) = budgeted();
    let cap = cap(&["sum(arg.amount_cents) <= 500"]);
    for args in [
        serde_json::json!({ "amount_cents": -5 }),
        serde_json::json!({ "amount_cents": 12.5 }),
        serde_json::json!({ "amount_cents": "100" }),
        serde_json::json!({ "amount_cents": 10_000_000_000_000_000u64 }),
        serde_json::json!({}),
    ] {
        let ctx = Context::builder()
            .now_millis(NOW)
            .args(args.clone())
            .build();
        let receipt = decide(&verifier, &cap, &ctx).await;
        assert_eq!(receipt.denied_by(), gate(0, CaveatFailure::Eval), "{args}");
    }
    let ctx = Context::from_json(
        r#"{"nowMs":1700000000000,"caller":"a","tool":"t","args":{"amount_cents":1299.0}}"#,
    )
    .expect("context");
    let receipt = decide(&verifier, &cap, &ctx).await;
    assert_eq!(receipt.denied_by(), gate(0, CaveatFailure::Eval));
    assert!(store.is_empty(), "no denied call counted");
}

#[tokio::test]
async fn windows_are_fixed_and_roll_over_on_the_contexts_clock() {
    let (verifier, _store) = budgeted();
    let cap = cap(&["calls <= 2 per 60s"]);
    // NOW is 20 s into a minute (1_700_000_000_000 % 60_000 == 20_000).
    let minute = NOW - NOW % 60_000;
    assert!(
        decide(&verifier, &cap, &call_at(minute, 1))
            .await
            .is_allowed()
    );
    assert!(
        decide(&verifier, &cap, &call_at(minute + 59_999, 1))
            .await
            .is_allowed()
    );
    let third = decide(&verifier, &cap, &call_at(minute + 30_000, 1)).await;
    assert_eq!(
        third.outcome().reason(),
        Some("budget exhausted: calls <= 2 per 60s (used 2 of 2)")
    );
    // The next window starts at the next whole minute.
    for _ in 0..2 {
        assert!(
            decide(&verifier, &cap, &call_at(minute + 60_000, 1))
                .await
                .is_allowed()
        );
    }
    assert!(
        !decide(&verifier, &cap, &call_at(minute + 119_999, 1))
            .await
            .is_allowed()
    );
}

#[tokio::test]
async fn a_call_denied_by_another_caveat_consumes_nothing() {
    let (verifier, store) = budgeted();
    // The budget comes first in the chain, the failing caveat after it.
    let cap = cap(&["calls <= 1", "arg.amount_cents <= 5"]);
    let denied = decide(&verifier, &cap, &call(9)).await;
    assert_eq!(
        judged(&denied),
        (
            gate(1, CaveatFailure::False),
            Some("caveat failed: arg.amount_cents <= 5")
        )
    );
    assert!(store.is_empty());
    assert!(decide(&verifier, &cap, &call(1)).await.is_allowed());
    assert_eq!(
        decide(&verifier, &cap, &call(1)).await.denied_by(),
        gate(0, CaveatFailure::BudgetExhausted)
    );
}

#[tokio::test]
async fn all_budgets_of_a_decision_are_reserved_or_none() {
    let (verifier, store) = budgeted();
    let cap = cap(&["calls <= 3", "sum(arg.amount_cents) <= 500"]);
    let calls_scope = BudgetCharge::scope_of("agent-42", "calls <= 3");
    assert!(decide(&verifier, &cap, &call(450)).await.is_allowed());
    let over = decide(&verifier, &cap, &call(100)).await;
    assert_eq!(over.denied_by(), gate(1, CaveatFailure::BudgetExhausted));
    // The sum refused: the call budget was not charged either.
    assert_eq!(store.used(&calls_scope, 0), 1);
    assert!(decide(&verifier, &cap, &call(50)).await.is_allowed());
    assert!(decide(&verifier, &cap, &call(0)).await.is_allowed());
    let fourth = decide(&verifier, &cap, &call(0)).await;
    assert_eq!(
        judged(&fourth),
        (
            gate(0, CaveatFailure::BudgetExhausted),
            Some("budget exhausted: calls <= 3 (used 3 of 3)")
        )
    );
}

#[tokio::test]
async fn a_delegate_can_tighten_a_budget_but_never_loosen_it() {
    let (verifier, _store) = budgeted();
    let parent = cap(&["calls <= 3"]);
    let tighter = parent.attenuate("calls <= 1").expect("valid");
    let looser = parent.attenuate("calls <= 100").expect("valid");
    // The same text again is the same budget, charged once per call.
    let repeated = parent.attenuate("calls <= 3").expect("valid");

    assert!(decide(&verifier, &tighter, &call(1)).await.is_allowed());
    assert_eq!(
        decide(&verifier, &tighter, &call(1)).await.denied_by(),
        gate(1, CaveatFailure::BudgetExhausted)
    );
    assert!(decide(&verifier, &repeated, &call(1)).await.is_allowed());
    assert!(decide(&verifier, &looser, &call(1)).await.is_allowed());
    // The parent's budget (shared by the whole tree) is spent: 3 calls.
    let denied = decide(&verifier, &looser, &call(1)).await;
    assert_eq!(
        judged(&denied),
        (
            gate(0, CaveatFailure::BudgetExhausted),
            Some("budget exhausted: calls <= 3 (used 3 of 3)")
        )
    );
    assert!(!decide(&verifier, &parent, &call(1)).await.is_allowed());
    // Another capability (another identifier) has a budget of its own.
    let other = Issuer::from_key(&ROOT)
        .expect("key")
        .issue("agent-43")
        .caveat("calls <= 3")
        .expect("valid")
        .build()
        .expect("builds");
    assert!(decide(&verifier, &other, &call(1)).await.is_allowed());
}

#[tokio::test]
async fn without_a_store_or_on_the_synchronous_path_a_budget_denies() {
    let cap = cap(&[r#"tool == "checkout.purchase""#, "calls <= 2"]);
    let plain = Verifier::new(&ROOT).expect("key");
    assert!(plain.has_budget_caveats(&cap));
    let expected = (
        gate(1, CaveatFailure::BudgetUnavailable),
        Some("budget caveat needs a budget store (none configured): calls <= 2"),
    );
    assert_eq!(judged(&decide(&plain, &cap, &call(1)).await), expected);
    let sync = plain
        .verify_with_context(&cap, &call(1), &auditor())
        .expect("chain");
    assert_eq!(judged(&sync), expected);

    let (budgeted, store) = budgeted();
    let sync = budgeted
        .verify_with_context(&cap, &call(1), &auditor())
        .expect("chain");
    assert_eq!(
        judged(&sync),
        (
            gate(1, CaveatFailure::BudgetUnavailable),
            Some(
                "budget caveat needs the asynchronous decision path (verify_with_context_async): calls <= 2"
            )
        )
    );
    assert!(store.is_empty());
    // Other caveats still decide first.
    let elsewhere = Context::builder().now_millis(NOW).tool("bank.wire").build();
    assert_eq!(
        decide(&plain, &cap, &elsewhere).await.denied_by(),
        gate(0, CaveatFailure::False)
    );
    // A token without budgets is unaffected by any of this.
    let no_budget = self::cap(&[r#"tool == "checkout.purchase""#]);
    assert!(!plain.has_budget_caveats(&no_budget));
    assert!(decide(&plain, &no_budget, &call(1)).await.is_allowed());
}

/// A store that fails every call, counting the calls.
struct Broken(AtomicUsize, StoreError);

impl BudgetStore for Broken {
    fn try_reserve<'a>(
        &'a self,
        _charges: &'a [BudgetCharge],
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Err(self.1.clone())))
    }
}

#[tokio::test]
async fn a_store_that_fails_or_times_out_denies() {
    let cap = cap(&["calls <= 2", "calls <= 5 per 1h"]);
    for (error, text) in [
        (StoreError::Timeout, "store timed out"),
        (
            StoreError::Unavailable("connection refused".into()),
            "store unavailable: connection refused",
        ),
    ] {
        let store = Arc::new(Broken(AtomicUsize::new(0), error));
        let verifier = Verifier::new(&ROOT)
            .expect("key")
            .with_budget_store(store.clone());
        let receipt = decide(&verifier, &cap, &call(1)).await;
        assert_eq!(
            judged(&receipt),
            (
                gate(0, CaveatFailure::BudgetUnavailable),
                Some(format!("budget store unavailable: {text}: calls <= 2").as_str())
            )
        );
        // Both budgets in one request to the store.
        assert_eq!(store.0.load(Ordering::Relaxed), 1);
    }
}

#[tokio::test]
async fn a_full_in_memory_store_denies_new_budgets() {
    let store = Arc::new(InMemoryBudgetStore::with_capacity(1));
    let verifier = Verifier::new(&ROOT)
        .expect("key")
        .with_budget_store(store.clone());
    assert!(
        decide(&verifier, &cap(&["calls <= 2"]), &call(1))
            .await
            .is_allowed()
    );
    let receipt = decide(&verifier, &cap(&["calls <= 3"]), &call(1)).await;
    assert_eq!(
        receipt.denied_by(),
        gate(0, CaveatFailure::BudgetUnavailable)
    );
    assert_eq!(
        receipt.outcome().reason(),
        Some("budget store unavailable: store full (1 live entries): calls <= 3")
    );
}

#[tokio::test]
async fn holder_bound_tokens_are_budgeted_on_the_proof_path() {
    let (verifier, _store) = budgeted();
    let holder = HolderKey::from_seed([3; 32]);
    let cap = Issuer::from_key(&ROOT)
        .expect("key")
        .issue("agent-42")
        .holder_of_key(holder.public_key())
        .expect("first")
        .caveat("calls <= 1")
        .expect("valid")
        .build()
        .expect("builds");
    let mut outcomes = Vec::new();
    for i in 0..2 {
        let ctx = call_at(NOW + i, 1);
        let proof = holder.prove(&cap, "checkout.purchase", ctx.args(), NOW + i);
        let receipt = verifier
            .verify_with_proof(&cap, &ctx, &auditor(), &proof)
            .await
            .expect("chain");
        outcomes.push(receipt.denied_by());
    }
    assert_eq!(outcomes, [None, gate(0, CaveatFailure::BudgetExhausted)]);
    // The bearer async path refuses a bound token at the holder-key gate.
    let receipt = decide(&verifier, &cap, &call(1)).await;
    assert_eq!(receipt.denied_by(), Some(Gate::HolderKey));
}

#[test]
fn a_budget_is_a_whole_caveat_and_not_evaluated_alone() {
    let budget = Predicate::parse("calls <= 2 per 1d").expect("parses");
    assert_eq!(budget.evaluate(&call(1)), Err(EvalError::Budget));
    assert!(Predicate::parse(r#"calls <= 2 AND tool == "x""#).is_err());
    assert!(Predicate::parse("sum(arg.a) <= 2 per 1w").is_err());
    // Elsewhere `calls` is the unknown identifier it always was.
    let old = Predicate::parse(r#"tool == "x" AND calls <= 2"#).expect("parses");
    assert_eq!(
        old.evaluate(&Context::builder().tool("x").build()),
        Err(EvalError::UnknownIdent("calls".into()))
    );
}
