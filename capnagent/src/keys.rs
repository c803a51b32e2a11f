//! Key rings for rotation: several keys of one role (root or audit), each
//! with a [`KeyId`], the first being the primary (the one that issues or
//! signs); the text key-spec format that files and environment variables
//! use; and the resolver (flag, then file, then environment) that the
//! `capnagent` command and servers share.
//!
//! A verifier holding a ring tries its keys in order, primary first (see
//! [`Verifier::from_keys`](crate::Verifier::from_keys)); the token wire
//! format does not change, so tokens minted before a rotation keep working
//! until their key is taken out of the ring. The procedure is in
//! `docs/key-rotation.md`.
//!
//! # Key-spec format
//!
//! A spec is one or more entries separated by commas or newlines:
//!
//! ```text
//! # comment lines and blank lines are ignored
//! k2026-12:6b3c...e1        # KID:HEX (id then key, hex, at least 32 bytes for root)
//! 9f1d...07                 # HEX alone: the id is the key's fingerprint
//! k2026-06:1a2b...,k2026-01:3c4d...
//! CAPNAGENT_ROOT_KEY=k2026-12:6b3c...e1,k2026-06:1a2b...
//! CAPNAGENT_AUDIT_KEY=...   # ignored when reading root keys, and the reverse
//! ```
//!
//! A `NAME=VALUE` line (optionally `export NAME=VALUE`, the value optionally
//! in quotes) is an environment-file line, as `capnagent keygen` prints:
//! the value is read as entries when `NAME` is the role's variable
//! (`CAPNAGENT_ROOT_KEY` or `CAPNAGENT_AUDIT_KEY`), ignored when it is the
//! other role's, and refused otherwise. So one file written by
//! `capnagent keygen > keys.env` serves both `--root-key-file` and
//! `--audit-key-file`. Key ids are 1 to [`MAX_KEY_ID_LEN`] characters of
//! `A-Z a-z 0-9 . _ -`; the hex is strict (no `0x`, even length). Entries
//! keep their order: the first is the primary.
//!
//! Limits: a spec is at most [`MAX_KEY_SPEC_LEN`] bytes and a ring holds at
//! most [`DEFAULT_MAX_KEYS`] keys unless configured otherwise
//! ([`KeyRing::parse_with_max`], [`KeyRing::with_max_keys`]): a forged
//! token costs a verifier one HMAC chain per key. Duplicate ids and
//! duplicate keys are refused. No error message ever contains key text:
//! errors name the source, a line number and what is wrong.

use std::env;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::auditor::MIN_AUDIT_KEY_LEN;
use crate::crypto;
use crate::error::KeyError;
use crate::issuer::MIN_ROOT_KEY_LEN;

/// Longest key id, in characters.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Most keys a ring holds unless configured otherwise: each one a forged
/// token costs a verifier one more HMAC chain.
pub const DEFAULT_MAX_KEYS: usize = 8;

/// Longest key spec (a key file, an environment variable's value), in
/// bytes: room for the default number of keys with ids and comments, small
/// enough that a key file pointing at `/dev/zero` fails fast.
pub const MAX_KEY_SPEC_LEN: usize = 4096;

/// Input of a key's default id: SHA-256 of this label, then the key.
const FINGERPRINT_LABEL: &[u8] = b"capnagent key id v1";

/// A key's name in a ring: 1 to [`MAX_KEY_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`. Not secret.
///
/// ```
/// use capnagent::KeyId;
///
/// assert_eq!(KeyId::new("k2026-12")?.as_str(), "k2026-12");
/// assert!(KeyId::new("has space").is_err());
/// // A key without an id is named by its fingerprint (8 hex digits).
/// assert_eq!(KeyId::fingerprint(&[7; 32]).as_str().len(), 8);
/// # Ok::<(), capnagent::KeyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Box<str>);

impl KeyId {
    /// A key id, checked.
    pub fn new(text: &str) -> Result<KeyId, KeyError> {
        let valid = (1..=MAX_KEY_ID_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(KeyId(text.into()))
        } else {
            Err(KeyError::InvalidKeyId)
        }
    }

