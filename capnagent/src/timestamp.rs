//! RFC 3339 timestamps: this module owns the [`Timestamp`] type (Unix seconds
//! plus nanoseconds), its strict RFC 3339 parser that reproduces the exact
//! acceptance rules and error messages of the capnagent 0.7.4 reference, and
//! its canonical UTC `Display` form. The parser works on attacker-controlled
//! text and never panics or overflows.
//!
//! It is our own because the reference's behaviour forces it: the caveat
//! language's `@2027-01-01T00:00:00Z` literals and `now` comparisons must
//! accept and refuse exactly the texts the reference does, with its error
//! messages (which appear in signed denial reasons), and print the same
//! canonical form back; a general date-time crate accepts a different set
//! of RFC 3339 variants and words its errors differently.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A point in time: whole seconds since the Unix epoch (negative before 1970)
/// plus a nanosecond part in `0..1_000_000_000`.
///
/// Ordering is chronological, i.e. by `(secs, nanos)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Error produced when a timestamp fails to parse; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimestampError(String);

impl TimestampError {
    fn new(msg: impl Into<String>) -> Self {
        TimestampError(msg.into())
    }

    /// The human-readable error message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_unix_millis(ms: u64) -> Self {
        // u64::MAX / 1000 < i64::MAX, so the conversion cannot fail.
        let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        // (ms % 1000) * 1_000_000 < 1e9, fits in u32.
        let nanos = u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0);
        Timestamp { secs, nanos }
    }

    /// Converts a [`SystemTime`], including times before 1970 (saturating at
    /// the `i64` seconds range).
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let sub = d.subsec_nanos();
                if sub == 0 {
                    Timestamp {
                        secs: whole.saturating_neg(),
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: whole.saturating_neg().saturating_sub(1),
                        nanos: NANOS_PER_SEC - sub,
                    }
                }
            }
        }
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Whole milliseconds since the Unix epoch (rounded down); 0 for times
    /// before 1970, saturating at `u64::MAX`.
    pub fn unix_millis(&self) -> u64 {
        if self.secs < 0 {
            return 0;
        }
        let secs = u64::try_from(self.secs).unwrap_or(0);
        secs.saturating_mul(1000)
            .saturating_add(u64::from(self.nanos / 1_000_000))
    }

    /// Whole seconds since the Unix epoch (negative before 1970).
    pub fn secs(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds past [`Timestamp::secs`], in `0..1_000_000_000`.
    pub fn nanos(&self) -> u32 {
        self.nanos
    }

    /// Parses an RFC 3339 timestamp such as `2027-01-01T00:00:00Z` or
    /// `2027-01-01t05:30:00.25+05:30`, with the exact rules of the reference
    /// implementation (a leap second `:60` counts as one more second; the
    /// fraction is truncated to nanoseconds; anything after the time zone is
    /// rejected).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimestampError> {
        let bytes = s.as_bytes();
        let len = bytes.len();
        if len < 19 {
            return Err(TimestampError::new(format!(
                "too short ({len} bytes, need >= 19)"
            )));
        }

        expect_char(s, 4, '-', &['-'])?;
        expect_char(s, 7, '-', &['-'])?;
        expect_char(s, 10, 'T', &['T', 't'])?;
        expect_char(s, 13, ':', &[':'])?;
        expect_char(s, 16, ':', &[':'])?;

        let year_text = slice(s, 0, 4)?;
        let year: i32 = year_text
            .parse()
            .map_err(|e| TimestampError::new(format!("bad integer {year_text:?}: {e}")))?;
        let month = two_digits(s, 5)?;
        let day = two_digits(s, 8)?;
        let hour = two_digits(s, 11)?;
        let minute = two_digits(s, 14)?;
        let second = two_digits(s, 17)?;

        if !(1..=12).contains(&month) {
            return Err(TimestampError::new(format!("bad month: {month}")));
        }
        let year = i64::from(year);
        if day < 1 || day > days_in_month(year, month) {
            return Err(TimestampError::new(format!(
                "bad day {day} for {year:04}-{month:02}"
            )));
        }
        if hour > 23 {
            return Err(TimestampError::new(format!("bad hour: {hour}")));
        }
        if minute > 59 {
            return Err(TimestampError::new(format!("bad minute: {minute}")));
        }
        if second > 60 {
            return Err(TimestampError::new(format!("bad second: {second}")));
        }

        // Optional fraction.
        let mut pos = 19;
        let mut nanos: u32 = 0;
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while let Some(b) = bytes.get(pos).copied().filter(u8::is_ascii_digit) {
                if pos - start < 9 {
                    nanos = nanos * 10 + u32::from(b - b'0');
                }
                pos += 1;
            }
            let count = pos - start;
            if count == 0 {
                return Err(TimestampError::new("expected digits after '.'"));
            }
            for _ in count..9 {
                nanos *= 10;
            }
        }

        // Time zone designator.
        let offset_secs: i64 = match bytes.get(pos).copied() {
            None => {
                return Err(TimestampError::new(
                    "missing timezone designator (need 'Z' or '+HH:MM')",
                ));
            }
            Some(b'Z' | b'z') => {
                pos += 1;
                0
            }
            Some(sign @ (b'+' | b'-')) => {
                if len - pos < 6 {
                    return Err(TimestampError::new("offset truncated"));
                }
                if bytes.get(pos + 3) != Some(&b':') {
                    return Err(TimestampError::new(
                        "expected ':' at offset's HH:MM separator",
                    ));
                }
                let oh = two_digits(s, pos + 1)?;
                let om = two_digits(s, pos + 4)?;
                if oh > 23 {
                    return Err(TimestampError::new(format!("bad offset hour: {oh}")));
                }
                if om > 59 {
                    return Err(TimestampError::new(format!("bad offset minute: {om}")));
                }
                pos += 6;
                let magnitude = i64::from(oh) * 3600 + i64::from(om) * 60;
                if sign == b'+' { magnitude } else { -magnitude }
            }
            Some(_) => {
                let c = char_at(s, pos)?;
                return Err(TimestampError::new(format!(
                    "expected 'Z' or '+/-HH:MM', got {c:?}"
                )));
            }
        };

        if pos != len {
            return Err(TimestampError::new(format!(
                "trailing garbage in timestamp starting at byte {pos}"
            )));
        }

        // Year is within -999..=9999, so none of this can overflow i64.
        let days = days_from_civil(year, month, day);
        let secs = days * SECS_PER_DAY
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second)
            - offset_secs;
        Ok(Timestamp { secs, nanos })
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(SECS_PER_DAY);
        let rem = self.secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let hh = rem / 3600;
        let mm = (rem % 3600) / 60;
        let ss = rem % 60;
        write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Error for a byte range / position that does not fall on char boundaries.
