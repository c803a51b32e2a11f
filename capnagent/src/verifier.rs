//! [`Verifier`]: checks a capability's chain and judges one call against
//! its caveats, signing a receipt for every decision.
//!
//! Bearer path ([`Verifier::verify_with_context`]), first failing gate
//! decides:
//! 1. the HMAC chain (an error, no receipt: nobody may learn anything
//!    from a forgery);
//! 2. holder-of-key guard: a bound token needs a proof;
//! 3. revocation, when a [`RevocationCell`] is configured;
//! 4. zero caveats: denied (the reference allows them; a token with no
//!    caveat would authorize every call);
//! 5. each caveat in order: parsed when the decision first reaches it
//!    (cached by text), then evaluated; the first that does not hold
//!    denies, and no caveat after it is ever parsed.
//! 6. budget caveats (`calls <= N`, `sum(arg.x) <= N [per W]`, a capnagent
//!    extension, see `docs/caveats.md`): skipped in step 5 (their amount
//!    is read there), then all reserved at once, all or none, in the
//!    [`BudgetStore`] on the asynchronous paths
//!    ([`Verifier::verify_with_context_async`], [`Verifier::verify_with_proof`]);
//!    without a store, or on the synchronous path, they deny. A call
//!    denied anywhere consumes no budget.
//!
//! Nothing is parsed before gate 5: the gates before it cost at most the
//! HMAC chain, so a revoked or expired token with caveats appended by its
//! holder (anyone may append, no key needed) is refused for the price of
//! its chain, and the caveats after the one that fails cost nothing. The
//! [`Limits`] bound what the chain and the caveats of an admitted token
//! can cost at all.
//!
//! Chains that verified are remembered (bounded, keyed by signature and
//! compared in full), so an agent that presents the same token again pays
//! a lookup instead of the HMAC chain; see [`Verifier::with_chain_cache`].
//!
//! Key rotation: a verifier built with [`Verifier::from_keys`] holds
//! several root keys and tries them in order, primary first, at most one
//! chain per key (so a forged token costs one HMAC chain per key in the
//! ring, [`DEFAULT_MAX_KEYS`](crate::keys::DEFAULT_MAX_KEYS) at most by
//! default). A token minted under a key that is not in the ring fails the
//! chain gate like a forgery. [`Verifier::key_id_for`] tells which key a
//! token verified under; the receipt does not say.
//!
//! Proof path ([`Verifier::verify_with_proof`]): chain, then the proof
//! (bound key, timestamp within the skew window, strict Ed25519 over the
//! challenge the verifier derives itself), then replay (the
//! [`NonceStore`]), then gates 3–5.
//!
//! Replay across a fleet: a proof stamped `ts` is accepted by a server
//! while `|ts - now| <= skew` by that server's clock. With clocks up to
//! `D` apart ([`Verifier::with_max_clock_offset`]), the servers together
//! may accept it during `2 * skew + D` of real time from the first
//! acceptance, so the nonce is recorded for the whole window plus the
//! bound, `2 * skew + 1 ms + D`, not for the part of the window that
//! remains by the accepting server's clock (a server whose clock is behind
//! would accept the proof again once that shorter record expired).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::auditor::Auditor;
use crate::budget::{BudgetCharge, BudgetStore, Reservation};
use crate::capability::{Capability, CaveatList, VerifiedMemo};
use crate::context::Context;
use crate::crypto::{KeyedMac, Tag};
use crate::dsl::{self, PredicateCache};
use crate::error::Error;
use crate::explain::Explanation;
use crate::gate::{CaveatFailure, Gate};
use crate::issuer::root_key;
use crate::keys::{KeyId, KeyRing};
use crate::limits::Limits;
use crate::nonce::NonceStore;
use crate::proof::{self, Proof};
use crate::receipt::{Outcome, Receipt};
use crate::revocation::RevocationCell;
use crate::store::DEFAULT_MAX_CLOCK_OFFSET;
use crate::timestamp::duration_ms;

/// Denial reason for a holder-of-key token on the bearer path.
pub const REASON_HOLDER_KEY_BOUND: &str =
    "capability is bound to a holder key; use verify_with_proof";

/// Denial reason for a bearer token on the proof path.
pub const REASON_NOT_HOLDER_BOUND: &str =
    "capability is not hok-bound; do not use verify_with_proof";

/// Denial reason for a token without caveats.
pub const REASON_ZERO_CAVEATS: &str =
    "capability has zero caveats; a no-caveat token is never allowed";

/// Denial reason for a proof seen before within its window.
pub const REASON_REPLAY: &str = "proof replay detected";

/// How many distinct predicates a verifier keeps parsed by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// How many verified chains a verifier remembers by default.
pub const DEFAULT_CHAIN_CACHE_CAPACITY: usize = 4096;

/// Default window around the verifier's clock in which a proof's timestamp
/// is accepted: 60 seconds either way.
pub const DEFAULT_PROOF_SKEW: Duration = Duration::from_secs(60);

