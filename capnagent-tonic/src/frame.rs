//! The gRPC length-prefixed message frame: a 1-byte compressed flag, a
//! 4-byte big-endian length, then the message. The layer reads exactly one
//! frame from a buffered unary request body, and decompresses its message
//! when the flag says it is compressed.
//!
//! ## Compression
//!
//! A compressed message (flag 1) is in the encoding the `grpc-encoding`
//! header names. The layer reads every encoding tonic itself reads
//! ([`ACCEPT_ENCODING`]: `gzip`, `deflate`, `zstd`), with the very decoders
//! tonic uses for them (`flate2`'s `GzDecoder` and `ZlibDecoder`, `zstd`'s
//! streaming `Decoder`): the same crates, one version of each in the lock,
//! so the message the layer judges is byte for byte the message the
//! service decodes (two decoders that disagree on an edge case would let a
//! call be judged on other args than it runs with). Both crates are the
//! maintained, widely used Rust bindings (`flate2` over a pure-Rust
//! inflater, `zstd` over the reference C library).
//!
//! Decompression is bounded: the decoder is read through
//! `take(max_message + 1)`, so a message that inflates past the limit (a
//! decompression bomb: 10 MB of zeros is 10 KB of gzip) stops one byte
//! past it and is refused ([`FrameError::TooLarge`]), never held whole
//! (the buffer it fills grows by doubling: at most about twice the limit
//! is allocated, next to the compressed body).
//! `max_message` is the layer's body limit less the frame header: a
//! compressed message may not decompress to more than an uncompressed one
//! may carry. `zstd` frames also declare the window their decoder must
//! keep; the layer refuses windows over [`ZSTD_WINDOW_LOG_MAX`] (8 MiB,
//! what zstd levels 1 to 19 use; tonic compresses at level 3, a 2 MiB
//! window), so a frame cannot make the decoder allocate more.
//!
//! The `grpc-encoding` header follows the gRPC compression spec
//! (`doc/compression.md` in grpc/grpc): an encoding the layer cannot read
//! is refused from the request head, before any body is read
//! ([`UnknownEncoding`], answered `UNIMPLEMENTED` with
//! `grpc-accept-encoding`); a frame with the compressed flag set under no
//! `grpc-encoding` or `identity` is a protocol error the spec answers with
//! `INTERNAL` ([`FrameError::CompressedWithoutEncoding`]). An uncompressed
//! frame (flag 0) under any encoding the layer reads is legal and read as
//! is: clients such as grpcio leave small messages uncompressed.

use std::io::Read;

use bytes::Bytes;
use http::HeaderMap;

/// Bytes before each message: the flag and the length.
pub(crate) const HEADER_LEN: usize = 5;

/// The header that names the encoding of a call's request messages.
pub(crate) const ENCODING_HEADER: &str = "grpc-encoding";

/// The header that lists the encodings a peer reads.
pub(crate) const ACCEPT_ENCODING_HEADER: &str = "grpc-accept-encoding";

/// The encodings the layer reads, as the `grpc-accept-encoding` value of
/// an `UNIMPLEMENTED` answer to an encoding it cannot read.
pub(crate) const ACCEPT_ENCODING: &str = "gzip,deflate,zstd,identity";

/// The largest `zstd` window (log2 of its bytes) a frame may ask the
/// decoder to keep: 2^23, 8 MiB, the window of zstd levels 1 to 19.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The longest `grpc-encoding` value a refusal's reason repeats.
const ECHO_MAX: usize = 32;

/// The encoding of a call's request messages, from its `grpc-encoding`
/// header (tonic's names, matched as tonic matches them: exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// No header, or `identity`: messages are never compressed.
    Identity,
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950), as tonic writes and reads it.
    Deflate,
    /// `zstd` (RFC 8878).
    Zstd,
}

/// A `grpc-encoding` the layer cannot read: the call is refused with
/// `UNIMPLEMENTED`, as the gRPC compression spec asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownEncoding {
    /// The header's value, when it is short printable ASCII (a reason
    /// never repeats arbitrary request bytes).
    echo: Option<String>,
}

impl std::fmt::Display for UnknownEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.echo {
            Some(name) => write!(f, "request message encoding {name:?}")?,
            None => f.write_str("request message encoding")?,
        }
        write!(
            f,
            " is not one the capability layer reads (it reads {ACCEPT_ENCODING})"
        )
    }
}

