//! The hash-chained audit log: the record that wraps a receipt
//! ([`ChainKey`], [`parse_record`]), the [`Checkpoint`] an operator keeps
//! elsewhere, and the [`ChainVerifier`] that checks a log, rotated files
//! included, and reports the first break.
//!
//! # Record format (version 1)
//!
//! A chained log is NDJSON, one record per line, each written in exactly
//! this layout (no spaces, keys in this order, lowercase hex):
//!
//! ```text
//! {"seq":<N>,"prev":"<64 hex>","receipt":<receipt JSON>,"mac":"<64 hex>"}\n
//! ```
//!
//! * `seq`: the record's number, decimal without leading zeros, starting
//!   at **0** and increasing by one per record across rotated files.
//! * `prev`: the previous record's `mac`; for record 0 the genesis value,
//!   32 zero bytes ([`GENESIS_PREV`]).
//! * `receipt`: the receipt's compact JSON exactly as
//!   [`Receipt::to_json`](crate::Receipt::to_json) writes it (the wire form
//!   of the reference 0.7.4 package, signature included), verbatim.
//! * `mac`: `HMAC-SHA256(chain_key, seq as 8 bytes big-endian || prev (32
//!   bytes) || receipt length as 8 bytes big-endian || receipt bytes)`,
//!   where `chain_key = HMAC-SHA256(audit_key, "capnagent audit chain v1")`
//!   ([`CHAIN_KEY_LABEL`]). The chain key is used for nothing else: a
//!   receipt's MAC input starts with `v`, so a chain MAC can never pass
//!   as a receipt signature, nor a receipt signature as a chain MAC.
//!
//! A reader takes the receipt as the bytes between the fixed prefix (up to
//! `"receipt":`) and the fixed 74-byte suffix (`,"mac":"<64 hex>"}`), so
//! the MAC input is unambiguous; a line that starts with `{"seq":` but is
//! not in this layout is malformed. Lines of a plain (unchained) log are
//! the receipt JSON alone, and a reader tells the two apart by that
//! prefix.
//!
//! Deleting, inserting, reordering or editing records breaks `seq`, `prev`
//! or a MAC; cutting records off the end is detected against a
//! [`Checkpoint`] (the last `seq` and `mac`, kept elsewhere).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::auditor::Auditor;
use crate::crypto::{self, KeyedMac, Tag};
use crate::error::ReceiptError;
use crate::receipt::Receipt;

/// The message under the audit key that derives the chain key.
pub const CHAIN_KEY_LABEL: &[u8] = b"capnagent audit chain v1";

/// The `prev` of record 0: 32 zero bytes.
pub const GENESIS_PREV: [u8; 32] = [0; 32];

/// How each chained record starts.
const SEQ_PREFIX: &str = "{\"seq\":";
/// Between `seq` and `prev`'s hex.
const PREV_KEY: &str = ",\"prev\":\"";
/// Between `prev`'s hex and the receipt.
const RECEIPT_KEY: &str = "\",\"receipt\":";
/// Between the receipt and `mac`'s hex.
const MAC_KEY: &str = ",\"mac\":\"";
/// After `mac`'s hex.
const RECORD_END: &str = "\"}";
/// Bytes after the receipt: `,"mac":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = MAC_KEY.len() + 64 + RECORD_END.len();

/// The key chain MACs are computed under, derived from an audit key.
/// Never printed.
#[derive(Clone, Debug)]
pub(crate) struct ChainKey(KeyedMac);

impl ChainKey {
    /// `HMAC(audit_key, CHAIN_KEY_LABEL)` as a key.
    pub(crate) fn derive(auditor: &Auditor) -> ChainKey {
        ChainKey(KeyedMac::new(&auditor.keyed_mac().tag(CHAIN_KEY_LABEL)))
    }

    /// The MAC of one record.
    pub(crate) fn mac(&self, seq: u64, prev: &Tag, receipt: &[u8]) -> Tag {
        let len = u64::try_from(receipt.len()).unwrap_or(u64::MAX);
        self.0
            .tag_parts(&[&seq.to_be_bytes(), prev, &len.to_be_bytes(), receipt])
    }
}