/// Checks capabilities minted under a root key, or under any key of a
/// [`KeyRing`] ([`Verifier::from_keys`]).
///
/// Cheap to clone (the keys, limits, stores and predicate cache are shared).
///
/// ```
/// use capnagent::{Auditor, Context, Issuer, Verifier};
///
/// let key = [7u8; 32];
/// let cap = Issuer::from_key(&key)?
///     .issue("agent-42")
///     .caveat(r#"tool == "checkout.purchase" AND arg.amount_cents <= 5000"#)?
///     .build()?;
///
/// let verifier = Verifier::new(&key)?;
/// let auditor = Auditor::new(&[9u8; 32])?;
/// let ctx = Context::from_json(
///     r#"{"nowMs":1700000000000,"caller":"agent:planner","tool":"checkout.purchase","args":{"amount_cents":1299}}"#,
/// )?;
/// let receipt = verifier.verify_with_context(&cap, &ctx, &auditor)?;
/// assert!(receipt.is_allowed());
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// The root keys, primary first; never empty.
    roots: Arc<[RootKey]>,
    config: Config,
    cache: PredicateCache,
    chains: ChainCache,
    holder_keys: proof::HolderKeys,
    /// This verifier's id in the memos it leaves on capabilities (see
    /// [`Verifier::verify`]); a new one on `clear_cache`.
    memo_id: AtomicU64,
}

/// One root key of a verifier: its id and its prepared HMAC state.
struct RootKey {
    id: KeyId,
    mac: KeyedMac,
}

/// Source of memo ids: unique in the process, never 0.
static NEXT_MEMO_ID: AtomicU64 = AtomicU64::new(1);

fn next_memo_id() -> u64 {
    NEXT_MEMO_ID.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone)]
struct Config {
    limits: Limits,
    cache_capacity: usize,
    chain_cache_capacity: usize,
    nonce_store: Option<Arc<dyn NonceStore>>,
    budget_store: Option<Arc<dyn BudgetStore>>,
    revocations: Option<RevocationCell>,
    proof_skew_ms: u64,
    max_clock_offset_ms: u64,
}

impl Verifier {
    /// Creates a verifier. Root keys shorter than 32 bytes are refused.
    pub fn new(root_key_bytes: &[u8]) -> Result<Verifier, Error> {
        let root = RootKey {
            id: KeyId::fingerprint(root_key_bytes),
            mac: root_key(root_key_bytes)?,
        };
        Ok(Verifier::with_roots(Arc::from([root])))
    }

    /// Creates a verifier that accepts capabilities minted under any key of
    /// `ring`, trying them in order, primary first: a token under the
    /// primary costs one HMAC chain, one under the `n`th key `n` chains,
    /// and a forged one as many chains as the ring has keys. Retiring a key
    /// is building the verifier without it. Root keys shorter than 32
    /// bytes are refused.
    ///
    /// ```
    /// use capnagent::{Issuer, KeyId, KeyRing, KeyRole, Verifier};
    ///
    /// let (new, old) = ([2u8; 32], [1u8; 32]);
    /// let ring = KeyRing::new(KeyRole::Root, Some(KeyId::new("k2")?), &new)?
    ///     .with_key(Some(KeyId::new("k1")?), &old)?;
    /// let verifier = Verifier::from_keys(&ring)?;
    /// let old_token = Issuer::from_key(&old)?.issue("a").tool_is("t")?.build()?;
    /// assert_eq!(verifier.key_id_for(&old_token).map(KeyId::as_str), Some("k1"));
    /// // Retired: the old key's tokens no longer verify.
    /// let retired = Verifier::from_keys(&KeyRing::new(KeyRole::Root, None, &new)?)?;
    /// assert!(retired.verify(&old_token).is_err());
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn from_keys(ring: &KeyRing) -> Result<Verifier, Error> {
        let roots = ring
            .iter()
            .map(|entry| {
                Ok(RootKey {
                    id: entry.id().clone(),
                    mac: root_key(entry.expose_secret())?,
                })
            })
            .collect::<Result<Arc<[RootKey]>, Error>>()?;
        if roots.is_empty() {
            return Err(crate::error::KeyError::NoKey { role: "root" }.into());
        }
        Ok(Verifier::with_roots(roots))
    }

    fn with_roots(roots: Arc<[RootKey]>) -> Verifier {
        Verifier::build(
            roots,
            Config {
                limits: Limits::DEFAULT,
                cache_capacity: DEFAULT_CACHE_CAPACITY,
                chain_cache_capacity: DEFAULT_CHAIN_CACHE_CAPACITY,
                nonce_store: None,
                budget_store: None,
                revocations: None,
                proof_skew_ms: duration_ms(DEFAULT_PROOF_SKEW),
                max_clock_offset_ms: duration_ms(DEFAULT_MAX_CLOCK_OFFSET),
            },
        )
    }

