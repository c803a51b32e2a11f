//! [`Auditor`]: signs a [`Receipt`] for every decision under the audit key
//! and checks receipts read back, comparing signatures in constant time.
//! The MAC state after a capability's shared signing prefix is kept with
//! its caveat list, so a verifier signing many receipts for one capability
//! hashes that prefix once.

use std::fmt;
use std::sync::Arc;

use hmac::Mac;

use crate::capability::{Caveat, CaveatList};
use crate::context::Context;
use crate::crypto::{self, Buffered, KeyedMac, Tag};
use crate::error::{Error, KeyError, ReceiptError};
use crate::keys::{KeyId, KeyRing};
use crate::receipt::{
    ContextSummary, Outcome, RECEIPT_SCHEMA_VERSION, Receipt, write_signing_prefix,
};

/// Shortest audit key accepted, in bytes.
pub const MIN_AUDIT_KEY_LEN: usize = 16;
/// Signs and verifies receipts under an audit key.
///
/// ```
/// use capnagent::{Auditor, Context, Outcome};
///
/// let auditor = Auditor::new(&[9; 32])?;
/// let ctx = Context::builder().now_millis(0).caller("agent").tool("t").build();
/// let receipt = auditor.sign("cap-1", Vec::new(), &ctx, Outcome::Allowed);
/// assert_eq!(auditor.verify(&receipt.to_json())?, receipt);
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Clone)]
pub struct Auditor {
    key: Arc<KeyedMac>,
    key_id: KeyId,
    /// Tells this auditor (and its clones, same key) from any other, for
    /// the signing states kept with capabilities' caveat lists.
    id: u64,
}

