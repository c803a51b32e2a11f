//! Evaluation of a parsed predicate against a [`Context`].
//!
//! Identifier resolution comes first, then the type checks in the
//! reference's order (literal kind, unit, operator, integer domain), then
//! the comparison. Numbers compare exactly as decimals. AND and OR
//! short-circuit left to right; an error on an evaluated branch is an error
//! for the whole predicate, never a silent `false`.

use std::borrow::Cow;

use super::EvalError;
use super::ast::{Comparison, Expr, Ident, Literal, Op};
use crate::context::{ArgsView, Context};
use crate::json::{JsonNumber, JsonValue};
use crate::number::{Decimal, small_integer};
use crate::timestamp::Timestamp;

/// A resolved left-hand value, borrowed from the context.
pub(super) enum Value<'a> {
    Str(Cow<'a, str>),
    /// A number's exact source text.
    Num(&'a str),
    Time(Timestamp),
}

impl Value<'_> {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Num(_) => "number",
            Value::Time(_) => "timestamp",
        }
    }
}

/// Evaluates without recursion, so nesting depth costs heap, not stack.
pub(crate) fn eval(expr: &Expr, ctx: &Context) -> Result<bool, EvalError> {
    // Each frame: the operands of an AND (true) or OR (false) and the index
    // of the operand being evaluated.
    let mut frames: Vec<(&[Expr], bool, usize)> = Vec::new();
    let mut current = expr;
    loop {
        // Descend to the leftmost comparison.
        let value = match current {
            Expr::Cmp(cmp) => compare(cmp, ctx)?,
            Expr::Budget(_) => return Err(EvalError::Budget),
            Expr::And(items) | Expr::Or(items) => {
                let is_and = matches!(current, Expr::And(_));
                match items.first() {
                    Some(first) => {
                        frames.push((items, is_and, 0));
                        current = first;
                        continue;
                    }
                    // An empty AND holds, an empty OR does not.
                    None => is_and,
                }
            }
        };
        // Climb while the value decides the enclosing AND/OR.
        loop {
            let Some((items, is_and, index)) = frames.last_mut() else {
                return Ok(value);
            };
            let short_circuit = if *is_and { !value } else { value };
            if short_circuit || *index + 1 == items.len() {
                frames.pop();
                continue;
            }
            *index += 1;
            current = &items[*index];
            break;
        }
    }
}

pub(super) fn resolve<'a>(ident: &Ident, ctx: &'a Context) -> Result<Value<'a>, EvalError> {
    match ident {
        Ident::Now => Ok(Value::Time(ctx.now())),
        Ident::Caller => Ok(Value::Str(Cow::Borrowed(ctx.caller()))),
        Ident::Tool => Ok(Value::Str(Cow::Borrowed(ctx.tool()))),
        Ident::Env { key, dotted } => ctx
            .env()
            .get(key.as_str())
            .map(|v| Value::Str(Cow::Borrowed(v.as_str())))
            .ok_or_else(|| EvalError::UnknownIdent(dotted.clone())),
        Ident::Arg { path, dotted } => {
            let unknown = || EvalError::UnknownIdent(dotted.clone());
            let got = match ctx.call_args().view() {
                ArgsView::Value(root) => {
                    let mut value = root;
                    for segment in path {
                        value = value
                            .as_object()
                            .and_then(|obj| obj.get(segment))
                            .ok_or_else(unknown)?;
                    }
                    match value {
                        JsonValue::String(s) => return Ok(Value::Str(Cow::Borrowed(s))),
                        JsonValue::Number(n) if is_finite(n.as_str()) => {
                            return Ok(Value::Num(n.as_str()));
                        }
                        JsonValue::Number(_) => "non-finite number",
                        other => other.kind_name(),
                    }
                }
                ArgsView::Doc(root) => {
                    let mut value = root;
                    for segment in path {
                        value = value.get(segment).ok_or_else(unknown)?;
                    }
                    if let Some(s) = value.as_str() {
                        return Ok(Value::Str(s));
                    }
                    match value.as_number_text() {
                        Some(text) if is_finite(text) => return Ok(Value::Num(text)),
                        Some(_) => "non-finite number",
                        None => value.kind_name(),
                    }
                }
            };
            Err(EvalError::mismatch(
                "string or integer at arg path",
                format!("{got} at {dotted}"),
            ))
        }
        Ident::Unknown(name) => Err(EvalError::UnknownIdent(name.clone())),
    }
}

/// The reference rejects arg numbers that overflow an f64 to infinity.
fn is_finite(text: &str) -> bool {
    // Without an exponent, fewer than 300 digits are always finite.
    (text.len() < 300 && !text.bytes().any(|b| matches!(b, b'e' | b'E')))
        || text.parse::<f64>().is_ok_and(f64::is_finite)
}

pub(super) fn compare(cmp: &Comparison, ctx: &Context) -> Result<bool, EvalError> {
    let left = resolve(&cmp.ident, ctx)?;
    let op = cmp.op;
    match &cmp.literal {
        Literal::Str(right) => {
            let Value::Str(left) = left else {
                return Err(EvalError::mismatch("string", left.kind()));
            };
            let left: &str = &left;
            Ok(match op {
                Op::Matches => left.contains(right.as_str()),
                Op::StartsWith => left.starts_with(right.as_str()),
                Op::Eq => left == right,
                Op::Ne => left != right,
                _ => {
                    return Err(EvalError::mismatch(
                        "number or timestamp on left for ordering operator",
                        format!("string vs string with `{op}`"),
                    ));
                }
            })
        }
        Literal::Num {
            value,
            integer,
            unit,
            ..
        } => {
            if let Some(unit) = unit {
                return Err(match left {
                    Value::Num(_) => EvalError::mismatch(
                        format!("number with unit {unit}"),
                        "number with unit (none)",
                    ),
                    other => EvalError::mismatch(format!("number({unit})"), other.kind()),
                });
            }
            let Value::Num(left) = left else {
                return Err(EvalError::mismatch("number", left.kind()));
            };
            if op.is_string_only() {
                return Err(non_string_operand(op));
            }
            if *integer && !JsonNumber::is_integer_text(left) {
                return Err(EvalError::mismatch(
                    "integer-syntactic numeric arg (caveat literal is integer-domain; use _cents form for sub-unit precision, or reject non-integer args at the tool boundary \u{2014} closes angle finding A.1)",
                    "float-syntactic numeric arg",
                ));
            }
            // Integers of up to 18 digits (most args and literals) compare
            // as `i64`, without building a `Decimal`: the same order.
            if let (Some(left), Some(right)) = (small_integer(left), value.to_small_integer()) {
                return Ok(op.holds(left.cmp(&right)));
            }
            let left = Decimal::parse(left).ok_or_else(|| {
                EvalError::mismatch("string or integer at arg path", "unreadable number")
            })?;
            Ok(op.holds(left.cmp(value)))
        }
        Literal::Time(right) => {
            let Value::Time(left) = left else {
                return Err(EvalError::mismatch("timestamp", left.kind()));
            };
            if op.is_string_only() {
                return Err(non_string_operand(op));
            }
            Ok(op.holds(left.cmp(right)))
        }
    }
}

fn non_string_operand(op: Op) -> EvalError {
    EvalError::mismatch(format!("string for `{op}`"), "non-string operand")
}