    fn build(roots: Arc<[RootKey]>, config: Config) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                roots,
                cache: PredicateCache::new(config.cache_capacity),
                chains: ChainCache::new(config.chain_cache_capacity),
                holder_keys: proof::HolderKeys::default(),
                memo_id: AtomicU64::new(next_memo_id()),
                config,
            }),
        }
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Verifier {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Verifier::build(Arc::clone(&self.inner.roots), config)
    }

    /// Replaces the limits (predicate length, nesting depth, context size).
    pub fn with_limits(self, limits: Limits) -> Verifier {
        self.with(|c| c.limits = limits)
    }

    /// Sets how many distinct predicates stay parsed (0 disables the cache).
    pub fn with_cache_capacity(self, capacity: usize) -> Verifier {
        self.with(|c| c.cache_capacity = capacity)
    }

    /// Sets how many verified chains are remembered (0 disables the
    /// cache: every call recomputes the HMAC chain). A hit requires the
    /// same signature *and* the same identifier, holder key and caveats as
    /// a chain that verified under one of this verifier's root keys (each
    /// entry records which); the cache belongs to this verifier, its keys
    /// fixed, and holds at most 16 MiB of token text whatever the number
    /// of keys.
    pub fn with_chain_cache(self, capacity: usize) -> Verifier {
        self.with(|c| c.chain_cache_capacity = capacity)
    }

    /// Enforces a revocation list: every call is checked against the list
    /// in the cell (and denied while none is installed, or while it is
    /// older than the cell's `max_age`).
    pub fn with_revocations(self, cell: RevocationCell) -> Verifier {
        self.with(|c| c.revocations = Some(cell))
    }

    /// Refuses replayed holder-of-key proofs: each proof is accepted once
    /// within its window. Without a store, proofs are not single-use.
    pub fn with_nonce_store(self, store: Arc<dyn NonceStore>) -> Verifier {
        self.with(|c| c.nonce_store = Some(store))
    }

    /// Judges budget caveats (`calls <= 20`, `sum(arg.amount_cents) <=
    /// 50000 per 1d`, see `docs/caveats.md`) with `store`, on the
    /// asynchronous paths ([`verify_with_context_async`](Self::verify_with_context_async),
    /// [`verify_with_proof`](Self::verify_with_proof)). Without a store, a
    /// budget caveat denies (fail closed), as it does on the synchronous
    /// path. Verifiers that share a store share the budgets.
    pub fn with_budget_store(self, store: Arc<dyn BudgetStore>) -> Verifier {
        self.with(|c| c.budget_store = Some(store))
    }

    /// True when a budget store is configured.
    pub fn has_budget_store(&self) -> bool {
        self.inner.config.budget_store.is_some()
    }

    /// True when one of `cap`'s caveats is a budget caveat (read from the
    /// first word of each caveat's text; nothing is parsed). Such a token
    /// is allowed only on an asynchronous path with a budget store: an
    /// adapter routes it to [`verify_with_context_async`](Self::verify_with_context_async).
    pub fn has_budget_caveats(&self, cap: &Capability) -> bool {
        cap.caveats().iter().any(|c| dsl::is_budget(c.predicate()))
    }

    /// Sets how far a proof's timestamp may be from the call's `now`
    /// (either way). Default [`DEFAULT_PROOF_SKEW`].
    pub fn with_proof_skew(self, skew: Duration) -> Verifier {
        self.with(|c| c.proof_skew_ms = duration_ms(skew))
    }

    /// Sets the bound on clock offset between the verifiers sharing a
    /// [`NonceStore`] (and the store's own clock). Default
    /// [`DEFAULT_MAX_CLOCK_OFFSET`](crate::DEFAULT_MAX_CLOCK_OFFSET).
    /// Each accepted proof's nonce is kept for `2 * skew + 1 ms` plus this
    /// bound, so no verifier of the fleet whose clock is within the bound
    /// can accept the proof again. Size a bounded store
    /// ([`InMemoryNonceStore::with_capacity`](crate::InMemoryNonceStore::with_capacity))
    /// for the proofs of that long a period.
    pub fn with_max_clock_offset(self, bound: Duration) -> Verifier {
        self.with(|c| c.max_clock_offset_ms = duration_ms(bound))
    }

    /// How long an accepted proof's nonce is recorded, in ms:
    /// `2 * skew + 1` plus the clock-offset bound.
    pub fn nonce_ttl_ms(&self) -> u64 {
        let config = &self.inner.config;
        config
            .proof_skew_ms
            .saturating_mul(2)
            .saturating_add(1)
            .saturating_add(config.max_clock_offset_ms)
    }

    /// Refuses an `auditor` that signs with any of this verifier's root
    /// keys.
    ///
    /// A receipt's signature is HMAC(audit key, `"v"` || version || JSON)
    /// and a chain starts with HMAC(root key, identifier): with one key for
    /// both, every receipt is the head of a genuine chain (identifier =
    /// that input), which anyone can attenuate with a caveat and present.
    /// Anything that both verifies and signs receipts (the HTTP, MCP and
    /// gRPC layers, the CLI) calls this once, when it is built.
    ///
    /// The keys are compared as HMAC keys, in constant time: both MAC one
    /// fixed probe and the tags are compared with `subtle`. So keys that
    /// HMAC treats as one (equal bytes, trailing zero bytes, a long key and
    /// its SHA-256) are refused too, and no key byte is compared directly.
    ///
    /// ```
    /// use capnagent::{Auditor, Verifier};
    ///
    /// let verifier = Verifier::new(&[7; 32])?;
    /// assert!(verifier.check_audit_key(&Auditor::new(&[9; 32])?).is_ok());
    /// let same = verifier.check_audit_key(&Auditor::new(&[7; 32])?);
    /// assert_eq!(same.unwrap_err().code(), "key.audit_is_root");
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn check_audit_key(&self, auditor: &Auditor) -> Result<(), Error> {
        const PROBE: &[u8] = b"capnagent: is the audit key the root key?";
        let audit = auditor.keyed_mac().tag(PROBE);
        // Every key compared, whichever matches.
        let same = self.inner.roots.iter().fold(false, |same, root| {
            crate::crypto::tags_equal(&root.mac.tag(PROBE), &audit) | same
        });
        if same {
            Err(crate::error::KeyError::AuditKeyIsRootKey.into())
        } else {
            Ok(())
        }
    }

    /// The ids of the root keys, in the order they are tried (primary
    /// first).
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.inner.roots.iter().map(|root| &root.id)
    }

    /// The id of the root key `cap`'s chain verifies under, or `None` when
    /// it verifies under none of this verifier's keys. Costs what
    /// [`verify`](Self::verify) costs (usually a cache hit after a
    /// decision). For metrics during a rotation: when no token under the
    /// old key arrives any more, the old key can be retired.
    pub fn key_id_for(&self, cap: &Capability) -> Option<&KeyId> {
        let index = self.verify_index(cap).ok()?;
        self.inner.roots.get(index).map(|root| &root.id)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// How many predicates this verifier (and its clones) has parsed since
    /// it was built: every predicate-cache miss, which is what a caveat
    /// costs the first time it is reached. For metrics, and to check that
    /// caveats after a failing one are never parsed.
    pub fn predicates_parsed(&self) -> u64 {
        self.inner.cache.parses()
    }

    /// The revocation cell, if configured.
    pub fn revocations(&self) -> Option<&RevocationCell> {
        self.inner.config.revocations.as_ref()
    }

    /// True when a nonce store is configured.
    pub fn has_nonce_store(&self) -> bool {
        self.inner.config.nonce_store.is_some()
    }

    /// Checks the HMAC chain only (no caveats, no receipt).
    ///
    /// Parses no caveat: predicates are parsed only when a decision reaches
    /// them (see [`predicates_parsed`](Self::predicates_parsed)).
    ///
    /// With both caches on (the default), a capability whose chain this
    /// call computed also keeps a memo of it for this verifier, into which
    /// later decisions put each caveat they parse: the same `Capability`
    /// value checked again (a token kept parsed between calls) skips the
    /// caches and their locks. A chain found in the cache leaves no memo,
    /// so callers that parse the token on every call pay nothing for memos
    /// they would drop.
    pub fn verify(&self, cap: &Capability) -> Result<(), Error> {
        self.verify_index(cap).map(|_| ())
    }

    /// [`verify`](Self::verify), returning the index in the ring of the
    /// key the chain verified under. Keys are tried in order, each once.
    fn verify_index(&self, cap: &Capability) -> Result<usize, Error> {
        if let Some(memo) = self.memo(cap) {
            return Ok(memo.key);
        }
        if let Some(key) = self.inner.chains.get(cap) {
            return Ok(key);
        }
        let key = self
            .inner
            .roots
            .iter()
            .position(|root| cap.chain_matches(&root.mac))
            .ok_or(Error::InvalidChain)?;
        self.inner.chains.insert(cap, key);
        self.remember(cap, key);
        Ok(key)
    }

    /// This verifier's memo on `cap`, if there is one.
    fn memo<'a>(&self, cap: &'a Capability) -> Option<&'a VerifiedMemo> {
        cap.memo().get(self.inner.memo_id.load(Ordering::Relaxed))
    }

    /// Leaves a memo on `cap`, whose chain verified under root key `key`.
    fn remember(&self, cap: &Capability, key: usize) {
        let config = &self.inner.config;
        if config.chain_cache_capacity == 0 || config.cache_capacity == 0 {
            return;
        }
        // Empty slots: a caveat is parsed only when a decision reaches it.
        let parsed = cap
            .caveats()
            .iter()
            .map(|_| std::sync::OnceLock::new())
            .collect();
        cap.memo().set(VerifiedMemo {
            verifier: self.inner.memo_id.load(Ordering::Relaxed),
            key,
            parsed,
        });
    }

    /// Judges one call: checks the chain, then revocation and the caveats
    /// against `ctx`, and returns a signed receipt for the decision,
    /// allowed or denied.
    ///
    /// Errors only when no decision can be made about this capability: a
    /// forged chain ([`Error::InvalidChain`]).
    pub fn verify_with_context(
        &self,
        cap: &Capability,
        ctx: &Context,
        auditor: &Auditor,
    ) -> Result<Receipt, Error> {
        let (outcome, gate) = self.judge(cap, ctx)?;
        Ok(auditor
            .sign_shared(cap.identifier_shared(), cap.caveats_shared(), ctx, outcome)
            .denied_at(gate))
    }

    /// [`verify_with_context`](Self::verify_with_context) with the context
    /// as JSON text (see [`Context::from_json`]), keeping every number's
    /// source text. The context is read before the chain is checked, as in
    /// the reference.
    pub fn verify_with_context_json(
        &self,
        cap: &Capability,
        ctx_json: &str,
        auditor: &Auditor,
    ) -> Result<Receipt, Error> {
        let ctx = Context::from_json_with_limits(ctx_json, &self.inner.config.limits)?;
        self.verify_with_context(cap, &ctx, auditor)
    }

    /// The bearer-path decision without a receipt. Prefer
    /// [`verify_with_context`](Self::verify_with_context): every decision
    /// should leave a signed record.
    pub fn decide(&self, cap: &Capability, ctx: &Context) -> Result<Outcome, Error> {
        self.judge(cap, ctx).map(|(outcome, _)| outcome)
    }

    /// Explains the bearer-path decision for one call: each gate, each
    /// caveat with the values its comparisons compared, and the decision,
    /// which is exactly the one [`verify_with_context`](Self::verify_with_context)
    /// would sign (see [`Explanation`]). Signs nothing and records
    /// nothing; prints no key and not the token's signature.
    ///
    /// Errors as `verify_with_context` does: a forged chain
    /// ([`Error::InvalidChain`]) is all there is to say about a forgery.
    ///
    /// ```
    /// use capnagent::{Context, Issuer, Verifier};
    ///
    /// let cap = Issuer::from_key(&[7; 32])?.issue("a").arg_at_most("amount_cents", 5000)?.build()?;
    /// let ctx = Context::builder().tool("t").args(serde_json::json!({"amount_cents": 9900})).build();
    /// let explanation = Verifier::new(&[7; 32])?.explain(&cap, &ctx)?;
    /// assert!(!explanation.is_allowed());
    /// assert!(explanation.to_string().contains("arg.amount_cents = 9900 <= 5000: false"));
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn explain(&self, cap: &Capability, ctx: &Context) -> Result<Explanation, Error> {
        let (outcome, gate) = self.judge(cap, ctx)?;
        Ok(crate::explain::build(
            cap,
            ctx,
            self.limits(),
            self.key_id_for(cap).map(KeyId::as_str),
            self.inner.config.revocations.is_some(),
            outcome,
            gate,
        ))
    }

    /// [`verify_with_context`](Self::verify_with_context) that also
    /// judges budget caveats with the budget store
    /// ([`with_budget_store`](Self::with_budget_store)): every other gate
    /// and caveat first, then all the budgets of the decision reserved at
    /// once, all or none. A denied call consumes no budget. Without budget
    /// caveats it decides exactly as the synchronous path does (and
    /// completes without waiting).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use capnagent::{Auditor, CaveatFailure, Context, Gate, InMemoryBudgetStore, Issuer, Verifier};
    ///
    /// let cap = Issuer::from_key(&[7; 32])?.issue("agent-42").caveat("calls <= 1")?.build()?;
    /// let verifier = Verifier::new(&[7; 32])?.with_budget_store(Arc::new(InMemoryBudgetStore::new()));
    /// let auditor = Auditor::new(&[9; 32])?;
    /// let ctx = Context::builder().now_millis(1_700_000_000_000).tool("t").build();
    /// let first = block_on(verifier.verify_with_context_async(&cap, &ctx, &auditor))?;
    /// assert!(first.is_allowed());
    /// let second = block_on(verifier.verify_with_context_async(&cap, &ctx, &auditor))?;
    /// assert_eq!(second.outcome().reason(), Some("budget exhausted: calls <= 1 (used 1 of 1)"));
    /// assert_eq!(
    ///     second.denied_by(),
    ///     Some(Gate::Caveat { index: 0, failure: CaveatFailure::BudgetExhausted }),
    /// );
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub async fn verify_with_context_async(
        &self,
        cap: &Capability,
        ctx: &Context,
        auditor: &Auditor,
    ) -> Result<Receipt, Error> {
        self.verify(cap)?;
        let (outcome, gate) = if cap.holder_of_key().is_some() {
            denied(Gate::HolderKey, REASON_HOLDER_KEY_BOUND.to_owned())
        } else {
            self.after_proof_async(cap, ctx).await
        };
        Ok(auditor
            .sign_shared(cap.identifier_shared(), cap.caveats_shared(), ctx, outcome)
            .denied_at(gate))
    }

    /// The bearer-path decision and the gate that denied it, if any.
    fn judge(&self, cap: &Capability, ctx: &Context) -> Result<Judged, Error> {
        self.verify(cap)?;
        if cap.holder_of_key().is_some() {
            return Ok(denied(Gate::HolderKey, REASON_HOLDER_KEY_BOUND.to_owned()));
        }
        Ok(self.after_proof(cap, ctx))
    }

    /// Judges one call with a holder-of-key proof. The verifier derives the
    /// challenge itself from `ctx` (tool, args hash) and the proof's
    /// timestamp, which must lie within the skew window around `ctx`'s
    /// time; a challenge from the caller is never used.
    ///
    /// Gate order: chain (error), proof, replay (when a nonce store is
    /// configured; a store failure denies), revocation, caveats.
    ///
    /// ```
    /// use capnagent::{Auditor, Context, HolderKey, Issuer, Verifier};
    ///
    /// let holder = HolderKey::from_seed([3; 32]);
    /// let cap = Issuer::from_key(&[7; 32])?
    ///     .issue("agent-42")
    ///     .holder_of_key(holder.public_key())?
    ///     .caveat(r#"tool == "bank.wire""#)?
    ///     .build()?;
    /// let ctx = Context::builder().now_millis(1_700_000_000_000).tool("bank.wire").build();
    /// let proof = holder.prove(&cap, "bank.wire", ctx.args(), 1_700_000_000_000);
    ///
    /// let verifier = Verifier::new(&[7; 32])?;
    /// let auditor = Auditor::new(&[9; 32])?;
    /// let receipt = futures_executor_block_on(verifier.verify_with_proof(&cap, &ctx, &auditor, &proof))?;
    /// assert!(receipt.is_allowed());
    /// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub async fn verify_with_proof(
        &self,
        cap: &Capability,
        ctx: &Context,
        auditor: &Auditor,
        proof: &Proof,
    ) -> Result<Receipt, Error> {
        self.verify(cap)?;
        let (outcome, gate) = self.judge_with_proof(cap, ctx, proof).await;
        Ok(auditor
            .sign_shared(cap.identifier_shared(), cap.caveats_shared(), ctx, outcome)
            .denied_at(gate))
    }

    async fn judge_with_proof(&self, cap: &Capability, ctx: &Context, proof: &Proof) -> Judged {
        let Some(holder_key) = cap.holder_of_key() else {
            return denied(Gate::HolderKey, REASON_NOT_HOLDER_BOUND.to_owned());
        };
        let now_ms = ctx.now().unix_millis();
        let skew = self.inner.config.proof_skew_ms;
        let ts = proof.timestamp_ms();
        if ts.abs_diff(now_ms) > skew {
            return denied(
                Gate::Proof,
                format!(
                    "proof timestamp outside the allowed window ({} ms from now, limit {skew} ms)",
                    ts.abs_diff(now_ms)
                ),
            );
        }
        let challenge = proof::pop_challenge(cap.identifier(), &ctx.args_hash(), ts, ctx.tool());
        if let Err(reason) = self.inner.holder_keys.check(holder_key, &challenge, proof) {
            return denied(Gate::Proof, reason.to_owned());
        }
        if let Some(store) = &self.inner.config.nonce_store {
            // Any verifier of the fleet may accept the proof while
            // |ts - its now| <= skew; with clocks up to the bound apart,
            // that is at most the whole window plus the bound from now
            // (half-open, so one ms past). See the module docs.
            let ttl = self.nonce_ttl_ms();
            match store.try_record(&challenge, now_ms, ttl).await {
                Ok(true) => {}
                Ok(false) => return denied(Gate::Replay, REASON_REPLAY.to_owned()),
                Err(e) => {
                    return denied(Gate::Replay, format!("replay check unavailable: {e}"));
                }
            }
        }
        self.after_proof_async(cap, ctx).await
    }

    /// Revocation, zero caveats, caveats; budget caveats deny (they need
    /// the asynchronous path).
    fn after_proof(&self, cap: &Capability, ctx: &Context) -> Judged {
        match self.before_budgets(cap, ctx) {
            Err(judged) => judged,
            Ok(budgets) => match budgets.first() {
                None => (Outcome::Allowed, None),
                Some(first) if !self.has_budget_store() => no_budget_store(cap, first.index),
                Some(first) => {
                    let text = caveat_text(cap, first.index);
                    let reason = format!(
                        "budget caveat needs the asynchronous decision path (verify_with_context_async): {text}"
                    );
                    denied(
                        budget_gate(first.index, CaveatFailure::BudgetUnavailable),
                        reason,
                    )
                }
            },
        }
    }

    /// Revocation, zero caveats, caveats, then the budgets of the decision
    /// reserved at once.
    async fn after_proof_async(&self, cap: &Capability, ctx: &Context) -> Judged {
        let budgets = match self.before_budgets(cap, ctx) {
            Err(judged) => return judged,
            Ok(budgets) if budgets.is_empty() => return (Outcome::Allowed, None),
            Ok(budgets) => budgets,
        };
        let first = budgets[0].index;
        let Some(store) = &self.inner.config.budget_store else {
            return no_budget_store(cap, first);
        };
        let charges: Vec<BudgetCharge> = budgets.iter().map(|b| b.charge).collect();
        match store.try_reserve(&charges, ctx.now().unix_millis()).await {
            Ok(Reservation::Reserved) => (Outcome::Allowed, None),
            Ok(Reservation::Exhausted { index, used }) => match budgets.get(index) {
                Some(budget) => {
                    let text = caveat_text(cap, budget.index);
                    let charge = &budget.charge;
                    let reason = if budget.is_sum {
                        format!(
                            "budget exhausted: {text} (used {used}, this call {})",
                            charge.amount
                        )
                    } else {
                        format!("budget exhausted: {text} (used {used} of {})", charge.limit)
                    };
                    denied(
                        budget_gate(budget.index, CaveatFailure::BudgetExhausted),
                        reason,
                    )
                }
                None => denied(
                    budget_gate(first, CaveatFailure::BudgetUnavailable),
                    format!(
                        "budget store unavailable: it named charge {index} of {}",
                        budgets.len()
                    ),
                ),
            },
            Err(e) => {
                let text = caveat_text(cap, first);
                denied(
                    budget_gate(first, CaveatFailure::BudgetUnavailable),
                    format!("budget store unavailable: {e}: {text}"),
                )
            }
        }
    }

    /// Revocation, zero caveats and every caveat but the budgets: a
    /// denial, or the budgets still to reserve (empty without any).
    fn before_budgets(
        &self,
        cap: &Capability,
        ctx: &Context,
    ) -> Result<Vec<PendingBudget>, Judged> {
        if let Some(cell) = &self.inner.config.revocations
            && let Some(reason) = cell.check(cap.identifier(), ctx.now().unix_millis())
        {
            return Err(denied(Gate::Revocation, reason));
        }
        if cap.caveats().is_empty() {
            return Err(denied(Gate::NoCaveats, REASON_ZERO_CAVEATS.to_owned()));
        }
        self.check_caveats(cap, ctx)
    }

    fn check_caveats(&self, cap: &Capability, ctx: &Context) -> Result<Vec<PendingBudget>, Judged> {
        let memo = self.memo(cap);
        let mut budgets: Vec<PendingBudget> = Vec::new();
        for (i, caveat) in cap.caveats().iter().enumerate() {
            let text = caveat.predicate();
            // Parsed here, when reached, never before: a caveat after the
            // first that fails costs nothing.
            let parsed = self.parsed(memo, i, text);
            let caveat_gate = |failure| Gate::Caveat { index: i, failure };
            let expr = match &**parsed {
                Ok(expr) => expr,
                Err(e) => {
                    let reason = format!("caveat parse error in {text:?}: {e}");
                    return Err(denied(caveat_gate(CaveatFailure::Parse), reason));
                }
            };
            if let dsl::Expr::Budget(budget) = expr {
                // Reserved after every other caveat held.
                match self.pending_budget(cap, ctx, i, text, budget) {
                    // The same text twice in one chain is one budget,
                    // charged once.
                    Ok(pending) => {
                        if !budgets
                            .iter()
                            .any(|b| b.charge.scope == pending.charge.scope)
                        {
                            budgets.push(pending);
                        }
                    }
                    Err(e) => {
                        let reason = format!("caveat eval error in {text:?}: {e}");
                        return Err(denied(caveat_gate(CaveatFailure::Eval), reason));
                    }
                }
                continue;
            }
            match dsl::eval_expr(expr, ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("caveat failed: {text}");
                    return Err(denied(caveat_gate(CaveatFailure::False), reason));
                }
                Err(e) => {
                    let reason = format!("caveat eval error in {text:?}: {e}");
                    return Err(denied(caveat_gate(CaveatFailure::Eval), reason));
                }
            }
        }
        Ok(budgets)
    }

    /// The charge of budget caveat `i` (text `text`) for this call.
    fn pending_budget(
        &self,
        cap: &Capability,
        ctx: &Context,
        i: usize,
        text: &str,
        budget: &dsl::Budget,
    ) -> Result<PendingBudget, dsl::EvalError> {
        let amount = budget.amount(ctx)?;
        let scope = BudgetCharge::scope_of(cap.identifier(), text);
        let now_ms = ctx.now().unix_millis();
        let (window_start_ms, expires_at_ms) = match budget.window_ms {
            None => (0, None),
            Some(window) => {
                let start = now_ms - now_ms % window;
                let end = start
                    .saturating_add(window)
                    .saturating_add(self.inner.config.max_clock_offset_ms);
                (start, Some(end))
            }
        };
        Ok(PendingBudget {
            index: i,
            is_sum: budget.is_sum(),
            charge: BudgetCharge {
                scope,
                window_start_ms,
                expires_at_ms,
                limit: budget.limit,
                amount,
            },
        })
    }

    /// Whether `cap`'s caveats could allow *some* call in `ctx`: false
    /// when a caveat does not parse or evaluates to false in `ctx`; a
    /// caveat whose evaluation fails (it needs an argument or `env` fact
    /// `ctx` does not have) might hold for another call, so it does not
    /// count against. False for a capability without caveats.
    ///
    /// For listings (MCP `tools/list`): evaluate with the facts a listing
    /// knows (caller, time, a candidate tool) and empty arguments. Caveats
    /// are parsed through this verifier's predicate cache, so listing many
    /// tools parses each caveat once. Checks neither the chain nor
    /// revocation: only for a capability a decision of this verifier has
    /// just allowed; every call is still judged in full.
    ///
    /// ```
    /// use capnagent::{Context, Issuer, Verifier};
    ///
    /// let cap = Issuer::from_key(&[7; 32])?
    ///     .issue("agent-42")
    ///     .tool_is("checkout_purchase")?
    ///     .arg_at_most("amount_cents", 5000)?
    ///     .build()?;
    /// let verifier = Verifier::new(&[7; 32])?;
    /// let listing = |tool: &str| Context::builder().now_millis(1_700_000_000_000).tool(tool).build();
    /// assert!(verifier.might_allow(&cap, &listing("checkout_purchase")));
    /// assert!(!verifier.might_allow(&cap, &listing("bank_wire")));
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn might_allow(&self, cap: &Capability, ctx: &Context) -> bool {
        let memo = self.memo(cap);
        !cap.caveats().is_empty()
            && cap.caveats().iter().enumerate().all(|(i, caveat)| {
                match &**self.parsed(memo, i, caveat.predicate()) {
                    Ok(expr) => dsl::eval_expr(expr, ctx) != Ok(false),
                    Err(_) => false,
                }
            })
    }

    /// Caveat `i` (text `text`) parsed: borrowed from the memo's slot
    /// (filling it), else from the predicate cache. Borrowing keeps the
    /// memo path free of reference-count traffic, as before lazy parsing.
    fn parsed<'m>(
        &self,
        memo: Option<&'m VerifiedMemo>,
        i: usize,
        text: &str,
    ) -> Cow<'m, dsl::Parsed> {
        let limits = &self.inner.config.limits;
        match memo.and_then(|m| m.parsed.get(i)) {
            Some(slot) => {
                Cow::Borrowed(slot.get_or_init(|| self.inner.cache.get_or_parse(text, limits)))
            }
            None => Cow::Owned(self.inner.cache.get_or_parse(text, limits)),
        }
    }

    /// Drops every cached parse and verified chain (and disowns the memos
    /// this verifier left on capabilities).
    pub fn clear_cache(&self) {
        self.inner.memo_id.store(next_memo_id(), Ordering::Relaxed);
        self.inner.cache.clear();
        self.inner.chains.clear();
    }
}

