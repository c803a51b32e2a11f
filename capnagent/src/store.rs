//! What the pluggable stores (replay nonces, revocation lists) have in
//! common: a boxed future type that keeps the traits object-safe without
//! tying the core to an async runtime, and one error type.
//!
//! Every store failure is a denial (fail closed): a verifier that cannot
//! tell whether a proof was replayed, or whether a capability was revoked,
//! refuses the call and says so in the signed receipt.
//!
//! **Clocks.** Servers of a fleet (and the shared store) need not agree on
//! the time exactly, but their clocks must stay within a known bound of
//! each other: [`DEFAULT_MAX_CLOCK_OFFSET`] unless configured otherwise.
//! The bound sizes how long a replay nonce is kept
//! ([`Verifier::with_max_clock_offset`](crate::Verifier::with_max_clock_offset)),
//! and how far in the future a revocation list may be dated before it is
//! refused ([`RevocationCell::with_max_clock_offset`](crate::RevocationCell::with_max_clock_offset),
//! [`InMemoryRevocationStore::with_max_clock_offset`](crate::InMemoryRevocationStore::with_max_clock_offset)).
//! Use the same value everywhere, larger than the worst offset your time
//! synchronisation allows (including jumps of the store's own clock).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Default bound on the clock offset between the servers of a fleet, the
/// publishers of revocation lists and the shared store: 10 seconds.
///
/// A larger bound keeps replay nonces longer (more memory per proof) and
/// lets a list dated up to that far ahead be installed, which delays the
/// lists published after it by at most the bound.
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_secs(10);

/// A boxed, `Send` future borrowing from the store.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing service is unreachable or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backing service did not answer in time.
    #[error("store timed out")]
    Timeout,
    /// A bounded in-memory store is full of live entries; it refuses rather
    /// than evicting an entry that still guards against replay.
    #[error("store full ({0} live entries)")]
    Full(usize),
    /// The store returned data that does not decode or verify.
    #[error("store returned invalid data: {0}")]
    Invalid(String),
    /// The store refused what it was given (for example a revocation list
    /// not newer than the one it holds, or dated in the future).
    #[error("store refused: {0}")]
    Refused(String),
}

impl StoreError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store.unavailable",
            StoreError::Timeout => "store.timeout",
            StoreError::Full(_) => "store.full",
            StoreError::Invalid(_) => "store.invalid",
            StoreError::Refused(_) => "store.refused",
        }
    }
}
