//! Revocation: a signed list of revoked identifiers ([`RevocationList`]),
//! built by a [`Revoker`], held by verifiers in a [`RevocationCell`]
//! (atomic swap, checked without locks on every call), and distributed
//! through a [`RevocationStore`].
//!
//! Wire form (compatible with the reference): base64url without padding of
//! `{"issued_at_ms":N,"revoked":[ids...],"signature":HEX}` where the
//! signature is HMAC-SHA256 under the *root* key of the same JSON with
//! `revoked` sorted and deduplicated and `"signature":""`.
//!
//! Revoking an identifier revokes every attenuation of it: attenuation
//! never changes the identifier.
//!
//! Staleness: a cell can require its list to be recent (`max_age`,
//! measured from the list's signed `issued_at_ms` to the call's `now`).
//! Publishers re-publish periodically, so a verifier that stops hearing
//! from them starts denying (fail closed) instead of trusting an old list.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::crypto::{self, KeyedMac, Tag};
use crate::error::Error;
use crate::issuer::root_key;
use crate::json::{JsonSink, write_escaped_str};
use crate::store::{BoxFuture, StoreError};

/// A signed snapshot of revoked capability identifiers.
#[derive(Clone, PartialEq, Eq)]
pub struct RevocationList {
    issued_at_ms: u64,
    revoked: Vec<String>,
    signature: Tag,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireList {
    issued_at_ms: u64,
    revoked: Vec<String>,
    signature: String,
}

impl RevocationList {
    /// Longest wire form accepted by [`RevocationList::parse`]: 16 MiB.
    pub const MAX_WIRE_LEN: usize = 16 * 1024 * 1024;

    /// Reads the wire form. The signature is checked when the list is
    /// installed ([`RevocationCell::install`]), not here. The identifiers
    /// are sorted and deduplicated on read, so lookups can never miss an
    /// entry of an unsorted list.
    pub fn parse(wire: &str) -> Result<RevocationList, RevocationError> {
        if wire.len() > Self::MAX_WIRE_LEN {
            return Err(RevocationError::Format(format!(
                "list is {} bytes, limit is {}",
                wire.len(),
                Self::MAX_WIRE_LEN
            )));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(wire.trim())
            .map_err(|e| RevocationError::Format(format!("base64 decode: {e}")))?;
        let list: WireList = serde_json::from_slice(&bytes)
            .map_err(|e| RevocationError::Format(format!("revocation list parse: {e}")))?;
        let signature = crypto::hex_decode_array::<32>(&list.signature)
            .map_err(|_| RevocationError::InvalidSignature)?;
        let mut revoked = list.revoked;
        revoked.sort();
        revoked.dedup();
        Ok(RevocationList {
            issued_at_ms: list.issued_at_ms,
            revoked,
            signature,
        })
    }

    /// The wire form.
    pub fn serialize(&self) -> String {
        let mut json = self.body();
        // Replace the empty signature of the signing body by the real one.
        json.truncate(json.len() - "\"\"}".len());
        json.put("\"");
        json.put(&crypto::hex_encode(&self.signature));
        json.put("\"}");
        URL_SAFE_NO_PAD.encode(json.as_bytes())
    }

    /// The signing input: compact JSON with `"signature":""`.
    fn body(&self) -> String {
        let mut json = String::with_capacity(64 + self.revoked.len() * 24);
        json.put("{\"issued_at_ms\":");
        json.put(&self.issued_at_ms.to_string());
        json.put(",\"revoked\":[");
        for (i, id) in self.revoked.iter().enumerate() {
            if i > 0 {
                json.put(",");
            }
            write_escaped_str(&mut json, id);
        }
        json.put("],\"signature\":\"\"}");
        json
    }

    fn signature_valid(&self, root: &KeyedMac) -> bool {
        crypto::tags_equal(&root.tag(self.body().as_bytes()), &self.signature)
    }

    /// When the list was published (signed), in ms since the Unix epoch.
    pub fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }

    /// The revoked identifiers, sorted.
    pub fn revoked(&self) -> &[String] {
        &self.revoked
    }

    /// True when `identifier` is revoked.
    pub fn contains(&self, identifier: &str) -> bool {
        self.revoked
            .binary_search_by(|probe| probe.as_str().cmp(identifier))
            .is_ok()
    }

    /// Number of revoked identifiers.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("issued_at_ms", &self.issued_at_ms)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// A revocation list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The wire form does not decode.
    #[error("invalid revocation list: {0}")]
    Format(String),
    /// The list is not signed by this root key.
    #[error("invalid revocation-list signature")]
    InvalidSignature,
}

impl RevocationError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RevocationError::Format(_) => "revocation.format",
            RevocationError::InvalidSignature => "revocation.invalid_signature",
        }
    }
}

