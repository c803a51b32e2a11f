//! [`Issuer`] and [`CapabilityBuilder`]: minting capabilities under a root
//! key.

use std::fmt;
use std::sync::Arc;

use crate::capability::{self, Capability, Caveat};
use crate::crypto::KeyedMac;
use crate::error::{BuildError, Error, KeyError};
use crate::limits::Limits;

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
    limits: Limits,
}

impl Issuer {
    /// Creates an issuer. Keys shorter than [`MIN_ROOT_KEY_LEN`] (32 bytes)
    /// are refused: use 32 bytes from a CSPRNG (`capnagent keygen`).
    pub fn from_key(key: &[u8]) -> Result<Issuer, Error> {
        Ok(Issuer {
            root: Arc::new(root_key(key)?),
            limits: Limits::DEFAULT,
        })
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
    /// parse, or that uses a unit literal such as `50_usd` (never
    /// satisfiable), is refused.
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
