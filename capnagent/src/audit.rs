//! Receipts: [`Auditor`] signs one for every decision, [`Receipt`] is its
//! wire form, and [`AuditLog`] keeps them in an append-only file.
//!
//! A receipt is HMAC-SHA256 under an *audit* key (separate from the root
//! key) over `"v" || version || canonical JSON of the receipt without its
//! signature`, byte-compatible with the reference 0.7.4 package.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::Mac;
use serde::Deserialize;

use crate::capability::{Caveat, CaveatList};
use crate::context::Context;
use crate::crypto::{self, Buffered, HexArrayError, KeyedMac, Tag};
use crate::error::{Error, KeyError, ReceiptError};
use crate::gate::Gate;
use crate::json::{JsonSink, write_escaped_str};

/// The receipt schema version this crate writes and accepts.
pub const RECEIPT_SCHEMA_VERSION: u8 = 1;

/// Shortest audit key accepted, in bytes.
pub const MIN_AUDIT_KEY_LEN: usize = 16;

/// The decision a receipt records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call may proceed.
    Allowed,
    /// The call was refused.
    Denied {
        /// Why, in the reference's exact wording (for example
        /// `caveat failed: arg.amount_cents <= 5000`).
        reason: String,
    },
}

impl Outcome {
    /// True for [`Outcome::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Outcome::Allowed)
    }

    /// The denial reason, if denied.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Allowed => None,
            Outcome::Denied { reason } => Some(reason),
        }
    }
}

/// What a receipt records about the call: never the arguments themselves,
/// only their canonical hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextSummary {
    // Shared with the context (and every receipt of it).
    caller: Arc<str>,
    tool: Arc<str>,
    args_hash: String,
}

impl ContextSummary {
    /// Summarizes a context.
    pub fn of(ctx: &Context) -> ContextSummary {
        let (caller, tool) = ctx.caller_and_tool();
        ContextSummary {
            caller,
            tool,
            args_hash: ctx.args_hash(),
        }
    }

    /// The caller.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The tool.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Lowercase hex SHA-256 of the canonical arguments.
    pub fn args_hash(&self) -> &str {
        &self.args_hash
    }
}

/// A signed record of one decision.
#[derive(Clone)]
pub struct Receipt {
    version: u8,
    capability_identifier: Arc<str>,
    caveats: CaveatList,
    context_summary: ContextSummary,
    outcome: Outcome,
    timestamp_ms: u64,
    signature: Tag,
    // Not part of the wire form: known only to the process that decided.
    denied_by: Option<Gate>,
}

/// Equal when the signed fields are equal; [`Receipt::denied_by`] is not
/// part of a receipt's wire form and is not compared.
impl PartialEq for Receipt {
    fn eq(&self, other: &Receipt) -> bool {
        self.version == other.version
            && self.capability_identifier == other.capability_identifier
            && self.caveats == other.caveats
            && self.context_summary == other.context_summary
            && self.outcome == other.outcome
            && self.timestamp_ms == other.timestamp_ms
            && self.signature == other.signature
    }
}

impl Eq for Receipt {}

impl Receipt {
    /// The schema version (always [`RECEIPT_SCHEMA_VERSION`]).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The capability's identifier.
    pub fn capability_identifier(&self) -> &str {
        &self.capability_identifier
    }

    /// All the capability's caveats, in order.
    pub fn caveats(&self) -> &[Caveat] {
        self.caveats.as_slice()
    }

    /// Caller, tool and args hash.
    pub fn context_summary(&self) -> &ContextSummary {
        &self.context_summary
    }

    /// The decision.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// True when the call was allowed.
    pub fn is_allowed(&self) -> bool {
        self.outcome.is_allowed()
    }

    /// The verifier gate that denied the call, on a receipt a
    /// [`Verifier`](crate::Verifier) in this process just signed. `None`
    /// when the call was allowed, for a receipt read back from JSON (the
    /// wire form, fixed by the reference, does not carry it) and for one
    /// signed directly with [`Auditor::sign`]. Act on this, never on the
    /// wording of [`Outcome::reason`].
    pub fn denied_by(&self) -> Option<Gate> {
        self.denied_by
    }

