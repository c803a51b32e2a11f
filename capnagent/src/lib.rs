//! # capnagent
//!
//! Macaroon-style capabilities for AI agent tool calls. A capability is a
//! token (an HMAC-SHA256 chain over an identifier and caveats such as
//! `tool == "checkout.purchase"` or `arg.amount_cents <= 5000`). Anyone
//! holding one can narrow it; nobody can widen it without the root key.
//! The server checks every call against facts it observes itself and signs
//! a [`Receipt`] for every decision, allowed or denied.
//!
//! Tokens and receipts are byte-compatible with the `capnagent` 0.7.4
//! Python package.
//!
//! ```
//! use capnagent::{Auditor, Context, Issuer, Verifier};
//!
//! let root_key = [7u8; 32]; // use 32 random bytes: `capnagent keygen`
//! let audit_key = [9u8; 32];
//!
//! // The server mints a capability for an agent...
//! // (typed methods quote values; `.caveat(text)` takes any predicate)
//! let cap = Issuer::from_key(&root_key)?
//!     .issue("agent-42")
//!     .tool_is("checkout.purchase")?
//!     .arg_at_most("amount_cents", 5000)?
//!     .caveat("now <= @2027-01-01T00:00:00Z")?
//!     .build()?;
//! let token = cap.serialize();
//!
//! // ...the agent may narrow it before handing it on, without any key...
//! let narrower = capnagent::Capability::parse(&token)?.attenuate(r#"caller == "agent:planner""#)?;
//!
//! // ...and the server judges each call by what it observes itself.
//! let verifier = Verifier::new(&root_key)?;
//! let auditor = Auditor::new(&audit_key)?;
//! let call = |amount: u64| {
//!     Context::builder()
//!         .now_millis(1_790_000_000_000)
//!         .caller("agent:planner")
//!         .tool("checkout.purchase")
//!         .args(serde_json::json!({ "amount_cents": amount }))
//!         .build()
//! };
//! let ok = verifier.verify_with_context(&narrower, &call(1299), &auditor)?;
//! assert!(ok.is_allowed());
//! let no = verifier.verify_with_context(&narrower, &call(9900), &auditor)?;
//! assert_eq!(no.outcome().reason(), Some("caveat failed: arg.amount_cents <= 5000"));
//!
//! // Every receipt is signed and can be checked later.
//! auditor.verify(&no.to_json())?;
//! # Ok::<(), capnagent::Error>(())
//! ```
//!
//! Modules: [`Issuer`] mints, [`Capability`] carries and attenuates,
//! [`Verifier`] decides, [`Auditor`] signs receipts, [`AuditLog`] keeps
//! them, plain (one receipt per line, as the reference writes them) or
//! hash-chained ([`AuditLogBuilder::chained`]: each receipt wrapped,
//! unchanged, in a record HMAC-linked to the previous one, rotated by size
//! without breaking the chain), and [`ChainVerifier`] proves a chained log
//! whole or reports its first break by file and line. The chained log is
//! an addition to the reference, which writes plain logs only; its record
//! format is in `docs/audit-log.md`. The caveat language is described in [`Predicate`]; build caveats
//! from run-time values with the typed methods of [`CapabilityBuilder`]
//! and [`Predicate`] (`caller_is`, `tool_is`, `arg_at_most`, `not_after`,
//! ...), never by formatting text. Every bound on what a token may cost is
//! in [`Limits`]. Budget caveats across calls (`calls <= 20`,
//! `sum(arg.amount_cents) <= 50000 per 1d`), a capnagent extension, are
//! judged by a [`BudgetStore`] on
//! [`Verifier::verify_with_context_async`] (`docs/caveats.md`).
//!
//! JSON has one value model, [`JsonValue`] (numbers keep their source
//! text, objects keep their member order and repeated keys), and one
//! canonical writer, behind [`Args::canonical_string`] and `args_hash`.
//! A call's arguments are [`Args`]: read a request body with
//! [`Args::from_json_bytes`], or convert a [`JsonValue`].
//!
//! Public dependencies, on purpose: `serde_json`, in
//! [`ContextBuilder::args`] and `From<&serde_json::Value> for Args` (the
//! convenient way to pass arguments written with `serde_json::json!`)
//! and [`Explanation::to_json`];
//! `bytes`, in [`Args::from_json_bytes`] (a request body kept without a
//! copy); `getrandom`, whose error [`HolderKey::generate`] returns. No
//! other outside crate's type appears in this crate's API.

mod audit_chain;
mod audit_log;
mod auditor;
mod budget;
mod capability;
mod context;
mod crypto;
mod dsl;
mod error;
pub mod explain;
mod gate;
mod issuer;
mod json;
pub mod keys;
mod limits;
pub mod lint;
mod nonce;
mod number;
mod proof;
mod receipt;
mod revocation;
mod store;
mod timestamp;
mod verifier;

pub use audit_chain::{
    CHAIN_KEY_LABEL, ChainBreak, ChainBreakKind, ChainReport, ChainVerifier, Checkpoint,
    CheckpointParseError, GENESIS_PREV, RecordError, audit_log_files, verify_audit_log,
};
pub use audit_log::{AuditLog, AuditLogBuilder, AuditLogError, AuditLogIter, Durability};
pub use auditor::{Auditor, MIN_AUDIT_KEY_LEN};
pub use budget::{BudgetCharge, BudgetStore, InMemoryBudgetStore, Reservation};
pub use capability::{Capability, Caveat};
pub use context::{Args, Context, ContextBuilder};
pub use dsl::{EvalError, Predicate};
pub use error::{
    BuildError, CaveatError, ContextError, Error, KeyError, ParseError, ReceiptError,
    RevocationError, TokenError,
};
pub use explain::Explanation;
pub use gate::{CaveatFailure, Gate};
pub use issuer::{CapabilityBuilder, Issuer, MIN_ROOT_KEY_LEN};
pub use json::{JsonError, JsonLimits, JsonNumber, JsonObject, JsonValue, write_json_string};
pub use keys::{KeyEntry, KeyId, KeyRing, KeyRole};
pub use limits::Limits;
pub use nonce::{InMemoryNonceStore, NonceStore};
pub use proof::{HolderKey, Proof, ProofError, pop_challenge, pop_challenge_for};
pub use receipt::{
    ContextSummary, MAX_RECEIPT_TEXT, Outcome, RECEIPT_SCHEMA_VERSION, Receipt,
    UNVERIFIED_IDENTIFIER_PREFIX, bounded_text, unverified_identifier,
};
pub use revocation::{
    InMemoryRevocationStore, RevocationCell, RevocationList, RevocationStore, Revoker, refresh,
};
pub use store::{BoxFuture, DEFAULT_MAX_CLOCK_OFFSET, StoreError};
pub use timestamp::{Timestamp, TimestampError};
pub use verifier::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_CHAIN_CACHE_CAPACITY, DEFAULT_PROOF_SKEW,
    REASON_HOLDER_KEY_BOUND, REASON_NOT_HOLDER_BOUND, REASON_REPLAY, REASON_ZERO_CAVEATS, Verifier,
};
