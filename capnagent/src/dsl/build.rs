//! Typed caveat constructors: predicates built from run-time values
//! (a caller name, a tool, an argument limit, an expiry) without formatting
//! text by hand.
//!
//! A string value is written as a DSL string literal: `"` and `\` are
//! escaped as `\"` and `\\`, a newline and a tab as `\n` and `\t`, every
//! other character as itself (the grammar accepts any character but `"`
//! and `\` raw). The grammar has no escape for the other control
//! characters; written raw they would reach every log and terminal that
//! shows the token, so a value containing one is refused
//! ([`CaveatError::Unrepresentable`]). Argument paths must be DSL
//! identifiers (`[A-Za-z_][A-Za-z0-9_]*`, dot-separated).
//!
//! Every constructor parses the text it wrote and checks that the result
//! is exactly the one comparison asked for, with the value unchanged; any
//! difference is an error, never a different caveat.

use super::Predicate;
use super::ast::{Comparison, Expr, Ident, Literal, Op};
use super::parser::{is_ident_continue, is_ident_start};
use crate::error::CaveatError;
use crate::limits::Limits;
use crate::timestamp::Timestamp;

/// Writes `value` as a DSL string literal, quotes included.
pub(crate) fn quote(value: &str) -> Result<String, CaveatError> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                return Err(CaveatError::Unrepresentable(format!(
                    "control character U+{:04X} in a string value (the caveat language has no escape for it)",
                    u32::from(c)
                )));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// Checks that `path` is a dotted DSL identifier (`amount_cents`,
/// `order.total`).
fn arg_ident(path: &str) -> Result<String, CaveatError> {
    let valid_segment = |s: &str| {
        let mut bytes = s.bytes();
        bytes.next().is_some_and(is_ident_start) && bytes.all(is_ident_continue)
    };
    if path.split('.').all(valid_segment) {
        Ok(format!("arg.{path}"))
    } else {
        Err(CaveatError::Unrepresentable(format!(
            "argument path {path:?} is not a caveat identifier (ASCII letters, digits and `_`, segments separated by `.`, none starting with a digit)"
        )))
    }
}

/// What the built predicate must parse to.
enum Expect<'a> {
    Str(&'a str),
    Int(i64),
    Time(Timestamp),
}

/// Writes `ident op literal`, parses it under `limits` and checks it is
/// exactly that one comparison.
fn comparison(
    ident: &str,
    op: Op,
    literal: &str,
    expect: Expect<'_>,
    limits: &Limits,
) -> Result<Predicate, CaveatError> {
    let text = format!("{ident} {op} {literal}");
    let predicate = Predicate::parse_with_limits(&text, limits)?;
    let exact = match &predicate.expr {
        Expr::Cmp(cmp) => {
            let Comparison {
                ident: parsed_ident,
                op: parsed_op,
                literal: parsed_literal,
            } = cmp.as_ref();
            let same_ident = match parsed_ident {
                Ident::Caller => ident == "caller",
                Ident::Tool => ident == "tool",
                Ident::Now => ident == "now",
                Ident::Arg { dotted, .. } => dotted == ident,
                Ident::Env { .. } | Ident::Unknown(_) => false,
            };
            let same_literal = match (parsed_literal, &expect) {
                (Literal::Str(s), Expect::Str(want)) => s == want,
                (
                    Literal::Num {
                        integer: true,
                        unit: None,
                        text,
                        ..
                    },
                    Expect::Int(want),
                ) => *text == want.to_string(),
                (Literal::Time(t), Expect::Time(want)) => t == want,
                _ => false,
            };
            same_ident && *parsed_op == op && same_literal
        }
        Expr::And(_) | Expr::Or(_) | Expr::Budget(_) => false,
    };
    if exact {
        Ok(predicate)
    } else {
        Err(CaveatError::Unrepresentable(format!(
            "{text:?} does not read back as the single comparison intended"
        )))
    }
}

pub(crate) fn caller_is(name: &str, limits: &Limits) -> Result<Predicate, CaveatError> {
    comparison("caller", Op::Eq, &quote(name)?, Expect::Str(name), limits)
}

pub(crate) fn tool_is(name: &str, limits: &Limits) -> Result<Predicate, CaveatError> {
    comparison("tool", Op::Eq, &quote(name)?, Expect::Str(name), limits)
}

pub(crate) fn arg_is(path: &str, value: &str, limits: &Limits) -> Result<Predicate, CaveatError> {
    comparison(
        &arg_ident(path)?,
        Op::Eq,
        &quote(value)?,
        Expect::Str(value),
        limits,
    )
}