impl Encoding {
    /// The encoding named by `headers` (the first `grpc-encoding`, the one
    /// tonic reads).
    pub(crate) fn of(headers: &HeaderMap) -> Result<Encoding, UnknownEncoding> {
        let Some(value) = headers.get(ENCODING_HEADER) else {
            return Ok(Encoding::Identity);
        };
        match value.as_bytes() {
            b"identity" => Ok(Encoding::Identity),
            b"gzip" => Ok(Encoding::Gzip),
            b"deflate" => Ok(Encoding::Deflate),
            b"zstd" => Ok(Encoding::Zstd),
            other => Err(UnknownEncoding { echo: echo(other) }),
        }
    }

    /// The header value naming this encoding.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Zstd => "zstd",
        }
    }
}

/// `value` as text for a reason, if it is short printable ASCII.
fn echo(value: &[u8]) -> Option<String> {
    let printable = value.iter().all(|b| b.is_ascii_graphic());
    if value.is_empty() || value.len() > ECHO_MAX || !printable {
        return None;
    }
    std::str::from_utf8(value).ok().map(str::to_owned)
}

/// Why a buffered request body is not exactly one usable gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The body ended before a complete frame header.
    ShortHeader(usize),
    /// The header announces more bytes than the body holds.
    Truncated { declared: usize, available: usize },
    /// Bytes follow the one message a unary call may carry.
    Trailing(usize),
    /// The message is compressed (flag 1) but the call names no encoding
    /// (no `grpc-encoding`, or `identity`): a protocol error.
    CompressedWithoutEncoding,
    /// The compressed message does not decompress (its decoder's error).
    Corrupt { encoding: Encoding, error: String },
    /// The message decompresses to more than `limit` bytes.
    TooLarge { limit: usize },
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
            FrameError::CompressedWithoutEncoding => f.write_str(
                "protocol error: request message has the compressed flag set \
                 but the call names no grpc-encoding (or identity)",
            ),
            FrameError::Corrupt { encoding, error } => {
                write!(
                    f,
                    "request message does not decompress from {}: {error}",
                    encoding.name()
                )
            }
            FrameError::TooLarge { limit } => write!(
                f,
                "request message decompresses to more than the limit of {limit} bytes"
            ),
            FrameError::BadFlag(flag) => {
                write!(f, "request frame has an invalid compressed flag {flag}")
            }
        }
    }
}

/// The message of the single frame that makes up `body`, decompressed
/// from `encoding` when its flag says so, and at most `max_message` bytes
/// once decompressed (an uncompressed message is bounded by the body).
pub(crate) fn single_message(
    body: &Bytes,
    encoding: Encoding,
    max_message: usize,
) -> Result<Bytes, FrameError> {
    let Some(header) = body.get(..HEADER_LEN) else {
        return Err(FrameError::ShortHeader(body.len()));
    };
    let compressed = match header[0] {
        0 => false,
        1 => true,
        flag => return Err(FrameError::BadFlag(flag)),
    };
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
    let message = body.slice(HEADER_LEN..);
    if compressed {
        decompress(&message, encoding, max_message).map(Bytes::from)
    } else {
        Ok(message)
    }
}

/// `message` decompressed from `encoding`, refused past `max` bytes.
fn decompress(message: &[u8], encoding: Encoding, max: usize) -> Result<Vec<u8>, FrameError> {
    let read = match encoding {
        Encoding::Identity => return Err(FrameError::CompressedWithoutEncoding),
        Encoding::Gzip => read_bounded(flate2::read::GzDecoder::new(message), max),
        Encoding::Deflate => read_bounded(flate2::read::ZlibDecoder::new(message), max),
        Encoding::Zstd => zstd_decoder(message).and_then(|decoder| read_bounded(decoder, max)),
    };
    read.map_err(|e| match e {
        Bounded::Over => FrameError::TooLarge { limit: max },
        Bounded::Io(error) => FrameError::Corrupt {
            encoding,
            error: error.to_string(),
        },
    })
}

/// A `zstd` decoder of `message` that refuses windows over
/// [`ZSTD_WINDOW_LOG_MAX`].
fn zstd_decoder(message: &[u8]) -> Result<impl Read + '_, Bounded> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(message).map_err(Bounded::Io)?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(Bounded::Io)?;
    Ok(decoder)
}

/// Why a bounded read stopped.
#[derive(Debug)]
enum Bounded {
    /// The reader yields more than the bound.
    Over,
    /// The reader failed.
    Io(std::io::Error),
}