fn non_utf8(detail: String) -> TimestampError {
    TimestampError::new(format!("non-utf8: {detail}"))
}

/// `s[start..end]`, or a `non-utf8` error if the range cuts a character.
fn slice(s: &str, start: usize, end: usize) -> Result<&str, TimestampError> {
    s.get(start..end)
        .ok_or_else(|| non_utf8(format!("bytes {start}..{end} split a multi-byte character")))
}

/// The char starting at byte `pos`, or a `non-utf8` error if `pos` is inside
/// a multi-byte character.
fn char_at(s: &str, pos: usize) -> Result<char, TimestampError> {
    s.get(pos..)
        .and_then(|rest| rest.chars().next())
        .ok_or_else(|| non_utf8(format!("byte {pos} is inside a multi-byte character")))
}

/// Requires the char at byte `pos` to be one of `allowed`.
fn expect_char(s: &str, pos: usize, name: char, allowed: &[char]) -> Result<(), TimestampError> {
    let c = char_at(s, pos)?;
    if allowed.contains(&c) {
        Ok(())
    } else {
        Err(TimestampError::new(format!(
            "expected '{name}' at position {pos}, got {c:?}"
        )))
    }
}

/// Exactly two ASCII digits at bytes `pos..pos + 2`.
fn two_digits(s: &str, pos: usize) -> Result<u32, TimestampError> {
    let text = slice(s, pos, pos + 2)?;
    match text.as_bytes() {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => Err(TimestampError::new(format!(
            "expected ASCII digits, got {text:?}"
        ))),
    }
}