pub(crate) fn arg_bound(
    path: &str,
    op: Op,
    bound: i64,
    limits: &Limits,
) -> Result<Predicate, CaveatError> {
    comparison(
        &arg_ident(path)?,
        op,
        &bound.to_string(),
        Expect::Int(bound),
        limits,
    )
}

pub(crate) fn now_bound(op: Op, at: Timestamp, limits: &Limits) -> Result<Predicate, CaveatError> {
    comparison("now", op, &format!("@{at}"), Expect::Time(at), limits)
}

impl Predicate {
    /// Writes `value` as a caveat-language string literal, quotes included:
    /// `"` and `\` escaped, newline and tab as `\n` and `\t`, anything else
    /// as itself. A control character other than newline and tab has no
    /// escape in the language and is refused.
    ///
    /// Prefer the typed constructors ([`caller_is`](Self::caller_is),
    /// [`tool_is`](Self::tool_is), ...); this is for predicates they do
    /// not cover, such as `starts_with`.
    ///
    /// ```
    /// use capnagent::Predicate;
    ///
    /// let dir = r#"/srv/"quoted"\dir"#;
    /// let text = format!("arg.path starts_with {}", Predicate::quote(dir)?);
    /// assert_eq!(text, r#"arg.path starts_with "/srv/\"quoted\"\\dir""#);
    /// assert!(Predicate::parse(&text).is_ok());
    /// # Ok::<(), capnagent::CaveatError>(())
    /// ```
    pub fn quote(value: &str) -> Result<String, CaveatError> {
        quote(value)
    }

    /// `caller == "<name>"`, with `name` quoted (see [`quote`](Self::quote)):
    /// the call's caller must be exactly `name`.
    ///
    /// ```
    /// use capnagent::{Context, Predicate};
    ///
    /// let p = Predicate::caller_is(r#"x" OR tool != ""#)?;
    /// assert_eq!(p.as_str(), r#"caller == "x\" OR tool != \"""#);
    /// let other = Context::builder().caller("agent:other").tool("t").build();
    /// assert_eq!(p.evaluate(&other), Ok(false));
    /// # Ok::<(), capnagent::CaveatError>(())
    /// ```
    pub fn caller_is(name: &str) -> Result<Predicate, CaveatError> {
        caller_is(name, &Limits::DEFAULT)
    }

    /// `tool == "<name>"`, with `name` quoted: the call must be of exactly
    /// this tool.
    pub fn tool_is(name: &str) -> Result<Predicate, CaveatError> {
        tool_is(name, &Limits::DEFAULT)
    }

    /// `arg.<path> == "<value>"`, with `value` quoted: the argument at
    /// `path` (dot-separated, each segment a caveat identifier) must be the
    /// string `value`.
    pub fn arg_is(path: &str, value: &str) -> Result<Predicate, CaveatError> {
        arg_is(path, value, &Limits::DEFAULT)
    }

    /// `arg.<path> <= <max>`: the argument at `path` must be a number no
    /// greater than `max` (an integer literal, so a fractional argument is
    /// refused; state money in minor units).
    ///
    /// ```
    /// use capnagent::Predicate;
    ///
    /// assert_eq!(Predicate::arg_at_most("amount_cents", 5000)?.as_str(), "arg.amount_cents <= 5000");
    /// assert!(Predicate::arg_at_most("amount cents", 5000).is_err());
    /// # Ok::<(), capnagent::CaveatError>(())
    /// ```
    pub fn arg_at_most(path: &str, max: i64) -> Result<Predicate, CaveatError> {
        arg_bound(path, Op::Le, max, &Limits::DEFAULT)
    }

    /// `arg.<path> >= <min>`: the argument at `path` must be a number no
    /// less than `min` (an integer literal, as in
    /// [`arg_at_most`](Self::arg_at_most)).
    pub fn arg_at_least(path: &str, min: i64) -> Result<Predicate, CaveatError> {
        arg_bound(path, Op::Ge, min, &Limits::DEFAULT)
    }

    /// `now <= @<deadline>`: calls are allowed up to and including
    /// `deadline` (an expiry).
    ///
    /// ```
    /// use capnagent::{Predicate, Timestamp};
    ///
    /// let p = Predicate::not_after(Timestamp::from_unix_millis(1_798_761_600_000))?;
    /// assert_eq!(p.as_str(), "now <= @2027-01-01T00:00:00Z");
    /// # Ok::<(), capnagent::CaveatError>(())
    /// ```
    pub fn not_after(deadline: Timestamp) -> Result<Predicate, CaveatError> {
        now_bound(Op::Le, deadline, &Limits::DEFAULT)
    }

    /// `now >= @<start>`: calls are allowed from `start` on.
    pub fn not_before(start: Timestamp) -> Result<Predicate, CaveatError> {
        now_bound(Op::Ge, start, &Limits::DEFAULT)
    }
}
