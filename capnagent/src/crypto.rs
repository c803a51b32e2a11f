//! The few cryptographic primitives the crate builds on: HMAC-SHA256 chain
//! steps, constant-time tag comparison, and a strict hex codec.
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

impl<U: sha2::digest::Update> crate::json::JsonSink for Buffered<U> {
    fn put(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

/// Constant-time equality of two tags.
pub(crate) fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub(crate) use crate::hex::encode as hex_encode;

/// Strict hex of exactly `N` bytes.
pub(crate) fn hex_decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexArrayError> {
    let bytes = crate::hex::decode(text).map_err(|e| HexArrayError::Hex(e.as_str()))?;
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
