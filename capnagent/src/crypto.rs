//! The few cryptographic primitives the crate builds on: HMAC-SHA256 chain
//! steps, constant-time tag comparison, and strict hex (through
//! `base16ct`, whose codec is constant-time, so keys may pass through it).
//!
//! Kept in one place so that every MAC in the crate is computed the same way
//! and every tag comparison goes through `subtle`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA256.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A 32-byte MAC tag.
pub(crate) type Tag = [u8; 32];

/// A keyed HMAC state whose key schedule (ipad/opad blocks) is computed once
/// and cloned per use. Never printed.
#[derive(Clone)]
pub(crate) struct KeyedMac(HmacSha256);

impl KeyedMac {
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        match HmacSha256::new_from_slice(key) {
            Ok(mac) => KeyedMac(mac),
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        }
    }

    /// A fresh MAC state under this key.
    pub(crate) fn start(&self) -> HmacSha256 {
        self.0.clone()
    }

    /// MAC of one message under this key.
    pub(crate) fn tag(&self, msg: &[u8]) -> Tag {
        let mut mac = self.start();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    /// MAC of the concatenation of `parts` under this key.
    pub(crate) fn tag_parts(&self, parts: &[&[u8]]) -> Tag {
        let mut mac = self.start();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// One chain step: `HMAC(key = prev, msg = parts...)`.
pub(crate) fn chain_step(prev: &Tag, parts: &[&[u8]]) -> Tag {
    KeyedMac::new(prev).tag_parts(parts)
}

/// Feeds a hash or MAC (`sha2::digest::Update`) in blocks gathered in a
/// buffer on the stack: one `update` per small piece (a JSON key, a comma)
/// would cost more than the hashing itself.
pub(crate) struct Buffered<U> {
    inner: U,
    buf: [u8; BUFFERED_CAPACITY],
    len: usize,
}

/// Eight SHA-256 blocks: enough to make each `update` worth its call,
/// small enough that zeroing the buffer (once per receipt MAC) is cheap.
const BUFFERED_CAPACITY: usize = 512;

impl<U: sha2::digest::Update> Buffered<U> {
    pub(crate) fn new(inner: U) -> Buffered<U> {
        Buffered {
            inner,
            buf: [0; BUFFERED_CAPACITY],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if let Some(pending) = self.buf.get(..self.len) {
            self.inner.update(pending);
        }
        self.len = 0;
    }

    /// Everything given so far, handed over.
    pub(crate) fn finish(mut self) -> U {
        self.flush();
        self.inner
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > BUFFERED_CAPACITY {
            self.flush();
            if bytes.len() >= BUFFERED_CAPACITY {
                self.inner.update(bytes);
                return;
            }
        }
        if let Some(room) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    pub(crate) fn byte(&mut self, byte: u8) {
        if self.len == BUFFERED_CAPACITY {
            self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }
}

/// Constant-time equality of two tags.
pub(crate) fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// Lowercase hex of `bytes` written into `out` (which must be twice as
/// long), without allocating; returns it as text (empty if `out` is short).
pub(crate) fn hex_encode_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    base16ct::lower::encode_str(bytes, out).unwrap_or_default()
}

/// Decodes strict hex: an even number of `[0-9a-fA-F]`, nothing else (no
/// `0x`, no whitespace, no signs). The error never quotes the input, which
/// may be a secret.
pub(crate) fn hex_decode(text: &str) -> Result<Vec<u8>, &'static str> {
    base16ct::mixed::decode_vec(text).map_err(|e| match e {
        base16ct::Error::InvalidLength => "hex string has odd length",
        base16ct::Error::InvalidEncoding => "invalid hex digit",
    })
}

/// Strict hex of exactly `N` bytes.
pub(crate) fn hex_decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexArrayError> {
    let bytes = hex_decode(text).map_err(HexArrayError::Hex)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| HexArrayError::Length(bytes.len()))
}

/// Why [`hex_decode_array`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexArrayError {
    Hex(&'static str),
    Length(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_hex() {
        assert_eq!(hex_decode(""), Ok(vec![]));
        assert_eq!(hex_decode("00ABff"), Ok(vec![0, 0xab, 0xff]));
        assert_eq!(hex_decode("abc"), Err("hex string has odd length"));
        for bad in ["0x00", " 0", "+a", "éé", "0g"] {
            assert_eq!(hex_decode(bad), Err("invalid hex digit"), "{bad}");
        }
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        for len in [0, 1, 31, 32, 33, 256] {
            let expected: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex_encode(&bytes[..len]), expected, "{len}");
            let mut out = vec![0u8; len * 2];
            assert_eq!(hex_encode_into(&bytes[..len], &mut out), expected, "{len}");
            assert_eq!(hex_decode(&expected).as_deref(), Ok(&bytes[..len]));
        }
    }

    #[test]
    fn fixed_length_hex() {
        assert_eq!(hex_decode_array::<2>("0001"), Ok([0, 1]));
        assert!(matches!(
            hex_decode_array::<2>("+a01"),
            Err(HexArrayError::Hex(_))
        ));
        assert_eq!(hex_decode_array::<2>("00"), Err(HexArrayError::Length(1)));
    }

    #[test]
    fn tags_compare_by_length_and_content() {
        assert!(tags_equal(&[1, 2], &[1, 2]));
        assert!(!tags_equal(&[1, 2], &[1, 3]));
        assert!(!tags_equal(&[1, 2], &[1, 2, 3]));
    }

    #[test]
    fn keyed_mac_matches_fresh_hmac() {
        let key = KeyedMac::new(b"key");
        let mut fresh = HmacSha256::new_from_slice(b"key").expect("any key length");
        fresh.update(b"msg");
        let expected: Tag = fresh.finalize().into_bytes().into();
        assert_eq!(key.tag(b"msg"), expected);
        assert_eq!(format!("{key:?}"), "..");
    }
}
