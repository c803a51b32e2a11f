//! Exact decimal numbers: this module owns [`Decimal`], the number type the
//! caveat DSL uses to compare JSON numbers and caveat literals. Values are
//! parsed from their text and compared exactly as decimals (never through
//! `f64`), in time linear in the number of digits and without allocation
//! proportional to the exponent, whatever the input.
//!
//! It is our own because the reference's comparisons force it: a caveat
//! such as `arg.amount_cents <= 5000` compares the argument's exact source
//! text as a decimal (`1.50 == 1.5`, a 40-digit integer compared whole, the
//! integer-domain rule decided on the text), while the text must also be
//! bounded work when an attacker writes `1e999999999`. `f64` and the
//! fixed-width integer types round or overflow, and arbitrary-precision
//! crates expand such exponents.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};

/// Exponents are clamped to this magnitude; anything larger is absurd and
/// only has to compare sensibly, not exactly.
const EXPONENT_LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000_000_000_000; // 1e36

/// Longest run of padding zeros `Display` writes before switching to
/// scientific notation.
const MAX_PLAIN_ZEROS: i128 = 32;

/// An exact decimal number.
///
/// Internally normalized: the value is `±0.d1d2…dn × 10^exponent` where the
/// digits have no leading or trailing zeros. Zero has no digits, is never
/// negative and has exponent 0, so `-0`, `0.000` and `0e5` are all the same
/// value. Equality and ordering are exact numeric comparisons.
#[derive(Debug, Clone)]
pub struct Decimal {
    negative: bool,
    /// ASCII digits `b'0'..=b'9'`, first and last not `b'0'`; empty for zero.
    digits: Vec<u8>,
    /// Position of the decimal point relative to the first digit.
    exponent: i128,
}

impl Decimal {
    /// Parses JSON number text `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?` and
    /// caveat literal text `-?\d+(\.\d+)?` (which allows leading zeros such as
    /// `007`). Returns `None` for anything else (`+1`, `.5`, `1.`, `1e`,
    /// `0x10`, surrounding whitespace, non-ASCII digits, `007e1`, …).
    ///
    /// Exponents of any size are accepted; magnitudes beyond about `1e36` are
    /// clamped, so such absurd numbers compare only approximately.
    pub fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut pos = 0;

        let negative = bytes.first() == Some(&b'-');
        if negative {
            pos += 1;
        }

        let int_start = pos;
        pos = skip_digits(bytes, pos);
        let int_digits = bytes.get(int_start..pos)?;
        if int_digits.is_empty() {
            return None;
        }

        let mut frac_digits: &[u8] = &[];
        if bytes.get(pos) == Some(&b'.') {
            let frac_start = pos + 1;
            pos = skip_digits(bytes, frac_start);
            frac_digits = bytes.get(frac_start..pos)?;
            if frac_digits.is_empty() {
                return None;
            }
        }

        let mut exp: i128 = 0;
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            // JSON grammar: no leading zeros in the integer part.
            if int_digits.len() > 1 && int_digits.first() == Some(&b'0') {
                return None;
            }
            pos += 1;
            let exp_negative = match bytes.get(pos) {
                Some(b'-') => {
                    pos += 1;
                    true
                }
                Some(b'+') => {
                    pos += 1;
                    false
                }
                _ => false,
            };
            let exp_start = pos;
            pos = skip_digits(bytes, exp_start);
            let exp_digits = bytes.get(exp_start..pos)?;
            if exp_digits.is_empty() {
                return None;
            }
            for &d in exp_digits {
                exp = exp
                    .saturating_mul(10)
                    .saturating_add(i128::from(d - b'0'))
                    .min(EXPONENT_LIMIT);
            }
            if exp_negative {
                exp = -exp;
            }
        }

        if pos != bytes.len() {
            return None;
        }

        // All significant digits, integer part then fraction.
        let all = int_digits.iter().chain(frac_digits.iter());
        let leading_zeros = all.clone().take_while(|&&d| d == b'0').count();
        let mut digits: Vec<u8> = all.skip(leading_zeros).copied().collect();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Decimal::zero());
        }

        let int_len = i128::try_from(int_digits.len()).unwrap_or(i128::MAX);
        let leading = i128::try_from(leading_zeros).unwrap_or(i128::MAX);
        let exponent = int_len.saturating_sub(leading).saturating_add(exp);
        Some(Decimal {
            negative,
            digits,
            exponent,
        })
    }

    /// The value as an `i64`, when it is an integer of at most 18 digits.
    pub(crate) fn to_small_integer(&self) -> Option<i64> {
        let len = i128::try_from(self.digits.len()).ok()?;
        if self.exponent < len || self.exponent > 18 {
            return if self.is_zero() { Some(0) } else { None };
        }
        let mut value: i64 = 0;
        for &d in &self.digits {
            value = value * 10 + i64::from(d - b'0');
        }
        for _ in len..self.exponent {
            value *= 10;
        }
        Some(if self.negative { -value } else { value })
    }

    /// Whether the value is zero (of any sign or spelling).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the value is strictly less than zero.
    #[cfg(test)]
    pub fn is_negative(&self) -> bool {
        self.negative && !self.is_zero()
    }

    fn zero() -> Decimal {
        Decimal {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    /// -1, 0 or 1.
    fn signum(&self) -> i8 {
        if self.is_zero() {
            0
        } else if self.negative {
            -1
        } else {
            1
        }
    }

    /// Compares absolute values.
    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            // Both normalized without leading/trailing zeros: a larger point
            // position means a larger magnitude; otherwise the digit strings
            // compare lexicographically (a proper prefix is smaller).
            (false, false) => self
                .exponent
                .cmp(&other.exponent)
                .then_with(|| self.digits.cmp(&other.digits)),
        }
    }
}

