//! The gRPC length-prefixed message frame: a 1-byte compressed flag, a
//! 4-byte big-endian length, then the message. The layer reads exactly one
//! uncompressed frame from a buffered unary request body.

use bytes::Bytes;

/// Bytes before each message: the flag and the length.
pub(crate) const HEADER_LEN: usize = 5;

/// Why a buffered request body is not exactly one usable gRPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The body ended before a complete frame header.
    ShortHeader(usize),
    /// The header announces more bytes than the body holds.
    Truncated { declared: usize, available: usize },
    /// Bytes follow the one message a unary call may carry.
    Trailing(usize),
    /// The message is compressed (flag 1), which the layer does not decode.
    Compressed,
    /// The flag byte is neither 0 nor 1.
    BadFlag(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::ShortHeader(0) => f.write_str("request carries no message"),
            FrameError::ShortHeader(n) => {
                write!(f, "request frame header is incomplete ({n} of 5 bytes)")
            }
            FrameError::Truncated {
                declared,
                available,
            } => write!(
                f,
                "request frame declares {declared} message bytes but carries {available}"
            ),
            FrameError::Trailing(n) => write!(
                f,
                "request carries {n} bytes after its message; a unary call has exactly one"
            ),
            FrameError::Compressed => f.write_str(
                "request message is compressed; the capability layer only reads \
                 uncompressed messages (do not enable send compression on the client)",
            ),
            FrameError::BadFlag(flag) => {
                write!(f, "request frame has an invalid compressed flag {flag}")
            }
        }
    }
}

/// The message of the single frame that makes up `body`.
pub(crate) fn single_message(body: &Bytes) -> Result<Bytes, FrameError> {
    let Some(header) = body.get(..HEADER_LEN) else {
        return Err(FrameError::ShortHeader(body.len()));
    };
    match header[0] {
        0 => {}
        1 => return Err(FrameError::Compressed),
        flag => return Err(FrameError::BadFlag(flag)),
    }
    let declared = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    // A length that does not fit in usize cannot fit in the body either.
    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
    let available = body.len() - HEADER_LEN;
    if declared > available {
        return Err(FrameError::Truncated {
            declared,
            available,
        });
    }
    if declared < available {
        return Err(FrameError::Trailing(available - declared));
    }
    Ok(body.slice(HEADER_LEN..))
}

/// One uncompressed frame around `message`.
#[cfg(test)]
pub(crate) fn encode(message: &[u8]) -> Result<Bytes, std::num::TryFromIntError> {
    let len = u32::try_from(message.len())?;
    let mut frame = Vec::with_capacity(HEADER_LEN + message.len());
    frame.push(0);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    Ok(Bytes::from(frame))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn body(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn reads_exactly_one_uncompressed_message() {
        let frame = encode(b"\x08\x96\x01").unwrap();
        assert_eq!(&frame[..], b"\x00\x00\x00\x00\x03\x08\x96\x01");
        assert_eq!(single_message(&frame).unwrap(), body(b"\x08\x96\x01"));
        // An empty message (all fields default) is a valid frame.
        assert_eq!(single_message(&encode(b"").unwrap()).unwrap(), Bytes::new());
    }

    #[test]
    fn refuses_short_truncated_and_trailing_frames() {
        assert_eq!(
            single_message(&Bytes::new()),
            Err(FrameError::ShortHeader(0))
        );
        assert_eq!(
            single_message(&body(b"\x00\x00\x00")),
            Err(FrameError::ShortHeader(3))
        );
        assert_eq!(
            single_message(&body(b"\x00\x00\x00\x00\x04ab")),
            Err(FrameError::Truncated {
                declared: 4,
                available: 2
            })
        );
        assert_eq!(
            single_message(&body(b"\x00\xff\xff\xff\xff")),
            Err(FrameError::Truncated {
                declared: u32::MAX as usize,
                available: 0
            })
        );
        let mut two = encode(b"a").unwrap().to_vec();
        two.extend_from_slice(&encode(b"b").unwrap());
        assert_eq!(single_message(&body(&two)), Err(FrameError::Trailing(6)));
    }

    #[test]
    fn refuses_compressed_and_unknown_flags() {
        assert_eq!(
            single_message(&body(b"\x01\x00\x00\x00\x01a")),
            Err(FrameError::Compressed)
        );
        assert_eq!(
            single_message(&body(b"\x02\x00\x00\x00\x01a")),
            Err(FrameError::BadFlag(2))
        );
        assert!(FrameError::Compressed.to_string().contains("compressed"));
    }
}
