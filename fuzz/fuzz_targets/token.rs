//! Token parsing: `Capability::parse` never panics, and what it accepts
//! survives a round trip, `parse(serialize(parse(x))) == parse(x)`, with a
//! stable serialization. Accepted tokens are then verified (chain, and for
//! the seeded tokens, whose chain holds under the vectors' root key, their
//! caveats), and re-issued under that key so that fuzzed caveats reach
//! evaluation too.
//!
//! Input: a mode byte, then the token text (even mode), or the token's
//! JSON, which the target encodes (odd mode) so that mutations work on the
//! JSON directly.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{Auditor, Capability, Context, Issuer, Verifier};
use capnagent_fuzz::{AUDIT_KEY, CONTEXT_JSON, ROOT_KEY};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    issuer: Issuer,
    verifier: Verifier,
    auditor: Auditor,
    context: Context,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    issuer: Issuer::from_key(&ROOT_KEY).expect("root key"),
    verifier: Verifier::new(&ROOT_KEY).expect("root key"),
    auditor: Auditor::new(&AUDIT_KEY).expect("audit key"),
    context: Context::from_json(CONTEXT_JSON).expect("context"),
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        URL_SAFE_NO_PAD.encode(rest)
    };
    check(&token);
});

fn check(token: &str) {
    let Ok(first) = Capability::parse(token) else {
        return;
    };
    let serialized = first.serialize();
    let second = Capability::parse(&serialized).expect("a serialized capability parses again");
    assert_eq!(second, first, "parse(serialize(parse(x))) != parse(x)");
    assert_eq!(
        second.serialize(),
        serialized,
        "serialization is not stable"
    );
    let _ = format!("{first:?}");

    let fixture = &*FIXTURE;
    // Verification never panics; a receipt it signs verifies.
    if let Ok(receipt) =
        fixture
            .verifier
            .verify_with_context(&first, &fixture.context, &fixture.auditor)
    {
        fixture
            .auditor
            .verify(&receipt.to_json())
            .expect("a receipt the verifier signed verifies");
    }

    // The same caveats under a chain that holds: evaluated for real.
    let mut builder = fixture.issuer.issue(first.identifier());
    if let Some(key) = first.holder_of_key()
        && builder.holder_of_key(*key).is_err()
    {
        return;
    }
    for caveat in first.caveats() {
        if builder.caveat(caveat.predicate()).is_err() {
            return;
        }
    }
    let Ok(issued) = builder.build() else {
        return;
    };
    assert_eq!(issued.caveats(), first.caveats());
    assert_eq!(
        Capability::parse(&issued.serialize()).as_ref().ok(),
        Some(&issued)
    );
    let receipt = fixture
        .verifier
        .verify_with_context(&issued, &fixture.context, &fixture.auditor)
        .expect("a token issued under the verifier's key has a genuine chain");
    fixture
        .auditor
        .verify(&receipt.to_json())
        .expect("a receipt the verifier signed verifies");
}