/// Builds signed revocation lists under the root key.
///
/// ```
/// use capnagent::Revoker;
///
/// let mut revoker = Revoker::new(&[7; 32])?;
/// revoker.revoke("agent-42");
/// let list = revoker.publish(1_700_000_000_000);
/// assert!(list.contains("agent-42"));
/// # Ok::<(), capnagent::Error>(())
/// ```
pub struct Revoker {
    root: KeyedMac,
    revoked: BTreeSet<String>,
}

impl Revoker {
    /// A revoker under the root key (the key capabilities are issued with).
    pub fn new(root_key_bytes: &[u8]) -> Result<Revoker, Error> {
        Ok(Revoker {
            root: root_key(root_key_bytes)?,
            revoked: BTreeSet::new(),
        })
    }

    /// Starts from an existing list's identifiers (after checking it).
    pub fn from_list(root_key_bytes: &[u8], list: &RevocationList) -> Result<Revoker, Error> {
        let root = root_key(root_key_bytes)?;
        if !list.signature_valid(&root) {
            return Err(Error::Revocation(RevocationError::InvalidSignature));
        }
        Ok(Revoker {
            root,
            revoked: list.revoked.iter().cloned().collect(),
        })
    }

    /// Revokes an identifier (and so every attenuation of it). Idempotent.
    pub fn revoke(&mut self, identifier: impl Into<String>) {
        self.revoked.insert(identifier.into());
    }

    /// Lifts a revocation; true when it was revoked.
    pub fn unrevoke(&mut self, identifier: &str) -> bool {
        self.revoked.remove(identifier)
    }

    /// Number of revoked identifiers.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Signs the current set as of `issued_at_ms` (the caller's clock).
    pub fn publish(&self, issued_at_ms: u64) -> RevocationList {
        let mut list = RevocationList {
            issued_at_ms,
            revoked: self.revoked.iter().cloned().collect(),
            signature: [0; 32],
        };
        list.signature = self.root.tag(list.body().as_bytes());
        list
    }
}

impl fmt::Debug for Revoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoker")
            .field("root_key", &format_args!(".."))
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

/// The revocation list a verifier enforces, swapped atomically.
///
/// Cheap to clone (shared). Reads on the verification path take no lock.
/// Install newer lists with [`RevocationCell::install`] (for example from
/// [`refresh`] on a timer). Until a list is installed, every call is denied.
#[derive(Clone)]
pub struct RevocationCell {
    inner: Arc<CellInner>,
}

struct CellInner {
    root: KeyedMac,
    current: ArcSwapOption<RevocationList>,
    max_age_ms: Option<u64>,
}

impl RevocationCell {
    /// An empty cell that accepts lists signed under `root_key_bytes`.
    pub fn new(root_key_bytes: &[u8]) -> Result<RevocationCell, Error> {
        Ok(RevocationCell {
            inner: Arc::new(CellInner {
                root: root_key(root_key_bytes)?,
                current: ArcSwapOption::empty(),
                max_age_ms: None,
            }),
        })
    }

    /// Denies every call once the installed list is older than `max_age`
    /// (from its `issued_at_ms` to the call's `now`). Use with publishers
    /// that re-publish more often than `max_age`.
    pub fn with_max_age(self, max_age: Duration) -> RevocationCell {
        let inner = &self.inner;
        RevocationCell {
            inner: Arc::new(CellInner {
                root: inner.root.clone(),
                current: ArcSwapOption::new(inner.current.load_full()),
                max_age_ms: Some(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)),
            }),
        }
    }

    /// Installs `list` if its signature is valid and it is newer than the
    /// current one. Returns whether it was installed (an older or equally
    /// old list is ignored, so lists arriving out of order never roll
    /// revocations back).
    pub fn install(&self, list: RevocationList) -> Result<bool, RevocationError> {
        if !list.signature_valid(&self.inner.root) {
            return Err(RevocationError::InvalidSignature);
        }
        let list = Arc::new(list);
        let mut installed = false;
        self.inner.current.rcu(|current| match current {
            Some(old) if old.issued_at_ms >= list.issued_at_ms => {
                installed = false;
                Some(Arc::clone(old))
            }
            _ => {
                installed = true;
                Some(Arc::clone(&list))
            }
        });
        Ok(installed)
    }

    /// The list in force, if any.
    pub fn current(&self) -> Option<Arc<RevocationList>> {
        self.inner.current.load_full()
    }

    /// The denial reason for `identifier` at `now_ms`, if any.
    pub(crate) fn check(&self, identifier: &str, now_ms: u64) -> Option<String> {
        let guard = self.inner.current.load();
        let Some(list) = guard.as_ref() else {
            return Some("no revocation list installed".to_owned());
        };
        if let Some(max_age) = self.inner.max_age_ms {
            let age = now_ms.saturating_sub(list.issued_at_ms);
            if age > max_age {
                return Some(format!(
                    "revocation list is stale (issued {age} ms ago, limit {max_age} ms)"
                ));
            }
        }
        if list.contains(identifier) {
            return Some(format!("capability revoked: {identifier}"));
        }
        None
    }
}

