//! Replay protection for holder-of-key proofs: a [`NonceStore`] accepts a
//! nonce once within its time window.
//!
//! The contract (the reference's, made async): `try_record(nonce, now, ttl)`
//! atomically stores the nonce with expiry `now + ttl` and returns `true`
//! when it is absent or expired; it returns `false`, without refreshing the
//! expiry, while an earlier record is live. The window is half-open: at
//! exactly `now + ttl` the nonce is accepted again.
//!
//! The [`Verifier`](crate::Verifier) passes a `ttl` that covers the whole
//! acceptance window of a proof plus the bound on clock offset between the
//! verifiers sharing the store (`2 * skew + 1 ms + bound`, see
//! [`Verifier::with_max_clock_offset`](crate::Verifier::with_max_clock_offset)),
//! never only the part of the window left by the recording verifier's
//! clock: a verifier whose clock is behind would otherwise accept the
//! proof again after the record expired. A store must keep each record
//! for at least `ttl`, whichever clock it measures it with.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{BoxFuture, StoreError};

/// Records proof nonces so that each proof is accepted once.
///
/// Implementations must make check-and-insert one atomic step, shared by
/// every verifier that should refuse each other's replays (one process:
/// [`InMemoryNonceStore`]; a fleet: a shared store such as Redis `SET NX PX`
/// in `capnagent-redis`). An implementation that cannot answer returns an
/// error, and the verifier denies the call (fail closed).
pub trait NonceStore: Send + Sync {
    /// Records `nonce` until `now_ms + ttl_ms`; `Ok(false)` when it is
    /// already recorded and live.
    fn try_record<'a>(
        &'a self,
        nonce: &'a [u8; 32],
        now_ms: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// A bounded, expiring, in-process [`NonceStore`].
///
/// Expiry is `now_ms + ttl_ms` on the clock of the recording call and is
/// compared with the `now_ms` of later calls; verifiers sharing the store
/// with clocks apart stay safe because their `ttl` includes the
/// clock-offset bound (see the module docs).
///
/// Expired entries are swept when the store reaches its capacity. If every
/// entry is still live at capacity, `try_record` fails with
/// [`StoreError::Full`] (and the call is denied) rather than evicting a live
/// nonce, which would re-open a replay window. Size the capacity for the
/// peak number of proofs per TTL (by default 2 × 60 s + 1 ms + 10 s, see
/// [`Verifier::nonce_ttl_ms`](crate::Verifier::nonce_ttl_ms)).
#[derive(Debug)]
pub struct InMemoryNonceStore {
    entries: Mutex<HashMap<[u8; 32], u64>>,
    capacity: usize,
}

impl InMemoryNonceStore {
    /// Default capacity: one million live nonces (about 64 MiB at most).
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    /// A store with [`Self::DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` live nonces.
    pub fn with_capacity(capacity: usize) -> Self {
        InMemoryNonceStore {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Entries currently held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every nonce.
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }

    /// The synchronous core of [`NonceStore::try_record`].
    pub fn record(&self, nonce: &[u8; 32], now_ms: u64, ttl_ms: u64) -> Result<bool, StoreError> {
        let mut map = self
            .entries
            .lock()
            .map_err(|_| StoreError::Unavailable("nonce store mutex poisoned".into()))?;
        if let Some(&expiry) = map.get(nonce) {
            if expiry > now_ms {
                return Ok(false);
            }
        } else if map.len() >= self.capacity {
            map.retain(|_, expiry| *expiry > now_ms);
            if map.len() >= self.capacity {
                return Err(StoreError::Full(map.len()));
            }
        }
        map.insert(*nonce, now_ms.saturating_add(ttl_ms));
        Ok(true)
    }
}

impl Default for InMemoryNonceStore {
    fn default() -> Self {
        Self::new()
    }
}

impl NonceStore for InMemoryNonceStore {
    fn try_record<'a>(
        &'a self,
        nonce: &'a [u8; 32],
        now_ms: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let result = self.record(nonce, now_ms, ttl_ms);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_half_open_and_not_refreshed() {
        let store = InMemoryNonceStore::new();
        let n = [1; 32];
        assert_eq!(store.record(&n, 1000, 100), Ok(true));
        assert_eq!(store.record(&n, 1099, 100), Ok(false));
        // Not refreshed by the refused attempt.
        assert_eq!(store.record(&n, 1100, 100), Ok(true));
        // A backward clock jump still finds the live entry.
        assert_eq!(store.record(&n, 500, 100), Ok(false));
        // TTL 0: always already expired.
        assert_eq!(store.record(&[2; 32], 0, 0), Ok(true));
        assert_eq!(store.record(&[2; 32], 0, 0), Ok(true));
    }

    #[test]
    fn full_store_sweeps_then_refuses_instead_of_evicting() {
        let store = InMemoryNonceStore::with_capacity(2);
        assert_eq!(store.record(&[1; 32], 0, 10), Ok(true));
        assert_eq!(store.record(&[2; 32], 0, 100), Ok(true));
        // [1] expired at 10: swept to make room.
        assert_eq!(store.record(&[3; 32], 20, 100), Ok(true));
        assert_eq!(store.record(&[4; 32], 20, 100), Err(StoreError::Full(2)));
        // Live nonces are still refused as replays.
        assert_eq!(store.record(&[2; 32], 20, 100), Ok(false));
        store.clear();
        assert!(store.is_empty());
    }
}
