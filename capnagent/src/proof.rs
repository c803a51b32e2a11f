//! Holder-of-key proofs (DPoP-style): a capability bound to an Ed25519
//! public key is usable only with a fresh signature by the matching secret
//! key over a challenge derived from the call itself.
//!
//! The challenge is the reference's default derivation,
//! `SHA-256({"args_hash":H,"id":ID,"now_ms":T,"tool":TOOL})` (compact JSON,
//! keys in that order), where `T` is the holder's timestamp. The verifier
//! recomputes it from the request it observes; a challenge supplied by the
//! caller is never trusted. Signatures are checked with strict Ed25519
//! verification (no malleable or small-order forms).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize_shim::Zeroizing;

use crate::capability::Capability;
use crate::context::Context;
use crate::json::{JsonSink, JsonValue, write_escaped_str};

/// The challenge a holder signs: SHA-256 of
/// `{"args_hash":..,"id":..,"now_ms":..,"tool":..}`.
pub fn pop_challenge(identifier: &str, args_hash_hex: &str, now_ms: u64, tool: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.put("{\"args_hash\":");
    write_escaped_str(&mut hasher, args_hash_hex);
    hasher.put(",\"id\":");
    write_escaped_str(&mut hasher, identifier);
    hasher.put(",\"now_ms\":");
    hasher.put(itoa::Buffer::new().format(now_ms));
    hasher.put(",\"tool\":");
    write_escaped_str(&mut hasher, tool);
    hasher.put("}");
    hasher.finalize().into()
}

/// The challenge for a capability used in `ctx`, with `ctx`'s time.
pub fn pop_challenge_for(cap: &Capability, ctx: &Context) -> [u8; 32] {
    pop_challenge(
        cap.identifier(),
        &ctx.args_hash(),
        ctx.now().unix_millis(),
        ctx.tool(),
    )
}

/// A holder's proof of possession for one call: its timestamp and its
/// Ed25519 signature over the derived challenge.
///
/// Text form (for an HTTP header or gRPC metadata):
/// `t=<unix ms>;sig=<base64url of the 64-byte signature>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    timestamp_ms: u64,
    signature: [u8; 64],
}

impl Proof {
    /// A proof from its parts.
    pub fn new(timestamp_ms: u64, signature: [u8; 64]) -> Proof {
        Proof {
            timestamp_ms,
            signature,
        }
    }

    /// The holder's timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// The raw signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The text form `t=<ms>;sig=<base64url>`.
    pub fn encode(&self) -> String {
        format!(
            "t={};sig={}",
            self.timestamp_ms,
            URL_SAFE_NO_PAD.encode(self.signature)
        )
    }

    /// Reads the text form. Strict: exactly `t=<digits>;sig=<86 base64url chars>`.
    pub fn decode(text: &str) -> Result<Proof, ProofError> {
        let text = text.trim();
        let (t, sig) = text.split_once(';').ok_or(ProofError::Format)?;
        let t = t.trim().strip_prefix("t=").ok_or(ProofError::Format)?;
        let sig = sig.trim().strip_prefix("sig=").ok_or(ProofError::Format)?;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProofError::Format);
        }
        let timestamp_ms = t.parse().map_err(|_| ProofError::Format)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| ProofError::Format)?;
        let signature = <[u8; 64]>::try_from(bytes.as_slice())
            .map_err(|_| ProofError::SignatureLength(bytes.len()))?;
        Ok(Proof {
            timestamp_ms,
            signature,
        })
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("timestamp_ms", &self.timestamp_ms)
            .field("signature", &format_args!(".."))
            .finish()
    }
}

/// A proof's text form is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not `t=<ms>;sig=<base64url>`.
    #[error("malformed proof: expected `t=<unix ms>;sig=<base64url signature>`")]
    Format,
    /// The signature is not 64 bytes.
    #[error("malformed proof signature (expected 64 bytes, got {0})")]
    SignatureLength(usize),
}

impl ProofError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::Format => "proof.format",
            ProofError::SignatureLength(_) => "proof.signature_length",
        }
    }
}

/// The holder's Ed25519 key pair (client side). `Debug` never shows the
/// secret.
///
/// ```
/// use capnagent::{HolderKey, Issuer};
///
/// let holder = HolderKey::from_seed([3; 32]);
/// let cap = Issuer::from_key(&[7; 32])?
///     .issue("agent-42")
///     .holder_of_key(holder.public_key())?
///     .caveat(r#"tool == "bank.wire""#)?
///     .build()?;
/// let args = capnagent::JsonValue::parse(r#"{"amount_cents":100}"#, &Default::default())
///     .expect("valid JSON");
/// let proof = holder.prove(&cap, "bank.wire", &args, 1_700_000_000_000);
/// assert!(proof.encode().starts_with("t=1700000000000;sig="));
/// # Ok::<(), capnagent::Error>(())
/// ```
pub struct HolderKey {
    key: SigningKey,
}

impl HolderKey {
    /// A key pair from a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> HolderKey {
        let seed = Zeroizing::new(seed);
        HolderKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh random key pair from the operating system's CSPRNG.
    pub fn generate() -> Result<HolderKey, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed)?;
        Ok(HolderKey::from_seed(*seed))
    }

    /// The public key to bind with
    /// [`CapabilityBuilder::holder_of_key`](crate::CapabilityBuilder::holder_of_key).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs the challenge for calling `tool` with `args` at `now_ms`.
    pub fn prove(&self, cap: &Capability, tool: &str, args: &JsonValue, now_ms: u64) -> Proof {
        let challenge = pop_challenge(cap.identifier(), &args.sha256_canonical_hex(), now_ms, tool);
        self.sign_challenge(&challenge, now_ms)
    }

    /// Signs an already derived challenge.
    pub fn sign_challenge(&self, challenge: &[u8; 32], now_ms: u64) -> Proof {
        Proof {
            timestamp_ms: now_ms,
            signature: self.key.sign(challenge).to_bytes(),
        }
    }
}