/// Where the next chained record goes: its `seq` and `prev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) next_seq: u64,
    pub(crate) prev: Tag,
}

impl Head {
    /// Before record 0.
    pub(crate) const GENESIS: Head = Head {
        next_seq: 0,
        prev: GENESIS_PREV,
    };

    /// After `record`, or an error when `seq` cannot grow.
    pub(crate) fn after(record: &Record<'_>) -> io::Result<Head> {
        let next_seq = record
            .seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("audit chain: seq is at its maximum"))?;
        Ok(Head {
            next_seq,
            prev: record.mac,
        })
    }

    /// Appends the record of `receipt_json` to `out` and moves past it.
    pub(crate) fn write(
        &mut self,
        key: &ChainKey,
        receipt_json: &str,
        out: &mut String,
    ) -> io::Result<()> {
        let mac = key.mac(self.next_seq, &self.prev, receipt_json.as_bytes());
        let mut digits = itoa::Buffer::new();
        let mut hex = [0u8; 64];
        out.push_str(SEQ_PREFIX);
        out.push_str(digits.format(self.next_seq));
        out.push_str(PREV_KEY);
        out.push_str(crypto::hex_encode_into(&self.prev, &mut hex));
        out.push_str(RECEIPT_KEY);
        out.push_str(receipt_json);
        out.push_str(MAC_KEY);
        out.push_str(crypto::hex_encode_into(&mac, &mut hex));
        out.push_str(RECORD_END);
        out.push('\n');
        *self = Head {
            next_seq: self
                .next_seq
                .checked_add(1)
                .ok_or_else(|| io::Error::other("audit chain: seq is at its maximum"))?,
            prev: mac,
        };
        Ok(())
    }
}

/// One chained record as read, its receipt still text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) seq: u64,
    pub(crate) prev: Tag,
    /// The receipt's exact bytes.
    pub(crate) receipt: &'a str,
    pub(crate) mac: Tag,
}

impl Record<'_> {
    /// Whether `key` computes this record's MAC.
    fn mac_verifies(&self, key: &ChainKey) -> bool {
        crypto::tags_equal(
            &key.mac(self.seq, &self.prev, self.receipt.as_bytes()),
            &self.mac,
        )
    }
}

/// Why a line that starts like a chained record is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The line is not in the chained record layout.
    #[error("not a chained record: {0}")]
    Layout(&'static str),
    /// The wrapped receipt does not parse.
    #[error("chained record: {0}")]
    Receipt(ReceiptError),
}

/// Whether a line is (meant to be) a chained record rather than a plain
/// receipt.
pub(crate) fn is_chained(text: &str) -> bool {
    text.starts_with(SEQ_PREFIX)
}

/// Reads a chained record in the exact layout of the module docs. Does not
/// parse the receipt nor check any MAC.
pub(crate) fn parse_record(text: &str) -> Result<Record<'_>, RecordError> {
    let rest = text
        .strip_prefix(SEQ_PREFIX)
        .ok_or(RecordError::Layout("does not start with {\"seq\":"))?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(RecordError::Layout("ends inside seq"))?;
    let (digits, rest) = rest.split_at(digits_end);
    let seq = parse_seq(digits).ok_or(RecordError::Layout(
        "seq is not a decimal u64 without leading zeros",
    ))?;
    let rest = rest
        .strip_prefix(PREV_KEY)
        .ok_or(RecordError::Layout("no \"prev\" after seq"))?;
    let (prev_hex, rest) = rest
        .split_at_checked(64)
        .ok_or(RecordError::Layout("prev is not 64 hex digits"))?;
    let prev = lower_hex_tag(prev_hex)
        .ok_or(RecordError::Layout("prev is not 64 lowercase hex digits"))?;
    let rest = rest
        .strip_prefix(RECEIPT_KEY)
        .ok_or(RecordError::Layout("no \"receipt\" after prev"))?;
    let split = rest
        .len()
        .checked_sub(SUFFIX_LEN)
        .ok_or(RecordError::Layout("too short for a receipt and a mac"))?;
    let (receipt, suffix) = rest
        .split_at_checked(split)
        .ok_or(RecordError::Layout("no \"mac\" at the end"))?;
    let mac_hex = suffix
        .strip_prefix(MAC_KEY)
        .and_then(|s| s.strip_suffix(RECORD_END))
        .ok_or(RecordError::Layout(
            "does not end with \"mac\":\"<64 hex>\"}",
        ))?;
    let mac =
        lower_hex_tag(mac_hex).ok_or(RecordError::Layout("mac is not 64 lowercase hex digits"))?;
    if !(receipt.starts_with('{') && receipt.ends_with('}')) {
        return Err(RecordError::Layout("receipt is not a JSON object"));
    }
    Ok(Record {
        seq,
        prev,
        receipt,
        mac,
    })
}

