//! Attacks on revocation lists through the core verifier: a published
//! list turned into a capability, and a list dated in the future that
//! would freeze revocation.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capnagent::{
    Capability, Context, Error, InMemoryRevocationStore, RevocationCell, RevocationList,
    RevocationStore, Revoker, Timestamp, Verifier,
};

use support::{ROOT, auditor, bearer};

fn now_ms() -> u64 {
    Timestamp::now().unix_millis()
}

/// What anyone who reads a published list can build with no key: the
/// list's signing body as identifier, its signature as chain head (zero
/// caveats), then a caveat appended (one HMAC step keyed by the head).
fn forge_from_list(list: &RevocationList, predicate: &str) -> Capability {
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(list.serialize()).expect("base64"))
        .expect("utf-8");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    let signature = value["signature"].as_str().expect("signature").to_owned();
    let body = json.replace(
        &format!("\"signature\":\"{signature}\""),
        "\"signature\":\"\"",
    );
    let token = serde_json::json!({
        "identifier": body,
        "caveats": [],
        "signature": signature,
    });
    let wire = URL_SAFE_NO_PAD.encode(serde_json::to_string(&token).expect("json"));
    Capability::parse(&wire)
        .expect("well-formed token")
        .attenuate(predicate)
        .expect("attenuation needs no key")
}

#[test]
fn a_published_list_is_not_a_capability() {
    let mut revoker = Revoker::new(&ROOT).expect("key");
    revoker.revoke("agent-7");
    let list = revoker.publish(now_ms());
    let cell = RevocationCell::new(&ROOT).expect("key");
    assert_eq!(cell.install(list.clone()), Ok(true));
    let verifier = Verifier::new(&ROOT).expect("key").with_revocations(cell);

    let forged = forge_from_list(&list, r#"tool == "bank.wire""#);
    assert!(matches!(verifier.verify(&forged), Err(Error::InvalidChain)));
    let ctx = Context::builder()
        .now_millis(now_ms())
        .caller("agent:planner")
        .tool("bank.wire")
        .build();
    let result = verifier.verify_with_context(&forged, &ctx, &auditor());
    assert!(
        matches!(result, Err(Error::InvalidChain)),
        "a list's signature verified as a chain head: {result:?}"
    );
    // The empty list (nothing revoked yet) is just as public.
    let empty = Revoker::new(&ROOT).expect("key").publish(now_ms() + 1);
    let forged = forge_from_list(&empty, r#"tool == "bank.wire""#);
    assert!(matches!(
        verifier.verify_with_context(&forged, &ctx, &auditor()),
        Err(Error::InvalidChain)
    ));
}

#[test]
fn a_chain_value_does_not_sign_a_list() {
    // The converse: whoever holds a zero-caveat capability whose identifier
    // is a list body holds its chain head, HMAC(root, body) (the issuer
    // refuses to build one, but another issuer or the reference would).
    // That value must not verify as the list's signature.
    let issued_at = now_ms();
    let body = format!(r#"{{"issued_at_ms":{issued_at},"revoked":[],"signature":""}}"#);
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&ROOT).expect("key");
    mac.update(body.as_bytes());
    let head = base16ct::lower::encode_string(&mac.finalize().into_bytes());
    let wire = URL_SAFE_NO_PAD.encode(
        format!(r#"{{"issued_at_ms":{issued_at},"revoked":[],"signature":"{head}"}}"#).as_bytes(),
    );
    let list = RevocationList::parse(&wire).expect("parses");
    let cell = RevocationCell::new(&ROOT).expect("key");
    assert!(cell.install(list).is_err(), "a chain head signed a list");
    assert!(cell.current().is_none());
}

#[tokio::test]
async fn a_future_dated_list_is_refused_and_cannot_freeze_revocation() {
    let mut revoker = Revoker::new(&ROOT).expect("key");
    let store = InMemoryRevocationStore::new();
    let cell = RevocationCell::new(&ROOT)
        .expect("key")
        .with_max_age(Duration::from_secs(60));
    store
        .publish(&revoker.publish(now_ms()))
        .await
        .expect("first list");
    assert!(capnagent::refresh(&store, &cell).await.expect("refresh"));

    // A list dated 30 days ahead (a publisher's clock glitch).
    let future = revoker.publish(now_ms() + 30 * 24 * 3600 * 1000);
    assert!(
        store.publish(&future).await.is_err(),
        "store took a future list"
    );
    assert!(
        cell.install(future.clone()).is_err(),
        "cell took a future list"
    );

    // Real lists keep working: a revocation published now is enforced.
    revoker.revoke("agent-42");
    store
        .publish(&revoker.publish(now_ms() + 1))
        .await
        .expect("a real list is accepted");
    assert!(capnagent::refresh(&store, &cell).await.expect("refresh"));
    let verifier = Verifier::new(&ROOT).expect("key").with_revocations(cell);
    let cap = bearer("agent-42", r#"tool == "bank.wire""#);
    let ctx = Context::builder()
        .now_millis(now_ms())
        .tool("bank.wire")
        .build();
    let receipt = verifier
        .verify_with_context(&cap, &ctx, &auditor())
        .expect("chain ok");
    assert_eq!(
        receipt.outcome().reason(),
        Some("capability revoked: agent-42")
    );
}
