//! Budget caveats (a capnagent extension, see `docs/caveats.md`):
//! `calls <= N [per W]` and `sum(arg.p) <= N [per W]`.
//!
//! ```text
//! budget  := WS* measure WS* "<=" WS* limit ( WS+ "per" WS+ window )? WS* EOF
//! measure := "calls" | "sum" WS* "(" WS* "arg." path WS* ")"
//! limit   := [0-9]+ (at most 10^15)   window := [0-9]+ ("s" | "m" | "h" | "d")
//! ```
//!
//! A budget is a whole caveat: [`detect`] decides from the first word
//! whether a text is one, and then it parses as a budget or not at all.

use super::EvalError;
use super::ast::Ident;
use super::eval::{Value, resolve};
use super::parser::{is_ident_continue, is_ident_start};
use crate::context::Context;
use crate::error::ParseError;
use crate::json::JsonNumber;
use crate::number::small_integer;

/// Largest budget limit and largest amount of one call: 10^15. Running
/// totals stay below 2^53, so a store may add them exactly in a double
/// (Redis Lua).
pub(crate) const MAX_BUDGET: u64 = 1_000_000_000_000_000;

/// Longest window: 366 days.
pub(crate) const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

/// What a budget counts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Measure {
    /// Each allowed call counts 1.
    Calls,
    /// Each allowed call counts its integer argument at `path`.
    Sum { ident: Ident },
}

/// A parsed budget caveat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Budget {
    pub(crate) measure: Measure,
    pub(crate) limit: u64,
    /// Fixed window length, aligned to epoch multiples; `None`: no window.
    pub(crate) window_ms: Option<u64>,
}

impl Budget {
    /// What this call would add to the budget: 1 for `calls`, the
    /// argument for `sum` (a non-negative integer of at most
    /// [`MAX_BUDGET`], else an evaluation error).
    pub(crate) fn amount(&self, ctx: &Context) -> Result<u64, EvalError> {
        let ident = match &self.measure {
            Measure::Calls => return Ok(1),
            Measure::Sum { ident } => ident,
        };
        let mismatch = |got: String| EvalError::TypeMismatch {
            expected: format!(
                "non-negative integer of at most {MAX_BUDGET} at the budget's sum argument"
            ),
            got,
        };
        match resolve(ident, ctx)? {
            Value::Num(text) => {
                if !JsonNumber::is_integer_text(text) {
                    return Err(mismatch(format!("non-integer number {text}")));
                }
                match small_integer(text).and_then(|n| u64::try_from(n).ok()) {
                    Some(n) if n <= MAX_BUDGET => Ok(n),
                    _ => Err(mismatch(format!("number {text}"))),
                }
            }
            other => Err(mismatch(other.kind().to_owned())),
        }
    }