/// A decimal `u64` in canonical form (no sign, no leading zero).
fn parse_seq(digits: &str) -> Option<u64> {
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// 64 lowercase hex digits as 32 bytes.
fn lower_hex_tag(text: &str) -> Option<Tag> {
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    crypto::hex_decode_array::<32>(text).ok()
}

/// Whether `bytes` look like a write cut short: a prefix of JSON text that
/// ends too early (or in the middle of a UTF-8 character). The check is
/// `serde_json`'s, bounded by its recursion limit.
pub(crate) fn looks_torn(bytes: &[u8]) -> bool {
    if let Err(e) = std::str::from_utf8(bytes) {
        // Valid up to a character cut at the very end.
        return e.error_len().is_none()
            && bytes.get(..e.valid_up_to()).is_some_and(looks_torn_text);
    }
    looks_torn_text(bytes)
}

fn looks_torn_text(bytes: &[u8]) -> bool {
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return false;
    }
    matches!(
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes),
        Err(e) if e.classify() == serde_json::error::Category::Eof
    )
}

/// A point in a chained log an operator keeps elsewhere to detect
/// truncation: the last record's `seq` and `mac`. Written and read as
/// `SEQ:MACHEX` (for example `41:9f86…`, 64 hex digits).
///
/// A MAC is not a secret (it is in the log), so this prints in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The record's `seq`.
    pub seq: u64,
    /// The record's `mac`.
    pub mac: [u8; 32],
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; 64];
        write!(
            f,
            "{}:{}",
            self.seq,
            crypto::hex_encode_into(&self.mac, &mut hex)
        )
    }
}

