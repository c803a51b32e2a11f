//! Error enums with stable codes.
//!
//! Errors are for things that stop a decision from being made at all: a key
//! that is too short, a token that does not decode, a forged chain, a context
//! that is not valid JSON. A *denial* is never an error: it is a signed
//! [`Receipt`](crate::Receipt) whose outcome says why.
//!
//! Every enum is `#[non_exhaustive]`, comparable, and has a `code()` that
//! stays stable across releases so operators can match on it in logs.

use std::fmt;

use crate::gate::Gate;
use crate::keys::KeyId;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A serialized token could not be decoded.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A caveat predicate was refused.
    #[error(transparent)]
    Caveat(#[from] CaveatError),
    /// Building a capability failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The context could not be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The HMAC chain does not match: the token was forged, tampered with or
    /// minted under another root key. Deliberately says nothing about which
    /// step failed.
    #[error("capability chain integrity: invalid signature")]
    InvalidChain,
    /// A receipt was refused.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// A revocation list was refused.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

impl Error {
    /// The verifier gate this error stands for: [`Gate::Chain`] for a
    /// forged chain; `None` for errors that are not a verifier's
    /// judgement (a token that does not parse, a bad key).
    pub fn gate(&self) -> Option<Gate> {
        match self {
            Error::InvalidChain => Some(Gate::Chain),
            _ => None,
        }
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Key(e) => e.code(),
            Error::Token(e) => e.code(),
            Error::Caveat(e) => e.code(),
            Error::Build(e) => e.code(),
            Error::Context(e) => e.code(),
            Error::InvalidChain => "chain.invalid_signature",
            Error::Receipt(e) => e.code(),
            Error::Revocation(e) => e.code(),
        }
    }
}

/// A key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is shorter than the minimum for its role.
    #[error("{role} key too short: got {got} bytes, need at least {min}")]
    TooShort {
        /// Which key: `root` or `audit`.
        role: &'static str,
        /// The length given.
        got: usize,
        /// The minimum length.
        min: usize,
    },
    /// The audit key is the root key (or a key HMAC treats as the same):
    /// a receipt's signature, HMAC(audit key, "v" || version || JSON), is
    /// then the head of a valid capability chain whose identifier is that
    /// input, so every receipt a server hands out becomes a token anyone
    /// can attenuate and present. Use two independent random keys.
    #[error(
        "the audit key is the root key: every receipt would be a valid capability; \
         use two independent random keys (`capnagent keygen` makes both)"
    )]
    AuditKeyIsRootKey,
    /// A key id is not 1 to 32 characters of `A-Z a-z 0-9 . _ -`.
    #[error("invalid key id: use 1 to 32 characters of A-Z a-z 0-9 . _ -")]
    InvalidKeyId,
    /// A line of a key spec is malformed. Never quotes the line.
    #[error("line {line}: {reason}")]
    Syntax {
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key spec is longer than [`MAX_KEY_SPEC_LEN`](crate::keys::MAX_KEY_SPEC_LEN).
    #[error("key spec too long (over {max} bytes)")]
    SpecTooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A key spec holds no key of the role asked for.
    #[error("no {role} key in the key spec")]
    NoKey {
        /// Which key: `root` or `audit`.
        role: &'static str,
    },
    /// More keys than the ring's bound.
    #[error("too many {role} keys: at most {max}")]
    TooManyKeys {
        /// Which key: `root` or `audit`.
        role: &'static str,
        /// The bound.
        max: usize,
    },
    /// Two keys of a ring share an id.
    #[error("two {role} keys have the id {id}")]
    DuplicateKeyId {
        /// Which key: `root` or `audit`.
        role: &'static str,
        /// The id.
        id: KeyId,
    },
    /// The same key appears twice in a ring.
    #[error("the {role} keys {first} and {second} are the same key")]
    DuplicateKey {
        /// Which key: `root` or `audit`.
        role: &'static str,
        /// The id of the first.
        first: KeyId,
        /// The id of the second.
        second: KeyId,
    },
    /// No key of the ring has the id asked for.
    #[error("no {role} key with id {id}")]
    UnknownKeyId {
        /// Which key: `root` or `audit`.
        role: &'static str,
        /// The id asked for.
        id: KeyId,
    },
    /// A key source (a file, an environment variable) could not be read.
    #[error("{origin}: {reason}")]
    Unreadable {
        /// The source, for example `--root-key-file keys.env`.
        origin: String,
        /// Why, without any of its text.
        reason: String,
    },
    /// A key error in a named source.
    #[error("{origin}: {error}")]
    At {
        /// The source, for example `CAPNAGENT_ROOT_KEY`.
        origin: String,
        /// What is wrong with it.
        error: Box<KeyError>,
    },
}

