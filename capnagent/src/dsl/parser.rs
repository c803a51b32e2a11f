//! The caveat grammar: a hand-written, non-recursive parser.
//!
//! ```text
//! predicate  := WS* or_expr WS* EOF
//! or_expr    := and_expr ( WS* "OR" and_expr )*
//! and_expr   := primary ( WS* "AND" primary )*
//! primary    := WS* ( "(" or_expr WS* ")" | comparison )
//! comparison := ident WS* op WS* literal
//! ident      := bare ( "." bare )*          bare := [A-Za-z_][A-Za-z0-9_]*
//! op         := "starts_with" | "matches" | "==" | "!=" | "<=" | ">=" | "<" | ">"
//! literal    := string | "@" timestamp | number
//! ```
//!
//! `WS` is a space or a tab. `AND`, `OR`, `starts_with` and `matches` are
//! keywords only as whole words (`ANDROID` is not `AND`). The parser makes
//! one pass over the text with an explicit stack of open groups, so its
//! cost is linear in the text and no input can exhaust the thread's stack;
//! [`precheck`] first bounds the length and the parenthesis depth, and the
//! comparison count is checked as comparisons are read, so a predicate over
//! [`Limits::max_terms`] stops there. It accepts exactly the language of
//! the combinator (chumsky) grammar it replaces, which the tests keep as an
//! oracle; it is hand-written because it is what a verifier pays for every
//! caveat of every token it sees the first time (about 20 times less than
//! the combinator version). Errors are [`ParseError`]s with byte offsets.

use super::ast::{Comparison, Expr, Ident, Literal, Op, Unit};
use crate::error::ParseError;
use crate::limits::Limits;
use crate::number::Decimal;
use crate::timestamp::Timestamp;

/// Parses one predicate under `limits`.
pub(crate) fn parse(src: &str, limits: &Limits) -> Result<Expr, ParseError> {
    precheck(src, limits)?;
    // A capnagent extension: a caveat that begins as a budget is one.
    if super::budget::detect(src) {
        return super::budget::parse(src).map(|budget| Expr::Budget(Box::new(budget)));
    }
    Parser {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        terms: 0,
        max_terms: limits.max_terms,
    }
    .predicate()
}

/// The operands of one AND/OR level: the group being read (the whole
/// predicate at the bottom of the stack).
#[derive(Default)]
struct Group {
    /// Finished AND chains of this group, joined by OR.
    ors: Operands,
    /// Operands of the AND chain being read.
    ands: Operands,
}

impl Group {
    /// The group's expression: its AND chain closed, its ORs joined.
    fn finish(mut self) -> Option<Expr> {
        self.close_and();
        self.ors.into_expr(Expr::Or)
    }

    fn close_and(&mut self) {
        if let Some(and) = std::mem::take(&mut self.ands).into_expr(Expr::And) {
            self.ors.push(and);
        }
    }
}

/// Operands of an AND or OR, without an allocation while there is one
/// (a group around a single comparison costs no vector).
#[derive(Default)]
enum Operands {
    #[default]
    None,
    One(Expr),
    Many(Vec<Expr>),
}

impl Operands {
    fn push(&mut self, expr: Expr) {
        *self = match std::mem::take(self) {
            Operands::None => Operands::One(expr),
            Operands::One(first) => Operands::Many(vec![first, expr]),
            Operands::Many(mut items) => {
                items.push(expr);
                Operands::Many(items)
            }
        };
    }