/// Why a `SEQ:MACHEX` checkpoint does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint must be SEQ:MACHEX (a decimal seq, 64 hex digits): {0}")]
pub struct CheckpointParseError(&'static str);

impl FromStr for Checkpoint {
    type Err = CheckpointParseError;

    fn from_str(text: &str) -> Result<Checkpoint, CheckpointParseError> {
        let (seq, mac) = text.split_once(':').ok_or(CheckpointParseError("no ':'"))?;
        let seq = parse_seq(seq).ok_or(CheckpointParseError("bad seq"))?;
        let mac =
            crypto::hex_decode_array::<32>(mac).map_err(|_| CheckpointParseError("bad mac"))?;
        Ok(Checkpoint { seq, mac })
    }
}

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainReport {
    /// Records read (chained records, or plain receipts of an unchained
    /// log), every receipt's signature verified.
    pub records: u64,
    /// Files read.
    pub files: usize,
    /// True when the log is chained; false for a plain log (accepted only
    /// with [`ChainVerifier::allow_unchained`]).
    pub chained: bool,
    /// The last record's `seq` and `mac`: store it to detect truncation
    /// later. `None` for a plain or empty log.
    pub head: Option<Checkpoint>,
    /// Torn lines (writes cut short by a crash) the chain continues across.
    pub torn_lines: u64,
}

/// The first break found in a log: where, and what kind.
#[derive(Debug, thiserror::Error)]
#[error("{}:{}: {}", .file.display(), .line, .kind)]
#[non_exhaustive]
pub struct ChainBreak {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line number in that file (for
    /// [`ChainBreakKind::Truncated`], one past its last line).
    pub line: usize,
    /// What is wrong.
    pub kind: ChainBreakKind,
    /// For [`ChainBreakKind::Torn`] only (the log is otherwise intact):
    /// what verified.
    pub report: Option<Box<ChainReport>>,
}

impl ChainBreak {
    /// True when the only problem is a torn line: every record verified and
    /// the chain continues across it (a crash mid-write, not tampering).
    pub fn is_torn_only(&self) -> bool {
        matches!(self.kind, ChainBreakKind::Torn)
    }

    /// True when the log could not be read (not a verdict on its content).
    pub fn is_io(&self) -> bool {
        matches!(self.kind, ChainBreakKind::Io(_))
    }
}

/// The kinds of [`ChainBreak`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBreakKind {
    /// The line is neither a chained record, a plain receipt nor a torn
    /// write (or is longer than the line limit).
    #[error("malformed line: {0}")]
    Malformed(String),
    /// A receipt's signature verifies under none of the audit keys (edited,
    /// forged, or from a log under another key).
    #[error("receipt signature does not verify under any audit key")]
    BadReceiptSignature,
    /// The chain MAC verifies under none of the audit keys: `seq`, `prev`,
    /// `mac` or the receipt bytes were edited, or the line was forged.
    #[error("chain MAC does not verify under any audit key (record edited or forged)")]
    BadChainMac,
    /// `seq` is higher than expected: records are missing (deleted, or a
    /// rotated file is missing) or were moved later.
    #[error("seq {found} where {expected} was expected: records missing or moved")]
    SeqGap {
        /// The `seq` the chain expected.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `seq` is lower than expected: a record reordered or replayed.
    #[error("seq {found} where {expected} was expected: a record reordered or replayed")]
    Reordered {
        /// The `seq` the chain expected.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// The record is authentic but its `prev` is not the previous record's
    /// `mac`: a record of another chain under the same key.
    #[error("prev does not match the previous record's mac (a record of another chain)")]
    PrevMismatch,
    /// A plain receipt line inside a chained log.
    #[error("a plain receipt line inside a chained log")]
    UnchainedLine,
    /// A line cut short by a crash mid-write. Every record verified and the
    /// chain continues across it; [`ChainBreak::report`] says what
    /// verified.
    #[error("torn line (a write cut short by a crash); the chain is otherwise intact")]
    Torn,
    /// The log ends before the given checkpoint: records were cut off.
    #[error("{}", truncated_text(.checkpoint, .last_seq))]
    Truncated {
        /// The checkpoint.
        checkpoint: Checkpoint,
        /// The last `seq` found, if any.
        last_seq: Option<u64>,
    },
    /// The record with the checkpoint's `seq` has another `mac`: the log
    /// was rewritten since the checkpoint was taken.
    #[error("record seq {seq} does not match the checkpoint's mac (log rewritten)")]
    CheckpointMismatch {
        /// The checkpoint's `seq`.
        seq: u64,
    },
    /// No chained record at all: deletion and reordering of plain receipts
    /// cannot be detected.
    #[error("not a chained log: deletion and reordering cannot be detected")]
    NotChained,
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(io::Error),
}

fn truncated_text(checkpoint: &Checkpoint, last_seq: &Option<u64>) -> String {
    match last_seq {
        Some(last) => format!(
            "truncated: the log ends at seq {last}, before checkpoint seq {}",
            checkpoint.seq
        ),
        None => format!(
            "truncated: no record, before checkpoint seq {}",
            checkpoint.seq
        ),
    }
}

/// Checks a chained audit log, rotated files included: every receipt's
/// signature under one of the audit keys, every chain MAC under one of
/// them, `seq` continuity, `prev` linkage from the genesis value across the
/// files in order, and optionally a [`Checkpoint`]. Reports the first
/// break.
///
/// Several audit keys may be given (key rotation): each record may verify
/// under any of them.
///
/// ```
/// use capnagent::{AuditLog, Auditor, ChainVerifier, Context, Outcome};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("audit.ndjson");
/// let auditor = Auditor::new(&[9; 32])?;
/// let log = AuditLog::builder(&path).chained(&auditor).open()?;
/// let ctx = Context::builder().now_millis(0).tool("t").build();
/// log.append(&auditor.sign("cap-1", Vec::new(), &ctx, Outcome::Allowed))?;
/// let report = ChainVerifier::new(&[auditor]).verify(&log.files()?)?;
/// assert_eq!(report.records, 1);
/// assert_eq!(report.head.map(|h| h.seq), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    auditors: Vec<Auditor>,
    keys: Vec<ChainKey>,
    checkpoint: Option<Checkpoint>,
    allow_unchained: bool,
    max_line: usize,
}

impl ChainVerifier {
    /// A verifier trying each of `auditors`' keys.
    pub fn new(auditors: &[Auditor]) -> ChainVerifier {
        ChainVerifier {
            auditors: auditors.to_vec(),
            keys: auditors.iter().map(ChainKey::derive).collect(),
            checkpoint: None,
            allow_unchained: false,
            max_line: crate::AuditLogIter::DEFAULT_MAX_LINE,
        }
    }

    /// Also requires the log to reach `checkpoint` with the same `mac`
    /// (detects records cut off the end).
    pub fn checkpoint(mut self, checkpoint: Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }

    /// Accepts a log with no chained record at all, checking only its
    /// receipts' signatures (by default it is a
    /// [`ChainBreakKind::NotChained`] break).
    pub fn allow_unchained(mut self, allow: bool) -> Self {
        self.allow_unchained = allow;
        self
    }

    /// Sets the longest line read (default
    /// [`AuditLogIter::DEFAULT_MAX_LINE`](crate::AuditLogIter::DEFAULT_MAX_LINE));
    /// a longer line is a [`ChainBreakKind::Malformed`] break.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// Verifies `files`, oldest first (the rotated files in order, then
    /// the active file: see [`audit_log_files`](crate::audit_log_files)).
    pub fn verify<P: AsRef<Path>>(&self, files: &[P]) -> Result<ChainReport, ChainBreak> {
        let mut walk = Walk::new(self);
        for path in files {
            walk.file(path.as_ref())?;
        }
        walk.finish()
    }

    /// Whether one of the audit keys signed `receipt`.
    fn receipt_verifies(&self, receipt: &Receipt) -> bool {
        self.auditors
            .iter()
            .any(|a| a.verify_receipt(receipt).is_ok())
    }
}

/// [`ChainVerifier`] with `auditors` and an optional checkpoint; a plain
/// log is a [`ChainBreakKind::NotChained`] break.
pub fn verify_audit_log<P: AsRef<Path>>(
    files: &[P],
    auditors: &[Auditor],
    checkpoint: Option<Checkpoint>,
) -> Result<ChainReport, ChainBreak> {
    let mut verifier = ChainVerifier::new(auditors);
    verifier.checkpoint = checkpoint;
    verifier.verify(files)
}

/// A line as read: whole, cut at end of file, or over the limit.
pub(crate) enum RawLine {
    /// A line ended by a newline (not included).
    Complete(Vec<u8>),
    /// The last bytes of the file, with no newline.
    Partial(Vec<u8>),
    /// Longer than the limit; skipped.
    TooLong,
}

/// Reads lines of at most `max_line` bytes, skipping longer ones.
pub(crate) struct LineReader<R> {
    reader: R,
    max_line: usize,
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(reader: R, max_line: usize) -> Self {
        LineReader { reader, max_line }
    }

    /// The underlying reader.
    pub(crate) fn into_inner(self) -> R {
        self.reader
    }

    /// The next line, `None` at end of file.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut buf = Vec::new();
        let limit = u64::try_from(self.max_line)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            return Ok(Some(RawLine::Complete(buf)));
        }
        if buf.len() > self.max_line {
            self.skip_rest_of_line()?;
            return Ok(Some(RawLine::TooLong));
        }
        Ok(Some(RawLine::Partial(buf)))
    }

    fn skip_rest_of_line(&mut self) -> io::Result<()> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', buf) {
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

/// A line's place, for a report.
#[derive(Debug, Clone)]
struct Place {
    file: PathBuf,
    line: usize,
}

/// The state of one verification.
struct Walk<'v> {
    verifier: &'v ChainVerifier,
    head: Head,
    last: Option<Checkpoint>,
    records: u64,
    chained: u64,
    files: usize,
    first_plain: Option<Place>,
    first_torn: Option<Place>,
    torn_lines: u64,
    checkpoint_seen: bool,
    /// One past the last line read.
    end: Place,
}