    /// Sets the gate that denied the call (see [`denied_by`](Self::denied_by)).
    pub(crate) fn denied_at(mut self, gate: Option<Gate>) -> Receipt {
        self.denied_by = gate;
        self
    }

    /// The context's time, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// Lowercase hex of the signature.
    pub fn signature_hex(&self) -> String {
        crypto::hex_encode(&self.signature)
    }

    /// The compact JSON form, byte-identical to the reference's:
    /// `version, capability_identifier, caveats, context_summary, outcome,
    /// timestamp_ms, signature`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256 + self.caveats.json().len());
        self.write_json(&mut out);
        out
    }

    /// Appends [`to_json`](Self::to_json)'s text to `out`.
    fn write_json<S: JsonSink + ?Sized>(&self, out: &mut S) {
        let mut digits = [0u8; 20];
        out.put("{\"version\":");
        out.put(decimal(u64::from(self.version), &mut digits));
        out.put(",\"capability_identifier\":");
        write_escaped_str(out, &self.capability_identifier);
        out.put(",\"caveats\":");
        out.put(self.caveats.json());
        out.put(",\"context_summary\":{\"caller\":");
        write_escaped_str(out, &self.context_summary.caller);
        out.put(",\"tool\":");
        write_escaped_str(out, &self.context_summary.tool);
        out.put(",\"args_hash\":");
        write_escaped_str(out, &self.context_summary.args_hash);
        out.put("},\"outcome\":");
        write_outcome(out, &self.outcome);
        out.put(",\"timestamp_ms\":");
        out.put(decimal(self.timestamp_ms, &mut digits));
        out.put(",\"signature\":\"");
        let mut hex = [0u8; 64];
        out.put(crate::hex::encode_into(&self.signature, &mut hex));
        out.put("\"}");
    }

    /// Reads a receipt strictly: every field required, unknown fields
    /// refused (the reference ignores them, and they would not be signed).
    /// Does not check the signature; see [`Auditor::verify`].
    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        let wire: WireReceipt =
            serde_json::from_str(text).map_err(|e| ReceiptError::Json(e.to_string()))?;
        let signature = match crypto::hex_decode_array::<32>(&wire.signature) {
            Ok(sig) => sig,
            Err(HexArrayError::Length(_)) => return Err(ReceiptError::InvalidSignature),
            Err(HexArrayError::Hex(detail)) => {
                return Err(ReceiptError::Json(format!("signature: {detail}")));
            }
        };
        Ok(Receipt {
            version: wire.version,
            capability_identifier: wire.capability_identifier.into(),
            caveats: wire
                .caveats
                .into_iter()
                .map(|c| Caveat::new(c.predicate))
                .collect::<Vec<_>>()
                .into(),
            context_summary: ContextSummary {
                caller: wire.context_summary.caller.into(),
                tool: wire.context_summary.tool.into(),
                args_hash: wire.context_summary.args_hash,
            },
            outcome: match wire.outcome {
                WireOutcome::Allowed => Outcome::Allowed,
                WireOutcome::Denied { reason } => Outcome::Denied { reason },
            },
            timestamp_ms: wire.timestamp_ms,
            signature,
            denied_by: None,
        })
    }

    /// Streams the signing input (everything but the signature, canonical
    /// JSON with sorted keys) into `out`: what the MAC covers after
    /// `"v" || version`. [`Auditor::mac`] writes it in two parts.
    #[cfg(test)]
    fn write_signing_body<S: JsonSink + ?Sized>(&self, out: &mut S) {
        write_signing_prefix(out, &self.capability_identifier, &self.caveats);
        self.write_signing_rest(out);
    }

    /// The signing body from the args hash on: what differs between two
    /// receipts of one capability.
    fn write_signing_rest<S: JsonSink + ?Sized>(&self, out: &mut S) {
        write_escaped_str(out, &self.context_summary.args_hash);
        out.put(",\"caller\":");
        write_escaped_str(out, &self.context_summary.caller);
        out.put(",\"tool\":");
        write_escaped_str(out, &self.context_summary.tool);
        out.put("},\"outcome\":");
        write_outcome(out, &self.outcome);
        let mut digits = [0u8; 20];
        out.put(",\"timestamp_ms\":");
        out.put(decimal(self.timestamp_ms, &mut digits));
        out.put(",\"version\":");
        out.put(decimal(u64::from(self.version), &mut digits));
        out.put("}");
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("version", &self.version)
            .field("capability_identifier", &self.capability_identifier)
            .field("caveats", &self.caveats)
            .field("context_summary", &self.context_summary)
            .field("outcome", &self.outcome)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("signature", &self.signature_hex())
            .finish()
    }
}

