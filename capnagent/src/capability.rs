//! [`Capability`] and [`Caveat`]: the token, its wire format and its HMAC
//! chain.
//!
//! Wire format (byte-compatible with the reference 0.7.4 package):
//! base64url without padding of the compact JSON
//! `{"identifier":S,["holder_of_key":HEX,]"caveats":[{"predicate":S},...],"signature":HEX}`.
//!
//! Chain: `s0 = HMAC(root_key, identifier)`; if bound to a holder key,
//! `s = HMAC(s, "__hok:" || pubkey)`; then `s = HMAC(s, predicate)` for each
//! caveat in order. Anyone holding a token can append a caveat (one more
//! HMAC link); nobody can remove one without the root key.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::crypto::{self, HexArrayError, KeyedMac, Tag};
use crate::dsl::Predicate;
use crate::error::{CaveatError, Error, TokenError};
use crate::json::{JsonSink, write_escaped_str};
use crate::limits::Limits;

/// The chain step that binds a holder key, before any caveat.
pub(crate) const HOK_PREFIX: &[u8] = b"__hok:";

/// One restriction on a capability: a predicate in the caveat DSL, stored
/// and MACed verbatim (whitespace included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caveat {
    predicate: String,
}

impl Caveat {
    /// Wraps predicate text. Nothing is parsed or checked: this is the form
    /// receipts and tokens carry (see [`Predicate`] to parse one).
    pub fn new(predicate: impl Into<String>) -> Caveat {
        Caveat {
            predicate: predicate.into(),
        }
    }

    /// The predicate text.
    pub fn predicate(&self) -> &str {
        &self.predicate
    }
}

impl fmt::Display for Caveat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.predicate)
    }
}

/// A capability's caveats, shared (by reference count) with the receipts
/// signed for it, plus their JSON array `[{"predicate":...},...]`, which
/// the token, the receipt's signing input and its JSON line all contain:
/// written once, on first use, then copied.
#[derive(Clone)]
pub(crate) struct CaveatList(Arc<CaveatListInner>);

struct CaveatListInner {
    list: Arc<[Caveat]>,
    json: std::sync::OnceLock<Box<str>>,
    signing: std::sync::OnceLock<SigningPrefix>,
}

/// The receipt MAC state after the part of the signing input that every
/// receipt of one capability shares (see [`CaveatList::signing_state`]).
/// Derived from the audit key: never printed, never serialised.
struct SigningPrefix {
    /// The [`Auditor`](crate::Auditor) whose key it is under.
    auditor: u64,
    /// The capability identifier it was written with.
    identifier: Arc<str>,
    state: crate::crypto::HmacSha256,
}

impl CaveatList {
    pub(crate) fn as_slice(&self) -> &[Caveat] {
        &self.0.list
    }

    /// The caveats as a JSON array, escaped as [`write_escaped_str`] does.
    pub(crate) fn json(&self) -> &str {
        self.0.json.get_or_init(|| {
            let mut json = String::with_capacity(2 + self.0.list.len() * 48);
            json.put("[");
            for (i, caveat) in self.0.list.iter().enumerate() {
                if i > 0 {
                    json.put(",");
                }
                json.put("{\"predicate\":");
                write_escaped_str(&mut json, &caveat.predicate);
                json.put("}");
            }
            json.put("]");
            json.into_boxed_str()
        })
    }

    /// The receipt MAC state for `auditor` after the signing input's shared
    /// prefix (everything up to the args hash: version, identifier,
    /// caveats), made by `init` the first time; so each receipt hashes
    /// only what changes from call to call. One auditor and identifier
    /// per list keep a state: for any other, `None`, and the caller
    /// hashes the whole input.
    pub(crate) fn signing_state(
        &self,
        auditor: u64,
        identifier: &Arc<str>,
        init: impl FnOnce() -> crate::crypto::HmacSha256,
    ) -> Option<crate::crypto::HmacSha256> {
        let prefix = self.0.signing.get_or_init(|| SigningPrefix {
            auditor,
            identifier: Arc::clone(identifier),
            state: init(),
        });
        let same_identifier =
            Arc::ptr_eq(&prefix.identifier, identifier) || prefix.identifier == *identifier;
        (prefix.auditor == auditor && same_identifier).then(|| prefix.state.clone())
    }
}

impl From<Arc<[Caveat]>> for CaveatList {
    fn from(list: Arc<[Caveat]>) -> CaveatList {
        CaveatList(Arc::new(CaveatListInner {
            list,
            json: std::sync::OnceLock::new(),
            signing: std::sync::OnceLock::new(),
        }))
    }
}

impl From<Vec<Caveat>> for CaveatList {
    fn from(list: Vec<Caveat>) -> CaveatList {
        CaveatList::from(Arc::<[Caveat]>::from(list))
    }
}

