//! Budgets across calls: the [`BudgetStore`] that counts what budget
//! caveats (`calls <= 20`, `sum(arg.amount_cents) <= 50000 per 1d`, see
//! `docs/caveats.md`) have allowed so far.
//!
//! The [`Verifier`](crate::Verifier) judges every other gate and every
//! other caveat first, then hands the store all the budget charges of the
//! decision at once ([`BudgetStore::try_reserve`]); the store reserves
//! them all or none, in one atomic step. A store that cannot answer
//! returns an error and the call is denied (fail closed).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::store::{BoxFuture, StoreError};

/// One budget to charge in a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCharge {
    /// The budget's scope: `sha256(identifier || 0x00 || caveat text)`.
    pub scope: [u8; 32],
    /// Start of the fixed window this call falls in (Unix ms, a multiple
    /// of the window length); 0 for a budget without a window.
    pub window_start_ms: u64,
    /// When the record of this window may be dropped, on the verifier's
    /// clock (window end plus the clock-offset bound); `None`: never.
    pub expires_at_ms: Option<u64>,
    /// The budget's limit (at most 10^15).
    pub limit: u64,
    /// What this call adds (1 for `calls`; at most 10^15).
    pub amount: u64,
}

impl BudgetCharge {
    /// The scope of a budget caveat `caveat` (its text, byte for byte)
    /// under a capability `identifier`: shared by the whole delegation
    /// tree of that identifier.
    pub fn scope_of(identifier: &str, caveat: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(identifier.as_bytes());
        hash.update([0u8]);
        hash.update(caveat.as_bytes());
        hash.finalize().into()
    }
}

/// A store's answer to [`BudgetStore::try_reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Every charge fit and is now counted.
    Reserved,
    /// The charge at `index` does not fit: `used` was already counted in
    /// its window. Nothing was counted, for any charge.
    Exhausted {
        /// Position of the charge in the slice given.
        index: usize,
        /// What that budget had used before this call.
        used: u64,
    },
}

/// Counts what budget caveats have allowed, shared by every verifier that
/// should share the budgets (one process: [`InMemoryBudgetStore`]; a
/// fleet: `RedisBudgetStore` in `capnagent-redis`).
pub trait BudgetStore: Send + Sync {
    /// Atomically: if for every charge `used + amount <= limit` (`used`:
    /// what its `(scope, window_start_ms)` holds), adds every `amount` and
    /// answers [`Reservation::Reserved`]; otherwise changes nothing and
    /// answers [`Reservation::Exhausted`] for the first charge that does
    /// not fit. `now_ms` is the decision's time. The charges have
    /// distinct `(scope, window_start_ms)`.
    fn try_reserve<'a>(
        &'a self,
        charges: &'a [BudgetCharge],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>>;
}

/// A bounded, in-process [`BudgetStore`].
///
/// Holds at most `capacity` budget records (one per scope and window).
/// When full, it drops the records whose window has ended (by the `now_ms`
/// of the call); if it is still full it refuses ([`StoreError::Full`], the
/// call is denied) rather than forget a live budget. Records of budgets
/// without a window are kept until the store is dropped. Nothing survives
/// the process: use a shared store for a fleet or across restarts.
#[derive(Debug)]
pub struct InMemoryBudgetStore {
    entries: Mutex<HashMap<([u8; 32], u64), Record>>,
    capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    used: u64,
    expires_at_ms: Option<u64>,
}