impl<'v> Walk<'v> {
    fn new(verifier: &'v ChainVerifier) -> Walk<'v> {
        Walk {
            verifier,
            head: Head::GENESIS,
            last: None,
            records: 0,
            chained: 0,
            files: 0,
            first_plain: None,
            first_torn: None,
            torn_lines: 0,
            checkpoint_seen: false,
            end: Place {
                file: PathBuf::new(),
                line: 1,
            },
        }
    }

    fn brk(place: &Place, kind: ChainBreakKind) -> ChainBreak {
        ChainBreak {
            file: place.file.clone(),
            line: place.line,
            kind,
            report: None,
        }
    }

    fn file(&mut self, path: &Path) -> Result<(), ChainBreak> {
        self.files += 1;
        let mut place = Place {
            file: path.to_path_buf(),
            line: 0,
        };
        let file = File::open(path).map_err(|e| Self::brk(&place, ChainBreakKind::Io(e)))?;
        let mut lines = LineReader::new(BufReader::new(file), self.verifier.max_line);
        loop {
            place.line += 1;
            let raw = match lines.next_line() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Err(Self::brk(&place, ChainBreakKind::Io(e))),
            };
            self.line(&place, raw)?;
        }
        self.end = place;
        Ok(())
    }

    fn line(&mut self, place: &Place, raw: RawLine) -> Result<(), ChainBreak> {
        let bytes = match raw {
            RawLine::Complete(bytes) | RawLine::Partial(bytes) => bytes,
            RawLine::TooLong => {
                let max = self.verifier.max_line;
                return Err(Self::brk(
                    place,
                    ChainBreakKind::Malformed(format!("longer than {max} bytes")),
                ));
            }
        };
        if bytes.trim_ascii().is_empty() {
            return Ok(());
        }
        let malformed = |why: String| {
            if looks_torn(&bytes) {
                Ok(None)
            } else {
                Err(Self::brk(place, ChainBreakKind::Malformed(why)))
            }
        };
        let parsed = match std::str::from_utf8(&bytes) {
            Err(_) => malformed("not UTF-8".to_owned())?,
            Ok(text) if is_chained(text) => match parse_record(text) {
                Ok(record) => Some(self.chained(place, &record)),
                Err(e) => malformed(e.to_string())?,
            },
            Ok(text) => match Receipt::from_json(text) {
                Ok(receipt) => Some(self.plain(place, &receipt)),
                Err(e) => malformed(format!("not a receipt: {e}"))?,
            },
        };
        match parsed {
            Some(result) => result,
            None => {
                self.torn_lines += 1;
                self.first_torn.get_or_insert_with(|| place.clone());
                Ok(())
            }
        }
    }

