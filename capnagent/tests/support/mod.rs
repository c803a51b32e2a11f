//! Shared helpers for the proof, replay, revocation and limits tests: the
//! fixed root and audit keys, capabilities minted under the root key, and
//! the HMAC and hex a test needs to extend a token's chain by hand.

#![allow(dead_code)]

use capnagent::{Auditor, Capability, HolderKey, Issuer};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ROOT: [u8; 32] = [7; 32];

pub fn auditor() -> Auditor {
    Auditor::new(&[9; 32]).expect("key")
}

/// A capability for "agent-42" bound to `holder`'s key, with one caveat.
pub fn bound(holder: &HolderKey, caveat: &str) -> Capability {
    Issuer::from_key(&ROOT)
        .expect("key")
        .issue("agent-42")
        .holder_of_key(holder.public_key())
        .expect("first")
        .caveat(caveat)
        .expect("valid")
        .build()
        .expect("builds")
}

/// A bearer capability for `id` with one caveat.
pub fn bearer(id: &str, caveat: &str) -> Capability {
    Issuer::from_key(&ROOT)
        .expect("key")
        .issue(id)
        .caveat(caveat)
        .expect("valid")
        .build()
        .expect("builds")
}

/// HMAC-SHA256 of `msg` under `key`, computed outside the crate.
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of lowercase hex.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