impl InMemoryBudgetStore {
    /// Default capacity: 100 000 budget records (a few MiB at most).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store with [`Self::DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A store holding at most `capacity` budget records.
    pub fn with_capacity(capacity: usize) -> Self {
        InMemoryBudgetStore {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Records currently held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the budget `(scope, window_start_ms)` has used (0 if unknown).
    pub fn used(&self, scope: &[u8; 32], window_start_ms: u64) -> u64 {
        self.entries
            .lock()
            .ok()
            .and_then(|m| m.get(&(*scope, window_start_ms)).map(|r| r.used))
            .unwrap_or(0)
    }

    /// The synchronous core of [`BudgetStore::try_reserve`].
    pub fn reserve(
        &self,
        charges: &[BudgetCharge],
        now_ms: u64,
    ) -> Result<Reservation, StoreError> {
        let mut map = self
            .entries
            .lock()
            .map_err(|_| StoreError::Unavailable("budget store mutex poisoned".into()))?;
        let mut new = 0;
        for (index, charge) in charges.iter().enumerate() {
            let key = (charge.scope, charge.window_start_ms);
            let used = match map.get(&key) {
                Some(record) => record.used,
                None => {
                    new += 1;
                    0
                }
            };
            if used.saturating_add(charge.amount) > charge.limit {
                return Ok(Reservation::Exhausted { index, used });
            }
        }
        if new > 0 && map.len() + new > self.capacity {
            map.retain(|_, r| r.expires_at_ms.is_none_or(|at| at > now_ms));
            if map.len() + new > self.capacity {
                return Err(StoreError::Full(map.len()));
            }
        }
        for charge in charges {
            let record = map
                .entry((charge.scope, charge.window_start_ms))
                .or_insert(Record {
                    used: 0,
                    expires_at_ms: charge.expires_at_ms,
                });
            record.used = record.used.saturating_add(charge.amount);
        }
        Ok(Reservation::Reserved)
    }
}

impl Default for InMemoryBudgetStore {
    fn default() -> Self {
        Self::new()
    }
}

impl BudgetStore for InMemoryBudgetStore {
    fn try_reserve<'a>(
        &'a self,
        charges: &'a [BudgetCharge],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        let result = self.reserve(charges, now_ms);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(scope: u8, window_start_ms: u64, limit: u64, amount: u64) -> BudgetCharge {
        BudgetCharge {
            scope: [scope; 32],
            window_start_ms,
            expires_at_ms: (window_start_ms > 0).then_some(window_start_ms + 100),
            limit,
            amount,
        }
    }

    #[test]
    fn reserves_all_or_none() {
        let store = InMemoryBudgetStore::new();
        let both = [charge(1, 0, 2, 1), charge(2, 0, 10, 6)];
        assert_eq!(store.reserve(&both, 0), Ok(Reservation::Reserved));
        assert_eq!(
            store.reserve(&both, 0),
            Ok(Reservation::Exhausted { index: 1, used: 6 })
        );
        // The refused reservation counted nothing, for either budget.
        assert_eq!(store.used(&[1; 32], 0), 1);
        assert_eq!(store.used(&[2; 32], 0), 6);
        assert_eq!(
            store.reserve(&[charge(1, 0, 2, 1)], 0),
            Ok(Reservation::Reserved)
        );
        assert_eq!(
            store.reserve(&[charge(1, 0, 2, 1)], 0),
            Ok(Reservation::Exhausted { index: 0, used: 2 })
        );
    }

    #[test]
    fn full_store_sweeps_ended_windows_then_refuses() {
        let store = InMemoryBudgetStore::with_capacity(2);
        assert!(store.reserve(&[charge(1, 1000, 5, 1)], 1000).is_ok());
        assert!(store.reserve(&[charge(2, 0, 5, 1)], 1000).is_ok());
        // Window of [1] ended at 1100: swept to make room.
        assert_eq!(
            store.reserve(&[charge(3, 2000, 5, 1)], 2000),
            Ok(Reservation::Reserved)
        );
        assert_eq!(
            store.reserve(&[charge(4, 2000, 5, 1)], 2000),
            Err(StoreError::Full(2))
        );
        // Existing records are still served when full.
        assert_eq!(
            store.reserve(&[charge(2, 0, 5, 1)], 2000),
            Ok(Reservation::Reserved)
        );
        assert_eq!(store.used(&[2; 32], 0), 2);
    }
}