    /// One operand as itself, several joined by `make`.
    fn into_expr(self, make: fn(Vec<Expr>) -> Expr) -> Option<Expr> {
        match self {
            Operands::None => None,
            Operands::One(expr) => Some(expr),
            Operands::Many(items) => Some(make(items)),
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    terms: usize,
    max_terms: usize,
}

pub(super) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

pub(super) fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Parser<'a> {
    fn predicate(mut self) -> Result<Expr, ParseError> {
        // Open groups; the bottom one is the predicate itself.
        let mut stack: Vec<Group> = Vec::new();
        loop {
            // A primary: opening parentheses, then a comparison.
            self.skip_ws();
            if self.peek() == Some(b'(') {
                self.pos += 1;
                if stack.is_empty() {
                    stack.push(Group::default());
                }
                stack.push(Group::default());
                continue;
            }
            let cmp = self.comparison()?;
            self.terms += 1;
            if self.terms > self.max_terms {
                return Err(ParseError::TooManyTerms {
                    max: self.max_terms,
                });
            }
            let mut operand = Expr::Cmp(Box::new(cmp));
            if stack.is_empty() {
                // The common case, one comparison and nothing else, needs
                // no group.
                self.skip_ws();
                if self.pos == self.bytes.len() {
                    return Ok(operand);
                }
                stack.push(Group::default());
            }
            // After an operand: AND, OR, a closing parenthesis or the end.
            loop {
                let top = stack
                    .last_mut()
                    .ok_or_else(|| self.error("unbalanced group"))?;
                top.ands.push(operand);
                self.skip_ws();
                let word = self.word_at(self.pos);
                if word == "AND" {
                    self.pos += 3;
                    break;
                }
                if word == "OR" {
                    self.pos += 2;
                    top.close_and();
                    break;
                }
                let closing = self.peek() == Some(b')');
                if closing && stack.len() > 1 {
                    self.pos += 1;
                    operand = stack
                        .pop()
                        .and_then(Group::finish)
                        .ok_or_else(|| self.error("empty group"))?;
                    continue;
                }
                if self.pos == self.bytes.len() && stack.len() == 1 {
                    return stack
                        .pop()
                        .and_then(Group::finish)
                        .ok_or_else(|| self.error("empty predicate"));
                }
                let expected = if stack.len() > 1 {
                    "AND, OR or ')' to close group"
                } else {
                    "AND, OR or end of predicate"
                };
                return Err(self.expected(expected));
            }
        }
    }

    /// `ident WS* op WS* literal`.
    fn comparison(&mut self) -> Result<Comparison, ParseError> {
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return Err(self.expected("identifier or '('"));
        }
        loop {
            self.pos = self.word_end(self.pos);
            // A '.' continues the identifier only before another segment.
            match (self.peek(), self.bytes.get(self.pos + 1)) {
                (Some(b'.'), Some(&next)) if is_ident_start(next) => self.pos += 1,
                _ => break,
            }
        }
        let ident = Ident::resolve(&self.src[start..self.pos]);
        self.skip_ws();
        let op = self.op()?;
        self.skip_ws();
        let literal = self.literal()?;
        Ok(Comparison { ident, op, literal })
    }

