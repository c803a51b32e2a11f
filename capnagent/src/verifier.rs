//! [`Verifier`]: checks a capability's chain and judges one call against
//! its caveats, signing a receipt for every decision.
//!
//! Gate order (the first gate that fails decides):
//! 1. the HMAC chain (an error, no receipt: nobody may learn anything
//!    from a forgery);
//! 2. holder-of-key guard: a bound token needs a proof, so the bearer path
//!    denies it;
//! 3. zero caveats: denied (the reference allows them; a token with no
//!    caveat would authorize every call);
//! 4. each caveat in order: parsed (cached by text), then evaluated; the
//!    first that does not hold denies.

use std::fmt;
use std::sync::Arc;

use crate::audit::{Auditor, Outcome, Receipt};
use crate::capability::Capability;
use crate::context::Context;
use crate::crypto::KeyedMac;
use crate::dsl::{self, PredicateCache};
use crate::error::Error;
use crate::issuer::root_key;
use crate::limits::Limits;

/// Denial reason for a holder-of-key token on the bearer path.
pub const REASON_HOLDER_KEY_BOUND: &str =
    "capability is bound to a holder key; use verify_with_proof";

/// Denial reason for a token without caveats.
pub const REASON_ZERO_CAVEATS: &str =
    "capability has zero caveats; a no-caveat token is never allowed";

/// How many distinct predicates a verifier keeps parsed by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Checks capabilities minted under one root key.
///
/// Cheap to clone (the key, limits and predicate cache are shared).
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
    root: KeyedMac,
    limits: Limits,
    cache: PredicateCache,
}

impl Verifier {
    /// Creates a verifier. Root keys shorter than 32 bytes are refused.
    pub fn new(root_key_bytes: &[u8]) -> Result<Verifier, Error> {
        Ok(Verifier {
            inner: Arc::new(Inner {
                root: root_key(root_key_bytes)?,
                limits: Limits::DEFAULT,
                cache: PredicateCache::new(DEFAULT_CACHE_CAPACITY),
            }),
        })
    }

    /// Replaces the limits (predicate length, nesting depth, context size).
    pub fn with_limits(self, limits: Limits) -> Verifier {
        let capacity = self.inner.cache.capacity();
        self.rebuild(limits, capacity)
    }

    /// Sets how many distinct predicates stay parsed (0 disables the cache).
    pub fn with_cache_capacity(self, capacity: usize) -> Verifier {
        let limits = self.inner.limits;
        self.rebuild(limits, capacity)
    }

    fn rebuild(&self, limits: Limits, capacity: usize) -> Verifier {
        Verifier {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                limits,
                cache: PredicateCache::new(capacity),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Checks the HMAC chain only (no caveats, no receipt).
    pub fn verify(&self, cap: &Capability) -> Result<(), Error> {
        if cap.chain_matches(&self.inner.root) {
            Ok(())
        } else {
            Err(Error::InvalidChain)
        }
    }

    /// Judges one call: checks the chain, then the caveats against `ctx`,
    /// and returns a signed receipt for the decision, allowed or denied.
    ///
    /// Errors only when no decision can be made about this capability: a
    /// forged chain ([`Error::InvalidChain`]).
    pub fn verify_with_context(
        &self,
        cap: &Capability,
        ctx: &Context,
        auditor: &Auditor,
    ) -> Result<Receipt, Error> {
        let outcome = self.decide(cap, ctx)?;
        Ok(auditor.sign(cap.identifier(), cap.caveats().to_vec(), ctx, outcome))
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
        let ctx = Context::from_json_with_limits(ctx_json, &self.inner.limits)?;
        self.verify_with_context(cap, &ctx, auditor)
    }

    /// The decision without a receipt. Prefer
    /// [`verify_with_context`](Self::verify_with_context): every decision
    /// should leave a signed record.
    pub fn decide(&self, cap: &Capability, ctx: &Context) -> Result<Outcome, Error> {
        self.verify(cap)?;
        if cap.holder_of_key().is_some() {
            return Ok(denied(REASON_HOLDER_KEY_BOUND.to_owned()));
        }
        if cap.caveats().is_empty() {
            return Ok(denied(REASON_ZERO_CAVEATS.to_owned()));
        }
        Ok(self.check_caveats(cap, ctx))
    }

    fn check_caveats(&self, cap: &Capability, ctx: &Context) -> Outcome {
        for caveat in cap.caveats() {
            let text = caveat.predicate();
            let parsed = self.inner.cache.get_or_parse(text, &self.inner.limits);
            let expr = match parsed.as_ref() {
                Ok(expr) => expr,
                Err(e) => return denied(format!("caveat parse error in {text:?}: {e}")),
            };
            match dsl::eval_expr(expr, ctx) {
                Ok(true) => {}
                Ok(false) => return denied(format!("caveat failed: {text}")),
                Err(e) => return denied(format!("caveat eval error in {text:?}: {e}")),
            }
        }
        Outcome::Allowed
    }

    /// Drops every cached parse.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
    }
}

fn denied(reason: String) -> Outcome {
    Outcome::Denied { reason }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("root_key", &format_args!(".."))
            .field("limits", &self.inner.limits)
            .field("cache", &self.inner.cache)
            .finish()
    }
}