    fn plain(&mut self, place: &Place, receipt: &Receipt) -> Result<(), ChainBreak> {
        if !self.verifier.receipt_verifies(receipt) {
            return Err(Self::brk(place, ChainBreakKind::BadReceiptSignature));
        }
        if self.chained > 0 {
            return Err(Self::brk(place, ChainBreakKind::UnchainedLine));
        }
        self.first_plain.get_or_insert_with(|| place.clone());
        self.records += 1;
        Ok(())
    }

    fn chained(&mut self, place: &Place, record: &Record<'_>) -> Result<(), ChainBreak> {
        if let Some(plain) = &self.first_plain {
            return Err(Self::brk(plain, ChainBreakKind::UnchainedLine));
        }
        let receipt = Receipt::from_json(record.receipt).map_err(|e| {
            Self::brk(
                place,
                ChainBreakKind::Malformed(RecordError::Receipt(e).to_string()),
            )
        })?;
        if !self.verifier.receipt_verifies(&receipt) {
            return Err(Self::brk(place, ChainBreakKind::BadReceiptSignature));
        }
        if !self.verifier.keys.iter().any(|k| record.mac_verifies(k)) {
            return Err(Self::brk(place, ChainBreakKind::BadChainMac));
        }
        let expected = self.head.next_seq;
        if record.seq > expected {
            let found = record.seq;
            return Err(Self::brk(place, ChainBreakKind::SeqGap { expected, found }));
        }
        if record.seq < expected {
            let found = record.seq;
            return Err(Self::brk(
                place,
                ChainBreakKind::Reordered { expected, found },
            ));
        }
        if !crypto::tags_equal(&record.prev, &self.head.prev) {
            return Err(Self::brk(place, ChainBreakKind::PrevMismatch));
        }
        if let Some(checkpoint) = self.verifier.checkpoint
            && checkpoint.seq == record.seq
        {
            if !crypto::tags_equal(&checkpoint.mac, &record.mac) {
                let seq = record.seq;
                return Err(Self::brk(place, ChainBreakKind::CheckpointMismatch { seq }));
            }
            self.checkpoint_seen = true;
        }
        self.head = Head::after(record).map_err(|e| Self::brk(place, ChainBreakKind::Io(e)))?;
        self.last = Some(Checkpoint {
            seq: record.seq,
            mac: record.mac,
        });
        self.records += 1;
        self.chained += 1;
        Ok(())
    }

