//! The token cache: capabilities whose HMAC chain already verified under
//! one of this layer's root keys, parsed, keyed by their exact serialized
//! text. A layer's verifier keeps its keys for the layer's life (its
//! settings change, never its ring), so an entry stays valid; a rotation
//! builds a new layer, with a new cache.
//!
//! An agent sends the same token on many calls; the cache saves decoding
//! it and checking its chain before the body is read. It never skips a
//! decision: the verifier still checks the chain and every caveat on every
//! call. Only tokens that verified are stored, and a hit compares the whole
//! token text, so a forged token can never match a cached one.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};

use capnagent::Capability;

pub(crate) struct TokenCache {
    map: RwLock<HashMap<Box<str>, Arc<Capability>, TailState>>,
    capacity: usize,
}

/// How many trailing bytes of a token are hashed.
const HASHED_TAIL: usize = 64;

/// Hashes only the last [`HASHED_TAIL`] bytes of each key, with the
/// standard randomly keyed SipHash. A token ends with its signature (the
/// base64 of `"signature":"<64 hex digits>"}`), so the tail tells tokens
/// apart and a lookup hashes 64 bytes instead of several hundred. Equality
/// still compares whole tokens. Only tokens whose chain verified are
/// stored, and nobody can make two of those share a signature, so tails do
/// not pile up in one bucket.
#[derive(Default)]
struct TailState(RandomState);

impl BuildHasher for TailState {
    type Hasher = TailHasher;

    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = bytes
            .get(bytes.len().saturating_sub(HASHED_TAIL)..)
            .unwrap_or(bytes);
        self.0.write(tail);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            map: RwLock::new(HashMap::default()),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Capability>> {
        if self.capacity == 0 {
            return None;
        }
        self.map.read().ok()?.get(token).cloned()
    }

    /// Stores a token whose chain verified. When full, starts over (cheap,
    /// and bounded whatever the traffic).
    pub(crate) fn insert(&self, token: Box<str>, capability: Arc<Capability>) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(token, capability);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::Issuer;

    #[test]
    fn bounded_and_exact() {
        let cache = TokenCache::new(2);
        let issuer = Issuer::from_key(&[7; 32]).unwrap();
        let cap = Arc::new(
            issuer
                .issue("a")
                .caveat("tool == \"t\"")
                .unwrap()
                .build()
                .unwrap(),
        );
        let token = cap.serialize();
        cache.insert(token.clone().into(), Arc::clone(&cap));
        assert!(cache.get(&token).is_some());
        assert!(cache.get(&token[..token.len() - 1]).is_none());
        // Same hashed tail, other head: a different token.
        let same_tail = format!("x{}", &token[1..]);
        assert!(cache.get(&same_tail).is_none());
        cache.insert("b".into(), Arc::clone(&cap));
        cache.insert("c".into(), Arc::clone(&cap));
        assert!(cache.get(&token).is_none());
        assert!(cache.get("c").is_some());
        assert!(TokenCache::new(0).get(&token).is_none());
    }
}
