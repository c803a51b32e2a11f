//! The caveat grammar, one chumsky parser per level.
//!
//! ```text
//! predicate  := WS* or_expr WS* EOF
//! or_expr    := and_expr ( WS* "OR" and_expr )*
//! and_expr   := primary ( WS* "AND" primary )*
//! primary    := WS* ( "(" or_expr WS* ")" | comparison )
//! comparison := ident WS* op WS* literal
//! ```
//!
//! Before chumsky sees a predicate, [`precheck`] bounds its length and its
//! parenthesis depth with a flat scan, so the recursive grammar never runs
//! deeper than [`Limits::max_nesting_depth`]. No chumsky type leaves this
//! module: errors become [`ParseError`] with byte offsets.

use chumsky::error::{Rich, RichReason};
use chumsky::prelude::*;
use chumsky::text::ascii::{ident as ascii_ident, keyword};

use super::ast::{Comparison, Expr, Ident, Literal, Op, Unit};
use crate::error::ParseError;
use crate::limits::Limits;
use crate::number::Decimal;
use crate::timestamp::Timestamp;

type Extra<'src> = extra::Err<Rich<'src, char>>;

/// Parses one predicate under `limits`.
pub(crate) fn parse(src: &str, limits: &Limits) -> Result<Expr, ParseError> {
    precheck(src, limits)?;
    let expr = predicate()
        .parse(src)
        .into_result()
        .map_err(|errors| to_parse_error(src, errors))?;
    if count_terms(&expr) > limits.max_terms {
        return Err(ParseError::TooManyTerms {
            max: limits.max_terms,
        });
    }
    Ok(expr)
}

/// Length, emptiness and nesting depth, checked without recursion.
fn precheck(src: &str, limits: &Limits) -> Result<(), ParseError> {
    if src.len() > limits.max_predicate_len {
        return Err(ParseError::TooLong {
            len: src.len(),
            max: limits.max_predicate_len,
        });
    }
    if src.bytes().all(is_ws) {
        return Err(ParseError::Syntax {
            message: "empty predicate".to_owned(),
            offset: 0,
        });
    }
    let max_depth = limits.max_nesting_depth.min(Limits::MAX_NESTING_DEPTH);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in src.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'(' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ParseError::TooDeep { max: max_depth });
                }
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn count_terms(expr: &Expr) -> usize {
    // Iterative so that the count itself cannot recurse deeply.
    let mut stack = vec![expr];
    let mut count = 0usize;
    while let Some(e) = stack.pop() {
        match e {
            Expr::Cmp(_) => count += 1,
            Expr::And(items) | Expr::Or(items) => stack.extend(items),
        }
    }
    count
}

fn ws<'src>() -> impl Parser<'src, &'src str, (), Extra<'src>> + Clone {
    one_of(" \t").repeated()
}

fn ident<'src>() -> impl Parser<'src, &'src str, Ident, Extra<'src>> + Clone {
    ascii_ident()
        .separated_by(just('.'))
        .at_least(1)
        .to_slice()
        .map(Ident::resolve)
        .labelled("identifier")
}

fn op<'src>() -> impl Parser<'src, &'src str, Op, Extra<'src>> + Clone {
    choice((
        keyword("starts_with").to(Op::StartsWith),
        keyword("matches").to(Op::Matches),
        just("==").to(Op::Eq),
        just("!=").to(Op::Ne),
        just("<=").to(Op::Le),
        just(">=").to(Op::Ge),
        just("<").to(Op::Lt),
        just(">").to(Op::Gt),
    ))
    .labelled("operator (==, !=, <=, >=, <, >, matches, starts_with)")
}

fn string<'src>() -> impl Parser<'src, &'src str, Literal, Extra<'src>> + Clone {
    let escape = just('\\').ignore_then(any().try_map(|c: char, span| match c {
        '"' => Ok('"'),
        '\\' => Ok('\\'),
        'n' => Ok('\n'),
        't' => Ok('\t'),
        other => Err(Rich::custom(
            span,
            format!("invalid escape '\\{other}' in string literal"),
        )),
    }));
    none_of("\\\"")
        .or(escape)
        .repeated()
        .collect::<String>()
        .delimited_by(
            just('"'),
            just('"').labelled("closing '\"' (unterminated string literal)"),
        )
        .map(Literal::Str)
}