impl fmt::Debug for HolderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderKey")
            .field("public_key", &crate::crypto::hex_encode(&self.public_key()))
            .field("secret", &format_args!(".."))
            .finish()
    }
}

/// A bound key, decompressed and checked: not a weak (small-order) point.
fn parse_key(holder_key: &[u8; 32]) -> Result<VerifyingKey, &'static str> {
    let key = VerifyingKey::from_bytes(holder_key)
        .map_err(|_| "invalid ed25519 public key in capability")?;
    if key.is_weak() {
        return Err("invalid ed25519 public key in capability");
    }
    Ok(key)
}

/// The strict Ed25519 check of `proof` over `challenge`.
fn verify_signature(
    key: &VerifyingKey,
    challenge: &[u8; 32],
    proof: &Proof,
) -> Result<(), &'static str> {
    key.verify_strict(challenge, &Signature::from_bytes(&proof.signature))
        .map_err(|_| "holder-of-key proof failed")
}

/// How many parsed holder keys a verifier keeps.
const HOLDER_KEY_CACHE_CAPACITY: usize = 1024;

/// A verifier's parsed holder keys, by their 32 bytes. Decompressing the
/// key's curve point costs about a tenth of the signature check, and a
/// holder proves many calls with one key. Only keys of capabilities whose
/// chain verified reach it; when full it starts over.
#[derive(Default)]
pub(crate) struct HolderKeys {
    keys: Mutex<HashMap<[u8; 32], VerifyingKey>>,
}

impl HolderKeys {
    /// Verifies a proof's signature over `challenge` under a bound key, or
    /// returns the denial reason. Keeps the parsed key for the next proof.
    pub(crate) fn check(
        &self,
        holder_key: &[u8; 32],
        challenge: &[u8; 32],
        proof: &Proof,
    ) -> Result<(), &'static str> {
        let cached = self.lock().get(holder_key).copied();
        let key = match cached {
            Some(key) => key,
            None => {
                let key = parse_key(holder_key)?;
                let mut keys = self.lock();
                if keys.len() >= HOLDER_KEY_CACHE_CAPACITY {
                    keys.clear();
                }
                keys.insert(*holder_key, key);
                key
            }
        };
        verify_signature(&key, challenge, proof)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], VerifyingKey>> {
        // The map holds only parsed keys: still whole after a panic.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for HolderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HolderKeys")
            .field("len", &self.lock().len())
            .finish()
    }
}

/// Zeroizes a secret seed on drop without another dependency.
mod zeroize_shim {
    use std::ops::{Deref, DerefMut};

    pub(super) struct Zeroizing<T: Default + Copy>(T);

    impl<T: Default + Copy> Zeroizing<T> {
        pub(super) fn new(value: T) -> Self {
            Zeroizing(value)
        }
    }

    impl<T: Default + Copy> Deref for Zeroizing<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T: Default + Copy> DerefMut for Zeroizing<T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }

    impl<T: Default + Copy> Drop for Zeroizing<T> {
        fn drop(&mut self) {
            // Best effort: overwrite the seed copy we held.
            self.0 = T::default();
            std::hint::black_box(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_and_proof_match_the_reference_vector() {
        let challenge = pop_challenge(
            "buy-replay-test",
            "e52fbb7e3d37b667d250b2691ae61a2f5040a72a32b25289ba41f02f5fccc8e6",
            1_700_000_000_000,
            "checkout.purchase",
        );
        assert_eq!(
            crate::crypto::hex_encode(&challenge),
            "1b14a22c4da8b947083e54ee2e33da9f81bbbb116b0efdb4706786a3ea67a7a4"
        );
        let holder = HolderKey::from_seed([0xE3; 32]);
        assert_eq!(
            crate::crypto::hex_encode(&holder.public_key()),
            "4dd9b6496a27571acb089a5e3482dfc86acdeddc4d1f28e15a9b04f026d7f226"
        );
        let proof = holder.sign_challenge(&challenge, 1_700_000_000_000);
        assert_eq!(
            crate::crypto::hex_encode(proof.signature()),
            "69b95a8a67f178565b98ce17cd07541196b30a93c209542938f31e97ecf740762bcb4e2fa562173e76bf2299585c09f5c0b3cc0619e140ad2fbec217f3bf9d08"
        );
        let mut bad = proof;
        bad.signature[0] ^= 1;
        // The identity point is a weak (small-order) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The same answers whether the key is parsed or already kept.
        let keys = HolderKeys::default();
        for _ in 0..2 {
            assert_eq!(keys.check(&holder.public_key(), &challenge, &proof), Ok(()));
            assert_eq!(
                keys.check(&holder.public_key(), &challenge, &bad),
                Err("holder-of-key proof failed")
            );
            assert_eq!(
                keys.check(&identity, &challenge, &proof),
                Err("invalid ed25519 public key in capability")
            );
        }
        assert_eq!(keys.lock().len(), 1, "only the valid key is kept");
    }

    #[test]
    fn text_form_round_trips_strictly() {
        let proof = Proof::new(42, [7; 64]);
        let text = proof.encode();
        assert_eq!(Proof::decode(&text), Ok(proof));
        assert!(format!("{proof:?}").contains(".."));
        for bad in [
            "",
            "t=1",
            "t=;sig=",
            "t=-1;sig=AA",
            "sig=AA;t=1",
            "t=1;sig=AA",
        ] {
            assert!(Proof::decode(bad).is_err(), "{bad}");
        }
    }
}