impl PartialEq for CaveatList {
    fn eq(&self, other: &CaveatList) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for CaveatList {}

impl std::hash::Hash for CaveatList {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for CaveatList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// A macaroon-style capability token.
///
/// Obtain one from [`Issuer::issue`](crate::Issuer::issue) or
/// [`Capability::parse`]; narrow it with [`Capability::attenuate`]; check it
/// with a [`Verifier`](crate::Verifier). `Debug` never prints the signature,
/// which is what makes the token usable.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability {
    identifier: Arc<str>,
    holder_of_key: Option<[u8; 32]>,
    // Shared with the receipts signed for this capability.
    caveats: CaveatList,
    signature: Tag,
    // What a verifier learnt about this exact token (not part of its value).
    memo: Memo,
}

/// A verifier's memo on one capability: the verifier (by its memo id)
/// whose root key the chain verified under, and the caveats it has parsed
/// so far under that verifier's limits. Lets a capability kept parsed between calls
/// (the tower layer's token cache) skip the chain and predicate caches, and
/// their locks. Set once; never part of equality.
#[derive(Clone, Default)]
pub(crate) struct Memo(std::sync::OnceLock<Arc<VerifiedMemo>>);

pub(crate) struct VerifiedMemo {
    pub(crate) verifier: u64,
    /// Index of the root key the chain verified under, in that verifier's
    /// ring.
    pub(crate) key: usize,
    /// One slot per caveat, filled when the verifier first reaches that
    /// caveat: a token judged only up to a failing caveat never has the
    /// caveats after it parsed.
    pub(crate) parsed: Box<[std::sync::OnceLock<crate::dsl::Parsed>]>,
}

impl Memo {
    /// The memo, if the verifier with memo id `verifier` wrote it.
    pub(crate) fn get(&self, verifier: u64) -> Option<&VerifiedMemo> {
        self.0
            .get()
            .map(Arc::as_ref)
            .filter(|m| m.verifier == verifier)
    }