    fn finish(self) -> Result<ChainReport, ChainBreak> {
        if self.chained == 0
            && let Some(plain) = &self.first_plain
            && !self.verifier.allow_unchained
        {
            return Err(Self::brk(plain, ChainBreakKind::NotChained));
        }
        if let Some(checkpoint) = self.verifier.checkpoint
            && !self.checkpoint_seen
        {
            let last_seq = self.last.map(|c| c.seq);
            return Err(Self::brk(
                &self.end,
                ChainBreakKind::Truncated {
                    checkpoint,
                    last_seq,
                },
            ));
        }
        let report = ChainReport {
            records: self.records,
            files: self.files,
            chained: self.chained > 0,
            head: self.last,
            torn_lines: self.torn_lines,
        };
        match self.first_torn {
            Some(place) => Err(ChainBreak {
                file: place.file,
                line: place.line,
                kind: ChainBreakKind::Torn,
                report: Some(Box::new(report)),
            }),
            None => Ok(report),
        }
    }
}

/// The files of a log whose active file is `active`, oldest first: its
/// rotated siblings `<active>.NNNNNN` in increasing number, then `active`
/// itself if it exists (after a crash between a rotation's rename and the
/// new file's creation it may not). Fails with `NotFound` when there is
/// neither.
pub fn audit_log_files(active: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
    let active = active.as_ref();
    let mut files: Vec<PathBuf> = rotated_files(active)?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    if active.exists() {
        files.push(active.to_path_buf());
    }
    if files.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no audit log at {}", active.display()),
        ));
    }
    Ok(files)
}

/// Fewest digits of a rotated file's number.
const ROTATED_DIGITS: usize = 6;