impl fmt::Debug for RevocationCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationCell")
            .field("current", &self.current())
            .field("max_age_ms", &self.inner.max_age_ms)
            .finish_non_exhaustive()
    }
}

/// Where signed revocation lists are published and fetched (one process:
/// [`InMemoryRevocationStore`]; a fleet: Redis in `capnagent-redis`).
pub trait RevocationStore: Send + Sync {
    /// Publishes `list` unless the store already holds a newer one.
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The newest list published, if any.
    fn latest(&self) -> BoxFuture<'_, Result<Option<RevocationList>, StoreError>>;
}

/// An in-process [`RevocationStore`].
#[derive(Debug, Default)]
pub struct InMemoryRevocationStore {
    current: ArcSwapOption<RevocationList>,
}

impl InMemoryRevocationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RevocationStore for InMemoryRevocationStore {
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>> {
        let list = Arc::new(list.clone());
        self.current.rcu(|current| match current {
            Some(old) if old.issued_at_ms >= list.issued_at_ms => Some(Arc::clone(old)),
            _ => Some(Arc::clone(&list)),
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn latest(&self) -> BoxFuture<'_, Result<Option<RevocationList>, StoreError>> {
        let list = self.current.load_full().map(|l| (*l).clone());
        Box::pin(std::future::ready(Ok(list)))
    }
}

/// Fetches the newest list from `store` and installs it into `cell`.
/// Returns whether a newer list was installed. Call it on a timer: the
/// interval (plus one store round trip) bounds how long a revocation takes
/// to reach this verifier.
pub async fn refresh(
    store: &dyn RevocationStore,
    cell: &RevocationCell,
) -> Result<bool, StoreError> {
    match store.latest().await? {
        None => Ok(false),
        Some(list) => cell
            .install(list)
            .map_err(|e| StoreError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &[u8] = b"round04-revocation-root-key-32b!";

    #[test]
    fn matches_the_reference_vector() {
        let mut revoker = Revoker::new(ROOT).expect("key");
        revoker.revoke("buy-stolen-token");
        let list = revoker.publish(1_700_000_000_000);
        assert_eq!(
            crypto::hex_encode(&list.signature),
            "90eed15f407e7ca6351ae4d24e7140c6cab078c545aa147b2cd952f2f7b0bb87"
        );
        let wire = "eyJpc3N1ZWRfYXRfbXMiOjE3MDAwMDAwMDAwMDAsInJldm9rZWQiOlsiYnV5LXN0b2xlbi10b2tlbiJdLCJzaWduYXR1cmUiOiI5MGVlZDE1ZjQwN2U3Y2E2MzUxYWU0ZDI0ZTcxNDBjNmNhYjA3OGM1NDVhYTE0N2IyY2Q5NTJmMmY3YjBiYjg3In0";
        assert_eq!(list.serialize(), wire);
        assert_eq!(RevocationList::parse(wire).expect("parses"), list);
    }

    #[test]
    fn unsorted_wire_lists_are_sorted_on_read() {
        let mut revoker = Revoker::new(ROOT).expect("key");
        for id in ["c", "a", "b"] {
            revoker.revoke(id);
        }
        let list = revoker.publish(5);
        let json = r#"{"issued_at_ms":5,"revoked":["c","b","a","a"],"signature":"SIG"}"#
            .replace("SIG", &crypto::hex_encode(&list.signature));
        let parsed = RevocationList::parse(&URL_SAFE_NO_PAD.encode(json)).expect("parses");
        assert!(parsed.contains("a") && parsed.contains("b") && parsed.contains("c"));
        let cell = RevocationCell::new(ROOT).expect("key");
        assert_eq!(cell.install(parsed), Ok(true));
    }

    #[test]
    fn cell_refuses_forged_and_older_lists() {
        let cell = RevocationCell::new(ROOT).expect("key");
        assert_eq!(
            cell.check("x", 0).as_deref(),
            Some("no revocation list installed")
        );
        let mut revoker = Revoker::new(ROOT).expect("key");
        revoker.revoke("x");
        assert_eq!(cell.install(revoker.publish(10)), Ok(true));
        assert_eq!(
            cell.check("x", 10).as_deref(),
            Some("capability revoked: x")
        );
        assert_eq!(cell.check("y", 10), None);
        revoker.unrevoke("x");
        assert_eq!(cell.install(revoker.publish(9)), Ok(false));
        assert!(cell.check("x", 10).is_some());
        assert_eq!(cell.install(revoker.publish(11)), Ok(true));
        assert_eq!(cell.check("x", 11), None);
        let other = Revoker::new(&[1; 32]).expect("key").publish(99);
        assert_eq!(cell.install(other), Err(RevocationError::InvalidSignature));

        let fresh = cell.clone().with_max_age(Duration::from_millis(100));
        assert_eq!(fresh.check("y", 111), None);
        assert!(
            fresh
                .check("y", 112)
                .is_some_and(|r| r.starts_with("revocation list is stale"))
        );
    }
}