/// The next [`Auditor`] id; never reused.
static NEXT_AUDITOR_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Auditor {
    /// Creates an auditor. Keys shorter than [`MIN_AUDIT_KEY_LEN`] (16
    /// bytes) are refused; use 32 random bytes.
    pub fn new(key: &[u8]) -> Result<Auditor, Error> {
        if key.len() < MIN_AUDIT_KEY_LEN {
            return Err(KeyError::TooShort {
                role: "audit",
                got: key.len(),
                min: MIN_AUDIT_KEY_LEN,
            }
            .into());
        }
        Ok(Auditor {
            key: Arc::new(KeyedMac::new(key)),
            key_id: KeyId::fingerprint(key),
            id: NEXT_AUDITOR_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// An auditor under the primary key of `ring`, the one that signs.
    pub fn from_keys(ring: &KeyRing) -> Result<Auditor, Error> {
        let primary = ring.primary();
        Ok(Auditor::new(primary.expose_secret())?.named(primary.id()))
    }

    /// One auditor per key of `ring`, primary first: for checking receipts
    /// (and audit logs) signed under any of them, with
    /// [`verify_with_any`](Self::verify_with_any). The first one signs.
    ///
    /// ```
    /// use capnagent::{Auditor, Context, KeyId, KeyRing, KeyRole, Outcome};
    ///
    /// let old = Auditor::new(&[1; 32])?;
    /// let ctx = Context::builder().now_millis(0).tool("t").build();
    /// let receipt = old.sign("cap-1", Vec::new(), &ctx, Outcome::Allowed).to_json();
    ///
    /// let ring = KeyRing::new(KeyRole::Audit, Some(KeyId::new("a2")?), &[2; 32])?
    ///     .with_key(Some(KeyId::new("a1")?), &[1; 32])?;
    /// let auditors = Auditor::all_from_keys(&ring)?;
    /// let (_, signer) = Auditor::verify_with_any(&auditors, &receipt)?;
    /// assert_eq!(signer.key_id().as_str(), "a1");
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn all_from_keys(ring: &KeyRing) -> Result<Vec<Auditor>, Error> {
        ring.iter()
            .map(|entry| Ok(Auditor::new(entry.expose_secret())?.named(entry.id())))
            .collect()
    }

    fn named(mut self, id: &KeyId) -> Auditor {
        self.key_id = id.clone();
        self
    }

    /// The id of this auditor's key: the ring's id, or the key's
    /// fingerprint ([`KeyId::fingerprint`]) for [`new`](Self::new).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Checks a receipt given as JSON text under each of `auditors` in
    /// turn (for example [`all_from_keys`](Self::all_from_keys)), and
    /// returns it with the auditor whose key signed it. Refused when none
    /// did (or `auditors` is empty).
    pub fn verify_with_any<'a>(
        auditors: &'a [Auditor],
        receipt_json: &str,
    ) -> Result<(Receipt, &'a Auditor), Error> {
        let receipt = Receipt::from_json(receipt_json)?;
        let signer = Auditor::verify_receipt_with_any(auditors, &receipt)?;
        Ok((receipt, signer))
    }

    /// Checks an already parsed receipt under each of `auditors` in turn;
    /// returns the auditor whose key signed it.
    pub fn verify_receipt_with_any<'a>(
        auditors: &'a [Auditor],
        receipt: &Receipt,
    ) -> Result<&'a Auditor, Error> {
        let mut error: Error = ReceiptError::InvalidSignature.into();
        for auditor in auditors {
            match auditor.verify_receipt(receipt) {
                Ok(()) => return Ok(auditor),
                Err(e) => error = e,
            }
        }
        Err(error)
    }

    /// The keyed MAC, for the verifier's key comparison
    /// ([`Verifier::check_audit_key`](crate::Verifier::check_audit_key)).
    pub(crate) fn keyed_mac(&self) -> &KeyedMac {
        &self.key
    }

    /// Signs a receipt for a decision about `ctx`.
    ///
    /// The verifier calls this for every decision it makes; call it
    /// yourself to record a decision made before a capability could be
    /// checked (for example a request that carried no token).
    pub fn sign(
        &self,
        capability_identifier: impl Into<Arc<str>>,
        caveats: impl Into<Arc<[Caveat]>>,
        ctx: &Context,
        outcome: Outcome,
    ) -> Receipt {
        // A list made for this one receipt: nothing to keep for the next.
        self.sign_list(
            capability_identifier.into(),
            CaveatList::from(caveats.into()),
            ctx,
            outcome,
            false,
        )
    }

    /// [`sign`](Self::sign) with a capability's own caveat list, shared by
    /// every receipt of that capability: its JSON is written once, and the
    /// MAC state after the signing input's shared prefix is kept with it.
    pub(crate) fn sign_shared(
        &self,
        capability_identifier: Arc<str>,
        caveats: CaveatList,
        ctx: &Context,
        outcome: Outcome,
    ) -> Receipt {
        self.sign_list(capability_identifier, caveats, ctx, outcome, true)
    }

    fn sign_list(
        &self,
        capability_identifier: Arc<str>,
        caveats: CaveatList,
        ctx: &Context,
        outcome: Outcome,
        keep_prefix: bool,
    ) -> Receipt {
        let mut receipt = Receipt {
            version: RECEIPT_SCHEMA_VERSION,
            capability_identifier,
            caveats,
            context_summary: ContextSummary::of(ctx),
            outcome,
            timestamp_ms: ctx.now().unix_millis(),
            signature: [0; 32],
            denied_by: None,
        };
        receipt.signature = self.mac(&receipt, keep_prefix);
        receipt
    }

    /// The receipt's MAC. With `keep_prefix`, the part every receipt of a
    /// capability shares (version, identifier, caveats: often most of the
    /// input) is hashed once per caveat list, and the state kept with it.
    fn mac(&self, receipt: &Receipt, keep_prefix: bool) -> Tag {
        // Through a stack buffer: many small updates cost more than the
        // hashing itself.
        let prefix = || {
            let mut body = Buffered::new(self.key.start());
            body.bytes(&[b'v', receipt.version]);
            write_signing_prefix(&mut body, &receipt.capability_identifier, &receipt.caveats);
            body
        };
        let kept = (keep_prefix && receipt.version == RECEIPT_SCHEMA_VERSION)
            .then(|| {
                receipt
                    .caveats
                    .signing_state(self.id, &receipt.capability_identifier, || {
                        prefix().finish()
                    })
            })
            .flatten();
        let mut body = match kept {
            Some(state) => Buffered::new(state),
            None => prefix(),
        };
        receipt.write_signing_rest(&mut body);
        body.finish().finalize().into_bytes().into()
    }

    /// Checks a receipt given as JSON text: strict schema, version 1, and
    /// the signature (compared in constant time).
    pub fn verify(&self, receipt_json: &str) -> Result<Receipt, Error> {
        let receipt = Receipt::from_json(receipt_json)?;
        self.verify_receipt(&receipt)?;
        Ok(receipt)
    }

    /// Checks an already parsed receipt's version and signature.
    pub fn verify_receipt(&self, receipt: &Receipt) -> Result<(), Error> {
        if receipt.version != RECEIPT_SCHEMA_VERSION {
            return Err(ReceiptError::UnsupportedVersion {
                got: receipt.version,
                expected: RECEIPT_SCHEMA_VERSION,
            }
            .into());
        }
        if crypto::tags_equal(&self.mac(receipt, false), &receipt.signature) {
            Ok(())
        } else {
            Err(ReceiptError::InvalidSignature.into())
        }
    }
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("key", &format_args!(".."))
            .field("key_id", &self.key_id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The MAC as the wire format defines it, computed from scratch.
    fn plain_mac(key: &[u8], receipt: &Receipt) -> Tag {
        let mut body = String::new();
        receipt.write_signing_body(&mut body);
        let mut mac = crypto::HmacSha256::new_from_slice(key).expect("any key length");
        mac.update(&[b'v', receipt.version]);
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn kept_signing_states_give_the_plain_mac() {
        let (key_a, key_b) = ([0xA3; 32], [0x5C; 32]);
        let (a, b) = (Auditor::new(&key_a).unwrap(), Auditor::new(&key_b).unwrap());
        let caveats = CaveatList::from(vec![
            Caveat::new("tool == \"x\""),
            Caveat::new("caller == \"agent:\\\"q\\\"\""),
            Caveat::new("now <= @2099-01-01T00:00:00Z"),
        ]);
        let ctx = |n: u64| {
            Context::builder()
                .now_millis(1_700_000_000_000 + n)
                .caller("agent:test")
                .tool("x")
                .build()
        };
        // One caveat list signed under two keys and two identifiers, in
        // turns, several times each: the first (auditor, identifier) keeps
        // a state, the others hash everything; all give the plain MAC.
        for n in 0..3 {
            for (auditor, key) in [(&a, &key_a[..]), (&b, &key_b[..]), (&a.clone(), &key_a[..])] {
                for id in ["cap-1", "cap-\"2\""] {
                    let outcome = if n == 1 {
                        Outcome::Denied {
                            reason: "no".into(),
                        }
                    } else {
                        Outcome::Allowed
                    };
                    let receipt = auditor.sign_shared(id.into(), caveats.clone(), &ctx(n), outcome);
                    assert_eq!(receipt.signature, plain_mac(key, &receipt), "{id} {n}");
                    auditor.verify_receipt(&receipt).unwrap();
                }
            }
        }
        // Another version never uses the kept state.
        let mut receipt = a.sign_shared("cap-1".into(), caveats.clone(), &ctx(0), Outcome::Allowed);
        receipt.version = 2;
        assert_eq!(a.mac(&receipt, true), plain_mac(&key_a, &receipt));
        assert_ne!(a.mac(&receipt, true), receipt.signature);
        // One-off receipts hash the whole input, and keep nothing.
        let list = CaveatList::from(vec![Caveat::new("tool == \"y\"")]);
        let once = a.sign("cap-3", list.as_slice().to_vec(), &ctx(0), Outcome::Allowed);
        assert_eq!(once.signature, plain_mac(&key_a, &once));
        let receipt = b.sign_shared("cap-3".into(), list.clone(), &ctx(0), Outcome::Allowed);
        assert_eq!(receipt.signature, plain_mac(&key_b, &receipt));
        assert_eq!(a.mac(&receipt, false), once.signature);
    }
}