/// Chains that verified under one of this verifier's root keys.
struct ChainCache {
    map: RwLock<ChainMap>,
    capacity: usize,
}

#[derive(Default)]
struct ChainMap {
    entries: HashMap<CtTag, VerifiedChain>,
    bytes: usize,
}

/// A signature as a map key whose equality is constant-time.
struct CtTag(Tag);

impl std::hash::Hash for CtTag {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Eq for CtTag {}

impl PartialEq for CtTag {
    fn eq(&self, other: &Self) -> bool {
        crate::crypto::tags_equal(&self.0, &other.0)
    }
}

/// Everything the signature covers, so a hit means "this exact token",
/// and the key it verified under.
struct VerifiedChain {
    /// Index of the root key in the verifier's ring.
    key: usize,
    identifier: Box<str>,
    holder_of_key: Option<[u8; 32]>,
    caveats: CaveatList,
}

impl VerifiedChain {
    fn is(&self, cap: &Capability) -> bool {
        *self.identifier == *cap.identifier()
            && self.holder_of_key.as_ref() == cap.holder_of_key()
            && self.caveats.as_slice() == cap.caveats()
    }
}

impl ChainCache {
    const MAX_BYTES: usize = 16 * 1024 * 1024;

    fn new(capacity: usize) -> Self {
        ChainCache {
            map: RwLock::new(ChainMap::default()),
            capacity,
        }
    }