    /// The default id of a key given without one: the first 8 hex digits
    /// of SHA-256(`"capnagent key id v1"` || key). Tells keys apart in logs
    /// without revealing anything useful about them.
    pub fn fingerprint(key: &[u8]) -> KeyId {
        let digest = Sha256::new()
            .chain_update(FINGERPRINT_LABEL)
            .chain_update(key)
            .finalize();
        KeyId(crypto::hex_encode(digest.get(..4).unwrap_or_default()).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<KeyId, KeyError> {
        KeyId::new(text)
    }
}

/// What a key is for; decides its minimum length and the names of its
/// sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// Mints and verifies capabilities (at least
    /// [`MIN_ROOT_KEY_LEN`](crate::MIN_ROOT_KEY_LEN) bytes).
    Root,
    /// Signs and verifies receipts (at least
    /// [`MIN_AUDIT_KEY_LEN`](crate::MIN_AUDIT_KEY_LEN) bytes).
    Audit,
}

impl KeyRole {
    /// `root` or `audit`.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Root => "root",
            KeyRole::Audit => "audit",
        }
    }

    /// The environment variable: `CAPNAGENT_ROOT_KEY` or
    /// `CAPNAGENT_AUDIT_KEY`.
    pub fn env_var(self) -> &'static str {
        match self {
            KeyRole::Root => "CAPNAGENT_ROOT_KEY",
            KeyRole::Audit => "CAPNAGENT_AUDIT_KEY",
        }
    }

    /// The conventional hex flag: `--root-key-hex` or `--audit-key-hex`.
    pub fn hex_flag(self) -> &'static str {
        match self {
            KeyRole::Root => "--root-key-hex",
            KeyRole::Audit => "--audit-key-hex",
        }
    }

    /// The conventional file flag: `--root-key-file` or `--audit-key-file`.
    pub fn file_flag(self) -> &'static str {
        match self {
            KeyRole::Root => "--root-key-file",
            KeyRole::Audit => "--audit-key-file",
        }
    }

    /// Shortest key accepted, in bytes.
    pub fn min_len(self) -> usize {
        match self {
            KeyRole::Root => MIN_ROOT_KEY_LEN,
            KeyRole::Audit => MIN_AUDIT_KEY_LEN,
        }
    }

    /// The other role.
    fn other(self) -> KeyRole {
        match self {
            KeyRole::Root => KeyRole::Audit,
            KeyRole::Audit => KeyRole::Root,
        }
    }
}

/// One key of a ring: its id and its secret. The secret is never printed.
#[derive(Clone)]
pub struct KeyEntry {
    id: KeyId,
    secret: Box<[u8]>,
}

impl KeyEntry {
    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The secret bytes, for building an [`Issuer`](crate::Issuer),
    /// [`Verifier`](crate::Verifier), [`Auditor`](crate::Auditor),
    /// [`Revoker`](crate::Revoker) or
    /// [`RevocationCell`](crate::RevocationCell). Never log them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("secret", &format_args!(".."))
            .finish()
    }
}

/// 1 to `max_keys` keys of one role, each with a distinct id and distinct
/// bytes; the first is the primary, which issues capabilities or signs
/// receipts, and every key verifies. The keys are never printed.
///
/// ```
/// use capnagent::{KeyId, KeyRing, KeyRole};
///
/// let new = "ab".repeat(32);
/// let old = "cd".repeat(32);
/// let ring = KeyRing::parse(KeyRole::Root, &format!("k2:{new}\nk1:{old}"))?;
/// assert_eq!(ring.primary().id().as_str(), "k2");
/// assert_eq!(ring.len(), 2);
/// // Issue under the old key until every issuer has the new one:
/// let ring = ring.with_primary(&KeyId::new("k1")?)?;
/// assert_eq!(ring.primary().id().as_str(), "k1");
/// # Ok::<(), capnagent::KeyError>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    role: KeyRole,
    entries: Vec<KeyEntry>,
    max_keys: usize,
}