fn number<'src>() -> impl Parser<'src, &'src str, Literal, Extra<'src>> + Clone {
    let digits = text::digits(10).at_least(1);
    just('-')
        .or_not()
        .then(digits)
        .then(just('.').then(digits).or_not())
        .to_slice()
        .then(just('_').ignore_then(ascii_ident()).or_not())
        .try_map(|(text, unit): (&str, Option<&str>), span| {
            let value = Decimal::parse(text)
                .ok_or_else(|| Rich::custom(span, format!("invalid number \"{text}\"")))?;
            let unit = match unit {
                None => None,
                Some(name) => Some(Unit::from_name(name).ok_or_else(|| {
                    Rich::custom(
                        span,
                        format!("unknown unit \"{name}\" (allowed: usd, eur, gbp, cents, ms, s)"),
                    )
                })?),
            };
            Ok(Literal::Num {
                value,
                integer: !text.contains('.'),
                unit,
                text: match unit {
                    Some(u) => format!("{text}_{u}"),
                    None => text.to_owned(),
                },
            })
        })
}

fn timestamp<'src>() -> impl Parser<'src, &'src str, Literal, Extra<'src>> + Clone {
    // The timestamp runs to the next ASCII whitespace, as in the reference:
    // `(now <= @...Z)` swallows the `)` and fails.
    just('@')
        .ignore_then(
            any()
                .filter(|c: &char| !c.is_ascii_whitespace())
                .repeated()
                .to_slice(),
        )
        .try_map(|body: &str, span| {
            if body.is_empty() {
                return Err(Rich::custom(span, "expected RFC3339 timestamp after '@'"));
            }
            Timestamp::parse_rfc3339(body)
                .map(Literal::Time)
                .map_err(|e| Rich::custom(span, format!("invalid timestamp \"{body}\": {e}")))
        })
}

fn literal<'src>() -> impl Parser<'src, &'src str, Literal, Extra<'src>> + Clone {
    choice((string(), timestamp(), number())).labelled("value (string, number, or timestamp)")
}

fn comparison<'src>() -> impl Parser<'src, &'src str, Expr, Extra<'src>> + Clone {
    ident()
        .then_ignore(ws())
        .then(op())
        .then_ignore(ws())
        .then(literal())
        .map(|((ident, op), literal)| Expr::Cmp(Box::new(Comparison { ident, op, literal })))
}

fn join(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    match items.len() {
        1 => items.remove(0),
        _ => make(items),
    }
}

fn predicate<'src>() -> impl Parser<'src, &'src str, Expr, Extra<'src>> {
    let expr = recursive(|or_expr| {
        let group = or_expr
            .then_ignore(ws())
            .delimited_by(just('('), just(')').labelled("')' to close group"));
        let primary = ws().ignore_then(group.or(comparison()));
        let and_expr = primary
            .separated_by(ws().then(keyword("AND")))
            .at_least(1)
            .collect::<Vec<_>>()
            .map(|items| join(items, Expr::And));
        and_expr
            .separated_by(ws().then(keyword("OR")))
            .at_least(1)
            .collect::<Vec<_>>()
            .map(|items| join(items, Expr::Or))
            .boxed()
    });
    expr.then_ignore(ws())
        .then_ignore(end().labelled("end of predicate"))
}