/// The start of the signing body, the same for every receipt of one
/// capability: identifier and caveats, up to the args hash's value.
fn write_signing_prefix<S: JsonSink + ?Sized>(out: &mut S, identifier: &str, caveats: &CaveatList) {
    out.put("{\"capability_identifier\":");
    write_escaped_str(out, identifier);
    out.put(",\"caveats\":");
    out.put(caveats.json());
    out.put(",\"context_summary\":{\"args_hash\":");
}

fn write_outcome<S: JsonSink + ?Sized>(out: &mut S, outcome: &Outcome) {
    match outcome {
        Outcome::Allowed => out.put("{\"kind\":\"allowed\"}"),
        Outcome::Denied { reason } => {
            out.put("{\"kind\":\"denied\",\"reason\":");
            write_escaped_str(out, reason);
            out.put("}");
        }
    }
}

/// `n` in decimal, written into `buf` without allocating, two digits at a
/// time (one division per pair: a timestamp has 13 digits).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut start = buf.len();
    while n >= 10 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        buf[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n > 0 || start == buf.len() {
        start -= 1;
        buf[start] = b'0' + n as u8;
    }
    std::str::from_utf8(buf.get(start..).unwrap_or_default()).unwrap_or("0")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReceipt {
    version: u8,
    capability_identifier: String,
    caveats: Vec<WireCaveat>,
    context_summary: WireSummary,
    outcome: WireOutcome,
    timestamp_ms: u64,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCaveat {
    predicate: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSummary {
    caller: String,
    tool: String,
    args_hash: String,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WireOutcome {
    Allowed,
    Denied { reason: String },
}

/// Signs and verifies receipts under an audit key.
///
/// ```
/// use capnagent::{Auditor, Context, Outcome};
///
/// let auditor = Auditor::new(&[9; 32])?;
/// let ctx = Context::builder().now_millis(0).caller("agent").tool("t").build();
/// let receipt = auditor.sign("cap-1", Vec::new(), &ctx, Outcome::Allowed);
/// assert_eq!(auditor.verify(&receipt.to_json())?, receipt);
/// # Ok::<(), capnagent::Error>(())
/// ```
#[derive(Clone)]
pub struct Auditor {
    key: Arc<KeyedMac>,
    /// Tells this auditor (and its clones, same key) from any other, for
    /// the signing states kept with capabilities' caveat lists.
    id: u64,
}

/// The next [`Auditor`] id; never reused.
static NEXT_AUDITOR_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Auditor {
    /// Creates an auditor. Keys shorter than [`MIN_AUDIT_KEY_LEN`] (16
    /// bytes) are refused; use 32 random bytes.
    pub fn new(key: &[u8]) -> Result<Auditor, Error> {
        if key.len() < MIN_AUDIT_KEY_LEN {
            return Err(KeyError::TooShort {
                role: "audit",
                got: key.len(),
                min: MIN_AUDIT_KEY_LEN,
            }
            .into());
        }
        Ok(Auditor {
            key: Arc::new(KeyedMac::new(key)),
            id: NEXT_AUDITOR_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The keyed MAC, for the verifier's key comparison
    /// ([`Verifier::check_audit_key`](crate::Verifier::check_audit_key)).
    pub(crate) fn keyed_mac(&self) -> &KeyedMac {
        &self.key
    }

    /// Signs a receipt for a decision about `ctx`.
    ///
    /// The verifier calls this for every decision it makes; call it
    /// yourself to record a decision made before a capability could be
    /// checked (for example a request that carried no token).
    pub fn sign(
        &self,
        capability_identifier: impl Into<Arc<str>>,
        caveats: impl Into<Arc<[Caveat]>>,
        ctx: &Context,
        outcome: Outcome,
    ) -> Receipt {
        // A list made for this one receipt: nothing to keep for the next.
        self.sign_list(
            capability_identifier.into(),
            CaveatList::from(caveats.into()),
            ctx,
            outcome,
            false,
        )
    }

    /// [`sign`](Self::sign) with a capability's own caveat list, shared by
    /// every receipt of that capability: its JSON is written once, and the
    /// MAC state after the signing input's shared prefix is kept with it.
    pub(crate) fn sign_shared(
        &self,
        capability_identifier: Arc<str>,
        caveats: CaveatList,
        ctx: &Context,
        outcome: Outcome,
    ) -> Receipt {
        self.sign_list(capability_identifier, caveats, ctx, outcome, true)
    }

    fn sign_list(
        &self,
        capability_identifier: Arc<str>,
        caveats: CaveatList,
        ctx: &Context,
        outcome: Outcome,
        keep_prefix: bool,
    ) -> Receipt {
        let mut receipt = Receipt {
            version: RECEIPT_SCHEMA_VERSION,
            capability_identifier,
            caveats,
            context_summary: ContextSummary::of(ctx),
            outcome,
            timestamp_ms: ctx.now().unix_millis(),
            signature: [0; 32],
            denied_by: None,
        };
        receipt.signature = self.mac(&receipt, keep_prefix);
        receipt
    }

    /// The receipt's MAC. With `keep_prefix`, the part every receipt of a
    /// capability shares (version, identifier, caveats: often most of the
    /// input) is hashed once per caveat list, and the state kept with it.
    fn mac(&self, receipt: &Receipt, keep_prefix: bool) -> Tag {
        // Through a stack buffer: many small updates cost more than the
        // hashing itself.
        let prefix = || {
            let mut body = Buffered::new(self.key.start());
            body.bytes(&[b'v', receipt.version]);
            write_signing_prefix(&mut body, &receipt.capability_identifier, &receipt.caveats);
            body
        };
        let kept = (keep_prefix && receipt.version == RECEIPT_SCHEMA_VERSION)
            .then(|| {
                receipt
                    .caveats
                    .signing_state(self.id, &receipt.capability_identifier, || {
                        prefix().finish()
                    })
            })
            .flatten();
        let mut body = match kept {
            Some(state) => Buffered::new(state),
            None => prefix(),
        };
        receipt.write_signing_rest(&mut body);
        body.finish().finalize().into_bytes().into()
    }

    /// Checks a receipt given as JSON text: strict schema, version 1, and
    /// the signature (compared in constant time).
    pub fn verify(&self, receipt_json: &str) -> Result<Receipt, Error> {
        let receipt = Receipt::from_json(receipt_json)?;
        self.verify_receipt(&receipt)?;
        Ok(receipt)
    }

    /// Checks an already parsed receipt's version and signature.
    pub fn verify_receipt(&self, receipt: &Receipt) -> Result<(), Error> {
        if receipt.version != RECEIPT_SCHEMA_VERSION {
            return Err(ReceiptError::UnsupportedVersion {
                got: receipt.version,
                expected: RECEIPT_SCHEMA_VERSION,
            }
            .into());
        }
        if crypto::tags_equal(&self.mac(receipt, false), &receipt.signature) {
            Ok(())
        } else {
            Err(ReceiptError::InvalidSignature.into())
        }
    }
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("key", &format_args!(".."))
            .finish()
    }
}

/// Longest text a layer copies from a request into a receipt it signs
/// itself (the caller, the tool, a denial reason that quotes the request),
/// in bytes before JSON escaping: 1 KiB. See [`bounded_text`].
pub const MAX_RECEIPT_TEXT: usize = 1024;

/// The prefix of [`unverified_identifier`]'s identifiers.
pub const UNVERIFIED_IDENTIFIER_PREFIX: &str = "unverified:sha256:";

/// The identifier a receipt gives a token that did not verify (a forged
/// chain, a token that does not parse or is too long):
/// `unverified:sha256:<lowercase hex SHA-256 of the token text>`, 82 bytes
/// whatever the token.
///
/// Such a token's identifier and caveats are the client's own claims, made
/// without any key: a receipt signed with them would be an audit record of
/// the client's choosing ("admin (approved by security team)", 180 KB of
/// caveats). The hash still lets an operator who holds a token find its
/// receipts.
///
/// ```
/// let id = capnagent::unverified_identifier("not-a-token");
/// assert!(id.starts_with(capnagent::UNVERIFIED_IDENTIFIER_PREFIX));
/// assert_eq!(id.len(), 82);
/// ```
pub fn unverified_identifier(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(UNVERIFIED_IDENTIFIER_PREFIX.len() + 64);
    out.push_str(UNVERIFIED_IDENTIFIER_PREFIX);
    out.push_str(&crypto::hex_encode(&digest));
    out
}

/// `text`, or for text over [`MAX_RECEIPT_TEXT`] bytes its start (cut on a
/// character boundary) followed by `…[N bytes]`, N being the full length:
/// at most `MAX_RECEIPT_TEXT + 24` bytes.
///
/// ```
/// let long = "a".repeat(5000);
/// let cut = capnagent::bounded_text(&long);
/// assert!(cut.len() <= capnagent::MAX_RECEIPT_TEXT + 24);
/// assert!(cut.ends_with("…[5000 bytes]"));
/// assert_eq!(capnagent::bounded_text("agent:planner"), "agent:planner");
/// ```
pub fn bounded_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_RECEIPT_TEXT {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_RECEIPT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = text.get(..end).unwrap_or_default();
    std::borrow::Cow::Owned(format!("{head}…[{} bytes]", text.len()))
}

/// When an [`AuditLog::append`] is durable.
///
/// The policy holds per call: [`AuditLog::append_all`] writes all its
/// receipts with one `write` and, under [`Durability::Sync`], one `fsync`.
/// A writer that gathers the receipts of many requests into one
/// `append_all` (group commit, as `capnagent-tower`'s write-ahead
/// `AuditLogSink` does) pays one disk round trip per group, not per
/// receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Each record is handed to the operating system with one `write` call
    /// before `append` returns: it survives a crash of this process, not a
    /// power loss or kernel crash. The default.
    #[default]
    Flush,
    /// Each record is also `fsync`ed (`File::sync_data`) before `append`
    /// returns: it survives power loss, at the cost of a disk round trip
    /// per record.
    Sync,
}

/// An append-only file of receipts, one compact JSON object per line.
///
/// Appends are serialized by a mutex and each record is written with a
/// single `write_all` on a file opened in append mode, so concurrent
/// appenders never interleave. See [`Durability`] for when a record is
/// safe. A crash mid-write can leave a torn last line; [`AuditLog::open`]
/// starts new records on a fresh line, and reading reports the torn line
/// as an error item.
///
/// ```
/// use capnagent::{AuditLog, Auditor, Context, Outcome};
///
/// let dir = tempfile::tempdir()?;
/// let log = AuditLog::open(dir.path().join("audit.ndjson"))?;
/// let auditor = Auditor::new(&[9; 32])?;
/// let ctx = Context::builder().now_millis(0).tool("t").build();
/// log.append(&auditor.sign("cap-1", Vec::new(), &ctx, Outcome::Allowed))?;
/// let all: Vec<_> = log.iter()?.collect::<Result<_, _>>()?;
/// assert_eq!(all.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
    durability: Durability,
}

impl AuditLog {
    /// Opens (creating if needed) a log with [`Durability::Flush`].
    pub fn open(path: impl AsRef<Path>) -> io::Result<AuditLog> {
        AuditLog::open_with(path, Durability::default())
    }

    /// Opens (creating if needed) a log with the given durability.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> io::Result<AuditLog> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        // If a crash left a torn last line, start on a new line so the next
        // record stays intact and the torn one stays visible.
        let len = file.metadata()?.len();
        if len > 0 {
            file.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(AuditLog {
            path,
            file: Mutex::new(file),
            durability,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one receipt as one line. Durable as [`Durability`] says
    /// when this returns `Ok`.
    pub fn append(&self, receipt: &Receipt) -> io::Result<()> {
        self.append_all([receipt]).map(drop)
    }

    /// Appends several receipts with one `write` (one line each). Durable
    /// as [`Durability`] says when this returns `Ok`; on error, none or
    /// some of them may have been written (lines stay whole unless the
    /// process or the disk fails mid-write).
    pub fn append_all<'a>(
        &self,
        receipts: impl IntoIterator<Item = &'a Receipt>,
    ) -> io::Result<usize> {
        let mut buffer = String::new();
        let mut count = 0;
        for receipt in receipts {
            receipt.write_json(&mut buffer);
            buffer.push('\n');
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("audit log mutex poisoned"))?;
        file.write_all(buffer.as_bytes())?;
        if self.durability == Durability::Sync {
            file.sync_data()?;
        }
        Ok(count)
    }

    /// Forces everything appended so far to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        let file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("audit log mutex poisoned"))?;
        file.sync_data()
    }

    /// Reads the log from the start through a fresh handle.
    pub fn iter(&self) -> io::Result<AuditLogIter> {
        AuditLogIter::open(&self.path)
    }
}

/// A line of the audit log that could not be read as a receipt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditLogError {
    /// Reading the file failed.
    #[error("audit log line {line}: {source}")]
    Io {
        /// 1-based line number.
        line: usize,
        /// The I/O error.
        source: io::Error,
    },
    /// The last line has no newline and is not a complete receipt: a write
    /// was cut short (crash mid-write).
    #[error("audit log line {line}: torn last line ({len} bytes, no newline)")]
    Torn {
        /// 1-based line number.
        line: usize,
        /// Bytes in the fragment.
        len: usize,
    },
    /// The line is longer than the reader's limit; it was skipped.
    #[error("audit log line {line}: longer than {max} bytes")]
    TooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// The line is not a valid receipt.
    #[error("audit log line {line}: {source}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Why.
        source: ReceiptError,
    },
}

/// Iterates over an audit log's receipts; see [`AuditLog::iter`].
///
/// Blank lines are skipped. A bad line yields an error item and iteration
/// goes on with the next line.
pub struct AuditLogIter {
    reader: BufReader<File>,
    line: usize,
    max_line: usize,
    done: bool,
}

impl AuditLogIter {
    /// Longest line read by default: 4 MiB.
    pub const DEFAULT_MAX_LINE: usize = 4 * 1024 * 1024;

    /// Opens a log file for reading.
    pub fn open(path: impl AsRef<Path>) -> io::Result<AuditLogIter> {
        Ok(AuditLogIter {
            reader: BufReader::new(File::open(path)?),
            line: 0,
            max_line: Self::DEFAULT_MAX_LINE,
            done: false,
        })
    }

    /// Sets the longest line accepted; longer lines yield
    /// [`AuditLogError::TooLong`] and are skipped.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
    }
}

impl Iterator for AuditLogIter {
    type Item = Result<Receipt, AuditLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.line += 1;
            let line = self.line;
            let mut buf = Vec::new();
            let limit = u64::try_from(self.max_line)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let read = (&mut self.reader).take(limit).read_until(b'\n', &mut buf);
            match read {
                Err(source) => {
                    self.done = true;
                    return Some(Err(AuditLogError::Io { line, source }));
                }
                Ok(0) => self.done = true,
                Ok(_) => {
                    let complete = buf.last() == Some(&b'\n');
                    if !complete && buf.len() > self.max_line {
                        if let Err(source) = self.skip_rest_of_line() {
                            self.done = true;
                            return Some(Err(AuditLogError::Io { line, source }));
                        }
                        return Some(Err(AuditLogError::TooLong {
                            line,
                            max: self.max_line,
                        }));
                    }
                    let text = match std::str::from_utf8(&buf) {
                        Ok(text) => text.trim_end_matches(['\n', '\r']),
                        Err(_) if !complete => {
                            return Some(Err(AuditLogError::Torn {
                                line,
                                len: buf.len(),
                            }));
                        }
                        Err(e) => {
                            return Some(Err(AuditLogError::Invalid {
                                line,
                                source: ReceiptError::Json(e.to_string()),
                            }));
                        }
                    };
                    if text.trim().is_empty() {
                        continue;
                    }
                    return Some(match Receipt::from_json(text) {
                        Ok(receipt) => Ok(receipt),
                        Err(_) if !complete => Err(AuditLogError::Torn {
                            line,
                            len: buf.len(),
                        }),
                        Err(source) => Err(AuditLogError::Invalid { line, source }),
                    });
                }
            }
        }
        None
    }
}

