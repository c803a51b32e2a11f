//! The caveat AST: what a predicate means once parsed.
//!
//! Identifiers are resolved to their root at parse time (`now`, `caller`,
//! `tool`, `arg.*`, `env.*`), so evaluation does no string matching on names.
//! AND/OR chains are flat vectors, so a long chain costs no stack depth.

use std::fmt;

use crate::number::Decimal;
use crate::timestamp::Timestamp;

/// A parsed predicate expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// One comparison.
    Cmp(Box<Comparison>),
    /// All must hold, evaluated left to right.
    And(Vec<Expr>),
    /// Any must hold, evaluated left to right.
    Or(Vec<Expr>),
    /// A budget caveat (a capnagent extension): always a whole caveat,
    /// judged by the verifier's budget store, never evaluated alone.
    Budget(Box<super::budget::Budget>),
}

impl Drop for Expr {
    /// Drops nested operands from a heap stack instead of recursing, so a
    /// deep tree cannot overflow the thread's stack.
    fn drop(&mut self) {
        let mut pending = match self {
            Expr::And(items) | Expr::Or(items) => std::mem::take(items),
            Expr::Cmp(_) | Expr::Budget(_) => return,
        };
        while let Some(mut expr) = pending.pop() {
            if let Expr::And(items) | Expr::Or(items) = &mut expr {
                pending.append(items);
            }
        }
    }
}

/// `ident op literal`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    pub(crate) ident: Ident,
    pub(crate) op: Op,
    pub(crate) literal: Literal,
}

/// A resolved identifier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ident {
    Now,
    Caller,
    Tool,
    /// `arg.a.b`: the path below `args` and the dotted text for errors.
    Arg {
        path: Vec<String>,
        dotted: String,
    },
    /// `env.k`: the key and the dotted text for errors.
    Env {
        key: String,
        dotted: String,
    },
    /// Any other name; always an evaluation error.
    Unknown(String),
}

impl Ident {
    pub(crate) fn resolve(dotted: &str) -> Ident {
        // No intermediate collection: this runs for every comparison of
        // every caveat a verifier parses.
        let (root, rest) = match dotted.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (dotted, None),
        };
        match (root, rest) {
            ("now", None) => Ident::Now,
            ("caller", None) => Ident::Caller,
            ("tool", None) => Ident::Tool,
            ("env", Some(key)) if !key.contains('.') => Ident::Env {
                key: key.to_owned(),
                dotted: dotted.to_owned(),
            },
            ("arg", Some(path)) => Ident::Arg {
                path: path.split('.').map(str::to_owned).collect(),
                dotted: dotted.to_owned(),
            },
            _ => Ident::Unknown(dotted.to_owned()),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Le,
    Ge,
    Lt,
    Gt,
    Matches,
    StartsWith,
}

impl Op {
    pub(crate) fn is_string_only(self) -> bool {
        matches!(self, Op::Matches | Op::StartsWith)
    }

    /// Applies an ordering/equality operator to a comparison result.
    pub(crate) fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => ord == Equal,
            Op::Ne => ord != Equal,
            Op::Le => ord != Greater,
            Op::Ge => ord != Less,
            Op::Lt => ord == Less,
            Op::Gt => ord == Greater,
            Op::Matches | Op::StartsWith => false,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Matches => "matches",
            Op::StartsWith => "starts_with",
        })
    }
}

/// Units a number literal may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Usd,
    Eur,
    Gbp,
    Cents,
    Ms,
    S,
}

impl Unit {
    pub(crate) fn from_name(name: &str) -> Option<Unit> {
        Some(match name {
            "usd" => Unit::Usd,
            "eur" => Unit::Eur,
            "gbp" => Unit::Gbp,
            "cents" => Unit::Cents,
            "ms" => Unit::Ms,
            "s" => Unit::S,
            _ => return None,
        })
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Usd => "usd",
            Unit::Eur => "eur",
            Unit::Gbp => "gbp",
            Unit::Cents => "cents",
            Unit::Ms => "ms",
            Unit::S => "s",
        })
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Num {
        value: Decimal,
        /// No `.` in the literal: the integer-domain rule applies.
        integer: bool,
        unit: Option<Unit>,
        /// Source text, for error messages.
        text: String,
    },
    Time(Timestamp),
}