    fn op(&mut self) -> Result<Op, ParseError> {
        let word = self.word_at(self.pos);
        let (op, len) = match word {
            "starts_with" => (Op::StartsWith, word.len()),
            "matches" => (Op::Matches, word.len()),
            "" => {
                let two = self.bytes.get(self.pos..self.pos + 2);
                match (two, self.peek()) {
                    (Some(b"=="), _) => (Op::Eq, 2),
                    (Some(b"!="), _) => (Op::Ne, 2),
                    (Some(b"<="), _) => (Op::Le, 2),
                    (Some(b">="), _) => (Op::Ge, 2),
                    (_, Some(b'<')) => (Op::Lt, 1),
                    (_, Some(b'>')) => (Op::Gt, 1),
                    _ => return Err(self.expected(OP_EXPECTED)),
                }
            }
            _ => return Err(self.expected(OP_EXPECTED)),
        };
        self.pos += len;
        Ok(op)
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'@') => self.timestamp(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.expected("value (string, number, or timestamp)")),
        }
    }

    fn string(&mut self) -> Result<Literal, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let body = self.pos;
        // Fast path: no escape before the closing quote.
        let mut i = body;
        while let Some(&b) = self.bytes.get(i) {
            match b {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(Literal::Str(self.src[body..i].to_owned()));
                }
                b'\\' => break,
                _ => i += 1,
            }
        }
        let mut out = String::with_capacity(i - body + 16);
        out.push_str(&self.src[body..i]);
        let mut chars = self.src[i..].char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = i + at + 1;
                    return Ok(Literal::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, other)) => {
                        return Err(self.error_at(
                            i + at,
                            format!("invalid escape '\\{other}' in string literal"),
                        ));
                    }
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.error_at(
            open,
            "expected closing '\"' (unterminated string literal)".to_owned(),
        ))
    }

    fn timestamp(&mut self) -> Result<Literal, ParseError> {
        // The body runs to the next ASCII whitespace, as in the reference:
        // `(now <= @...Z)` swallows the `)` and fails.
        let start = self.pos;
        let body_start = start + 1;
        let len = self.bytes[body_start..]
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(self.bytes.len() - body_start);
        let body = &self.src[body_start..body_start + len];
        if body.is_empty() {
            return Err(self.error_at(start, "expected RFC3339 timestamp after '@'".to_owned()));
        }
        let time = Timestamp::parse_rfc3339(body)
            .map_err(|e| self.error_at(start, format!("invalid timestamp \"{body}\": {e}")))?;
        self.pos = body_start + len;
        Ok(Literal::Time(time))
    }

    fn number(&mut self) -> Result<Literal, ParseError> {
        let start = self.pos;
        let mut i = start;
        if self.bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |from: usize| {
            self.bytes[from..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(self.bytes.len(), |n| from + n)
        };
        let int_end = digits(i);
        if int_end == i {
            return Err(self.error_at(i, self.found_message("digit", i)));
        }
        i = int_end;
        if self.bytes.get(i) == Some(&b'.') && self.bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            i = digits(i + 1);
        }
        let text = &self.src[start..i];
        let unit = match (self.bytes.get(i), self.bytes.get(i + 1)) {
            (Some(b'_'), Some(&next)) if is_ident_start(next) => {
                let name_end = self.word_end(i + 1);
                let name = &self.src[i + 1..name_end];
                let unit = Unit::from_name(name).ok_or_else(|| {
                    self.error_at(
                        start,
                        format!("unknown unit \"{name}\" (allowed: usd, eur, gbp, cents, ms, s)"),
                    )
                })?;
                i = name_end;
                Some(unit)
            }
            _ => None,
        };
        let value = Decimal::parse(text)
            .ok_or_else(|| self.error_at(start, format!("invalid number \"{text}\"")))?;
        self.pos = i;
        Ok(Literal::Num {
            value,
            integer: !text.contains('.'),
            unit,
            text: match unit {
                Some(u) => format!("{text}_{u}"),
                None => text.to_owned(),
            },
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// End of the `[A-Za-z_][A-Za-z0-9_]*` word at `at` (`at` if none).
    fn word_end(&self, at: usize) -> usize {
        if !self.bytes.get(at).copied().is_some_and(is_ident_start) {
            return at;
        }
        self.bytes[at..]
            .iter()
            .position(|&b| !is_ident_continue(b))
            .map_or(self.bytes.len(), |n| at + n)
    }

    /// The whole word at `at` (empty if none): keywords must match it all.
    fn word_at(&self, at: usize) -> &'a str {
        &self.src[at..self.word_end(at)]
    }

    fn found_message(&self, expected: &str, at: usize) -> String {
        let found = match self.src.get(at..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => "EOF".to_owned(),
        };
        format!("expected {expected}, found {found} at byte {at}")
    }

    fn expected(&self, expected: &str) -> ParseError {
        self.error_at(self.pos, self.found_message(expected, self.pos))
    }

    fn error(&self, message: &str) -> ParseError {
        self.error_at(self.pos, message.to_owned())
    }

    fn error_at(&self, offset: usize, message: String) -> ParseError {
        ParseError::Syntax { message, offset }
    }
}

const OP_EXPECTED: &str = "operator (==, !=, <=, >=, <, >, matches, starts_with)";

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

/// The combinator grammar this parser replaced, kept as the oracle the
/// tests compare it with: both must accept the same predicates and build
/// the same expressions.
#[cfg(test)]
mod oracle {
    use chumsky::error::{Rich, RichReason};
    use chumsky::prelude::*;
    use chumsky::text::ascii::{ident as ascii_ident, keyword};

    use super::super::ast::{Comparison, Expr, Ident, Literal, Op, Unit};
    use crate::error::ParseError;
    use crate::number::Decimal;
    use crate::timestamp::Timestamp;

    type Extra<'src> = extra::Err<Rich<'src, char>>;

    fn join(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
        match items.len() {
            1 => items.remove(0),
            _ => make(items),
        }
    }

    pub(super) fn parse(src: &str) -> Result<Expr, ParseError> {
        predicate()
            .parse(src)
            .into_result()
            .map_err(|errors| to_parse_error(src, errors))
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
                            format!(
                                "unknown unit \"{name}\" (allowed: usd, eur, gbp, cents, ms, s)"
                            ),
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

    /// The hand-written parser and the combinator oracle agree: both
    /// accept with the same expression, or both refuse.
    fn agrees_with_oracle(src: &str) {
        let ours = parse(src, &Limits::default());
        let theirs = oracle::parse(src);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{src:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{src:?}: ours {ours:?}, oracle {theirs:?}"),
        }
    }

    const CASES: &[&str] = &[
        "a == 1 AND b == 2 OR c == 3 AND (d == 4 OR e == 5)",
        "((a == 1))",
        "(a == 1 AND b == 2) AND c == 3",
        "a == 1 AND (b == 2 OR (c == 3 AND d == 4)) OR e == 5",
        "AND == 1",
        "OR == 1 OR AND == 2",
        "a == 1 AND",
        "a == 1 OR",
        "a == 1 ANDROID b == 2",
        "a == 1 AND(b == 2)",
        "a == 1OR b == 2",
        "a == 5ORb == 2",
        "a == \"x\"OR(b == 1)",
        "a matches\"x\"",
        "a starts_with\"x\"",
        "a starts_withx \"x\"",
        "a matches_x \"x\"",
        "a =! 1",
        "a == 5_",
        "a == 5__usd",
        "a == 5_1",
        "a == 5_usd",
        "a == 5_cents AND b == 1",
        "a == -0",
        "a == --1",
        "a == 1.5_s",
        "a == 1.",
        "a == 1.a",
        "a == 1..2",
        "a.b.c.d == 1",
        "a._b == 1",
        "a.1 == 1",
        "a.b. == 1",
        "_ == 1",
        "a == \"\\\"\"",
        "a == \"\\",
        "a == \"\\x\"",
        "a == \"é日本\\n\"",
        "a == \"\u{0}\r\u{1b}\"",
        "a == @",
        "a == @ ",
        "a == @2026-04-27T12:00:00Z",
        "a == @2026-04-27T12:00:00Z)",
        "(a == @2026-04-27T12:00:00Z )",
        "a == @2026-04-27T12:00:00+02:00 AND b == 1",
        "a == @2026-04-27T12:00:00.123456789Z",
        "a == @2026-04-27T12:00:00Z\u{0b}",
        "a == @2026-04-27T12:00:00Z\r",
        "a == 1 )",
        "(a == 1",
        ")a == 1",
        "()",
        "( )",
        "a == 1 ()",
        "a",
        "a ==",
        "== 1",
        "\t a\t==\t1\t",
        "a == 1\t AND\tb == 2",
        "a == 1 \n",
        "é == 1",
        "a == é",
        "a ≤ 1",
    ];

    #[test]
    fn agrees_with_the_combinator_grammar() {
        for src in CASES {
            agrees_with_oracle(src);
        }
        for src in ACCEPTED.iter().chain(REJECTED) {
            agrees_with_oracle(src);
        }
        let deep = format!("{}a == 1{}", "(".repeat(1000), ")".repeat(1000));
        agrees_with_oracle(&deep);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Random sequences of the grammar's tokens (and near misses).
        #[test]
        fn agrees_with_the_combinator_grammar_on_token_soup(
            tokens in proptest::collection::vec(proptest::sample::select(vec![
                "a", "arg.x", "b.c", "AND", "OR", "ANDx", " ", "  ", "\t", "(", ")", "==",
                "!=", "<=", ">=", "<", ">", "=", "!", "matches", "starts_with", "\"s\"",
                "\"", "\\", "\\n", "\\q", "1", "-", "12", ".", "5", "_usd", "_x", "_",
                "@2026-04-27T12:00:00Z", "@", "@x", "\n", "é", "0.5", "caller", "now",
            ]), 0..16)
        ) {
            agrees_with_oracle(&tokens.concat());
        }

        /// Arbitrary text.
        #[test]
        fn agrees_with_the_combinator_grammar_on_any_text(src in "\\PC{0,40}") {
            agrees_with_oracle(&src);
        }
    }

    const ACCEPTED: &[&str] = &[
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
    ];

    const REJECTED: &[&str] = &[
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
    ];

    #[test]
    fn accepts_the_grammar() {
        for src in ACCEPTED {
            ok(src);
        }
        let deep = format!("{}a == 1{}", "(".repeat(1000), ")".repeat(1000));
        ok(&deep);
    }

    #[test]
    fn rejects_what_the_reference_rejects() {
        for src in REJECTED {
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
