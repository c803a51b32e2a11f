//! Key rotation: a verifier with several root keys, an issuer picking its
//! key from a ring, revocation lists and receipts across a rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use capnagent::{
    Auditor, Capability, Context, Error, Gate, Issuer, KeyId, KeyRing, KeyRole, Outcome,
    RevocationCell, Revoker, Verifier,
};

const NEW: [u8; 32] = [0x22; 32];
const OLD: [u8; 32] = [0x11; 32];
const OTHER: [u8; 32] = [0x33; 32];
const NOW: u64 = 1_800_000_000_000;

fn id(text: &str) -> KeyId {
    KeyId::new(text).unwrap()
}

/// `[new, old]`: the overlap of a rotation.
fn overlap() -> KeyRing {
    KeyRing::new(KeyRole::Root, Some(id("new")), &NEW)
        .unwrap()
        .with_key(Some(id("old")), &OLD)
        .unwrap()
}

fn only(key: &[u8], name: &str) -> KeyRing {
    KeyRing::new(KeyRole::Root, Some(id(name)), key).unwrap()
}

fn token(key: &[u8]) -> Capability {
    Issuer::from_key(key)
        .unwrap()
        .issue("agent-42")
        .tool_is("search")
        .unwrap()
        .build()
        .unwrap()
}

fn ctx() -> Context {
    Context::builder()
        .now_millis(NOW)
        .caller("agent")
        .tool("search")
        .build()
}

fn auditor() -> Auditor {
    Auditor::new(&[0x99; 32]).unwrap()
}

/// `cap` parsed again from its text: a new value without memo.
fn reparsed(cap: &Capability) -> Capability {
    Capability::parse(&cap.serialize()).unwrap()
}

#[test]
fn a_verifier_accepts_tokens_under_every_key_of_its_ring() {
    let verifier = Verifier::from_keys(&overlap()).unwrap();
    assert_eq!(
        verifier.key_ids().map(KeyId::as_str).collect::<Vec<_>>(),
        ["new", "old"]
    );
    for (key, name) in [(NEW, "new"), (OLD, "old")] {
        let cap = token(&key);
        let receipt = verifier
            .verify_with_context(&cap, &ctx(), &auditor())
            .unwrap();
        assert!(receipt.is_allowed(), "{name}: {receipt:?}");
        assert_eq!(verifier.key_id_for(&cap), Some(&id(name)));
    }
    // A key outside the ring: no decision, as for a forgery.
    let stranger = token(&OTHER);
    assert!(matches!(
        verifier.verify(&stranger),
        Err(Error::InvalidChain)
    ));
    assert_eq!(verifier.key_id_for(&stranger), None);
    // One key only: `new` behaves as before.
    let single = Verifier::new(&NEW).unwrap();
    assert!(single.verify(&token(&NEW)).is_ok());
    assert_eq!(
        single.key_id_for(&token(&NEW)),
        Some(&KeyId::fingerprint(&NEW))
    );
}

#[test]
fn a_retired_key_fails_the_chain_gate() {
    let old_token = token(&OLD);
    let during = Verifier::from_keys(&overlap()).unwrap();
    assert!(during.verify(&old_token).is_ok());
    // The old key leaves the ring: its tokens are refused like forged ones,
    // even the very value a verifier with the old key checked before.
    let after = Verifier::from_keys(&only(&NEW, "new")).unwrap();
    let err = after
        .verify_with_context(&old_token, &ctx(), &auditor())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidChain));
    assert_eq!(err.gate(), Some(Gate::Chain));
    assert!(after.verify(&reparsed(&old_token)).is_err());
    assert!(after.verify(&token(&NEW)).is_ok());
}

#[test]
fn the_chain_cache_remembers_which_key_and_never_lends_a_hit() {
    for capacity in [0, 4096] {
        let verifier = Verifier::from_keys(&overlap())
            .unwrap()
            .with_chain_cache(capacity);
        let old_token = token(&OLD);
        // First time computed, then a memo hit (same value), then a cache
        // hit (a fresh parse): always the old key.
        for cap in [&old_token, &old_token, &reparsed(&old_token)] {
            assert_eq!(verifier.key_id_for(cap), Some(&id("old")), "{capacity}");
        }
        let new_token = token(&NEW);
        assert_eq!(verifier.key_id_for(&reparsed(&new_token)), Some(&id("new")));
        assert_eq!(verifier.key_id_for(&new_token), Some(&id("new")));

        // A verifier under another key never takes the first one's word,
        // for the value it memoised nor for a fresh parse.
        let other = Verifier::from_keys(&only(&OTHER, "other")).unwrap();
        assert!(other.verify(&old_token).is_err());
        assert!(other.verify(&reparsed(&old_token)).is_err());

        // Same signature, another caveat: not the cached token.
        let mut wire: serde_json::Value = serde_json::from_str(&token_json(&old_token)).unwrap();
        wire["caveats"][0]["predicate"] = r#"tool == "other""#.into();
        let tampered = Capability::parse(&encode(&wire.to_string())).unwrap();
        let signature = |cap: &Capability| {
            let json: serde_json::Value = serde_json::from_str(&token_json(cap)).unwrap();
            json["signature"].clone()
        };
        assert_eq!(signature(&tampered), signature(&old_token));
        assert!(verifier.verify(&tampered).is_err());

        // A rebuilt verifier (new settings) keeps the ring, not the cache.
        let rebuilt = verifier.clone().with_cache_capacity(16);
        assert_eq!(rebuilt.key_id_for(&reparsed(&old_token)), Some(&id("old")));
    }
}

