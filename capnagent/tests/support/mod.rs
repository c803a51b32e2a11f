//! Shared helpers for the proof, replay and revocation tests: the fixed
//! root and audit keys, and capabilities minted under the root key.

#![allow(dead_code)]

use capnagent::{Auditor, Capability, HolderKey, Issuer};

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
