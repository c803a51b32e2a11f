//! Strict hexadecimal, the one codec for keys, signatures and tags.
//!
//! Decoding accepts an even number of `[0-9a-fA-F]` and nothing else: no
//! `0x`, no whitespace, no signs (the reference accepted `+X` pairs, which
//! made tokens malleable in encoding). Errors never quote the input, which
//! may be a secret.

/// Lowercase hex of `bytes`.
///
/// ```
/// assert_eq!(capnagent::hex::encode(&[0, 0xab, 0xff]), "00abff");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    // Through a stack buffer: the heap allocation is neither zeroed first
    // (`calloc` skips the allocator's per-thread cache) nor checked as
    // UTF-8 afterwards.
    let mut out = String::with_capacity(bytes.len() * 2);
    let mut pairs = [0u8; 64];
    for chunk in bytes.chunks(32) {
        out.push_str(encode_into(chunk, &mut pairs));
    }
    out
}

/// Lowercase hex of `bytes` written into `out` (which must be twice as
/// long), without allocating; returns it as text.
pub(crate) fn encode_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    let len = out.len().min(bytes.len() * 2);
    std::str::from_utf8(out.get(..len).unwrap_or_default()).unwrap_or_default()
}

/// Decodes strict hex.
///
/// ```
/// assert_eq!(capnagent::hex::decode("00ABff"), Ok(vec![0, 0xab, 0xff]));
/// assert!(capnagent::hex::decode("+a").is_err());
/// ```
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError::OddLength);
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(HexError::InvalidDigit),
        })
        .collect()
}

/// Why hex did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// An odd number of digits.
    #[error("hex string has odd length")]
    OddLength,
    /// A character that is not a hex digit.
    #[error("invalid hex digit")]
    InvalidDigit,
}

impl HexError {
    /// The message as a static string.
    pub fn as_str(&self) -> &'static str {
        match self {
            HexError::OddLength => "hex string has odd length",
            HexError::InvalidDigit => "invalid hex digit",
        }
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode(""), Ok(vec![]));
        for bad in ["abc", "0x00", " 00", "+a", "éé", "0g"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
        assert_eq!(decode(&encode(&[1, 2, 254])), Ok(vec![1, 2, 254]));
    }

    #[test]
    fn encode_matches_format_on_every_length() {
        // Lengths on both sides of the 32-byte chunks `encode` works in.
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        for len in [0, 1, 31, 32, 33, 64, 65, 256] {
            let expected: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(encode(&bytes[..len]), expected, "{len}");
        }
    }
}
