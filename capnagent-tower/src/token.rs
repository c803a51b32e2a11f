//! Where the capability and its holder-of-key proof come from: the one
//! reader of the token header (HTTP) or metadata (gRPC, whose metadata is
//! an HTTP/2 header map) and of the proof header, for every protocol.
//!
//! A value that is repeated or not visible ASCII is refused rather than
//! guessed at: the reasons below are the signed reasons of the denials.

use capnagent::Proof;
use http::HeaderName;
use http::request::Parts;

/// Where the serialized capability comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (scheme matched case-insensitively,
    /// as RFC 6750 requires). The default.
    #[default]
    Bearer,
    /// The whole value of a custom header (or gRPC metadata key), such as
    /// `x-capability`.
    Header(HeaderName),
}

impl TokenSource {
    /// The token comes in a custom header.
    pub fn header(name: HeaderName) -> TokenSource {
        TokenSource::Header(name)
    }

    /// Reads the token text. `Ok(None)` when there is none at all; `Err`
    /// says why the header cannot be read.
    pub(crate) fn read<'a>(&self, parts: &'a Parts) -> Result<Option<&'a str>, &'static str> {
        let name = match self {
            TokenSource::Bearer => &http::header::AUTHORIZATION,
            TokenSource::Header(name) => name,
        };
        let mut values = parts.headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(_), Some(_)) => return Err("more than one token header"),
            (Some(value), None) => value,
        };
        let text = value
            .to_str()
            .map_err(|_| "token header is not visible ASCII")?
            .trim_ascii();
        match self {
            TokenSource::Header(_) => Ok(Some(text)),
            TokenSource::Bearer => match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Ok(Some(token.trim_ascii_start()))
                }
                _ => Err("expected `Authorization: Bearer <token>`"),
            },
        }
    }
}

/// The holder-of-key proof in header `name`: `Ok(None)` when there is
/// none, `Err` with the denial reason when it cannot be read (repeated,
/// not ASCII, not a proof).
pub(crate) fn read_proof(name: &HeaderName, parts: &Parts) -> Result<Option<Proof>, String> {
    let mut values = parts.headers.get_all(name).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err("malformed holder-of-key proof: more than one value".to_owned());
        }
        (Some(value), None) => value,
    };
    value
        .to_str()
        .map_err(|_| "not ASCII".to_owned())
        .and_then(|text| Proof::decode(text).map_err(|e| e.to_string()))
        .map(Some)
        .map_err(|why| format!("malformed holder-of-key proof: {why}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(headers: &[(&str, &[u8])]) -> Parts {
        let mut builder = http::Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, http::HeaderValue::from_bytes(v).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let p = parts(&[("authorization", b"bEaReR  abc ")]);
        assert_eq!(TokenSource::Bearer.read(&p), Ok(Some("abc")));
    }

    #[test]
    fn other_schemes_and_repeats_are_malformed() {
        let p = parts(&[("authorization", b"Basic abc")]);
        assert!(TokenSource::Bearer.read(&p).is_err());
        let p = parts(&[("x-cap", b"a"), ("x-cap", b"b")]);
        let source = TokenSource::header(HeaderName::from_static("x-cap"));
        assert_eq!(source.read(&p), Err("more than one token header"));
        assert_eq!(TokenSource::Bearer.read(&p), Ok(None));
    }

    #[test]
    fn every_header_byte_reads_like_to_str_then_trim() {
        for b in 0..=255u8 {
            let bytes = [b"Bearer a", &[b][..], b"c"].concat();
            let Ok(value) = http::HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            let p = parts(&[("authorization", &bytes)]);
            let read = TokenSource::Bearer.read(&p);
            assert_eq!(read.is_ok(), value.to_str().is_ok(), "byte {b:#04x}");
            if let Ok(text) = value.to_str() {
                let token = text.split_once(' ').unwrap().1.trim();
                assert_eq!(read, Ok(Some(token)), "byte {b:#04x}");
            }
        }
    }

    #[test]
    fn proof_must_be_one_well_formed_value() {
        let key = HeaderName::from_static("capnagent-proof");
        let proof = Proof::new(5, [1; 64]);
        let p = parts(&[("capnagent-proof", proof.encode().as_bytes())]);
        assert_eq!(read_proof(&key, &p).unwrap(), Some(proof));
        assert_eq!(read_proof(&key, &parts(&[])), Ok(None));
        let two = parts(&[("capnagent-proof", b"a"), ("capnagent-proof", b"b")]);
        assert!(
            read_proof(&key, &two)
                .unwrap_err()
                .contains("more than one")
        );
        let malformed = read_proof(&key, &parts(&[("capnagent-proof", b"t=1;sig=AA")]));
        assert!(
            malformed
                .unwrap_err()
                .starts_with("malformed holder-of-key proof: ")
        );
    }
}
