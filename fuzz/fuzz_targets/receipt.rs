//! Receipt parsing: `Receipt::from_json` and `Auditor::verify` never
//! panic; a parsed receipt survives `from_json(to_json(r)) == r`; a
//! receipt that verifies still verifies in its own serialization; and the
//! fields of any parsed receipt, signed afresh, give a receipt that
//! verifies and carries the same facts (the signing input and the
//! serialization escape text the same way).
//!
//! Input: the receipt JSON. Seeds are the vectors' receipts, signed with
//! their audit key, which the target uses.
#![no_main]

use std::sync::LazyLock;

use capnagent::{Auditor, Context, Receipt};
use capnagent_fuzz::AUDIT_KEY;
use libfuzzer_sys::fuzz_target;

static AUDITOR: LazyLock<Auditor> = LazyLock::new(|| Auditor::new(&AUDIT_KEY).expect("audit key"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let auditor = &*AUDITOR;
    let verified = auditor.verify(text);
    let Ok(receipt) = Receipt::from_json(text) else {
        assert!(verified.is_err(), "verify accepted what from_json refused");
        return;
    };
    let json = receipt.to_json();
    assert_eq!(
        Receipt::from_json(&json).as_ref().ok(),
        Some(&receipt),
        "from_json(to_json(r)) != r"
    );
    let _ = format!("{receipt:?}");
    if let Ok(verified) = verified {
        assert_eq!(verified, receipt);
        auditor
            .verify(&json)
            .expect("a verified receipt verifies in its own serialization");
    }

    let ctx = Context::builder()
        .now_millis(receipt.timestamp_ms())
        .caller(receipt.context_summary().caller())
        .tool(receipt.context_summary().tool())
        .build();
    let signed = auditor.sign(
        receipt.capability_identifier(),
        receipt.caveats().to_vec(),
        &ctx,
        receipt.outcome().clone(),
    );
    let again = auditor
        .verify(&signed.to_json())
        .expect("a receipt just signed verifies");
    assert_eq!(again, signed);
    assert_eq!(
        again.capability_identifier(),
        receipt.capability_identifier()
    );
    assert_eq!(again.caveats(), receipt.caveats());
    assert_eq!(again.outcome(), receipt.outcome());
    assert_eq!(again.timestamp_ms(), receipt.timestamp_ms());
    assert_eq!(
        again.context_summary().caller(),
        receipt.context_summary().caller()
    );
    assert_eq!(
        again.context_summary().tool(),
        receipt.context_summary().tool()
    );
});
