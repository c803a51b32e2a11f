//! Explicit bounds on everything that comes from a token, a request or a
//! file, so that no input can exhaust the stack or memory, or make one
//! decision expensive.
//!
//! Anyone holding a token can append caveats without a key, so the token
//! limits are also a CPU budget. The defaults are sized so that the
//! costliest token they admit costs at most about 1 ms of CPU to judge the
//! first time it is seen (decode, HMAC chain, every caveat parsed and
//! evaluated, receipt signed; nothing cached): the `worst/*` benches in
//! `benches/benches/core.rs` build such tokens (the most caveats, the
//! longest comparison chains, the densest comparisons, the deepest
//! nesting, caveat count and length together) and measured at most
//! 0.52 ms of thread CPU time (`worst/mixed`; 0.27 ms wall) on the 2-vCPU
//! machine the bench table describes (`benches/README.md`). A verifier
//! also parses caveats only when a decision reaches them, so a token
//! refused before (revoked, expired by its first caveat) costs little more
//! than its chain.
//!
//! The reference implementation has no limits. The defaults refuse its
//! largest conformance vectors (1000 caveats, 1000-term predicates, tokens
//! over 16 KiB: listed in `tests/vectors/deviations.jsonl`); every limit is
//! configurable ([`Verifier::with_limits`](crate::Verifier::with_limits),
//! [`Issuer::with_limits`](crate::Issuer::with_limits),
//! [`Capability::parse_with_limits`](crate::Capability::parse_with_limits)),
//! at the price of a larger worst case (roughly proportional to the token
//! length and the caveat count).

/// Size limits applied when parsing tokens, caveats and contexts.
///
/// ```
/// use capnagent::Limits;
///
/// let strict = Limits { max_caveats: 16, ..Limits::default() };
/// assert!(strict.max_token_len > 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest serialized token accepted (and built), in bytes. Default
    /// 16 KiB (a typical token of four caveats is under 400 bytes).
    pub max_token_len: usize,
    /// Most caveats one token may carry. Default 256.
    pub max_caveats: usize,
    /// Longest single predicate, in bytes. Default 8 KiB.
    pub max_predicate_len: usize,
    /// Deepest parenthesis nesting in one predicate. Default 1024; values
    /// above [`Limits::MAX_NESTING_DEPTH`] are clamped to it.
    pub max_nesting_depth: usize,
    /// Most comparisons (AND/OR terms) in one predicate. Default 256.
    pub max_terms: usize,
    /// Longest context JSON text, in bytes. Default 1 MiB.
    pub max_context_len: usize,
    /// Deepest container nesting in context JSON, counting the outer
    /// object. Default 127, the same as serde_json.
    pub max_json_depth: usize,
}

impl Limits {
    /// The highest nesting depth honoured. Parsing, evaluating and dropping
    /// a predicate use the heap, not the stack, at any depth; cloning or
    /// printing a [`Predicate`](crate::Predicate) still recurses, so depth
    /// is capped here.
    pub const MAX_NESTING_DEPTH: usize = 4096;

    /// The default limits (see each field).
    pub const DEFAULT: Limits = Limits {
        max_token_len: 16 * 1024,
        max_caveats: 256,
        max_predicate_len: 8 * 1024,
        max_nesting_depth: 1024,
        max_terms: 256,
        max_context_len: 1024 * 1024,
        max_json_depth: 127,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