/// Proleptic Gregorian leap-year rule (valid for zero and negative years).
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm). Callers keep `year` small enough that nothing overflows.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let m = i64::from(month);
    let d = i64::from(day);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]; safe for every `days` derived from an
/// `i64` number of seconds.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).expect("timestamp should parse")
    }

    fn err(s: &str) -> String {
        Timestamp::parse_rfc3339(s)
            .expect_err("timestamp should fail")
            .to_string()
    }

    #[test]
    fn basic() {
        let t = p("2099-01-01T00:00:00Z");
        assert_eq!(t.secs(), 4_070_908_800);
        assert_eq!(t.nanos(), 0);
        assert_eq!(p("1970-01-01T00:00:00Z").secs(), 0);
        assert_eq!(p("2027-01-01T00:00:00Z").secs(), 1_798_761_600);
    }

    #[test]
    fn lowercase_t_and_z() {
        assert_eq!(p("2099-01-01t00:00:00z"), p("2099-01-01T00:00:00Z"));
        assert_eq!(p("2099-01-01t00:00:00Z"), p("2099-01-01T00:00:00z"));
    }

    #[test]
    fn fractions() {
        assert_eq!(p("2027-01-01T00:00:00.5Z").nanos(), 500_000_000);
        assert_eq!(p("2027-01-01T00:00:00.1234567891Z").nanos(), 123_456_789);
        assert_eq!(p("2027-01-01T00:00:00.123456789Z").nanos(), 123_456_789);
        assert_eq!(p("2027-01-01T00:00:00.000000001Z").nanos(), 1);
        assert_eq!(p("2027-01-01T00:00:00.0000000009Z").nanos(), 0);
        assert_eq!(p("2027-01-01T00:00:00.999999999999Z").nanos(), 999_999_999);
        let long = format!("2027-01-01T00:00:00.{}Z", "7".repeat(10_000));
        assert_eq!(p(&long).nanos(), 777_777_777);
        assert_eq!(p("2027-01-01T00:00:00.5+01:00").nanos(), 500_000_000);
    }

    #[test]
    fn leap_second() {
        assert_eq!(p("2016-12-31T23:59:60Z"), p("2017-01-01T00:00:00Z"));
        assert_eq!(p("2016-12-31T23:59:60.5Z").nanos(), 500_000_000);
    }

    #[test]
    fn offsets() {
        let utc = p("2027-01-01T00:00:00Z");
        assert_eq!(p("2027-01-01T05:00:00+05:00"), utc);
        assert_eq!(p("2026-12-31T19:00:00-05:00"), utc);
        assert_eq!(p("2027-01-01T05:30:00+05:30"), utc);
        assert_eq!(p("2027-01-01T00:00:00-00:00"), utc);
        assert_eq!(p("2027-01-01T00:00:00+00:00"), utc);
        assert_eq!(p("2027-01-01T23:59:00+23:59").secs(), utc.secs());
        assert_eq!(p("2026-12-31T00:01:00-23:59").secs(), utc.secs());
    }

    #[test]
    fn before_epoch_and_odd_years() {
        assert_eq!(p("1969-12-31T23:59:59Z").secs(), -1);
        assert_eq!(p("1969-12-31T23:59:59.5Z").secs(), -1);
        assert_eq!(p("1900-01-01T00:00:00Z").secs(), -2_208_988_800);
        // 0000-01-01 (proleptic Gregorian, year 0 is a leap year).
        assert_eq!(p("0000-01-01T00:00:00Z").secs(), -62_167_219_200);
        assert!(p("0000-02-29T00:00:00Z").secs() < p("0000-03-01T00:00:00Z").secs());
        let plus = p("+999-01-01T00:00:00Z");
        assert_eq!(plus, p("0999-01-01T00:00:00Z"));
        assert_eq!(plus.secs(), -30_641_760_000);
        let minus = p("-999-01-01T00:00:00Z");
        assert!(minus < p("0000-01-01T00:00:00Z"));
        // Year -999 is not a leap year: -999-12-31 to 0000-01-01 is 999 years.
        // Cross-check with the day count of years -999..=-1.
        let mut days: i64 = 0;
        for y in -999i64..0 {
            days += if is_leap(y) { 366 } else { 365 };
        }
        assert_eq!(
            p("0000-01-01T00:00:00Z").secs() - minus.secs(),
            days * SECS_PER_DAY
        );
        assert!(p("-004-02-29T00:00:00Z").secs() < 0);
        assert_eq!(err("-001-02-29T00:00:00Z"), "bad day 29 for -001-02");
    }

    #[test]
    fn leap_years() {
        assert!(Timestamp::parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert!(Timestamp::parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
        assert_eq!(err("1900-02-29T00:00:00Z"), "bad day 29 for 1900-02");
        assert_eq!(err("2023-02-29T00:00:00Z"), "bad day 29 for 2023-02");
        assert_eq!(err("2024-02-30T00:00:00Z"), "bad day 30 for 2024-02");
        assert_eq!(err("2024-04-31T00:00:00Z"), "bad day 31 for 2024-04");
        assert_eq!(err("2024-01-00T00:00:00Z"), "bad day 0 for 2024-01");
        assert!(Timestamp::parse_rfc3339("2024-01-31T00:00:00Z").is_ok());
    }

    #[test]
    fn error_messages() {
        assert_eq!(err(""), "too short (0 bytes, need >= 19)");
        assert_eq!(
            err("2027-01-01T00:00:0"),
            "too short (18 bytes, need >= 19)"
        );
        assert_eq!(
            err("2027/01-01T00:00:00Z"),
            "expected '-' at position 4, got '/'"
        );
        assert_eq!(
            err("2027-01/01T00:00:00Z"),
            "expected '-' at position 7, got '/'"
        );
        assert_eq!(
            err("2027-01-01 00:00:00Z"),
            "expected 'T' at position 10, got ' '"
        );
        assert_eq!(
            err("2027-01-01T00-00:00Z"),
            "expected ':' at position 13, got '-'"
        );
        assert_eq!(
            err("2027-01-01T00:00-00Z"),
            "expected ':' at position 16, got '-'"
        );
        assert_eq!(
            err("20x7-01-01T00:00:00Z"),
            "bad integer \"20x7\": invalid digit found in string"
        );
        assert_eq!(
            err("++99-01-01T00:00:00Z"),
            "bad integer \"++99\": invalid digit found in string"
        );
        assert_eq!(
            err("2027-1a-01T00:00:00Z"),
            "expected ASCII digits, got \"1a\""
        );
        assert_eq!(
            err("2027-+1-01T00:00:00Z"),
            "expected ASCII digits, got \"+1\""
        );
        assert_eq!(
            err("2027-01-0xT00:00:00Z"),
            "expected ASCII digits, got \"0x\""
        );
        assert_eq!(
            err("2027-01-01T 1:00:00Z"),
            "expected ASCII digits, got \" 1\""
        );
        assert_eq!(
            err("2027-01-01T00:-1:00Z"),
            "expected ASCII digits, got \"-1\""
        );
        assert_eq!(
            err("2027-01-01T00:00:5.Z"),
            "expected ASCII digits, got \"5.\""
        );
        assert_eq!(err("2027-00-01T00:00:00Z"), "bad month: 0");
        assert_eq!(err("2027-13-01T00:00:00Z"), "bad month: 13");
        assert_eq!(err("2027-01-32T00:00:00Z"), "bad day 32 for 2027-01");
        assert_eq!(err("2027-01-01T24:00:00Z"), "bad hour: 24");
        assert_eq!(err("2027-01-01T00:60:00Z"), "bad minute: 60");
        assert_eq!(err("2027-01-01T00:00:61Z"), "bad second: 61");
        assert_eq!(err("2027-01-01T00:00:00.Z"), "expected digits after '.'");
        assert_eq!(err("2027-01-01T00:00:00."), "expected digits after '.'");
        assert_eq!(
            err("2027-01-01T00:00:00"),
            "missing timezone designator (need 'Z' or '+HH:MM')"
        );
        assert_eq!(
            err("2027-01-01T00:00:00.5"),
            "missing timezone designator (need 'Z' or '+HH:MM')"
        );
        assert_eq!(
            err("2027-01-01T00:00:00X"),
            "expected 'Z' or '+/-HH:MM', got 'X'"
        );
        assert_eq!(
            err("2027-01-01T00:00:00é"),
            "expected 'Z' or '+/-HH:MM', got 'é'"
        );
        assert_eq!(err("2027-01-01T00:00:00+05:0"), "offset truncated");
        assert_eq!(err("2027-01-01T00:00:00+"), "offset truncated");
        assert_eq!(
            err("2027-01-01T00:00:00+0500Z"),
            "expected ':' at offset's HH:MM separator"
        );
        assert_eq!(
            err("2027-01-01T00:00:00+a5:00"),
            "expected ASCII digits, got \"a5\""
        );
        assert_eq!(
            err("2027-01-01T00:00:00+05:x0"),
            "expected ASCII digits, got \"x0\""
        );
        assert_eq!(err("2027-01-01T00:00:00+24:00"), "bad offset hour: 24");
        assert_eq!(err("2027-01-01T00:00:00+05:60"), "bad offset minute: 60");
        assert_eq!(
            err("2099-01-01T00:00:00Z)"),
            "trailing garbage in timestamp starting at byte 20"
        );
        assert_eq!(
            err("2099-01-01T00:00:00+01:00 "),
            "trailing garbage in timestamp starting at byte 25"
        );
        assert_eq!(
            err("2099-01-01T00:00:00.5Zjunk"),
            "trailing garbage in timestamp starting at byte 22"
        );
    }

    #[test]
    fn non_utf8_errors() {
        // Fullwidth digits are 3 bytes each: byte 4 is inside the second one.
        let e = err("２０２６-01-01T00:00:00Z");
        assert!(e.starts_with("non-utf8: "), "{e}");
        // Byte 4 inside a 3-byte char.
        let e = err("20€-01-01T00:00:00Z");
        assert!(e.starts_with("non-utf8: "), "{e}");
        // Separator byte 7 inside a 2-byte char.
        let e = err("2027-0é01T00:00:00Z");
        assert!(e.starts_with("non-utf8: "), "{e}");
        // Separator byte 10 inside a 2-byte char.
        let e = err("2027-01-0éT00:00:00Z");
        assert!(e.starts_with("non-utf8: "), "{e}");
        // Seconds field 17..19 cuts a char.
        let e = err("2027-01-01T00:00:0éZ");
        assert!(e.starts_with("non-utf8: "), "{e}");
        // Offset minutes cut a char.
        let e = err("2027-01-01T00:00:00+00:0é");
        assert!(e.starts_with("non-utf8: "), "{e}");
        let e = err("2027-01-01T00:00:00+0é:00");
        assert_eq!(e, "expected ':' at offset's HH:MM separator");
        let e = err("2027-01-01T00:00:00+é:00");
        assert_eq!(e, "expected ASCII digits, got \"é\"");
    }

    #[test]
    fn never_panics_on_prefixes_and_junk() {
        let inputs = [
            "2027-01-01T00:00:00.123+05:30",
            "２０２６-０１-０１T００:００:００Z",
            "-999-12-31t23:59:60.999999999999z",
            "\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}\u{1F600}",
        ];
        for input in inputs {
            for (i, _) in input.char_indices() {
                let _ = Timestamp::parse_rfc3339(&input[..i]);
                let _ = Timestamp::parse_rfc3339(&input[i..]);
            }
        }
        for b in 0u8..128 {
            let mut s = String::from("2027-01-01T00:00:00");
            s.push(char::from(b));
            let _ = Timestamp::parse_rfc3339(&s);
            let mut s = String::from("2027-01-01T00:00:00+00:0");
            s.push(char::from(b));
            let _ = Timestamp::parse_rfc3339(&s);
        }
    }

    #[test]
    fn unix_millis_round_trip() {
        for ms in [
            0u64,
            1,
            999,
            1000,
            1_700_000_000_123,
            4_070_908_800_000,
            u64::MAX,
        ] {
            assert_eq!(Timestamp::from_unix_millis(ms).unix_millis(), ms);
        }
        let t = Timestamp::from_unix_millis(1_500);
        assert_eq!((t.secs(), t.nanos()), (1, 500_000_000));
        assert_eq!(p("1969-12-31T23:59:59Z").unix_millis(), 0);
        assert_eq!(
            p("2027-01-01T00:00:00.1239Z").unix_millis(),
            1_798_761_600_123
        );
    }

    #[test]
    fn system_time() {
        let t = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(1_234));
        assert_eq!((t.secs(), t.nanos()), (1, 234_000_000));
        let t = Timestamp::from_system_time(UNIX_EPOCH - Duration::from_millis(1_500));
        assert_eq!((t.secs(), t.nanos()), (-2, 500_000_000));
        let t = Timestamp::from_system_time(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!((t.secs(), t.nanos()), (-1, 0));
        assert_eq!(t.unix_millis(), 0);
        assert!(Timestamp::now() > p("2020-01-01T00:00:00Z"));
    }

    #[test]
    fn display() {
        assert_eq!(
            p("2027-01-01T00:00:00Z").to_string(),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            p("2027-01-01T00:00:00.5Z").to_string(),
            "2027-01-01T00:00:00.5Z"
        );
        assert_eq!(
            p("2027-01-01T05:30:00.000000010+05:30").to_string(),
            "2027-01-01T00:00:00.00000001Z"
        );
        assert_eq!(
            p("2016-12-31T23:59:60Z").to_string(),
            "2017-01-01T00:00:00Z"
        );
        assert_eq!(
            p("1969-12-31T23:59:59.25Z").to_string(),
            "1969-12-31T23:59:59.25Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            p("0000-01-01T00:00:00Z").to_string(),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(
            p("+999-03-01T00:00:00Z").to_string(),
            "0999-03-01T00:00:00Z"
        );
        assert_eq!(
            p("-999-03-01T00:00:00Z").to_string(),
            "-999-03-01T00:00:00Z"
        );
        assert_eq!(
            p("2024-02-29T12:34:56Z").to_string(),
            "2024-02-29T12:34:56Z"
        );
        // Extreme values must not panic.
        let _ = Timestamp::from_system_time(UNIX_EPOCH).to_string();
        let max = Timestamp {
            secs: i64::MAX,
            nanos: 999_999_999,
        };
        let min = Timestamp {
            secs: i64::MIN,
            nanos: 0,
        };
        let _ = max.to_string();
        let _ = min.to_string();
    }

    #[test]
    fn display_round_trip_many_days() {
        // Every day from year -999 to 9999 in big strides plus a dense range.
        let start = p("-999-01-01T00:00:00Z").secs();
        let end = p("9999-12-31T23:59:59Z").secs();
        let mut s = start;
        while s <= end {
            let t = Timestamp { secs: s, nanos: 0 };
            assert_eq!(p(&t.to_string()), t);
            s += 86_400 * 7 + 3_661;
        }
        for d in -800i64..800 {
            let t = Timestamp {
                secs: d * 86_400 + 43_200,
                nanos: 1,
            };
            assert_eq!(p(&t.to_string()), t);
        }
    }

    #[test]
    fn ordering() {
        assert!(p("2027-01-01T00:00:00.1Z") < p("2027-01-01T00:00:00.2Z"));
        assert!(p("2026-12-31T23:59:59.9Z") < p("2027-01-01T00:00:00Z"));
        assert_eq!(
            "2027-01-01T00:00:00Z".parse::<Timestamp>(),
            Ok(p("2027-01-01T00:00:00Z"))
        );
    }
}
