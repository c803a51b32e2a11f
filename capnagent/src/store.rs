//! What the pluggable stores (replay nonces, revocation lists) have in
//! common: a boxed future type that keeps the traits object-safe without
//! tying the core to an async runtime, and one error type.
//!
//! Every store failure is a denial (fail closed): a verifier that cannot
//! tell whether a proof was replayed, or whether a capability was revoked,
//! refuses the call and says so in the signed receipt.

use std::future::Future;
use std::pin::Pin;

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
}

impl StoreError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store.unavailable",
            StoreError::Timeout => "store.timeout",
            StoreError::Full(_) => "store.full",
            StoreError::Invalid(_) => "store.invalid",
        }
    }
}