    /// True for `sum(...)` budgets.
    pub(crate) fn is_sum(&self) -> bool {
        matches!(self.measure, Measure::Sum { .. })
    }
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether `src` is meant as a budget: its first word is `calls` (not
/// followed by `.`) or `sum` followed by `(`.
pub(crate) fn detect(src: &str) -> bool {
    let bytes = src.as_bytes();
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes[start..]
        .iter()
        .position(|&b| !is_ident_continue(b))
        .map_or(bytes.len(), |n| start + n);
    let next = bytes[end..].iter().copied().find(|&b| !is_ws(b));
    match &src[start..end] {
        "calls" => next != Some(b'.'),
        "sum" => next == Some(b'('),
        _ => false,
    }
}

/// Parses a text for which [`detect`] is true.
pub(crate) fn parse(src: &str) -> Result<Budget, ParseError> {
    let mut p = Cursor {
        src,
        bytes: src.as_bytes(),
        pos: 0,
    };
    p.skip_ws();
    let measure = match p.word() {
        "calls" => Measure::Calls,
        "sum" => {
            p.skip_ws();
            p.expect_byte(b'(', "'(' after sum")?;
            p.skip_ws();
            let start = p.pos;
            loop {
                if !p.peek().is_some_and(is_ident_start) {
                    return Err(p.expected("an argument path `arg.<name>` inside sum(...)"));
                }
                p.word();
                if p.peek() == Some(b'.') {
                    p.pos += 1;
                } else {
                    break;
                }
            }
            let ident = Ident::resolve(&src[start..p.pos]);
            if !matches!(ident, Ident::Arg { .. }) {
                return Err(p.error_at(
                    start,
                    "sum(...) takes an argument path `arg.<name>`".to_owned(),
                ));
            }
            p.skip_ws();
            p.expect_byte(b')', "')' to close sum(")?;
            Measure::Sum { ident }
        }
        _ => return Err(p.expected("`calls` or `sum(arg.<name>)`")),
    };
    p.skip_ws();
    if p.bytes.get(p.pos..p.pos + 2) != Some(b"<=") {
        return Err(p.expected("`<=` (a budget only takes `<=`)"));
    }
    p.pos += 2;
    p.skip_ws();
    let limit = p.integer("budget limit")?;
    if limit > MAX_BUDGET {
        return Err(p.error_at(p.pos, format!("budget limit over {MAX_BUDGET}")));
    }
    let before_ws = p.pos;
    p.skip_ws();
    let mut window_ms = None;
    if p.pos > before_ws && p.word_at_is("per") {
        p.pos += 3;
        let ws = p.pos;
        p.skip_ws();
        if p.pos == ws {
            return Err(p.expected("a space after `per`"));
        }
        let at = p.pos;
        let n = p.integer("window length")?;
        let unit_ms = match p.word() {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(p.error_at(
                    at,
                    "window unit must be s, m, h or d (for example `per 60s`)".to_owned(),
                ));
            }
        };
        let ms = n.saturating_mul(unit_ms);
        if ms == 0 || ms > MAX_WINDOW_MS {
            return Err(p.error_at(at, "window must be from 1s to 366d".to_owned()));
        }
        window_ms = Some(ms);
        p.skip_ws();
    }
    if p.pos != p.bytes.len() {
        return Err(p.expected(
            "end of caveat (a budget is a whole caveat: put other conditions in caveats of their own)",
        ));
    }
    Ok(Budget {
        measure,
        limit,
        window_ms,
    })
}

struct Cursor<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// Reads the `[A-Za-z_][A-Za-z0-9_]*` word here (empty if none).
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        if self.peek().is_some_and(is_ident_start) {
            while self.peek().is_some_and(is_ident_continue) {
                self.pos += 1;
            }
        }
        &self.src[start..self.pos]
    }

    fn word_at_is(&self, word: &str) -> bool {
        let mut probe = Cursor {
            src: self.src,
            bytes: self.bytes,
            pos: self.pos,
        };
        probe.word() == word
    }

    fn integer(&mut self, what: &str) -> Result<u64, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.expected(&format!("{what} (digits)")));
        }
        let digits = &self.src[start..self.pos];
        if digits.len() > 16 {
            return Err(self.error_at(start, format!("{what} over {MAX_BUDGET}")));
        }
        digits
            .parse()
            .map_err(|_| self.error_at(start, format!("invalid {what}")))
    }

    fn expect_byte(&mut self, b: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let found = match self.src.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => "EOF".to_owned(),
        };
        self.error_at(
            self.pos,
            format!("expected {what}, found {found} at byte {}", self.pos),
        )
    }

    fn error_at(&self, offset: usize, message: String) -> ParseError {
        ParseError::Syntax { message, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_only_the_budget_forms() {
        for yes in [
            "calls <= 2",
            "  calls<=2",
            "calls",
            "sum(arg.a) <= 1",
            "sum (arg.a) <= 1",
            "calls <= 2 AND tool == \"x\"",
        ] {
            assert!(detect(yes), "{yes}");
        }
        for no in [
            "callsx <= 2",
            "calls.n <= 2",
            "sum <= 2",
            "summary == \"x\"",
            "tool == \"x\" AND calls <= 2",
            "arg.calls <= 2",
        ] {
            assert!(!detect(no), "{no}");
        }
    }

    #[test]
    fn parses_calls_and_sums_with_windows() -> Result<(), ParseError> {
        let b = parse("calls <= 20")?;
        assert_eq!(
            (b.measure, b.limit, b.window_ms),
            (Measure::Calls, 20, None)
        );
        let b = parse("calls <= 10 per 60s")?;
        assert_eq!((b.limit, b.window_ms), (10, Some(60_000)));
        let b = parse("\tsum( arg.order.amount_cents )<=50000 per 1d ")?;
        assert!(b.is_sum());
        assert_eq!((b.limit, b.window_ms), (50_000, Some(86_400_000)));
        assert_eq!(parse("calls <= 1 per 2m")?.window_ms, Some(120_000));
        assert_eq!(parse("calls <= 1 per 3h")?.window_ms, Some(10_800_000));
        assert_eq!(parse("calls <= 0")?.limit, 0);
        assert_eq!(parse("calls <= 1000000000000000")?.limit, MAX_BUDGET);
        Ok(())
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "calls",
            "calls < 2",
            "calls == 2",
            "calls <= -1",
            "calls <= 2.5",
            "calls <= 1000000000000001",
            "calls <= 99999999999999999999999",
            "calls <= 2 AND tool == \"x\"",
            "calls <= 2 OR tool == \"x\"",
            "calls <= 2 per",
            "calls <= 2 per 0s",
            "calls <= 2 per 60",
            "calls <= 2 per 60ms",
            "calls <= 2 per 367d",
            "calls <= 2 per 99999999999999999d",
            "calls <= 2per 60s",
            "calls <= 2 per60s",
            "sum(tool) <= 2",
            "sum(env.x) <= 2",
            "sum(arg.) <= 2",
            "sum(arg.a <= 2",
            "sum() <= 2",
            "sum(arg.a) <= 2 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