impl KeyRing {
    /// A ring of one key with the given id (or its fingerprint).
    pub fn new(role: KeyRole, id: Option<KeyId>, key: &[u8]) -> Result<KeyRing, KeyError> {
        let ring = KeyRing {
            role,
            entries: Vec::new(),
            max_keys: DEFAULT_MAX_KEYS,
        };
        ring.with_key(id, key)
    }

    /// Adds a key after the ones already in the ring (an older key, still
    /// accepted). Refuses a key shorter than the role's minimum, an id or
    /// key bytes already in the ring, and a key beyond the ring's bound.
    pub fn with_key(mut self, id: Option<KeyId>, key: &[u8]) -> Result<KeyRing, KeyError> {
        let role = self.role.name();
        if key.len() < self.role.min_len() {
            return Err(KeyError::TooShort {
                role,
                got: key.len(),
                min: self.role.min_len(),
            });
        }
        if self.entries.len() >= self.max_keys {
            return Err(KeyError::TooManyKeys {
                role,
                max: self.max_keys,
            });
        }
        let id = id.unwrap_or_else(|| KeyId::fingerprint(key));
        if self.entries.iter().any(|e| e.id == id) {
            return Err(KeyError::DuplicateKeyId { role, id });
        }
        // Constant-time, as every comparison of secret bytes.
        if let Some(same) = self
            .entries
            .iter()
            .find(|e| crypto::tags_equal(&e.secret, key))
        {
            return Err(KeyError::DuplicateKey {
                role,
                first: same.id.clone(),
                second: id,
            });
        }
        self.entries.push(KeyEntry {
            id,
            secret: key.into(),
        });
        Ok(self)
    }

    /// Sets the most keys this ring may hold (at least 1). Refused when it
    /// already holds more.
    pub fn with_max_keys(mut self, max_keys: usize) -> Result<KeyRing, KeyError> {
        let max_keys = max_keys.max(1);
        if self.entries.len() > max_keys {
            return Err(KeyError::TooManyKeys {
                role: self.role.name(),
                max: max_keys,
            });
        }
        self.max_keys = max_keys;
        Ok(self)
    }

    /// Reads a key spec (see the [module docs](self)) with at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn parse(role: KeyRole, spec: &str) -> Result<KeyRing, KeyError> {
        KeyRing::parse_with_max(role, spec, DEFAULT_MAX_KEYS)
    }

    /// Reads a key spec with at most `max_keys` keys (at least 1).
    pub fn parse_with_max(role: KeyRole, spec: &str, max_keys: usize) -> Result<KeyRing, KeyError> {
        if spec.len() > MAX_KEY_SPEC_LEN {
            return Err(KeyError::SpecTooLong {
                max: MAX_KEY_SPEC_LEN,
            });
        }
        let mut ring: Option<KeyRing> = None;
        for (index, line) in spec.lines().enumerate() {
            let at = |reason| KeyError::Syntax {
                line: index + 1,
                reason,
            };
            let Some(entries) = spec_line(role, line).map_err(at)? else {
                continue;
            };
            for entry in entries.split(',') {
                let (id, key) = spec_entry(entry).map_err(at)?;
                ring = Some(match ring {
                    None => KeyRing::new(role, id, &key)?.with_max_keys(max_keys)?,
                    Some(ring) => ring.with_key(id, &key)?,
                });
            }
        }
        ring.ok_or(KeyError::NoKey { role: role.name() })
    }

    /// The same keys with `id` moved first, as the primary (the others
    /// keep their order). Refused when no key has that id.
    pub fn with_primary(mut self, id: &KeyId) -> Result<KeyRing, KeyError> {
        let Some(at) = self.entries.iter().position(|e| e.id == *id) else {
            return Err(KeyError::UnknownKeyId {
                role: self.role.name(),
                id: id.clone(),
            });
        };
        let entry = self.entries.remove(at);
        self.entries.insert(0, entry);
        Ok(self)
    }

    /// The role the keys were read for.
    pub fn role(&self) -> KeyRole {
        self.role
    }

    /// The primary key: the first.
    pub fn primary(&self) -> &KeyEntry {
        // A ring is never empty: every constructor adds a key first.
        &self.entries[0]
    }

    /// The key with id `id`.
    pub fn get(&self, id: &KeyId) -> Option<&KeyEntry> {
        self.entries.iter().find(|e| e.id == *id)
    }

    /// The keys in order, primary first.
    pub fn iter(&self) -> std::slice::Iter<'_, KeyEntry> {
        self.entries.iter()
    }

    /// The key ids in order, primary first.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.entries.iter().map(KeyEntry::id)
    }

    /// How many keys the ring holds (at least 1).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a ring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most keys this ring may hold.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

