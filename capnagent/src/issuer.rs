//! [`Issuer`] and [`CapabilityBuilder`]: minting capabilities under a root
//! key.

use std::fmt;
use std::sync::Arc;

use crate::capability::{self, Capability, Caveat};
use crate::crypto::KeyedMac;
use crate::dsl;
use crate::error::{BuildError, Error, KeyError};
use crate::keys::{KeyId, KeyRing};
use crate::limits::Limits;
use crate::timestamp::Timestamp;

/// Shortest root key accepted, in bytes.
pub const MIN_ROOT_KEY_LEN: usize = 32;

/// Checks a root key's length and prepares its HMAC state.
pub(crate) fn root_key(key: &[u8]) -> Result<KeyedMac, KeyError> {
    if key.len() < MIN_ROOT_KEY_LEN {
        return Err(KeyError::TooShort {
            role: "root",
            got: key.len(),
            min: MIN_ROOT_KEY_LEN,
        });
    }
    Ok(KeyedMac::new(key))
}

/// Mints capabilities under a root key.
///
/// ```
/// use capnagent::Issuer;
///
/// let issuer = Issuer::from_key(&[7; 32])?;
/// let cap = issuer
///     .issue("agent-42")
///     .caveat(r#"tool == "checkout.purchase""#)?
///     .caveat("arg.amount_cents <= 5000")?
///     .caveat("now <= @2027-01-01T00:00:00Z")?
///     .build()?;
/// assert_eq!(cap.identifier(), "agent-42");
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Clone)]
pub struct Issuer {
    root: Arc<KeyedMac>,
    key_id: KeyId,
    limits: Limits,
}

impl Issuer {
    /// Creates an issuer. Keys shorter than [`MIN_ROOT_KEY_LEN`] (32 bytes)
    /// are refused: use 32 bytes from a CSPRNG (`capnagent keygen`).
    pub fn from_key(key: &[u8]) -> Result<Issuer, Error> {
        Ok(Issuer {
            root: Arc::new(root_key(key)?),
            key_id: KeyId::fingerprint(key),
            limits: Limits::DEFAULT,
        })
    }

    /// Creates an issuer under the primary key of `ring` (pick another
    /// with [`KeyRing::with_primary`]). The tokens are the same as
    /// [`from_key`](Self::from_key) with that key mints: the key id is not
    /// written into them, a verifier finds the key by trying its ring.
    ///
    /// ```
    /// use capnagent::{Issuer, KeyId, KeyRing, KeyRole};
    ///
    /// let ring = KeyRing::new(KeyRole::Root, Some(KeyId::new("k2")?), &[2; 32])?
    ///     .with_key(Some(KeyId::new("k1")?), &[1; 32])?;
    /// let issuer = Issuer::from_keys(&ring)?;
    /// assert_eq!(issuer.key_id().as_str(), "k2");
    /// let token = issuer.issue("a").tool_is("t")?.build()?.serialize();
    /// let same = Issuer::from_key(&[2; 32])?.issue("a").tool_is("t")?.build()?.serialize();
    /// assert_eq!(token, same);
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn from_keys(ring: &KeyRing) -> Result<Issuer, Error> {
        let primary = ring.primary();
        Ok(Issuer {
            root: Arc::new(root_key(primary.expose_secret())?),
            key_id: primary.id().clone(),
            limits: Limits::DEFAULT,
        })
    }

    /// The id of the key this issuer mints under: the ring's id, or the
    /// key's fingerprint ([`KeyId::fingerprint`]) for
    /// [`from_key`](Self::from_key).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Replaces the limits applied to the capabilities this issuer builds.
    pub fn with_limits(mut self, limits: Limits) -> Issuer {
        self.limits = limits;
        self
    }

