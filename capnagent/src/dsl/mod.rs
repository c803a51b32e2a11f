//! The caveat DSL: a one-page predicate language over verifier-observed facts.
//!
//! ```text
//! tool == "checkout.purchase" AND arg.amount_cents <= 5000
//! (caller == "agent:planner" OR caller starts_with "agent:ops/") AND now <= @2027-01-01T00:00:00Z
//! ```
//!
//! Roots are `now` (timestamp), `caller` and `tool` (strings), `arg.<path>`
//! (the call's JSON arguments) and `env.<key>` (verifier environment).
//! Operators: `==  !=  <  <=  >  >=  matches  starts_with`. `matches` is a
//! plain substring test, not a regex (wire compatibility with the reference).
//! Numbers compare exactly as decimals; an integer literal refuses a
//! fractional argument (`1299.0` against `<= 5000`) so that money limits
//! are stated in integer minor units.
//!
//! Predicates built from run-time values come from the typed
//! constructors ([`Predicate::caller_is`], [`Predicate::tool_is`],
//! [`Predicate::arg_is`], [`Predicate::arg_at_most`],
//! [`Predicate::not_after`], ..., and [`Predicate::quote`] for string
//! literals), which quote values and refuse what cannot be written
//! safely.

mod ast;
mod budget;
mod build;
mod eval;
mod parser;
mod trace;

pub(crate) use ast::Op;
pub(crate) use build::{arg_bound, arg_is, caller_is, now_bound, tool_is};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub(crate) use ast::Expr;
pub(crate) use ast::{Comparison, Ident, Literal};
pub(crate) use budget::{Budget, detect as is_budget};
pub(crate) use trace::{ident_text, literal_text, trace};

use crate::context::Context;
use crate::error::ParseError;
use crate::limits::Limits;

/// A parsed caveat predicate.
///
/// ```
/// use capnagent::{Context, Predicate};
///
/// let p = Predicate::parse(r#"tool == "files.read" AND arg.path starts_with "/srv/""#)?;
/// let ctx = Context::builder()
///     .tool("files.read")
///     .args(serde_json::json!({"path": "/srv/a.txt"}))
///     .build();
/// assert_eq!(p.evaluate(&ctx), Ok(true));
/// # Ok::<(), capnagent::ParseError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct Predicate {
    text: String,
    expr: Expr,
}

impl Predicate {
    /// Parses a predicate with the default [`Limits`].
    pub fn parse(text: &str) -> Result<Predicate, ParseError> {
        Predicate::parse_with_limits(text, &Limits::DEFAULT)
    }

    /// Parses a predicate under explicit limits.
    pub fn parse_with_limits(text: &str, limits: &Limits) -> Result<Predicate, ParseError> {
        Ok(Predicate {
            text: text.to_owned(),
            expr: parser::parse(text, limits)?,
        })
    }

    /// The predicate's source text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates the predicate against a context.
    pub fn evaluate(&self, ctx: &Context) -> Result<bool, EvalError> {
        eval::eval(&self.expr, ctx)
    }

    /// The parsed expression (for `explain` and `lint`).
    pub(crate) fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The first number literal that carries a unit, if any.
    pub(crate) fn unit_literal(&self) -> Option<String> {
        let mut stack = vec![&self.expr];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::Cmp(cmp) => {
                    if let ast::Literal::Num {
                        unit: Some(_),
                        text,
                        ..
                    } = &cmp.literal
                    {
                        return Some(text.clone());
                    }
                }
                Expr::And(items) | Expr::Or(items) => stack.extend(items.iter().rev()),
                Expr::Budget(_) => {}
            }
        }
        None
    }
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Predicate").field(&self.text).finish()
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a predicate could not be evaluated. Always a denial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The identifier does not resolve in this context.
    #[error("unknown identifier: {0}")]
    UnknownIdent(String),
    /// The value and the literal have incompatible types.
    #[error("type mismatch: expected {expected}, got {got}")]
    TypeMismatch {
        /// What the literal required.
        expected: String,
        /// What the context supplied.
        got: String,
    },
    /// A budget caveat (`calls <= N`, `sum(arg.x) <= N`) is judged by a
    /// verifier's budget store across calls, not evaluated against one
    /// call.
    #[error("a budget caveat is judged by a verifier's budget store, not evaluated alone")]
    Budget,
}

impl EvalError {
    fn mismatch(expected: impl Into<String>, got: impl Into<String>) -> EvalError {
        EvalError::TypeMismatch {
            expected: expected.into(),
            got: got.into(),
        }
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::UnknownIdent(_) => "eval.unknown_identifier",
            EvalError::TypeMismatch { .. } => "eval.type_mismatch",
            EvalError::Budget => "eval.budget",
        }
    }
}

/// A parse result shared between the cache and its users.
pub(crate) type Parsed = Arc<Result<Expr, ParseError>>;

/// Parsed predicates keyed by their text, shared by clones of a verifier.
///
/// Bounded by entries and by the bytes of predicate text it holds: when
/// either would be exceeded it is cleared, so a stream of unique predicates
/// costs parse time but never unbounded memory.
pub(crate) struct PredicateCache {
    map: RwLock<CacheMap>,
    capacity: usize,
    /// Misses: predicates parsed through this cache.
    parses: AtomicU64,
}

#[derive(Default)]
struct CacheMap {
    entries: HashMap<Box<str>, Parsed>,
    text_bytes: usize,
}

impl PredicateCache {
    /// Most predicate text held at once: 8 MiB.
    pub(crate) const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

    pub(crate) fn new(capacity: usize) -> Self {
        PredicateCache {
            map: RwLock::new(CacheMap::default()),
            capacity,
            parses: AtomicU64::new(0),
        }
    }

    pub(crate) fn get_or_parse(&self, text: &str, limits: &Limits) -> Parsed {
        if let Some(hit) = self
            .map
            .read()
            .ok()
            .and_then(|map| map.entries.get(text).cloned())
        {
            return hit;
        }
        self.parses.fetch_add(1, Ordering::Relaxed);
        let parsed = Arc::new(parser::parse(text, limits));
        if self.capacity > 0
            && text.len() <= Self::MAX_TEXT_BYTES
            && let Ok(mut map) = self.map.write()
        {
            if map.entries.len() >= self.capacity
                || map.text_bytes + text.len() > Self::MAX_TEXT_BYTES
            {
                *map = CacheMap::default();
            }
            if map
                .entries
                .insert(text.into(), Arc::clone(&parsed))
                .is_none()
            {
                map.text_bytes += text.len();
            }
        }
        parsed
    }

    /// How many predicates were parsed (cache misses) so far.
    pub(crate) fn parses(&self) -> u64 {
        self.parses.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.map.write() {
            *map = CacheMap::default();
        }
    }
}

impl fmt::Debug for PredicateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.map.read().map(|m| m.entries.len()).unwrap_or(0);
        f.debug_struct("PredicateCache")
            .field("len", &len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Evaluates an already parsed expression (used by the verifier's cache).
pub(crate) fn eval_expr(expr: &Expr, ctx: &Context) -> Result<bool, EvalError> {
    eval::eval(expr, ctx)
}