impl<'a> IntoIterator for &'a KeyRing {
    type Item = &'a KeyEntry;
    type IntoIter = std::slice::Iter<'a, KeyEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("role", &self.role)
            .field("ids", &self.ids().collect::<Vec<_>>())
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

/// The entries on one line of a spec (comma separated), or `None` for a
/// line to skip: blank, a comment, or the other role's variable.
fn spec_line(role: KeyRole, line: &str) -> Result<Option<&str>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let Some((name, value)) = line.split_once('=') else {
        return Ok(Some(line));
    };
    let name = name.trim();
    let name = name.strip_prefix("export ").map_or(name, str::trim_start);
    if name == role.other().env_var() {
        return Ok(None);
    }
    if name != role.env_var() {
        return Err(match role {
            KeyRole::Root => "a NAME=VALUE line must name CAPNAGENT_ROOT_KEY",
            KeyRole::Audit => "a NAME=VALUE line must name CAPNAGENT_AUDIT_KEY",
        });
    }
    Ok(Some(unquote(value.trim())?))
}

/// A value without one pair of surrounding quotes (`"..."` or `'...'`).
fn unquote(value: &str) -> Result<&str, &'static str> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            return rest.strip_suffix(quote).ok_or("unterminated quote");
        }
    }
    Ok(value)
}

/// One `HEX` or `KID:HEX` entry.
fn spec_entry(entry: &str) -> Result<(Option<KeyId>, Vec<u8>), &'static str> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("empty entry (two commas, or a comma at an end)");
    }
    let (id, hex) = match entry.split_once(':') {
        Some((id, hex)) => (
            Some(
                KeyId::new(id)
                    .map_err(|_| "invalid key id (1 to 32 characters of A-Z a-z 0-9 . _ -)")?,
            ),
            hex,
        ),
        None => (None, entry),
    };
    let key = crypto::hex_decode(hex).map_err(|why| match why {
        "hex string has odd length" => "not valid hex (hex string has odd length)",
        _ => "not valid hex (invalid hex digit)",
    })?;
    Ok((id, key))
}

/// Where a key ring comes from: a hex flag, else a file, else the role's
/// environment variable (an empty variable counts as unset). The flag and
/// the variable hold a key spec as a file does.
///
/// ```
/// use capnagent::keys::KeySource;
/// use capnagent::KeyRole;
///
/// let hex = "ab".repeat(32);
/// let ring = KeySource::new(KeyRole::Root).hex(Some(&hex)).resolve()?;
/// assert_eq!(ring.map(|r| r.len()), Some(1));
/// # Ok::<(), capnagent::KeyError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KeySource<'a> {
    role: KeyRole,
    hex: Option<&'a str>,
    file: Option<&'a Path>,
    max_keys: usize,
}