/// The JSON inside a token.
fn token_json(cap: &Capability) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cap.serialize().trim_end_matches('='))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn encode(json: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn issuers_pick_a_key_of_the_ring_and_tokens_do_not_change() {
    let ring = overlap();
    let by_ring = Issuer::from_keys(&ring).unwrap();
    assert_eq!(by_ring.key_id(), &id("new"));
    let mint = |issuer: &Issuer| {
        issuer
            .issue("agent-42")
            .tool_is("search")
            .unwrap()
            .build()
            .unwrap()
            .serialize()
    };
    assert_eq!(mint(&by_ring), token(&NEW).serialize());
    let old = Issuer::from_keys(&ring.with_primary(&id("old")).unwrap()).unwrap();
    assert_eq!(old.key_id(), &id("old"));
    assert_eq!(mint(&old), token(&OLD).serialize());
}

#[test]
fn revocation_lists_under_the_old_key_hold_until_it_is_retired() {
    let now = capnagent::Timestamp::now().unix_millis();
    let mut old_revoker = Revoker::new(&OLD).unwrap();
    old_revoker.revoke("agent-42");
    let old_list = old_revoker.publish(now);

    // During the overlap the verifiers accept the list published before
    // the rotation, and enforce it on tokens under both keys.
    let cell = RevocationCell::from_keys(&overlap()).unwrap();
    assert!(cell.install_at(old_list.clone(), now).unwrap());
    let verifier = Verifier::from_keys(&overlap())
        .unwrap()
        .with_revocations(cell.clone());
    for key in [NEW, OLD] {
        let at = Context::builder().now_millis(now).tool("search").build();
        let outcome = verifier.decide(&token(&key), &at).unwrap();
        assert_eq!(
            outcome,
            Outcome::Denied {
                reason: "capability revoked: agent-42".into()
            }
        );
    }

    // The publisher moves to the new key, starting from the old list.
    let revoker = Revoker::from_list_with_keys(&overlap(), &old_list).unwrap();
    assert_eq!(revoker.len(), 1);
    let new_list = revoker.publish(now + 1);
    assert!(cell.install_at(new_list.clone(), now + 1).unwrap());
    assert_eq!(
        Revoker::from_keys(&overlap())
            .unwrap()
            .publish(now)
            .serialize(),
        Revoker::new(&NEW).unwrap().publish(now).serialize()
    );

    // After retirement, lists under the old key are refused.
    let retired = RevocationCell::from_keys(&only(&NEW, "new")).unwrap();
    assert!(retired.install_at(old_list.clone(), now).is_err());
    assert!(retired.install_at(new_list, now + 1).unwrap());
    assert!(Revoker::from_list_with_keys(&only(&NEW, "new"), &old_list).is_err());
}

#[test]
fn an_audit_key_equal_to_any_root_key_is_refused() {
    let verifier = Verifier::from_keys(&overlap()).unwrap();
    for key in [NEW, OLD] {
        let err = verifier
            .check_audit_key(&Auditor::new(&key).unwrap())
            .unwrap_err();
        assert_eq!(err.code(), "key.audit_is_root");
    }
    assert!(verifier.check_audit_key(&auditor()).is_ok());
}

#[test]
fn receipts_under_old_audit_keys_verify_with_the_ring() {
    let ring = KeyRing::new(KeyRole::Audit, Some(id("a2")), &[0xa2; 32])
        .unwrap()
        .with_key(Some(id("a1")), &[0xa1; 32])
        .unwrap();
    let auditors = Auditor::all_from_keys(&ring).unwrap();
    assert_eq!(auditors.len(), 2);
    assert_eq!(Auditor::from_keys(&ring).unwrap().key_id(), &id("a2"));

    let verifier = Verifier::new(&NEW).unwrap();
    let sign = |auditor: &Auditor| {
        verifier
            .verify_with_context(&token(&NEW), &ctx(), auditor)
            .unwrap()
            .to_json()
    };
    let old_receipt = sign(&Auditor::new(&[0xa1; 32]).unwrap());
    let new_receipt = sign(&auditors[0]);
    let (_, signer) = Auditor::verify_with_any(&auditors, &old_receipt).unwrap();
    assert_eq!(signer.key_id(), &id("a1"));
    let (receipt, signer) = Auditor::verify_with_any(&auditors, &new_receipt).unwrap();
    assert_eq!(signer.key_id(), &id("a2"));
    assert!(receipt.is_allowed());

    // The old audit key retired: its receipts no longer verify.
    let retired = Auditor::all_from_keys(&ring.clone().with_primary(&id("a2")).unwrap())
        .unwrap()
        .into_iter()
        .take(1)
        .collect::<Vec<_>>();
    let err = Auditor::verify_with_any(&retired, &old_receipt).unwrap_err();
    assert_eq!(err.code(), "receipt.invalid_signature");
    assert!(Auditor::verify_with_any(&[], &new_receipt).is_err());
    // Tampered: refused under every key.
    let tampered = new_receipt.replacen("agent-42", "agent-43", 1);
    assert_ne!(tampered, new_receipt);
    assert!(Auditor::verify_with_any(&auditors, &tampered).is_err());
}
