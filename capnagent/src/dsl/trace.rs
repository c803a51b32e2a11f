//! Comparison by comparison: what each comparison of a predicate compared
//! and what it found, for [`crate::explain`].
//!
//! Every comparison is evaluated on its own, without AND/OR
//! short-circuiting, so an explanation shows all of them; the predicate's
//! own result is still [`super::eval::eval`]'s. Iterative: nesting costs
//! heap, not stack, and a predicate has at most `Limits::max_terms`
//! comparisons.

use super::EvalError;
use super::ast::{Expr, Ident, Literal};
use super::build::quote;
use super::eval::{Value, compare, resolve};
use crate::context::Context;

/// One comparison and its result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Traced {
    /// The identifier as written (`arg.amount_cents`).
    pub(crate) ident: String,
    /// The operator (`<=`).
    pub(crate) op: String,
    /// The literal as the caveat language writes it (`5000`, `"a"`, `@...Z`).
    pub(crate) literal: String,
    /// The value the identifier has in the context, in the same notation
    /// (at most [`MAX_VALUE_TEXT`] bytes of it), or why it has none (a
    /// missing argument: `UnknownIdent`).
    pub(crate) value: Result<String, EvalError>,
    /// The comparison's result.
    pub(crate) result: Result<bool, EvalError>,
}

/// Every comparison of `expr`, in source order.
pub(crate) fn trace(expr: &Expr, ctx: &Context) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match expr {
            Expr::Cmp(cmp) => out.push(Traced {
                ident: ident_text(&cmp.ident).to_owned(),
                op: cmp.op.to_string(),
                literal: literal_text(&cmp.literal),
                value: resolve(&cmp.ident, ctx).map(|v| value_text(&v)),
                result: compare(cmp, ctx),
            }),
            Expr::And(items) | Expr::Or(items) => stack.extend(items.iter().rev()),
            // A budget compares nothing in the context: its state is the
            // budget store's, which an explanation does not consult.
            Expr::Budget(_) => {}
        }
    }
    out
}

/// An identifier as written in the caveat.
pub(crate) fn ident_text(ident: &Ident) -> &str {
    match ident {
        Ident::Now => "now",
        Ident::Caller => "caller",
        Ident::Tool => "tool",
        Ident::Arg { dotted, .. } | Ident::Env { dotted, .. } => dotted,
        Ident::Unknown(name) => name,
    }
}

/// A literal as the caveat language writes it.
pub(crate) fn literal_text(literal: &Literal) -> String {
    match literal {
        Literal::Str(s) => string_text(s),
        Literal::Num { text, .. } => text.clone(),
        Literal::Time(t) => format!("@{t}"),
    }
}

/// Most bytes of a context value shown: a value is the caller's and may
/// be up to the context limit long, and every comparison shows it.
pub(crate) const MAX_VALUE_TEXT: usize = 256;

fn value_text(value: &Value<'_>) -> String {
    match value {
        Value::Str(s) => {
            let (head, cut) = cut(s);
            let mut text = string_text(head);
            text.push_str(&cut);
            text
        }
        Value::Num(text) => {
            let (head, cut) = cut(text);
            format!("{head}{cut}")
        }
        Value::Time(t) => format!("@{t}"),
    }
}

/// `text`'s first [`MAX_VALUE_TEXT`] bytes (on a character boundary) and,
/// when that is not all of it, `…[N bytes]`.
fn cut(text: &str) -> (&str, String) {
    if text.len() <= MAX_VALUE_TEXT {
        return (text, String::new());
    }
    let mut end = MAX_VALUE_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (
        text.get(..end).unwrap_or_default(),
        format!("…[{} bytes]", text.len()),
    )
}

/// A string quoted as the caveat language quotes it; one the language
/// cannot write (a control character) in Rust's debug notation.
fn string_text(s: &str) -> String {
    quote(s).unwrap_or_else(|_| format!("{s:?}"))
}