    /// Starts a capability with the given identifier.
    pub fn issue(&self, identifier: impl Into<String>) -> CapabilityBuilder {
        CapabilityBuilder {
            root: Arc::clone(&self.root),
            limits: self.limits,
            identifier: identifier.into(),
            holder_of_key: None,
            caveats: Vec::new(),
        }
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("root_key", &format_args!(".."))
            .field("key_id", &self.key_id)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Collects caveats for a new capability; see [`Issuer::issue`].
///
/// Every method validates before it changes anything, so a refused call
/// leaves the builder as it was and usable.
#[derive(Clone)]
pub struct CapabilityBuilder {
    root: Arc<KeyedMac>,
    limits: Limits,
    identifier: String,
    holder_of_key: Option<[u8; 32]>,
    caveats: Vec<Caveat>,
}

impl CapabilityBuilder {
    /// Adds a caveat. The predicate is parsed first; one that does not
    /// parse, that uses a unit literal such as `50_usd` (never
    /// satisfiable), or that begins with `__hok:` (the holder-key chain
    /// step's prefix, [`CaveatError::ReservedPrefix`](crate::CaveatError::ReservedPrefix))
    /// is refused.
    ///
    /// Never format a run-time value into the text
    /// (`format!("caller == \"{name}\"")`: a name containing `"` rewrites
    /// the caveat); use the typed methods ([`caller_is`](Self::caller_is),
    /// [`tool_is`](Self::tool_is), [`arg_is`](Self::arg_is),
    /// [`arg_at_most`](Self::arg_at_most), [`not_after`](Self::not_after),
    /// ...) or [`Predicate::quote`](crate::Predicate::quote).
    pub fn caveat(&mut self, predicate: &str) -> Result<&mut Self, Error> {
        if self.caveats.len() >= self.limits.max_caveats {
            return Err(BuildError::TooManyCaveats {
                max: self.limits.max_caveats,
            }
            .into());
        }
        capability::check_predicate(predicate, &self.limits)?;
        self.caveats.push(Caveat::new(predicate.to_owned()));
        Ok(self)
    }

    /// Adds `caller == "<name>"` with `name` quoted (see
    /// [`Predicate::quote`](crate::Predicate::quote)), so that no name can change what the caveat
    /// means: the call's caller must be exactly `name`.
    ///
    /// ```
    /// use capnagent::{Issuer, Timestamp};
    ///
    /// let agent = "agent:planner"; // from a request, a config file, ...
    /// let cap = Issuer::from_key(&[7; 32])?
    ///     .issue("agent-42")
    ///     .caller_is(agent)?
    ///     .tool_is("checkout.purchase")?
    ///     .arg_at_most("amount_cents", 5000)?
    ///     .not_after(Timestamp::from_unix_millis(1_798_761_600_000))?
    ///     .build()?;
    /// let texts: Vec<&str> = cap.caveats().iter().map(|c| c.predicate()).collect();
    /// assert_eq!(texts, [
    ///     r#"caller == "agent:planner""#,
    ///     r#"tool == "checkout.purchase""#,
    ///     "arg.amount_cents <= 5000",
    ///     "now <= @2027-01-01T00:00:00Z",
    /// ]);
    /// # Ok::<(), capnagent::Error>(())
    /// ```
    pub fn caller_is(&mut self, name: &str) -> Result<&mut Self, Error> {
        let predicate = dsl::caller_is(name, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `tool == "<name>"` with `name` quoted: the call must be of
    /// exactly this tool.
    pub fn tool_is(&mut self, name: &str) -> Result<&mut Self, Error> {
        let predicate = dsl::tool_is(name, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `arg.<path> == "<value>"` with `value` quoted: the argument at
    /// `path` (dot-separated caveat identifiers) must be the string
    /// `value`.
    pub fn arg_is(&mut self, path: &str, value: &str) -> Result<&mut Self, Error> {
        let predicate = dsl::arg_is(path, value, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `arg.<path> <= <max>`: the argument at `path` must be a number
    /// no greater than `max` (an integer: a fractional argument is refused,
    /// so state money in minor units).
    pub fn arg_at_most(&mut self, path: &str, max: i64) -> Result<&mut Self, Error> {
        let predicate = dsl::arg_bound(path, dsl::Op::Le, max, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `arg.<path> >= <min>`: the argument at `path` must be a number
    /// no less than `min` (an integer, as in
    /// [`arg_at_most`](Self::arg_at_most)).
    pub fn arg_at_least(&mut self, path: &str, min: i64) -> Result<&mut Self, Error> {
        let predicate = dsl::arg_bound(path, dsl::Op::Ge, min, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `now <= @<deadline>`: the capability expires after `deadline`.
    pub fn not_after(&mut self, deadline: Timestamp) -> Result<&mut Self, Error> {
        let predicate = dsl::now_bound(dsl::Op::Le, deadline, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Adds `now >= @<start>`: the capability is valid from `start` on.
    pub fn not_before(&mut self, start: Timestamp) -> Result<&mut Self, Error> {
        let predicate = dsl::now_bound(dsl::Op::Ge, start, &self.limits)?;
        self.caveat(predicate.as_str())
    }

    /// Binds the capability to an Ed25519 public key: using it then needs a
    /// proof of possession. Must come before any caveat, at most once.
    pub fn holder_of_key(&mut self, public_key: [u8; 32]) -> Result<&mut Self, Error> {
        if self.holder_of_key.is_some() {
            return Err(BuildError::HolderKeyTwice.into());
        }
        if !self.caveats.is_empty() {
            return Err(BuildError::HolderKeyAfterCaveat.into());
        }
        self.holder_of_key = Some(public_key);
        Ok(self)
    }

    /// Signs the capability. Refuses zero caveats: a token without any
    /// caveat would authorize every call.
    pub fn build(&self) -> Result<Capability, Error> {
        if self.caveats.is_empty() {
            return Err(BuildError::ZeroCaveats.into());
        }
        let signature = capability::compute_chain(
            &self.root,
            &self.identifier,
            self.holder_of_key.as_ref(),
            self.caveats.iter().map(Caveat::predicate),
        );
        let cap = Capability::from_parts(
            self.identifier.clone(),
            self.holder_of_key,
            self.caveats.clone(),
            signature,
        );
        // Never mint a token that a verifier with the same limits refuses.
        let len = cap.serialize().len();
        if len > self.limits.max_token_len {
            return Err(BuildError::TokenTooLong {
                len,
                max: self.limits.max_token_len,
            }
            .into());
        }
        Ok(cap)
    }
}

impl fmt::Debug for CapabilityBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapabilityBuilder")
            .field("identifier", &self.identifier)
            .field("holder_of_key", &self.holder_of_key.is_some())
            .field("caveats", &self.caveats)
            .finish_non_exhaustive()
    }
}