impl<'a> KeySource<'a> {
    /// No flag and no file: only the environment.
    pub fn new(role: KeyRole) -> KeySource<'a> {
        KeySource {
            role,
            hex: None,
            file: None,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// The value of the hex flag (`--root-key-hex`), if given.
    pub fn hex(mut self, hex: Option<&'a str>) -> KeySource<'a> {
        self.hex = hex;
        self
    }

    /// The path given to the file flag (`--root-key-file`), if any.
    pub fn file(mut self, file: Option<&'a Path>) -> KeySource<'a> {
        self.file = file;
        self
    }

    /// The most keys accepted (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> KeySource<'a> {
        self.max_keys = max_keys;
        self
    }

    /// The ring from the first source given, by precedence flag > file >
    /// environment; `None` when none is given. An unreadable file or a bad
    /// spec is an error, never a fall-back to the next source. Errors name
    /// the source, never its text.
    pub fn resolve(&self) -> Result<Option<KeyRing>, KeyError> {
        let role = self.role;
        if let Some(text) = self.hex {
            return self.parse(text, || role.hex_flag().to_owned()).map(Some);
        }
        if let Some(path) = self.file {
            let origin = || format!("{} {}", role.file_flag(), path.display());
            let text = read_spec_file(path).map_err(|reason| KeyError::Unreadable {
                origin: origin(),
                reason,
            })?;
            return self.parse(&text, origin).map(Some);
        }
        match env::var(role.env_var()) {
            Ok(text) if !text.is_empty() => {
                self.parse(&text, || role.env_var().to_owned()).map(Some)
            }
            Ok(_) | Err(env::VarError::NotPresent) => Ok(None),
            Err(env::VarError::NotUnicode(_)) => Err(KeyError::Unreadable {
                origin: role.env_var().to_owned(),
                reason: "not valid hex (not UTF-8)".to_owned(),
            }),
        }
    }

    fn parse(&self, text: &str, origin: impl FnOnce() -> String) -> Result<KeyRing, KeyError> {
        KeyRing::parse_with_max(self.role, text, self.max_keys).map_err(|error| KeyError::At {
            origin: origin(),
            error: Box::new(error),
        })
    }
}

/// The root keys from `--root-key-hex` (`hex_flag`), else the file, else
/// `CAPNAGENT_ROOT_KEY`; `None` when none is given (a server may then
/// generate a random key). See [`KeySource`].
pub fn resolve_root(
    hex_flag: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<KeyRing>, KeyError> {
    KeySource::new(KeyRole::Root)
        .hex(hex_flag)
        .file(file)
        .resolve()
}

/// The audit keys from `--audit-key-hex` (`hex_flag`), else the file, else
/// `CAPNAGENT_AUDIT_KEY`; `None` when none is given. See [`KeySource`].
pub fn resolve_audit(
    hex_flag: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<KeyRing>, KeyError> {
    KeySource::new(KeyRole::Audit)
        .hex(hex_flag)
        .file(file)
        .resolve()
}

/// Reads a key file as UTF-8, refusing files over [`MAX_KEY_SPEC_LEN`].
/// The reason never quotes the file.
fn read_spec_file(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_SPEC_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_KEY_SPEC_LEN {
        return Err(format!(
            "file is too large for a key spec (over {MAX_KEY_SPEC_LEN} bytes)"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not valid hex (not UTF-8)".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn hex(byte: u8, len: usize) -> String {
        crypto::hex_encode(&vec![byte; len])
    }

    fn ids(ring: &KeyRing) -> Vec<&str> {
        ring.ids().map(KeyId::as_str).collect()
    }

    #[test]
    fn key_ids_are_checked() {
        for good in ["a", "k2026-12", "A.b_c-9", &"x".repeat(32)] {
            assert_eq!(KeyId::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "a b", "a:b", "a,b", "é", &"x".repeat(33), "a\n"] {
            assert_eq!(KeyId::new(bad), Err(KeyError::InvalidKeyId), "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_are_short_stable_and_distinct() {
        let a = KeyId::fingerprint(&[1; 32]);
        assert_eq!(a, KeyId::fingerprint(&[1; 32]));
        assert_ne!(a, KeyId::fingerprint(&[2; 32]));
        assert_eq!(a.as_str().len(), 8);
        assert!(KeyId::new(a.as_str()).is_ok());
        // SHA-256("capnagent key id v1" || key), first 4 bytes.
        let digest = Sha256::digest([FINGERPRINT_LABEL, &[1; 32]].concat());
        assert_eq!(a.as_str(), crypto::hex_encode(&digest[..4]));
    }

    #[test]
    fn every_accepted_form_parses() {
        let (a, b, c) = (hex(0xa1, 32), hex(0xb2, 32), hex(0xc3, 32));
        let ring = KeyRing::parse(KeyRole::Root, &format!("  {a}\n")).unwrap();
        assert_eq!(ring.primary().expose_secret(), &[0xa1; 32]);
        assert_eq!(*ring.primary().id(), KeyId::fingerprint(&[0xa1; 32]));

        let ring = KeyRing::parse(KeyRole::Root, &format!("new:{a}, old:{b}")).unwrap();
        assert_eq!(ids(&ring), ["new", "old"]);
        assert_eq!(
            ring.get(&KeyId::new("old").unwrap())
                .unwrap()
                .expose_secret(),
            &[0xb2; 32]
        );

        let spec = format!("# rotation of 2026-12\n\nnew:{a}\r\n  # old one\nold:{b},{c}\n");
        let ring = KeyRing::parse(KeyRole::Root, &spec).unwrap();
        assert_eq!(ids(&ring)[..2], ["new", "old"]);
        assert_eq!(ring.iter().nth(2).unwrap().expose_secret(), &[0xc3; 32]);
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn env_file_lines_pick_the_role() {
        let (root, audit) = (hex(0x11, 32), hex(0x22, 32));
        let env = format!(
            "# capnagent keygen\nCAPNAGENT_ROOT_KEY=k1:{root}\nexport CAPNAGENT_AUDIT_KEY=\"a1:{audit}\"\n"
        );
        let ring = KeyRing::parse(KeyRole::Root, &env).unwrap();
        assert_eq!(ids(&ring), ["k1"]);
        assert_eq!(ring.primary().expose_secret(), &[0x11; 32]);
        let ring = KeyRing::parse(KeyRole::Audit, &env).unwrap();
        assert_eq!(ids(&ring), ["a1"]);
        assert_eq!(ring.primary().expose_secret(), &[0x22; 32]);
        // Plain keygen output, without ids.
        let plain = format!("CAPNAGENT_ROOT_KEY={root}\nCAPNAGENT_AUDIT_KEY={audit}\n");
        let ring = KeyRing::parse(KeyRole::Audit, &plain).unwrap();
        assert_eq!(ring.primary().expose_secret(), &[0x22; 32]);
        // Several keys on one variable.
        let both = format!("CAPNAGENT_ROOT_KEY='new:{root},old:{audit}'");
        assert_eq!(
            ids(&KeyRing::parse(KeyRole::Root, &both).unwrap()),
            ["new", "old"]
        );
        // Only the other role's variable: no key.
        let only_audit = format!("CAPNAGENT_AUDIT_KEY={audit}");
        assert_eq!(
            KeyRing::parse(KeyRole::Root, &only_audit).unwrap_err(),
            KeyError::NoKey { role: "root" }
        );
    }

    #[test]
    fn bad_specs_are_refused_without_quoting_keys() {
        let key = hex(0x5e, 32);
        let cases = [
            (format!("0x{key}"), "key.syntax"),
            (format!("{key}0"), "key.syntax"),
            (key.replace('5', "g"), "key.syntax"),
            (format!("k1:{key},,"), "key.syntax"),
            (format!("bad id:{key}"), "key.syntax"),
            (format!("OTHER_VAR={key}"), "key.syntax"),
            (format!("CAPNAGENT_ROOT_KEY=\"{key}"), "key.syntax"),
            (format!("a:{key}\nb:{key}"), "key.duplicate_key"),
            (format!("a:{key}\na:{}", hex(0x6f, 32)), "key.duplicate_id"),
            (hex(0x5e, 31), "key.too_short"),
            ("# nothing\n\n".to_owned(), "key.none"),
            (
                format!("{key}\n{}", " ".repeat(MAX_KEY_SPEC_LEN)),
                "key.spec_too_long",
            ),
        ];
        for (spec, code) in &cases {
            let err = KeyRing::parse(KeyRole::Root, spec).unwrap_err();
            assert_eq!(err.code(), *code, "{err}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains(&key[..20]), "key leaked: {text}");
            assert!(!text.contains("5e5e5e5e"), "key leaked: {text}");
        }
        let err = KeyRing::parse(KeyRole::Root, &format!("# c\n\nzz{key}")).unwrap_err();
        assert_eq!(err.to_string(), "line 3: not valid hex (invalid hex digit)");
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let spec: Vec<String> = (0..=DEFAULT_MAX_KEYS as u8).map(|i| hex(i, 32)).collect();
        let err = KeyRing::parse(KeyRole::Root, &spec.join("\n")).unwrap_err();
        assert_eq!(
            err,
            KeyError::TooManyKeys {
                role: "root",
                max: DEFAULT_MAX_KEYS
            }
        );
        let ring = KeyRing::parse(KeyRole::Root, &spec[..DEFAULT_MAX_KEYS].join(",")).unwrap();
        assert_eq!(ring.len(), DEFAULT_MAX_KEYS);
        assert!(KeyRing::parse_with_max(KeyRole::Root, &spec[..3].join(","), 2).is_err());
        assert_eq!(
            KeyRing::parse_with_max(KeyRole::Root, &spec[..2].join(","), 2)
                .unwrap()
                .len(),
            2
        );
        assert!(ring.with_max_keys(2).is_err());
    }

    #[test]
    fn audit_keys_may_be_shorter_than_root_keys() {
        let short = hex(0x42, 16);
        assert_eq!(KeyRing::parse(KeyRole::Audit, &short).unwrap().len(), 1);
        assert_eq!(
            KeyRing::parse(KeyRole::Root, &short).unwrap_err(),
            KeyError::TooShort {
                role: "root",
                got: 16,
                min: 32
            }
        );
    }

    #[test]
    fn with_primary_reorders_and_refuses_unknown_ids() {
        let ring = KeyRing::new(KeyRole::Root, Some(KeyId::new("a").unwrap()), &[1; 32])
            .unwrap()
            .with_key(Some(KeyId::new("b").unwrap()), &[2; 32])
            .unwrap()
            .with_key(Some(KeyId::new("c").unwrap()), &[3; 32])
            .unwrap();
        let ring = ring.with_primary(&KeyId::new("c").unwrap()).unwrap();
        assert_eq!(ids(&ring), ["c", "a", "b"]);
        let err = ring.with_primary(&KeyId::new("zz").unwrap()).unwrap_err();
        assert_eq!(err.code(), "key.unknown_id");
        assert_eq!(err.to_string(), "no root key with id zz");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let ring = KeyRing::parse(KeyRole::Root, &format!("k:{}", hex(0xab, 32))).unwrap();
        let text = format!("{ring:?} {:?}", ring.primary());
        assert!(text.contains("\"k\""), "{text}");
        assert!(!text.contains("abab"), "{text}");
        assert!(!text.contains("171, 171"), "{text}");
    }

    #[test]
    fn sources_follow_precedence_and_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.env");
        std::fs::write(&file, format!("CAPNAGENT_ROOT_KEY=f:{}\n", hex(0xf0, 32))).unwrap();
        let flag = format!("h:{}", hex(0x0f, 32));
        let ring = resolve_root(Some(&flag), Some(&file)).unwrap().unwrap();
        assert_eq!(ids(&ring), ["h"]);
        let ring = resolve_root(None, Some(&file)).unwrap().unwrap();
        assert_eq!(ids(&ring), ["f"]);
        // The file is root-only: no audit key in it.
        let err = resolve_audit(None, Some(&file)).unwrap_err();
        assert_eq!(err.code(), "key.none");
        assert!(err.to_string().starts_with("--audit-key-file "), "{err}");

        let err = resolve_root(Some("zz"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--root-key-hex: line 1: not valid hex (invalid hex digit)"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_KEY_SPEC_LEN + 1]).unwrap();
        let err = resolve_root(None, Some(&big)).unwrap_err();
        assert_eq!(err.code(), "key.unreadable");
        let err = resolve_root(None, Some(&dir.path().join("missing"))).unwrap_err();
        assert_eq!(err.code(), "key.unreadable");
    }
}