fn to_parse_error(src: &str, errors: Vec<Rich<'_, char>>) -> ParseError {
    let Some(error) = errors.into_iter().next() else {
        return ParseError::Syntax {
            message: "invalid predicate".to_owned(),
            offset: 0,
        };
    };
    let offset = error.span().start;
    let message = match error.reason() {
        RichReason::Custom(msg) => msg.clone(),
        RichReason::ExpectedFound { expected, found } => {
            let found = match found {
                Some(c) => format!("{:?}", **c),
                None => "EOF".to_owned(),
            };
            let mut labels: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
            labels.sort();
            labels.dedup();
            if labels.is_empty() {
                format!("unexpected {found} at byte {offset}")
            } else {
                format!(
                    "expected {}, found {found} at byte {offset}",
                    labels.join(" or ")
                )
            }
        }
    };
    debug_assert!(offset <= src.len());
    ParseError::Syntax { message, offset }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Expr {
        match parse(src, &Limits::default()) {
            Ok(e) => e,
            Err(e) => panic!("{src:?} should parse: {e}"),
        }
    }

    fn err(src: &str) -> ParseError {
        match parse(src, &Limits::default()) {
            Ok(e) => panic!("{src:?} should not parse, got {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_the_grammar() {
        for src in [
            "tool == \"http.post\"",
            "tool==\"http.post\"",
            "  tool   ==   \"http.post\"  ",
            "amount <= 50_usd",
            "now <= @2026-04-27T12:00:00Z",
            "arg.url matches \"api.example.com\"",
            "caller != \"agent:rogue\"",
            "delta == -100_cents",
            "arg.outer.inner == \"ok\"",
            "env.region == \"us-east-1\"",
            "arg.x == 12.99",
            "arg.x == 007",
            "a == 1 AND b == 2 OR c == 3",
            "(a == 1 OR b == 2) AND c == 3",
            "(now <= @2099-01-01T00:00:00Z )",
            "a == \"x\"AND b == 5OR c == 1",
            "arg.p starts_with \"/tmp/\"",
            "a == \"raw\nnewline and \\\" \\\\ \\n \\t\"",
            "arg.or == 1 AND arg.and == 2",
        ] {
            ok(src);
        }
        let deep = format!("{}a == 1{}", "(".repeat(1000), ")".repeat(1000));
        ok(&deep);
    }

    #[test]
    fn rejects_what_the_reference_rejects() {
        for src in [
            "",
            " \t ",
            "amount",
            "amount <= ",
            "amount === 50",
            "amount = 50",
            "a == \"unterminated",
            "a == \"bad \\q escape\"",
            "a == 5_chf",
            "a == -",
            "a == 1 garbage",
            "1amount == 1",
            "arg. == 1",
            "arg .url == \"x\"",
            "now <= @not-a-timestamp",
            "now <= @2026-04-27T12:00:00",
            "now <= @",
            "a == 12.",
            "a == .99",
            "a == 12.99.5",
            "a == 12_usd_extra",
            "NOT a == 1",
            "!caller == \"x\"",
            "now <= @99999-12-31T23:59:59Z",
            "(now <= @2099-01-01T00:00:00Z)",
            "a == 1\nAND b == 2",
            "a == 1 ANDb == 2",
            "a == 5_usdAND b == 1",
            "a == +5",
            "a == 1e5",
        ] {
            err(src);
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        match &ok("a == 1 AND b == 2 OR c == 3") {
            Expr::Or(items) => {
                assert_eq!(items.len(), 2);
                assert!(matches!(&items[0], Expr::And(v) if v.len() == 2));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn limits_are_enforced_before_parsing() {
        let limits = Limits {
            max_nesting_depth: 8,
            ..Limits::default()
        };
        let deep = format!("{}a == 1{}", "(".repeat(9), ")".repeat(9));
        assert_eq!(parse(&deep, &limits), Err(ParseError::TooDeep { max: 8 }));
        // Parentheses inside strings do not count.
        let quoted = format!("a == \"{}\"", "(".repeat(100));
        assert!(parse(&quoted, &limits).is_ok());
        let long = "a".repeat(Limits::default().max_predicate_len + 1);
        assert!(matches!(err(&long), ParseError::TooLong { .. }));
        let terms = Limits {
            max_terms: 3,
            ..Limits::default()
        };
        assert_eq!(
            parse("a == 1 AND a == 1 AND a == 1 AND a == 1", &terms),
            Err(ParseError::TooManyTerms { max: 3 })
        );
    }

    #[test]
    fn errors_carry_byte_offsets() {
        match err("a == 1 )") {
            ParseError::Syntax { offset, .. } => assert_eq!(offset, 7),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err("").to_string(), "parse error: empty predicate");
    }
}