    /// Records the memo, unless one is there already.
    pub(crate) fn set(&self, memo: VerifiedMemo) {
        let _ = self.0.set(Arc::new(memo));
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

#[derive(Deserialize)]
struct WireToken {
    identifier: String,
    #[serde(default)]
    holder_of_key: Option<String>,
    caveats: Vec<WireCaveat>,
    signature: String,
}

#[derive(Deserialize)]
struct WireCaveat {
    predicate: String,
}

impl Capability {
    pub(crate) fn from_parts(
        identifier: String,
        holder_of_key: Option<[u8; 32]>,
        caveats: Vec<Caveat>,
        signature: Tag,
    ) -> Capability {
        Capability {
            identifier: identifier.into(),
            holder_of_key,
            caveats: caveats.into(),
            signature,
            memo: Memo::default(),
        }
    }

    pub(crate) fn memo(&self) -> &Memo {
        &self.memo
    }

    /// Decodes a serialized token with the default [`Limits`].
    ///
    /// Checks the encoding only: the chain is checked by a
    /// [`Verifier`](crate::Verifier), and predicates are parsed at
    /// verification (a predicate that does not parse denies).
    pub fn parse(token: &str) -> Result<Capability, Error> {
        Capability::parse_with_limits(token, &Limits::DEFAULT)
    }

    /// Decodes a serialized token under explicit limits.
    ///
    /// Stricter than the reference on purpose: hex must be plain hex, the
    /// signature must be 32 bytes and a holder key 32 bytes.
    pub fn parse_with_limits(token: &str, limits: &Limits) -> Result<Capability, Error> {
        if token.len() > limits.max_token_len {
            return Err(TokenError::TooLong {
                len: token.len(),
                max: limits.max_token_len,
            }
            .into());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| TokenError::Base64(e.to_string()))?;
        let wire: WireToken =
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Format(e.to_string()))?;
        if wire.caveats.len() > limits.max_caveats {
            return Err(TokenError::TooManyCaveats {
                count: wire.caveats.len(),
                max: limits.max_caveats,
            }
            .into());
        }
        let signature = decode_32("signature", &wire.signature)?;
        let holder_of_key = match wire.holder_of_key.as_deref() {
            None => None,
            Some(hex) => Some(decode_32("holder_of_key", hex)?),
        };
        Ok(Capability {
            identifier: wire.identifier.into(),
            holder_of_key,
            caveats: wire
                .caveats
                .into_iter()
                .map(|c| Caveat::new(c.predicate))
                .collect::<Vec<_>>()
                .into(),
            signature,
            memo: Memo::default(),
        })
    }

    /// Encodes the token: base64url (no padding) of compact JSON, byte for
    /// byte what the reference implementation produces.
    pub fn serialize(&self) -> String {
        let mut json =
            String::with_capacity(64 + self.identifier.len() + self.caveats().len() * 48);
        json.put("{\"identifier\":");
        write_escaped_str(&mut json, &self.identifier);
        if let Some(key) = &self.holder_of_key {
            json.put(",\"holder_of_key\":\"");
            json.put(&crypto::hex_encode(key));
            json.put("\"");
        }
        json.put(",\"caveats\":");
        json.put(self.caveats.json());
        json.put(",\"signature\":\"");
        json.put(&crypto::hex_encode(&self.signature));
        json.put("\"}");
        URL_SAFE_NO_PAD.encode(json.as_bytes())
    }

    /// Returns a narrower capability with one more caveat. Needs no key.
    ///
    /// The predicate is parsed first: one that does not parse, that
    /// compares against a unit literal such as `50_usd` (which could never
    /// be satisfied), or that begins with `__hok:` (the holder-key chain
    /// step's prefix, [`CaveatError::ReservedPrefix`]) is refused. The
    /// original is unchanged.
    ///
    /// To restrict by a value known only at run time (a caller name, a
    /// limit), build the predicate with [`Predicate`]'s typed constructors
    /// rather than by formatting text: they quote the value, so a name with
    /// a `"` in it cannot change the caveat's meaning.
    ///
    /// ```
    /// use capnagent::{Issuer, Predicate};
    ///
    /// let issuer = Issuer::from_key(&[7; 32])?;
    /// let broad = issuer.issue("agent-42").tool_is("checkout.purchase")?.build()?;
    /// let narrow = broad.attenuate("arg.amount_cents <= 5000")?;
    /// let agent = "agent:planner";
    /// let narrower = narrow.attenuate(Predicate::caller_is(agent)?.as_str())?;
    /// assert_eq!(narrower.caveats()[2].predicate(), r#"caller == "agent:planner""#);
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn attenuate(&self, predicate: &str) -> Result<Capability, Error> {
        if self.caveats().len() >= Limits::DEFAULT.max_caveats {
            return Err(crate::error::BuildError::TooManyCaveats {
                max: Limits::DEFAULT.max_caveats,
            }
            .into());
        }
        check_predicate(predicate, &Limits::DEFAULT)?;
        let mut caveats = self.caveats().to_vec();
        caveats.push(Caveat::new(predicate));
        Ok(Capability {
            identifier: Arc::clone(&self.identifier),
            holder_of_key: self.holder_of_key,
            caveats: caveats.into(),
            signature: crypto::chain_step(&self.signature, &[predicate.as_bytes()]),
            memo: Memo::default(),
        })
    }

    /// The identifier the root issued (unchanged by attenuation, so
    /// revoking it revokes every attenuation).
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// The identifier, shared with the receipts signed for this capability.
    pub(crate) fn identifier_shared(&self) -> Arc<str> {
        Arc::clone(&self.identifier)
    }

    /// The caveats, in chain order.
    pub fn caveats(&self) -> &[Caveat] {
        self.caveats.as_slice()
    }

    pub(crate) fn signature(&self) -> &Tag {
        &self.signature
    }

    /// The caveats, shared (cloning them is a reference count).
    pub(crate) fn caveats_shared(&self) -> CaveatList {
        self.caveats.clone()
    }

    /// The Ed25519 public key the holder must prove possession of, if bound.
    pub fn holder_of_key(&self) -> Option<&[u8; 32]> {
        self.holder_of_key.as_ref()
    }

    /// Recomputes the chain under `root` and compares in constant time.
    pub(crate) fn chain_matches(&self, root: &KeyedMac) -> bool {
        let expected = compute_chain(
            root,
            &self.identifier,
            self.holder_of_key.as_ref(),
            self.caveats().iter().map(|c| c.predicate.as_str()),
        );
        crypto::tags_equal(&expected, &self.signature)
    }
}

/// Parses a predicate for building or attenuating; refuses the holder-key
/// step's prefix (`__hok:`) and unit literals, which can never be
/// satisfied.
pub(crate) fn check_predicate(predicate: &str, limits: &Limits) -> Result<(), CaveatError> {
    if predicate.as_bytes().starts_with(HOK_PREFIX) {
        return Err(CaveatError::ReservedPrefix);
    }
    let parsed = Predicate::parse_with_limits(predicate, limits)?;
    match parsed.unit_literal() {
        Some(literal) => Err(CaveatError::UnitLiteral { literal }),
        None => Ok(()),
    }
}

pub(crate) fn compute_chain<'a>(
    root: &KeyedMac,
    identifier: &str,
    holder_of_key: Option<&[u8; 32]>,
    caveats: impl Iterator<Item = &'a str>,
) -> Tag {
    let mut sig = root.tag(identifier.as_bytes());
    if let Some(key) = holder_of_key {
        sig = crypto::chain_step(&sig, &[HOK_PREFIX, key]);
    }
    for predicate in caveats {
        sig = crypto::chain_step(&sig, &[predicate.as_bytes()]);
    }
    sig
}

fn decode_32(field: &'static str, hex: &str) -> Result<[u8; 32], TokenError> {
    crypto::hex_decode_array::<32>(hex).map_err(|e| match e {
        HexArrayError::Hex(detail) => TokenError::Hex { field, detail },
        HexArrayError::Length(got) => TokenError::Length {
            field,
            expected: 32,
            got,
        },
    })
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capability")
            .field("identifier", &self.identifier)
            .field(
                "holder_of_key",
                &self.holder_of_key.as_ref().map(|k| crypto::hex_encode(k)),
            )
            .field("caveats", &self.caveats)
            .field("signature", &format_args!(".."))
            .finish()
    }
}
