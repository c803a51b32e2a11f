//! [`Gate`]: which of the verifier's checks decided a call, as a type.
//!
//! A denial's reason text is part of the signed receipt and matches the
//! reference's wording; code that acts on a denial (an adapter choosing a
//! status, the MCP mode asking whether a capability is genuine) asks the
//! [`Gate`] instead of reading that text.

/// The verifier check that denied a call. The gates run in this order;
/// a call is allowed when every gate passes.
///
/// Read it from [`Receipt::denied_by`](crate::Receipt::denied_by) on a
/// receipt the verifier just signed, or from
/// [`Error::gate`](crate::Error::gate) when no decision could be made.
///
/// ```
/// use capnagent::{Auditor, CaveatFailure, Context, Gate, Issuer, Verifier};
///
/// let cap = Issuer::from_key(&[7; 32])?.issue("agent-42").tool_is("search")?.build()?;
/// let verifier = Verifier::new(&[7; 32])?;
/// let auditor = Auditor::new(&[9; 32])?;
/// let ctx = Context::builder().now_millis(1_700_000_000_000).tool("checkout").build();
/// let receipt = verifier.verify_with_context(&cap, &ctx, &auditor)?;
/// assert_eq!(
///     receipt.denied_by(),
///     Some(Gate::Caveat { index: 0, failure: CaveatFailure::False }),
/// );
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gate {
    /// The HMAC chain does not verify under the root key: the token is
    /// forged or was minted under another key.
    Chain,
    /// The token's holder-key binding does not fit the path it took: a
    /// bound token presented without a proof, or a proof presented for a
    /// bearer token.
    HolderKey,
    /// The holder-of-key proof is outside the time window or its
    /// signature does not verify.
    Proof,
    /// The proof was seen before within its window, or the replay store
    /// could not say (fail closed).
    Replay,
    /// The capability's identifier is on the installed revocation list.
    Revocation,
    /// The capability has no caveats; such a token is never allowed.
    NoCaveats,
    /// A caveat did not hold. Every earlier gate passed: the capability
    /// is genuine.
    Caveat {
        /// The caveat's position in the capability, from 0.
        index: usize,
        /// How it failed.
        failure: CaveatFailure,
    },
}

/// How a caveat failed at the [`Gate::Caveat`] gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CaveatFailure {
    /// It parsed and evaluated to false for this call.
    False,
    /// It is not a predicate of the caveat language (or exceeds a limit).
    Parse,
    /// It parsed but could not be evaluated against this call's facts (a
    /// missing argument, a type mismatch).
    Eval,
    /// A budget caveat (`calls <= N`, `sum(arg.x) <= N`, see
    /// `docs/caveats.md`) whose budget this call would exceed.
    BudgetExhausted,
    /// A budget caveat that could not be judged: no budget store is
    /// configured, the decision took the synchronous path, or the store
    /// did not answer (fail closed).
    BudgetUnavailable,
}

impl Gate {
    /// A stable, machine-readable name: `chain`, `holder_key`, `proof`,
    /// `replay`, `revocation`, `no_caveats`, `caveat`.
    pub fn code(&self) -> &'static str {
        match self {
            Gate::Chain => "chain",
            Gate::HolderKey => "holder_key",
            Gate::Proof => "proof",
            Gate::Replay => "replay",
            Gate::Revocation => "revocation",
            Gate::NoCaveats => "no_caveats",
            Gate::Caveat { .. } => "caveat",
        }
    }

    /// True when a caveat parsed and evaluated to false: every other gate
    /// passed, so the capability is genuine even though this call is not
    /// within it.
    pub fn is_caveat_false(&self) -> bool {
        matches!(
            self,
            Gate::Caveat {
                failure: CaveatFailure::False,
                ..
            }
        )
    }

    /// True for the caveat gate, however the caveat failed.
    pub fn is_caveat(&self) -> bool {
        matches!(self, Gate::Caveat { .. })
    }
}
