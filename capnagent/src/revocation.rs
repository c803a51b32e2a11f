//! Revocation: a signed list of revoked identifiers ([`RevocationList`]),
//! built by a [`Revoker`], held by verifiers in a [`RevocationCell`]
//! (atomic swap, checked without locks on every call), and distributed
//! through a [`RevocationStore`].
//!
//! Wire form: base64url without padding of
//! `{"issued_at_ms":N,"revoked":[ids...],"signature":HEX}`. The signing
//! body is the same JSON with `revoked` sorted and deduplicated and
//! `"signature":""`.
//!
//! Signature: `HMAC(list_key, 0xFF || "capnagent revocation-list v1" ||
//! 0x00 || body)`, where `list_key = HMAC(root_key, 0xFF || "capnagent
//! revocation-list key v1")`.
//!
//! **Deviation from the reference.** The reference signs lists as
//! `HMAC(root_key, body)`, which is exactly a capability's chain head for
//! the identifier `body`: anyone who reads a published list could use its
//! body as an identifier and its signature as the chain head, append
//! caveats without any key, and be allowed. Here the root key signs lists
//! only through a key derived for that purpose, over a tagged input, so no
//! list signature is a chain value under the root key and no chain value
//! signs a list. Both derivation label and signing tag start with the byte
//! `0xFF`, which never occurs in UTF-8, so neither can be a capability
//! identifier or a caveat. Lists signed in the reference's format are
//! refused ([`RevocationError::InvalidSignature`]). The 0.7.4 Python
//! package has no revocation lists, so no token or receipt compatibility
//! is lost.
//!
//! Revoking an identifier revokes every attenuation of it: attenuation
//! never changes the identifier.
//!
//! **Clocks.** A list dated more than the clock-offset bound (see
//! [`DEFAULT_MAX_CLOCK_OFFSET`]) after the receiver's clock is refused by
//! [`RevocationCell::install`] and by the stores' `publish`: otherwise one
//! list from a glitched clock would make every later real list look older
//! and be ignored, freezing revocation. A list already in force that is
//! dated beyond the bound after a call's `now` (the verifier's clock went
//! back) denies every call, like a stale list.
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
use crate::error::{Error, RevocationError};
use crate::issuer::root_key;
use crate::json::{JsonSink, write_escaped_str};
use crate::keys::KeyRing;
use crate::store::{BoxFuture, DEFAULT_MAX_CLOCK_OFFSET, StoreError};
use crate::timestamp::{Timestamp, duration_ms};

/// Input of the list-key derivation under the root key. Starts with 0xFF,
/// so it is never a capability identifier (always UTF-8).
const LIST_KEY_LABEL: &[u8] = b"\xffcapnagent revocation-list key v1";

/// Prefix of every list's signing input (domain tag), before the body.
const LIST_SIGNING_TAG: &[u8] = b"\xffcapnagent revocation-list v1\x00";

/// The key that signs revocation lists, derived from the root key and
/// used for nothing else.
fn list_key(root_key_bytes: &[u8]) -> Result<KeyedMac, Error> {
    let root = root_key(root_key_bytes)?;
    Ok(KeyedMac::new(&root.tag(LIST_KEY_LABEL)))
}

/// The list keys of every key of `ring`, primary first.
fn list_keys(ring: &KeyRing) -> Result<Box<[KeyedMac]>, Error> {
    ring.iter().map(|e| list_key(e.expose_secret())).collect()
}

/// Whether `list` is signed under any of `keys`.
fn signed_by_any(list: &RevocationList, keys: &[KeyedMac]) -> bool {
    keys.iter().any(|key| list.signature_valid(key))
}