/// The rotated siblings of `active` (`<name>.<6 or more digits>`) with
/// their numbers, in increasing number.
pub(crate) fn rotated_files(active: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let name = active
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("audit log path has no UTF-8 file name"))?;
    let dir = parent_dir(active);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(number) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name))
            .and_then(|n| n.strip_prefix('.'))
            .filter(|n| n.len() >= ROTATED_DIGITS && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((number, dir.join(file_name)));
    }
    found.sort_by_key(|(number, _)| *number);
    Ok(found)
}

/// The name of rotated file number `number`: `<active>.<number, 6 digits
/// or more>`.
pub(crate) fn rotated_name(active: &Path, number: u64) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{number:0ROTATED_DIGITS$}"));
    PathBuf::from(name)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn records_round_trip_and_layout_is_strict() {
        let auditor = Auditor::new(&[3; 32]).unwrap();
        let key = ChainKey::derive(&auditor);
        let mut head = Head::GENESIS;
        let mut out = String::new();
        head.write(&key, "{\"a\":1}", &mut out).unwrap();
        let line = out.trim_end();
        let record = parse_record(line).unwrap();
        assert_eq!(record.seq, 0);
        assert_eq!(record.prev, GENESIS_PREV);
        assert_eq!(record.receipt, "{\"a\":1}");
        assert!(record.mac_verifies(&key));
        assert_eq!(head.next_seq, 1);
        assert_eq!(head.prev, record.mac);
        let other = ChainKey::derive(&Auditor::new(&[4; 32]).unwrap());
        assert!(!record.mac_verifies(&other));
        // The chain key is not the audit key.
        assert_ne!(
            key.mac(0, &GENESIS_PREV, b"x"),
            auditor.keyed_mac().tag_parts(&[
                &0u64.to_be_bytes(),
                &GENESIS_PREV,
                &1u64.to_be_bytes(),
                b"x"
            ])
        );
        for bad in [
            line.replacen("{\"seq\":0", "{\"seq\":00", 1),
            line.replacen("{\"seq\":0", "{\"seq\":-0", 1),
            line.replacen("\"prev\":\"00", "\"prev\":\"0A", 1),
            line.replacen("\"prev\"", "\"prev\" ", 1),
            line.replacen("{\"a\":1}", "[1]", 1),
            format!("{line} "),
            line[..line.len() - 1].to_owned(),
            "{\"seq\":18446744073709551616".to_owned(),
        ] {
            assert!(parse_record(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn torn_means_a_cut_json_prefix() {
        assert!(looks_torn(b"{\"seq\":1,\"prev\":\"ab"));
        assert!(looks_torn(b"{\"version\":1,"));
        assert!(looks_torn("{\"a\":\"é".as_bytes().split_last().unwrap().1));
        assert!(!looks_torn(b"{\"a\":1}"));
        assert!(!looks_torn(b"garbage"));
        assert!(!looks_torn(b"{\"a\":1}}"));
        assert!(!looks_torn(b"{\"a\":\xff"));
    }

    #[test]
    fn checkpoints_print_and_parse() {
        let checkpoint = Checkpoint {
            seq: 41,
            mac: [0xab; 32],
        };
        let text = checkpoint.to_string();
        assert_eq!(text, format!("41:{}", "ab".repeat(32)));
        assert_eq!(text.parse::<Checkpoint>(), Ok(checkpoint));
        for bad in ["41", "x:ab", "01:ab", &format!("41:{}", "ab".repeat(31))] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rotated_names_sort_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("a.log");
        for n in [10, 2, 1_000_000] {
            std::fs::write(rotated_name(&active, n), "").unwrap();
        }
        std::fs::write(dir.path().join("a.log.12"), "").unwrap();
        std::fs::write(dir.path().join("a.log.x00001"), "").unwrap();
        assert_eq!(rotated_name(&active, 2), dir.path().join("a.log.000002"));
        let numbers: Vec<u64> = rotated_files(&active)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(numbers, [2, 10, 1_000_000]);
        assert!(audit_log_files(&active).unwrap().len() == 3);
        std::fs::write(&active, "").unwrap();
        assert_eq!(audit_log_files(&active).unwrap().last(), Some(&active));
    }
}
