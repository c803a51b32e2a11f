//! Explicit bounds on everything that comes from a token, a request or a
//! file, so that no input can exhaust the stack or memory.
//!
//! The defaults accept every token the reference implementation produces in
//! practice (1000-deep parentheses, 1000 caveats) while refusing the inputs
//! that crash it (100 000 nested parentheses, megabyte predicates).

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
    /// 256 KiB.
    pub max_token_len: usize,
    /// Most caveats one token may carry. Default 1024.
    pub max_caveats: usize,
    /// Longest single predicate, in bytes. Default 128 KiB (a 1000-term
    /// AND chain is about 30 KiB).
    pub max_predicate_len: usize,
    /// Deepest parenthesis nesting in one predicate. Default 1024; values
    /// above [`Limits::MAX_NESTING_DEPTH`] are clamped to it.
    pub max_nesting_depth: usize,
    /// Most comparisons (AND/OR terms) in one predicate. Default 4096.
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
        max_token_len: 256 * 1024,
        max_caveats: 1024,
        max_predicate_len: 128 * 1024,
        max_nesting_depth: 1024,
        max_terms: 4096,
        max_context_len: 1024 * 1024,
        max_json_depth: 127,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