/// Everything `reader` yields, if that is at most `max` bytes: it is read
/// one byte past `max` at most, so the buffer never holds more.
fn read_bounded(reader: impl Read, max: usize) -> Result<Vec<u8>, Bounded> {
    let bound = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    reader
        .take(bound)
        .read_to_end(&mut out)
        .map_err(Bounded::Io)?;
    if out.len() > max {
        return Err(Bounded::Over);
    }
    Ok(out)
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

/// One frame with the compressed flag set around `message` compressed
/// with `encoding` (as tonic compresses: gzip and zlib at level 6, zstd at
/// its default level).
#[cfg(test)]
pub(crate) fn encode_compressed(message: &[u8], encoding: Encoding) -> std::io::Result<Bytes> {
    use std::io::Write;
    let level = flate2::Compression::new(6);
    let compressed = match encoding {
        Encoding::Identity => message.to_vec(),
        Encoding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(message)?;
            encoder.finish()?
        }
        Encoding::Deflate => {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), level);
            encoder.write_all(message)?;
            encoder.finish()?
        }
        Encoding::Zstd => zstd::encode_all(message, zstd::DEFAULT_COMPRESSION_LEVEL)?,
    };
    let mut frame = encode(&compressed).map_err(std::io::Error::other)?.to_vec();
    frame[0] = 1;
    Ok(Bytes::from(frame))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every encoding that compresses.
    const COMPRESSED: [Encoding; 3] = [Encoding::Gzip, Encoding::Deflate, Encoding::Zstd];

    /// A generous bound for the tests that are not about it.
    const MAX: usize = 1 << 20;

    fn body(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    fn headers(encoding: Option<&[u8]>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = encoding {
            let value = http::HeaderValue::from_bytes(value).unwrap();
            headers.insert(ENCODING_HEADER, value);
        }
        headers
    }

    #[test]
    fn reads_exactly_one_uncompressed_message() {
        let frame = encode(b"\x08\x96\x01").unwrap();
        assert_eq!(&frame[..], b"\x00\x00\x00\x00\x03\x08\x96\x01");
        assert_eq!(
            single_message(&frame, Encoding::Identity, MAX).unwrap(),
            body(b"\x08\x96\x01")
        );
        // An empty message (all fields default) is a valid frame.
        let empty = encode(b"").unwrap();
        assert_eq!(
            single_message(&empty, Encoding::Identity, MAX).unwrap(),
            Bytes::new()
        );
    }

    #[test]
    fn refuses_short_truncated_and_trailing_frames() {
        let read = |bytes: &[u8]| single_message(&body(bytes), Encoding::Identity, MAX);
        assert_eq!(read(b""), Err(FrameError::ShortHeader(0)));
        assert_eq!(read(b"\x00\x00\x00"), Err(FrameError::ShortHeader(3)));
        assert_eq!(
            read(b"\x00\x00\x00\x00\x04ab"),
            Err(FrameError::Truncated {
                declared: 4,
                available: 2
            })
        );
        assert_eq!(
            read(b"\x00\xff\xff\xff\xff"),
            Err(FrameError::Truncated {
                declared: u32::MAX as usize,
                available: 0
            })
        );
        let mut two = encode(b"a").unwrap().to_vec();
        two.extend_from_slice(&encode(b"b").unwrap());
        assert_eq!(read(&two), Err(FrameError::Trailing(6)));
    }

    #[test]
    fn refuses_compressed_flags_without_an_encoding_and_unknown_flags() {
        let gzip = encode_compressed(b"a", Encoding::Gzip).unwrap();
        assert_eq!(
            single_message(&gzip, Encoding::Identity, MAX),
            Err(FrameError::CompressedWithoutEncoding)
        );
        assert!(
            FrameError::CompressedWithoutEncoding
                .to_string()
                .contains("compressed flag")
        );
        assert_eq!(
            single_message(&body(b"\x02\x00\x00\x00\x01a"), Encoding::Gzip, MAX),
            Err(FrameError::BadFlag(2))
        );
    }

    #[test]
    fn compressed_messages_of_every_encoding_decompress() {
        let message: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8).collect();
        for encoding in COMPRESSED {
            let frame = encode_compressed(&message, encoding).unwrap();
            assert!(frame.len() < message.len() / 4, "{encoding:?} compresses");
            let read = single_message(&frame, encoding, message.len()).unwrap();
            assert_eq!(&read[..], &message[..], "{encoding:?}");
            // One byte less is over the limit.
            assert_eq!(
                single_message(&frame, encoding, message.len() - 1),
                Err(FrameError::TooLarge {
                    limit: message.len() - 1
                }),
                "{encoding:?}"
            );
            // An uncompressed frame under the same encoding is read as is.
            let plain = encode(&message).unwrap();
            assert_eq!(
                &single_message(&plain, encoding, 0).unwrap()[..],
                &message[..]
            );
        }
    }

    #[test]
    fn a_message_in_another_encoding_than_named_is_corrupt() {
        let gzip = encode_compressed(b"hello", Encoding::Gzip).unwrap();
        for encoding in [Encoding::Deflate, Encoding::Zstd] {
            let error = single_message(&gzip, encoding, MAX).unwrap_err();
            assert!(
                matches!(error, FrameError::Corrupt { encoding: e, .. } if e == encoding),
                "{error:?}"
            );
            assert!(error.to_string().contains(encoding.name()), "{error}");
        }
        // A gzip stream cut short.
        let mut cut = gzip.to_vec();
        cut.truncate(cut.len() - 4);
        let len = u32::try_from(cut.len() - HEADER_LEN).unwrap();
        cut[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        let error = single_message(&body(&cut), Encoding::Gzip, MAX).unwrap_err();
        assert!(matches!(error, FrameError::Corrupt { .. }), "{error:?}");
    }

    /// 10 MB of zeros compress to about 10 KB: each encoding's bomb is
    /// refused after reading one byte past a 4 MiB limit, and decompressed
    /// whole it would still be refused by a limit of one byte less.
    #[test]
    fn a_decompression_bomb_is_refused_within_the_limit() {
        let zeros = vec![0u8; 10_000_000];
        let limit = 4 * 1024 * 1024;
        for encoding in COMPRESSED {
            let bomb = encode_compressed(&zeros, encoding).unwrap();
            assert!(bomb.len() < 20_000, "{encoding:?}: {} bytes", bomb.len());
            assert_eq!(
                single_message(&bomb, encoding, limit),
                Err(FrameError::TooLarge { limit }),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn read_bounded_stops_past_the_limit() {
        // An endless reader: only the bound stops it.
        let error = read_bounded(std::io::repeat(0), 1000).unwrap_err();
        assert!(matches!(error, Bounded::Over));
        assert_eq!(read_bounded(&[1u8; 1000][..], 1000).unwrap().len(), 1000);
        assert!(matches!(
            read_bounded(&[1u8; 1001][..], 1000),
            Err(Bounded::Over)
        ));
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
        // A zstd frame header (magic, descriptor 0x00: a window descriptor
        // follows, no content size) whose window is 2^25 bytes, 32 MiB
        // (exponent 15, mantissa 0; zstd's own default bound is 2^27),
        // then a raw empty last block.
        let mut message = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 15 << 3];
        message.extend_from_slice(&[0x01, 0x00, 0x00]);
        let mut frame = encode(&message).unwrap().to_vec();
        frame[0] = 1;
        let error = single_message(&body(&frame), Encoding::Zstd, MAX).unwrap_err();
        assert!(matches!(error, FrameError::Corrupt { .. }), "{error:?}");
        // The same frame with a 1 KiB window (exponent 0) is an empty message.
        frame[HEADER_LEN + 5] = 0;
        assert_eq!(
            single_message(&body(&frame), Encoding::Zstd, MAX).unwrap(),
            Bytes::new()
        );
    }

    #[test]
    fn the_encoding_header_is_read_as_tonic_reads_it() {
        let of = |value: Option<&[u8]>| Encoding::of(&headers(value));
        assert_eq!(of(None), Ok(Encoding::Identity));
        assert_eq!(of(Some(b"identity")), Ok(Encoding::Identity));
        assert_eq!(of(Some(b"gzip")), Ok(Encoding::Gzip));
        assert_eq!(of(Some(b"deflate")), Ok(Encoding::Deflate));
        assert_eq!(of(Some(b"zstd")), Ok(Encoding::Zstd));
        for encoding in COMPRESSED {
            assert!(ACCEPT_ENCODING.contains(encoding.name()));
        }
        let snappy = of(Some(b"snappy")).unwrap_err();
        assert_eq!(
            snappy.to_string(),
            "request message encoding \"snappy\" is not one the capability layer \
             reads (it reads gzip,deflate,zstd,identity)"
        );
        // Names are exact, and odd values are not repeated.
        assert!(of(Some(b"GZIP")).is_err());
        let long = of(Some("x".repeat(100).as_bytes())).unwrap_err();
        assert!(!long.to_string().contains("xxx"), "{long}");
        let binary = of(Some(b"g\tzip")).unwrap_err();
        assert!(
            binary
                .to_string()
                .starts_with("request message encoding is")
        );
    }
}