impl KeyError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::TooShort { .. } => "key.too_short",
            KeyError::AuditKeyIsRootKey => "key.audit_is_root",
            KeyError::InvalidKeyId => "key.invalid_id",
            KeyError::Syntax { .. } => "key.syntax",
            KeyError::SpecTooLong { .. } => "key.spec_too_long",
            KeyError::NoKey { .. } => "key.none",
            KeyError::TooManyKeys { .. } => "key.too_many",
            KeyError::DuplicateKeyId { .. } => "key.duplicate_id",
            KeyError::DuplicateKey { .. } => "key.duplicate_key",
            KeyError::UnknownKeyId { .. } => "key.unknown_id",
            KeyError::Unreadable { .. } => "key.unreadable",
            KeyError::At { error, .. } => error.code(),
        }
    }
}

/// A serialized capability could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than the configured limit.
    #[error("token too long: {len} bytes, limit is {max}")]
    TooLong {
        /// Length of the token.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The base64url text is malformed.
    #[error("base64 decode failed: {0}")]
    Base64(String),
    /// The decoded bytes are not a capability.
    #[error("invalid token format: not a valid capnagent capability: {0}")]
    Format(String),
    /// A hex field is malformed.
    #[error("invalid hex in `{field}`: {detail}")]
    Hex {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        detail: &'static str,
    },
    /// A fixed-size binary field has the wrong length.
    #[error("`{field}` must be {expected} bytes, got {got}")]
    Length {
        /// Which field.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// More caveats than the configured limit.
    #[error("too many caveats: {count}, limit is {max}")]
    TooManyCaveats {
        /// Number of caveats in the token.
        count: usize,
        /// The configured limit.
        max: usize,
    },
}

impl TokenError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLong { .. } => "token.too_long",
            TokenError::Base64(_) => "token.base64",
            TokenError::Format(_) => "token.format",
            TokenError::Hex { .. } => "token.hex",
            TokenError::Length { .. } => "token.length",
            TokenError::TooManyCaveats { .. } => "token.too_many_caveats",
        }
    }
}

/// A caveat predicate was refused (when building or attenuating).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaveatError {
    /// The predicate does not parse.
    #[error("invalid caveat predicate: {0}")]
    Parse(#[from] ParseError),
    /// The predicate compares against a number with a unit (`50_usd`).
    /// Context values never carry units, so such a caveat could never be
    /// satisfied; it is refused up front.
    #[error(
        "invalid caveat predicate: unit literal `{literal}` can never be satisfied (context numbers carry no unit); use a plain number such as `arg.amount_cents <= 5000`"
    )]
    UnitLiteral {
        /// The literal text, for example `50_usd`.
        literal: String,
    },
    /// The predicate begins with `__hok:`, the prefix of the chain step
    /// that binds a holder key. Such a caveat's chain step could be taken
    /// for that binding, so it is refused when building and attenuating.
    #[error(
        "invalid caveat predicate: it begins with `__hok:`, which is reserved for the holder-key chain step"
    )]
    ReservedPrefix,
    /// A typed caveat helper (for example
    /// [`Predicate::caller_is`](crate::Predicate::caller_is)) was given a
    /// value it cannot write into a predicate that means exactly what was
    /// asked: a control character in a string, an argument path that is
    /// not a DSL identifier, a time outside the timestamp syntax.
    #[error("invalid caveat value: {0}")]
    Unrepresentable(String),
}

impl CaveatError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CaveatError::Parse(e) => e.code(),
            CaveatError::UnitLiteral { .. } => "caveat.unit_literal",
            CaveatError::ReservedPrefix => "caveat.reserved_prefix",
            CaveatError::Unrepresentable(_) => "caveat.unrepresentable",
        }
    }
}

/// A predicate does not parse, or is over a limit.
///
/// `Display` gives `parse error: <detail>`, the text the reference
/// implementation signs into denial receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The grammar did not match.
    Syntax {
        /// Human-readable detail.
        message: String,
        /// Byte offset into the predicate.
        offset: usize,
    },
    /// The predicate is longer than the configured limit.
    TooLong {
        /// Length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Parentheses nest deeper than the configured limit.
    TooDeep {
        /// The configured limit.
        max: usize,
    },
    /// More AND/OR terms than the configured limit.
    TooManyTerms {
        /// The configured limit.
        max: usize,
    },
}