/// A signed snapshot of revoked capability identifiers.
///
/// Wire form: base64url without padding of
/// `{"issued_at_ms":N,"revoked":[ids...],"signature":HEX}`, the reference's
/// layout. The signature is `HMAC(list_key, 0xFF || "capnagent
/// revocation-list v1" || 0x00 || body)` with `list_key = HMAC(root_key,
/// 0xFF || "capnagent revocation-list key v1")` and `body` the same JSON
/// with `revoked` sorted and deduplicated and `"signature":""`.
///
/// This deviates from the reference, which signs `HMAC(root_key, body)`:
/// that value is also the chain head of a capability whose identifier is
/// `body`, so anyone who reads a published list could turn it into a
/// capability and append caveats without a key. With a key used only for
/// lists and a tagged input, no list signature is a chain value under the
/// root key and no chain value signs a list (both inputs start with the
/// byte 0xFF, never found in the UTF-8 of an identifier or a caveat).
/// Lists signed the reference's way are refused. The 0.7.4 Python package
/// has no revocation lists, so no token or receipt compatibility is lost.
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
        json.put(itoa::Buffer::new().format(self.issued_at_ms));
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

    /// The signature of this list's body under the list key.
    fn expected_signature(&self, list_key: &KeyedMac) -> Tag {
        list_key.tag_parts(&[LIST_SIGNING_TAG, self.body().as_bytes()])
    }

    fn signature_valid(&self, list_key: &KeyedMac) -> bool {
        crypto::tags_equal(&self.expected_signature(list_key), &self.signature)
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

/// Refuses `list` when it is dated more than `limit_ms` after `now_ms`.
fn check_not_future(
    list: &RevocationList,
    now_ms: u64,
    limit_ms: u64,
) -> Result<(), RevocationError> {
    if list.issued_at_ms > now_ms.saturating_add(limit_ms) {
        return Err(RevocationError::FutureDated {
            issued_at_ms: list.issued_at_ms,
            ahead_ms: list.issued_at_ms - now_ms,
            limit_ms,
        });
    }
    Ok(())
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
    list_key: KeyedMac,
    revoked: BTreeSet<String>,
}

impl Revoker {
    /// A revoker under the root key (the key capabilities are issued with;
    /// lists are signed with a key derived from it, see the module docs).
    pub fn new(root_key_bytes: &[u8]) -> Result<Revoker, Error> {
        Ok(Revoker {
            list_key: list_key(root_key_bytes)?,
            revoked: BTreeSet::new(),
        })
    }

    /// A revoker signing under the primary key of `ring` (the key
    /// capabilities are now issued with). Verifiers holding the ring accept
    /// its lists ([`RevocationCell::from_keys`]).
    pub fn from_keys(ring: &KeyRing) -> Result<Revoker, Error> {
        Revoker::new(ring.primary().expose_secret())
    }

    /// Starts from an existing list's identifiers, checked under any key of
    /// `ring` (a list signed before a rotation), and signs what it
    /// publishes under the primary.
    pub fn from_list_with_keys(ring: &KeyRing, list: &RevocationList) -> Result<Revoker, Error> {
        if !signed_by_any(list, &list_keys(ring)?) {
            return Err(Error::Revocation(RevocationError::InvalidSignature));
        }
        let mut revoker = Revoker::from_keys(ring)?;
        revoker.revoked = list.revoked.iter().cloned().collect();
        Ok(revoker)
    }

    /// Starts from an existing list's identifiers (after checking it).
    pub fn from_list(root_key_bytes: &[u8], list: &RevocationList) -> Result<Revoker, Error> {
        let list_key = list_key(root_key_bytes)?;
        if !list.signature_valid(&list_key) {
            return Err(Error::Revocation(RevocationError::InvalidSignature));
        }
        Ok(Revoker {
            list_key,
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

    /// Signs the current set as of `issued_at_ms` (the caller's clock, in
    /// ms since the Unix epoch). Receivers refuse a list dated beyond their
    /// clock-offset bound, so pass the current time.
    pub fn publish(&self, issued_at_ms: u64) -> RevocationList {
        let mut list = RevocationList {
            issued_at_ms,
            revoked: self.revoked.iter().cloned().collect(),
            signature: [0; 32],
        };
        list.signature = list.expected_signature(&self.list_key);
        list
    }
}

impl fmt::Debug for Revoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoker")
            .field("list_key", &format_args!(".."))
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

/// The revocation list a verifier enforces, swapped atomically.
///
/// Cheap to clone (shared). Reads on the verification path take no lock.
/// Install newer lists with [`RevocationCell::install`] (for example from
/// [`refresh`] on a timer). Until a list is installed, every call is denied.
///
/// ```
/// use capnagent::{RevocationCell, Revoker, Timestamp};
///
/// let root_key = [7u8; 32];
/// let cell = RevocationCell::new(&root_key)?;
/// let mut revoker = Revoker::new(&root_key)?;
/// revoker.revoke("agent-42");
/// let now = Timestamp::now().unix_millis();
/// assert!(cell.install(revoker.publish(now))?);
/// // A list dated a day ahead of this clock is refused.
/// assert!(cell.install(revoker.publish(now + 86_400_000)).is_err());
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Clone)]
pub struct RevocationCell {
    inner: Arc<CellInner>,
}

struct CellInner {
    /// One per root key accepted, primary first; never empty.
    list_keys: Box<[KeyedMac]>,
    current: ArcSwapOption<RevocationList>,
    max_age_ms: Option<u64>,
    max_clock_offset_ms: u64,
}

impl RevocationCell {
    /// An empty cell that accepts lists signed under `root_key_bytes`,
    /// dated at most [`DEFAULT_MAX_CLOCK_OFFSET`] ahead of its clock.
    pub fn new(root_key_bytes: &[u8]) -> Result<RevocationCell, Error> {
        RevocationCell::with_list_keys(Box::new([list_key(root_key_bytes)?]))
    }

    /// An empty cell that accepts lists signed under any key of `ring`
    /// (the verifier's ring: lists published before a rotation, under the
    /// old key, stay valid until the old key is retired).
    pub fn from_keys(ring: &KeyRing) -> Result<RevocationCell, Error> {
        RevocationCell::with_list_keys(list_keys(ring)?)
    }

    fn with_list_keys(list_keys: Box<[KeyedMac]>) -> Result<RevocationCell, Error> {
        Ok(RevocationCell {
            inner: Arc::new(CellInner {
                list_keys,
                current: ArcSwapOption::empty(),
                max_age_ms: None,
                max_clock_offset_ms: duration_ms(DEFAULT_MAX_CLOCK_OFFSET),
            }),
        })
    }

    /// A new cell holding the same list, with `change` applied to its
    /// settings.
    fn with(self, change: impl FnOnce(&mut CellInner)) -> RevocationCell {
        let inner = &self.inner;
        let mut changed = CellInner {
            list_keys: inner.list_keys.clone(),
            current: ArcSwapOption::new(inner.current.load_full()),
            max_age_ms: inner.max_age_ms,
            max_clock_offset_ms: inner.max_clock_offset_ms,
        };
        change(&mut changed);
        RevocationCell {
            inner: Arc::new(changed),
        }
    }

    /// Denies every call once the installed list is older than `max_age`
    /// (from its `issued_at_ms` to the call's `now`). Use with publishers
    /// that re-publish more often than `max_age`.
    ///
    /// Returns a new cell (holding the same list), not shared with `self`.
    pub fn with_max_age(self, max_age: Duration) -> RevocationCell {
        self.with(|c| c.max_age_ms = Some(duration_ms(max_age)))
    }

    /// Sets how far ahead of this server's clock a list may be dated
    /// (the bound on clock offset between publishers and verifiers).
    /// Default [`DEFAULT_MAX_CLOCK_OFFSET`]. A list dated further ahead is
    /// refused on install; one in force that is further ahead of a call's
    /// `now` denies the call.
    ///
    /// Returns a new cell (holding the same list), not shared with `self`.
    pub fn with_max_clock_offset(self, bound: Duration) -> RevocationCell {
        self.with(|c| c.max_clock_offset_ms = duration_ms(bound))
    }

    /// The clock-offset bound in force, in ms.
    pub fn max_clock_offset_ms(&self) -> u64 {
        self.inner.max_clock_offset_ms
    }

    /// Installs `list` if its signature is valid, it is not dated beyond
    /// the clock-offset bound by this machine's clock, and it is newer
    /// than the current one. See [`install_at`](Self::install_at).
    pub fn install(&self, list: RevocationList) -> Result<bool, RevocationError> {
        self.install_at(list, Timestamp::now().unix_millis())
    }

    /// Installs `list` as of `now_ms` (ms since the Unix epoch, the
    /// clock the verifier's calls use). Returns whether it was installed:
    /// an older or equally old list is ignored (`Ok(false)`), so lists
    /// arriving out of order never roll revocations back. A bad signature
    /// or a list dated more than the clock-offset bound after `now_ms` is
    /// an error, and the current list stays in force.
    pub fn install_at(&self, list: RevocationList, now_ms: u64) -> Result<bool, RevocationError> {
        if !signed_by_any(&list, &self.inner.list_keys) {
            return Err(RevocationError::InvalidSignature);
        }
        check_not_future(&list, now_ms, self.inner.max_clock_offset_ms)?;
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
        if let Err(e) = check_not_future(list, now_ms, self.inner.max_clock_offset_ms) {
            return Some(format!("revocation list is stale: {e}"));
        }
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
            .field("max_clock_offset_ms", &self.inner.max_clock_offset_ms)
            .finish_non_exhaustive()
    }
}

/// Where signed revocation lists are published and fetched (one process:
/// [`InMemoryRevocationStore`]; a fleet: Redis in `capnagent-redis`).
pub trait RevocationStore: Send + Sync {
    /// Publishes `list`. Refused ([`StoreError::Refused`]) when the store
    /// already holds a list as new or newer, or when `list` is dated
    /// beyond the store's clock-offset bound by the store's clock; the
    /// store keeps what it had. A store that holds a list dated beyond
    /// that bound replaces it with any list that is not.
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The newest list published, if any.
    fn latest(&self) -> BoxFuture<'_, Result<Option<RevocationList>, StoreError>>;
}

/// An in-process [`RevocationStore`], judging dates by this machine's
/// clock.
///
/// ```
/// use capnagent::{InMemoryRevocationStore, RevocationStore, Revoker, Timestamp};
///
/// # futures_executor_block_on(async {
/// let store = InMemoryRevocationStore::new();
/// let revoker = Revoker::new(&[7; 32])?;
/// let now = Timestamp::now().unix_millis();
/// store.publish(&revoker.publish(now)).await?;
/// // Not newer than what the store holds: refused, with the reason.
/// assert!(store.publish(&revoker.publish(now)).await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let waker = std::task::Waker::noop();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct InMemoryRevocationStore {
    current: ArcSwapOption<RevocationList>,
    max_clock_offset_ms: u64,
}

impl Default for InMemoryRevocationStore {
    fn default() -> Self {
        InMemoryRevocationStore {
            current: ArcSwapOption::empty(),
            max_clock_offset_ms: duration_ms(DEFAULT_MAX_CLOCK_OFFSET),
        }
    }
}

impl InMemoryRevocationStore {
    /// An empty store refusing lists dated more than
    /// [`DEFAULT_MAX_CLOCK_OFFSET`] ahead.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how far ahead of this machine's clock a published list may be
    /// dated.
    pub fn with_max_clock_offset(mut self, bound: Duration) -> Self {
        self.max_clock_offset_ms = duration_ms(bound);
        self
    }

    /// [`RevocationStore::publish`] as of `now_ms` (ms since the Unix
    /// epoch) instead of this machine's clock.
    pub fn publish_at(&self, list: &RevocationList, now_ms: u64) -> Result<(), StoreError> {
        let limit = self.max_clock_offset_ms;
        check_not_future(list, now_ms, limit).map_err(|e| StoreError::Refused(e.to_string()))?;
        let list = Arc::new(list.clone());
        let mut refusal = None;
        self.current.rcu(|current| match current {
            Some(old)
                if old.issued_at_ms >= list.issued_at_ms
                    && check_not_future(old, now_ms, limit).is_ok() =>
            {
                refusal = Some(old.issued_at_ms);
                Some(Arc::clone(old))
            }
            _ => {
                refusal = None;
                Some(Arc::clone(&list))
            }
        });
        match refusal {
            None => Ok(()),
            Some(held) => Err(StoreError::Refused(format!(
                "the store holds a list issued at {held}, not older than this one ({})",
                list.issued_at_ms
            ))),
        }
    }
}

impl RevocationStore for InMemoryRevocationStore {
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = self.publish_at(list, Timestamp::now().unix_millis());
        Box::pin(std::future::ready(result))
    }

    fn latest(&self) -> BoxFuture<'_, Result<Option<RevocationList>, StoreError>> {
        let list = self.current.load_full().map(|l| (*l).clone());
        Box::pin(std::future::ready(Ok(list)))
    }
}

