//! Every gate of the verifier names itself as a [`Gate`], next to the
//! unchanged reason text, and a receipt read back from JSON carries none.

mod support;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use capnagent::{
    Capability, CaveatFailure, Context, Error, Gate, HolderKey, InMemoryNonceStore, Issuer, Proof,
    Receipt, RevocationCell, Revoker, Verifier,
};

use support::{ROOT, auditor, bearer, bound};

const NOW: u64 = 1_700_000_000_000;

fn call(tool: &str, amount: u64) -> Context {
    Context::builder()
        .now_millis(NOW)
        .tool(tool)
        .args(serde_json::json!({ "amount_cents": amount }))
        .build()
}

fn verifier() -> Verifier {
    Verifier::new(&ROOT).expect("key")
}

fn judged(receipt: &Receipt) -> (Option<Gate>, Option<&str>) {
    (receipt.denied_by(), receipt.outcome().reason())
}

#[test]
fn caveat_gates_say_how_the_caveat_failed() {
    let cap = bearer("agent-42", r#"tool == "pay""#)
        .attenuate("arg.amount_cents <= 10")
        .expect("valid");
    let v = verifier();
    let allowed = v.verify_with_context(&cap, &call("pay", 5), &auditor());
    assert_eq!(judged(&allowed.expect("chain")), (None, None));

    let over = v
        .verify_with_context(&cap, &call("pay", 50), &auditor())
        .expect("chain");
    let gate = Gate::Caveat {
        index: 1,
        failure: CaveatFailure::False,
    };
    assert_eq!(
        judged(&over),
        (Some(gate), Some("caveat failed: arg.amount_cents <= 10"))
    );
    assert!(gate.is_caveat_false() && gate.is_caveat());

    let no_args = Context::builder().now_millis(NOW).tool("pay").build();
    let eval = v
        .verify_with_context(&cap, &no_args, &auditor())
        .expect("chain");
    let gate = eval.denied_by().expect("denied");
    assert_eq!(
        gate,
        Gate::Caveat {
            index: 1,
            failure: CaveatFailure::Eval
        }
    );
    assert!(gate.is_caveat() && !gate.is_caveat_false());

    // A caveat over the verifier's predicate limit does not parse.
    let v = verifier().with_limits(capnagent::Limits {
        max_predicate_len: 12,
        ..capnagent::Limits::DEFAULT
    });
    let unparsable = cap;
    let parse = v
        .verify_with_context(&unparsable, &call("pay", 5), &auditor())
        .expect("chain");
    assert_eq!(
        parse.denied_by(),
        Some(Gate::Caveat {
            index: 0,
            failure: CaveatFailure::Parse
        })
    );
    assert!(
        parse
            .outcome()
            .reason()
            .is_some_and(|r| r.starts_with("caveat parse error in "))
    );
}

#[test]
fn the_gates_before_the_caveats_name_themselves() {
    let v = verifier();
    // No caveats.
    // No caveats: the builder refuses such a token, so sign one by hand.
    let signature = support::hex(&support::hmac(&ROOT, b"agent-42"));
    let wire = format!(r#"{{"identifier":"agent-42","caveats":[],"signature":"{signature}"}}"#);
    let bare = Capability::parse(&URL_SAFE_NO_PAD.encode(wire)).expect("parses");
    let receipt = v
        .verify_with_context(&bare, &call("pay", 1), &auditor())
        .expect("chain");
    assert_eq!(
        judged(&receipt),
        (Some(Gate::NoCaveats), Some(capnagent::REASON_ZERO_CAVEATS))
    );

    // A bound token on the bearer path.
    let holder = HolderKey::from_seed([3; 32]);
    let hok = bound(&holder, r#"tool == "pay""#);
    let receipt = v
        .verify_with_context(&hok, &call("pay", 1), &auditor())
        .expect("chain");
    assert_eq!(
        judged(&receipt),
        (
            Some(Gate::HolderKey),
            Some(capnagent::REASON_HOLDER_KEY_BOUND)
        )
    );

    // Revoked.
    let cell = RevocationCell::new(&ROOT).expect("key");
    let mut revoker = Revoker::new(&ROOT).expect("key");
    revoker.revoke("agent-42");
    cell.install(revoker.publish(NOW - 1)).expect("signed");
    let revoking = verifier().with_revocations(cell);
    let receipt = revoking
        .verify_with_context(
            &bearer("agent-42", r#"tool == "pay""#),
            &call("pay", 1),
            &auditor(),
        )
        .expect("chain");
    assert_eq!(
        judged(&receipt),
        (Some(Gate::Revocation), Some("capability revoked: agent-42"))
    );

    // A forged chain is an error, and the error names its gate.
    let forged = Issuer::from_key(&[8; 32])
        .expect("key")
        .issue("agent-42")
        .tool_is("pay")
        .expect("valid")
        .build()
        .expect("builds");
    let err = v
        .verify_with_context(&forged, &call("pay", 1), &auditor())
        .expect_err("forged");
    assert!(matches!(err, Error::InvalidChain));
    assert_eq!(err.gate(), Some(Gate::Chain));
    assert_eq!(
        Error::Caveat(capnagent::CaveatError::ReservedPrefix).gate(),
        None
    );
}

#[tokio::test]
async fn proof_gates_name_themselves() {
    let holder = HolderKey::from_seed([3; 32]);
    let cap = bound(&holder, r#"tool == "pay""#);
    let v = verifier().with_nonce_store(Arc::new(InMemoryNonceStore::new()));
    let ctx = call("pay", 1);
    let gate_of = |proof: Proof, cap| {
        let v = v.clone();
        let ctx = ctx.clone();
        async move {
            v.verify_with_proof(&cap, &ctx, &auditor(), &proof)
                .await
                .expect("chain")
                .denied_by()
        }
    };

    let good = holder.prove(&cap, "pay", ctx.args(), NOW);
    assert_eq!(gate_of(good, cap.clone()).await, None);
    assert_eq!(gate_of(good, cap.clone()).await, Some(Gate::Replay));

    let stranger = HolderKey::from_seed([4; 32]).prove(&cap, "pay", ctx.args(), NOW);
    assert_eq!(gate_of(stranger, cap.clone()).await, Some(Gate::Proof));
    let late = holder.prove(&cap, "pay", ctx.args(), NOW + 3_600_000);
    assert_eq!(gate_of(late, cap.clone()).await, Some(Gate::Proof));

    let plain = bearer("agent-42", r#"tool == "pay""#);
    let proof = holder.prove(&plain, "pay", ctx.args(), NOW);
    assert_eq!(gate_of(proof, plain).await, Some(Gate::HolderKey));
}

#[test]
fn a_receipt_read_back_carries_no_gate_and_still_compares_equal() {
    let cap = bearer("agent-42", r#"tool == "pay""#);
    let receipt = verifier()
        .verify_with_context(&cap, &call("search", 1), &auditor())
        .expect("chain");
    assert!(receipt.denied_by().is_some());
    let back = auditor().verify(&receipt.to_json()).expect("signed");
    assert_eq!(back.denied_by(), None);
    assert_eq!(back, receipt);
    assert_eq!(
        [
            Gate::Chain,
            Gate::HolderKey,
            Gate::Proof,
            Gate::Replay,
            Gate::Revocation,
            Gate::NoCaveats
        ]
        .map(|g| g.code()),
        [
            "chain",
            "holder_key",
            "proof",
            "replay",
            "revocation",
            "no_caveats"
        ]
    );
}