    /// The key `cap` verified under, if it is in the cache.
    fn get(&self, cap: &Capability) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.read().ok()?;
        map.entries
            .get(&CtTag(*cap.signature()))
            .filter(|entry| entry.is(cap))
            .map(|entry| entry.key)
    }

    fn insert(&self, cap: &Capability, key: usize) {
        let bytes = cap.identifier().len()
            + cap
                .caveats()
                .iter()
                .map(|c| c.predicate().len())
                .sum::<usize>();
        if self.capacity == 0 || bytes > Self::MAX_BYTES {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            if map.entries.len() >= self.capacity || map.bytes + bytes > Self::MAX_BYTES {
                *map = ChainMap::default();
            }
            let entry = VerifiedChain {
                key,
                identifier: cap.identifier().into(),
                holder_of_key: cap.holder_of_key().copied(),
                caveats: cap.caveats_shared(),
            };
            if map.entries.insert(CtTag(*cap.signature()), entry).is_none() {
                map.bytes += bytes;
            }
        }
    }

    fn clear(&self) {
        if let Ok(mut map) = self.map.write() {
            *map = ChainMap::default();
        }
    }
}

/// A decision and, when denied, the gate that denied it.
type Judged = (Outcome, Option<Gate>);

/// A budget caveat that held its place in a decision, to reserve once
/// every other caveat held.
struct PendingBudget {
    /// The caveat's position.
    index: usize,
    is_sum: bool,
    charge: BudgetCharge,
}