/// Fetches the newest list from `store` and installs it into `cell`
/// ([`RevocationCell::install`], by this machine's clock).
/// Returns whether a newer list was installed. Call it on a timer: the
/// interval (plus one store round trip) bounds how long a revocation takes
/// to reach this verifier. A list the cell refuses (bad signature, dated
/// in the future) is [`StoreError::Invalid`] and changes nothing.
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
    fn matches_the_domain_separated_vector() {
        let mut revoker = Revoker::new(ROOT).expect("key");
        revoker.revoke("buy-stolen-token");
        let list = revoker.publish(1_700_000_000_000);
        // Also computed with Python's hmac module: list_key = HMAC(root, 0xFF || label),
        // signature = HMAC(list_key, 0xFF || tag || 0x00 || body).
        let label = b"\xffcapnagent revocation-list key v1";
        let key = KeyedMac::new(ROOT).tag(label);
        let body =
            br#"{"issued_at_ms":1700000000000,"revoked":["buy-stolen-token"],"signature":""}"#;
        let mut input = b"\xffcapnagent revocation-list v1\x00".to_vec();
        input.extend_from_slice(body);
        assert_eq!(list.signature, KeyedMac::new(&key).tag(&input));
        assert_eq!(
            crypto::hex_encode(&list.signature),
            "278ba6b56f2275386ed9daa3101988a06e47c47a32c63f20f6906288cf32602e"
        );
        let wire = "eyJpc3N1ZWRfYXRfbXMiOjE3MDAwMDAwMDAwMDAsInJldm9rZWQiOlsiYnV5LXN0b2xlbi10b2tlbiJdLCJzaWduYXR1cmUiOiIyNzhiYTZiNTZmMjI3NTM4NmVkOWRhYTMxMDE5ODhhMDZlNDdjNDdhMzJjNjNmMjBmNjkwNjI4OGNmMzI2MDJlIn0";
        assert_eq!(list.serialize(), wire);
        assert_eq!(RevocationList::parse(wire).expect("parses"), list);
        let cell = RevocationCell::new(ROOT).expect("key");
        assert_eq!(cell.install_at(list, 1_700_000_000_000), Ok(true));
    }

    #[test]
    fn the_reference_format_is_refused() {
        // The reference's signature, HMAC(root, body): the value that is
        // also a capability chain head for the identifier `body`.
        let wire = "eyJpc3N1ZWRfYXRfbXMiOjE3MDAwMDAwMDAwMDAsInJldm9rZWQiOlsiYnV5LXN0b2xlbi10b2tlbiJdLCJzaWduYXR1cmUiOiI5MGVlZDE1ZjQwN2U3Y2E2MzUxYWU0ZDI0ZTcxNDBjNmNhYjA3OGM1NDVhYTE0N2IyY2Q5NTJmMmY3YjBiYjg3In0";
        let list = RevocationList::parse(wire).expect("parses");
        let body =
            br#"{"issued_at_ms":1700000000000,"revoked":["buy-stolen-token"],"signature":""}"#;
        assert_eq!(list.signature, KeyedMac::new(ROOT).tag(body));
        let cell = RevocationCell::new(ROOT).expect("key");
        assert_eq!(
            cell.install_at(list.clone(), 1_700_000_000_000),
            Err(RevocationError::InvalidSignature)
        );
        assert!(Revoker::from_list(ROOT, &list).is_err());
        assert!(cell.current().is_none());
    }

    #[test]
    fn future_dated_lists_are_refused_and_deny_when_in_force() {
        let revoker = Revoker::new(ROOT).expect("key");
        let cell = RevocationCell::new(ROOT)
            .expect("key")
            .with_max_clock_offset(Duration::from_millis(1_000));
        assert_eq!(cell.max_clock_offset_ms(), 1_000);
        // Within the bound: accepted.
        assert_eq!(cell.install_at(revoker.publish(11_000), 10_000), Ok(true));
        // One ms beyond: refused, the current list stays.
        assert_eq!(
            cell.install_at(revoker.publish(12_001), 11_000),
            Err(RevocationError::FutureDated {
                issued_at_ms: 12_001,
                ahead_ms: 1_001,
                limit_ms: 1_000
            })
        );
        assert_eq!(cell.current().map(|l| l.issued_at_ms()), Some(11_000));
        // A list in force that is beyond the bound of a call's `now`
        // denies, with or without max_age.
        assert_eq!(cell.check("y", 10_000), None);
        assert!(
            cell.check("y", 9_999)
                .is_some_and(|r| r.starts_with("revocation list is stale"))
        );
        let aged = cell.clone().with_max_age(Duration::from_secs(60));
        assert!(aged.check("y", 0).is_some());
        assert_eq!(aged.check("y", 11_000), None);
        // Far future: refused, no overflow.
        assert!(cell.install_at(revoker.publish(u64::MAX), 20_000).is_err());
        assert!(cell.install_at(revoker.publish(u64::MAX), u64::MAX).is_ok());
    }

    #[test]
    fn in_memory_store_refuses_old_equal_and_future_lists() {
        let revoker = Revoker::new(ROOT).expect("key");
        let store = InMemoryRevocationStore::new().with_max_clock_offset(Duration::from_secs(1));
        assert_eq!(store.publish_at(&revoker.publish(100), 100), Ok(()));
        assert!(matches!(
            store.publish_at(&revoker.publish(100), 100),
            Err(StoreError::Refused(_))
        ));
        assert!(matches!(
            store.publish_at(&revoker.publish(99), 100),
            Err(StoreError::Refused(_))
        ));
        assert!(matches!(
            store.publish_at(&revoker.publish(1_101), 100),
            Err(StoreError::Refused(_))
        ));
        assert_eq!(store.publish_at(&revoker.publish(1_100), 100), Ok(()));
        // A held list that the store's clock now sees beyond the bound
        // (its clock went back) gives way to any list within it.
        assert_eq!(store.publish_at(&revoker.publish(50), 40), Ok(()));
        let held = store.current.load_full().map(|l| l.issued_at_ms());
        assert_eq!(held, Some(50));
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