impl fmt::Debug for AuditLogIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLogIter")
            .field("line", &self.line)
            .field("max_line", &self.max_line)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn decimal_writes_every_u64() {
        let mut buf = [0u8; 20];
        let powers = (0..20).map(|e| 10u64.pow(e));
        let edges = powers.flat_map(|p| [p - 1, p, p + 1, p.saturating_mul(7)]);
        let samples = (0..100_000).chain([1_700_000_000_000, u64::MAX - 1, u64::MAX]);
        for n in samples.chain(edges) {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }

    /// The MAC as the wire format defines it, computed from scratch.
    fn plain_mac(key: &[u8], receipt: &Receipt) -> Tag {
        let mut body = String::new();
        receipt.write_signing_body(&mut body);
        let mut mac = crypto::HmacSha256::new_from_slice(key).expect("any key length");
        mac.update(&[b'v', receipt.version]);
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn kept_signing_states_give_the_plain_mac() {
        let (key_a, key_b) = ([0xA3; 32], [0x5C; 32]);
        let (a, b) = (Auditor::new(&key_a).unwrap(), Auditor::new(&key_b).unwrap());
        let caveats = CaveatList::from(vec![
            Caveat::new("tool == \"x\""),
            Caveat::new("caller == \"agent:\\\"q\\\"\""),
            Caveat::new("now <= @2099-01-01T00:00:00Z"),
        ]);
        let ctx = |n: u64| {
            Context::builder()
                .now_millis(1_700_000_000_000 + n)
                .caller("agent:test")
                .tool("x")
                .build()
        };
        // One caveat list signed under two keys and two identifiers, in
        // turns, several times each: the first (auditor, identifier) keeps
        // a state, the others hash everything; all give the plain MAC.
        for n in 0..3 {
            for (auditor, key) in [(&a, &key_a[..]), (&b, &key_b[..]), (&a.clone(), &key_a[..])] {
                for id in ["cap-1", "cap-\"2\""] {
                    let outcome = if n == 1 {
                        Outcome::Denied {
                            reason: "no".into(),
                        }
                    } else {
                        Outcome::Allowed
                    };
                    let receipt = auditor.sign_shared(id.into(), caveats.clone(), &ctx(n), outcome);
                    assert_eq!(receipt.signature, plain_mac(key, &receipt), "{id} {n}");
                    auditor.verify_receipt(&receipt).unwrap();
                }
            }
        }
        // Another version never uses the kept state.
        let mut receipt = a.sign_shared("cap-1".into(), caveats.clone(), &ctx(0), Outcome::Allowed);
        receipt.version = 2;
        assert_eq!(a.mac(&receipt, true), plain_mac(&key_a, &receipt));
        assert_ne!(a.mac(&receipt, true), receipt.signature);
        // One-off receipts hash the whole input, and keep nothing.
        let list = CaveatList::from(vec![Caveat::new("tool == \"y\"")]);
        let once = a.sign("cap-3", list.as_slice().to_vec(), &ctx(0), Outcome::Allowed);
        assert_eq!(once.signature, plain_mac(&key_a, &once));
        let receipt = b.sign_shared("cap-3".into(), list.clone(), &ctx(0), Outcome::Allowed);
        assert_eq!(receipt.signature, plain_mac(&key_b, &receipt));
        assert_eq!(a.mac(&receipt, false), once.signature);
    }

    #[test]
    fn hex_into_a_buffer_matches_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        assert_eq!(
            crate::hex::encode_into(&bytes, &mut out),
            crate::hex::encode(&bytes)
        );
    }
}