/// The value of `-?\d{1,18}` (what [`Decimal::parse`] reads it as), without
/// building a [`Decimal`].
pub(crate) fn small_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(if digits.len() < text.len() {
        -value
    } else {
        value
    })
}

fn skip_digits(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

impl From<i64> for Decimal {
    fn from(v: i64) -> Self {
        Decimal::from(i128::from(v))
    }
}

impl From<u64> for Decimal {
    fn from(v: u64) -> Self {
        Decimal::from(i128::from(v))
    }
}

impl From<i128> for Decimal {
    fn from(v: i128) -> Self {
        Decimal::parse(&v.to_string()).unwrap_or_else(Decimal::zero)
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.signum(), other.signum());
        match a.cmp(&b) {
            Ordering::Equal => match a {
                1 => self.cmp_magnitude(other),
                -1 => other.cmp_magnitude(self),
                _ => Ordering::Equal,
            },
            unequal => unequal,
        }
    }
}

impl Hash for Decimal {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `Eq` because the representation is normalized.
        self.signum().hash(state);
        self.digits.hash(state);
        if !self.is_zero() {
            self.exponent.hash(state);
        }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_char('-')?;
        }
        let n = i128::try_from(self.digits.len()).unwrap_or(i128::MAX);
        let e = self.exponent;
        let write_digits = |f: &mut fmt::Formatter<'_>, ds: &[u8]| -> fmt::Result {
            ds.iter().try_for_each(|&d| f.write_char(char::from(d)))
        };
        let write_zeros = |f: &mut fmt::Formatter<'_>, count: i128| -> fmt::Result {
            (0..count).try_for_each(|_| f.write_char('0'))
        };

        if e >= n && e - n <= MAX_PLAIN_ZEROS {
            // Integer: digits then zeros.
            write_digits(f, &self.digits)?;
            write_zeros(f, e - n)
        } else if e > 0 && e < n {
            // Point inside the digits.
            let split = usize::try_from(e).unwrap_or(0);
            let (int_part, frac_part) = self.digits.split_at(split);
            write_digits(f, int_part)?;
            f.write_char('.')?;
            write_digits(f, frac_part)
        } else if e <= 0 && -e <= MAX_PLAIN_ZEROS {
            // Pure fraction: 0.000ddd
            f.write_str("0.")?;
            write_zeros(f, -e)?;
            write_digits(f, &self.digits)
        } else {
            // Scientific: d.ddd e(exponent - 1)
            let (first, rest) = self.digits.split_at(1);
            write_digits(f, first)?;
            if !rest.is_empty() {
                f.write_char('.')?;
                write_digits(f, rest)?;
            }
            write!(f, "e{}", e - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap_or_else(|| panic!("failed to parse {s:?}"))
    }

    #[test]
    fn the_small_integer_shortcut_agrees_with_decimal() {
        let texts = [
            "0",
            "-0",
            "7",
            "007",
            "-7",
            "5000",
            "4999",
            "5001",
            "-5000",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "1.5",
            "1e3",
            "1.5e1",
            "0.0",
            "5000.0",
            "-12.5e-1",
            "00",
            "-",
            "",
            "12a",
            "+1",
        ];
        for a in texts {
            assert_eq!(
                small_integer(a),
                Decimal::parse(a)
                    .filter(|_| a.trim_start_matches('-').len() <= 18)
                    .filter(|_| a.bytes().all(|b| b == b'-' || b.is_ascii_digit()))
                    .map(|v| v.to_small_integer().unwrap_or(i64::MIN)),
                "{a}"
            );
            for b in texts {
                let (Some(x), Some(y)) = (Decimal::parse(a), Decimal::parse(b)) else {
                    continue;
                };
                if let (Some(l), Some(r)) = (small_integer(a), y.to_small_integer()) {
                    assert_eq!(l.cmp(&r), x.cmp(&y), "{a} vs {b}");
                }
            }
        }
        assert_eq!(d("1.5e1").to_small_integer(), Some(15));
        assert_eq!(d("12e16").to_small_integer(), Some(120_000_000_000_000_000));
        assert_eq!(d("1e19").to_small_integer(), None);
        assert_eq!(d("1.5").to_small_integer(), None);
        assert_eq!(d("-0.0").to_small_integer(), Some(0));
    }

    #[test]
    fn exact_large_integers() {
        assert_ne!(d("9007199254740993"), d("9007199254740992"));
        assert!(d("9007199254740993") > d("9007199254740992"));
        assert!(d("18446744073709551617") > d("18446744073709551616"));
        assert!(d("-9223372036854775809") < d("-9223372036854775808"));
    }

    #[test]
    fn exact_fractions() {
        assert!(d("1298.9999999999999999") < d("1299.0"));
        assert!(d("1298.9999999999999999") < d("1299"));
        assert!(d("4.99999999999999999999") < d("5"));
        assert!(d("0.1") < d("0.10000000000000000001"));
        assert!(d("-0.1") > d("-0.10000000000000000001"));
    }

    #[test]
    fn zeros_and_normalization() {
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("-0.0"), d("0"));
        assert_eq!(d("0.000"), d("0"));
        assert_eq!(d("0e5"), d("0"));
        assert_eq!(d("-0e-5"), d("0"));
        assert_eq!(d("000"), d("0"));
        assert!(d("-0").is_zero());
        assert!(!d("-0").is_negative());
        assert!(!d("0.0001").is_zero());
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("1e2"), d("100"));
        assert_eq!(d("1E+2"), d("100.0"));
        assert_eq!(d("1.5e1"), d("15"));
        assert_eq!(d("15e-1"), d("1.5"));
        assert_eq!(d("0.015e2"), d("1.5"));
        assert_eq!(d("007"), d("7"));
        assert_eq!(d("007.50"), d("7.5"));
        assert_eq!(d("-007"), d("-7"));
        assert_eq!(d("100"), d("1e2"));
        assert_ne!(d("100"), d("1e3"));
        assert_ne!(d("1"), d("10"));
        assert_ne!(d("1"), d("0.1"));
    }

    #[test]
    fn huge_and_tiny_exponents() {
        let big_int = format!("9{}", "9".repeat(399));
        assert!(d("1e400") > d("999999"));
        assert!(d("1e400") > d(&big_int));
        assert_eq!(d("1e400"), d(&format!("1{}", "0".repeat(400))));
        assert!(d("1e-400") > d("0"));
        assert!(d("-1e-400") < d("0"));
        assert!(d("-1e-400") > d("-1e-399"));
        assert!(d("1e-400") < d("1e-399"));
        let huge = d("1e999999999999999999999");
        assert!(huge > d("1e400"));
        assert!(d("-1e999999999999999999999") < d("-1e400"));
        assert!(d("1e-999999999999999999999") > d("0"));
        assert!(d("1e-999999999999999999999") < d("1e-400"));
        let absurd = format!("1e{}", "9".repeat(10_000));
        assert!(d(&absurd) > d("1e400"));
        let absurd_neg = format!("1e-{}", "9".repeat(10_000));
        assert!(d(&absurd_neg) > d("0"));
        assert!(d(&absurd_neg) < d("1e-400"));
        // Display must not expand exponents.
        assert_eq!(huge.to_string(), "1e999999999999999999999");
        assert_eq!(d("-1.5e-400").to_string(), "-1.5e-400");
        assert!(d(&absurd).to_string().len() < 64);
    }

    #[test]
    fn mixed_signs() {
        let ordered = [
            "-1e400", "-100", "-1.5", "-1", "-0.5", "-1e-400", "0", "1e-400", "0.5", "1", "1.5",
            "100", "1e400",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(d(a).cmp(&d(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "+1", ".5", "1.", "", "-", "1e", "0x10", " 1", "1 ", "1e+", "1e-", "--1", "-.5",
            "1.5.5", "1e5.5", "e5", "NaN", "inf", "１", "007e1", "00e1", "01.5e2", "1_000", "1,5",
            "1e5e5", "-e5",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?} should be rejected");
        }
        // JSON zero with exponent is fine.
        assert!(Decimal::parse("0e1").is_some());
        assert!(Decimal::parse("0.5e1").is_some());
        assert!(Decimal::parse("10e1").is_some());
    }

    #[test]
    fn display() {
        for (input, shown) in [
            ("0", "0"),
            ("-0.00", "0"),
            ("-12.5", "-12.5"),
            ("1e2", "100"),
            ("1.50", "1.5"),
            ("007", "7"),
            ("0.001", "0.001"),
            ("-0.0012300", "-0.00123"),
            ("123.456", "123.456"),
            ("9007199254740993", "9007199254740993"),
            ("1e400", "1e400"),
            ("1.25e-50", "1.25e-50"),
            ("12e30", "12000000000000000000000000000000"),
            ("12e40", "1.2e41"),
            ("1e-34", "1e-34"),
            ("1e-32", "0.00000000000000000000000000000001"),
        ] {
            assert_eq!(d(input).to_string(), shown, "{input}");
            // Display output parses back to the same value.
            assert_eq!(d(shown), d(input));
        }
    }

    #[test]
    fn hash_consistent_with_eq() {
        let set: HashSet<Decimal> = ["1.5", "1.50", "15e-1", "0", "-0", "0e9"]
            .iter()
            .map(|s| d(s))
            .collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn from_integers() {
        assert_eq!(Decimal::from(-42i64), d("-42"));
        assert_eq!(Decimal::from(u64::MAX), d("18446744073709551615"));
        assert_eq!(Decimal::from(i128::MIN), d(&i128::MIN.to_string()));
        assert_eq!(Decimal::from(0i64), d("0"));
    }

    /// Simple LCG so the test is deterministic and dependency-free.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    /// A random number as (text, value scaled by 100).
    fn random_number(rng: &mut Lcg) -> (String, i128) {
        let negative = rng.next().is_multiple_of(2);
        let int = i128::from(rng.next() % 2000);
        let sign = if negative { "-" } else { "" };
        let signed = |v: i128| if negative { -v } else { v };
        match rng.next() % 5 {
            0 => (format!("{sign}{int}"), signed(int * 100)),
            1 => {
                let frac = i128::from(rng.next() % 100);
                (format!("{sign}{int}.{frac:02}"), signed(int * 100 + frac))
            }
            2 => {
                let frac = i128::from(rng.next() % 10);
                (format!("{sign}{int}.{frac}"), signed(int * 100 + frac * 10))
            }
            3 => {
                // Scientific: int*100 scaled, written as (int*100)e-2.
                let scaled = int * 100 + i128::from(rng.next() % 100);
                (format!("{sign}{scaled}e-2"), signed(scaled))
            }
            _ => {
                let small = int % 20;
                (format!("{sign}{small}e2"), signed(small * 10_000))
            }
        }
    }

    #[test]
    fn randomized_consistency_with_i128() {
        let mut rng = Lcg(0x5eed_1234_abcd_ef01);
        for _ in 0..20_000 {
            let (ta, va) = random_number(&mut rng);
            let (tb, vb) = random_number(&mut rng);
            let (a, b) = (d(&ta), d(&tb));
            assert_eq!(a.cmp(&b), va.cmp(&vb), "{ta} vs {tb}");
            assert_eq!(a == b, va == vb, "{ta} == {tb}");
            assert_eq!(a.is_zero(), va == 0, "{ta}");
            // Display round trip keeps the value.
            assert_eq!(d(&a.to_string()), a, "{ta}");
        }
    }
}