/// The denial of a budget caveat (caveat `index`) when the verifier has no
/// budget store.
fn no_budget_store(cap: &Capability, index: usize) -> Judged {
    let text = caveat_text(cap, index);
    let reason = format!("budget caveat needs a budget store (none configured): {text}");
    denied(budget_gate(index, CaveatFailure::BudgetUnavailable), reason)
}

fn budget_gate(index: usize, failure: CaveatFailure) -> Gate {
    Gate::Caveat { index, failure }
}

fn caveat_text(cap: &Capability, index: usize) -> &str {
    cap.caveats().get(index).map_or("", |c| c.predicate())
}

fn denied(gate: Gate, reason: String) -> Judged {
    (Outcome::Denied { reason }, Some(gate))
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("Verifier")
            .field(
                "root_keys",
                &self.key_ids().map(KeyId::as_str).collect::<Vec<_>>(),
            )
            .field("limits", &config.limits)
            .field("cache", &self.inner.cache)
            .field("chain_cache_capacity", &config.chain_cache_capacity)
            .field("nonce_store", &config.nonce_store.is_some())
            .field("budget_store", &config.budget_store.is_some())
            .field("revocations", &config.revocations)
            .field("proof_skew_ms", &config.proof_skew_ms)
            .field("max_clock_offset_ms", &config.max_clock_offset_ms)
            .finish()
    }
}