impl ParseError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Syntax { .. } => "caveat.syntax",
            ParseError::TooLong { .. } => "caveat.too_long",
            ParseError::TooDeep { .. } => "caveat.too_deep",
            ParseError::TooManyTerms { .. } => "caveat.too_many_terms",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("parse error: ")?;
        match self {
            ParseError::Syntax { message, .. } => f.write_str(message),
            ParseError::TooLong { len, max } => {
                write!(f, "predicate is {len} bytes, limit is {max}")
            }
            ParseError::TooDeep { max } => {
                write!(f, "parentheses nest deeper than the limit of {max}")
            }
            ParseError::TooManyTerms { max } => {
                write!(f, "more than {max} comparisons in one predicate")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Building or attenuating a capability failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build()` with no caveat: such a token would authorize anything.
    #[error(
        "capability has zero caveats: a no-caveat token is god-mode authorization; add at least one caveat (for example `now <= @<expiry>`)"
    )]
    ZeroCaveats,
    /// `holder_of_key` after a caveat was added.
    #[error("holder_of_key must be set before any caveat")]
    HolderKeyAfterCaveat,
    /// `holder_of_key` called twice.
    #[error("holder_of_key is already set")]
    HolderKeyTwice,
    /// More caveats than the configured limit.
    #[error("too many caveats: limit is {max}")]
    TooManyCaveats {
        /// The configured limit.
        max: usize,
    },
    /// The serialized token would be longer than the configured limit.
    #[error("token would be {len} bytes, limit is {max}")]
    TokenTooLong {
        /// Length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

impl BuildError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BuildError::ZeroCaveats => "build.zero_caveats",
            BuildError::HolderKeyAfterCaveat => "build.holder_key_after_caveat",
            BuildError::HolderKeyTwice => "build.holder_key_twice",
            BuildError::TooManyCaveats { .. } => "build.too_many_caveats",
            BuildError::TokenTooLong { .. } => "build.token_too_long",
        }
    }
}

/// The context JSON could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// Not valid JSON, or over the size or nesting limit.
    #[error("invalid context JSON: {0}")]
    Json(String),
    /// Valid JSON of the wrong shape.
    #[error("invalid context JSON: {0}")]
    Shape(String),
}

impl ContextError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ContextError::Json(_) => "context.json",
            ContextError::Shape(_) => "context.shape",
        }
    }
}

/// A receipt was refused by [`Auditor::verify`](crate::Auditor::verify).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The JSON does not match the receipt schema (unknown fields included).
    #[error("invalid receipt JSON: {0}")]
    Json(String),
    /// The receipt declares a schema version this crate does not know.
    #[error("unsupported receipt schema version: got {got}, expected {expected}")]
    UnsupportedVersion {
        /// The version found.
        got: u8,
        /// The version supported.
        expected: u8,
    },
    /// The signature does not match.
    #[error("invalid signature")]
    InvalidSignature,
}

impl ReceiptError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::Json(_) => "receipt.json",
            ReceiptError::UnsupportedVersion { .. } => "receipt.unsupported_version",
            ReceiptError::InvalidSignature => "receipt.invalid_signature",
        }
    }
}

/// A revocation list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The wire form does not decode.
    #[error("invalid revocation list: {0}")]
    Format(String),
    /// The list is not signed by this root key (or is signed in the
    /// reference's format, which this crate refuses: see the module docs).
    #[error("invalid revocation-list signature")]
    InvalidSignature,
    /// The list is dated further ahead of the receiver's clock than the
    /// clock-offset bound allows.
    #[error(
        "revocation list is dated {ahead_ms} ms in the future (issued_at_ms {issued_at_ms}, limit {limit_ms} ms)"
    )]
    FutureDated {
        /// The list's `issued_at_ms`.
        issued_at_ms: u64,
        /// How far ahead of the receiver's clock it is.
        ahead_ms: u64,
        /// The clock-offset bound in force.
        limit_ms: u64,
    },
}

impl RevocationError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RevocationError::Format(_) => "revocation.format",
            RevocationError::InvalidSignature => "revocation.invalid_signature",
            RevocationError::FutureDated { .. } => "revocation.future_dated",
        }
    }
}
