//! [`AuditLog`]: an append-only file of receipts, one compact JSON object
//! per line, plain or hash-chained (the record format is in
//! `audit_chain.rs` and `docs/audit-log.md`), optionally rotated by size,
//! with its [`Durability`] policy; [`AuditLogBuilder`] opens one; and
//! [`AuditLogIter`], which reads the receipts back (from plain and
//! chained lines alike) and reports each bad line as an [`AuditLogError`]
//! without stopping.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::audit_chain::{
    ChainKey, Head, LineReader, RawLine, RecordError, audit_log_files, is_chained, looks_torn,
    parent_dir, parse_record, rotated_files, rotated_name,
};
use crate::auditor::Auditor;
use crate::crypto;
use crate::error::ReceiptError;
use crate::receipt::Receipt;

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

/// An append-only file of receipts, one compact JSON object per line:
/// plain receipts ([`AuditLog::open`]), or hash-chained records that wrap
/// them ([`AuditLogBuilder::chained`], which gives the record format),
/// optionally rotated by size ([`AuditLogBuilder::rotate_at`]).
///
/// Appends are serialized by a mutex and each batch is written with a
/// single `write_all` on a file opened in append mode, so concurrent
/// appenders never interleave, and a chained log's `seq` and `prev` are
/// computed under that mutex: concurrent appenders make one chain. See
/// [`Durability`] for when a record is safe. A crash mid-write can leave a
/// torn last line; opening the log starts new records on a fresh line,
/// and reading reports the torn line as an error item. One process at a
/// time may write a log.
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
    active: Mutex<Active>,
    durability: Durability,
    /// For a chained log: the auditor whose key the chain is under.
    chain: Option<Chain>,
    rotate_at: Option<u64>,
}

/// A chained log's keys.
#[derive(Debug)]
struct Chain {
    auditor: Auditor,
    key: ChainKey,
    /// Earlier audit keys the last record may be under (after a rotation
    /// of the audit key); new records are always under `key`.
    previous: Vec<(Auditor, ChainKey)>,
}

impl Chain {
    /// True when `receipt` and `mac` verify under this chain's key or an
    /// earlier one.
    fn vouches_for(&self, record: &crate::audit_chain::Record<'_>, receipt: &Receipt) -> bool {
        std::iter::once((&self.auditor, &self.key))
            .chain(self.previous.iter().map(|(a, k)| (a, k)))
            .any(|(auditor, key)| {
                let mac = key.mac(record.seq, &record.prev, record.receipt.as_bytes());
                auditor.verify_receipt(receipt).is_ok() && crypto::tags_equal(&mac, &record.mac)
            })
    }
}

/// The file being written, under the mutex.
#[derive(Debug)]
struct Active {
    file: File,
    /// For a chained log, the next record's `seq` and `prev`.
    head: Head,
    /// A write or rotation failed: reopen the file and (chained) read the
    /// head back from it before the next append.
    stale: bool,
}

/// Builds an [`AuditLog`]: plain or chained, its [`Durability`], and size
/// based rotation.
///
/// ```
/// use capnagent::{AuditLog, Auditor, Durability};
///
/// let dir = tempfile::tempdir()?;
/// let auditor = Auditor::new(&[9; 32])?;
/// let log = AuditLog::builder(dir.path().join("audit.ndjson"))
///     .chained(&auditor)
///     .durability(Durability::Sync)
///     .rotate_at(64 * 1024 * 1024)
///     .open()?;
/// assert!(log.is_chained());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "call .open()"]
pub struct AuditLogBuilder {
    path: PathBuf,
    durability: Durability,
    auditor: Option<Auditor>,
    previous: Vec<Auditor>,
    rotate_at: Option<u64>,
}

impl AuditLogBuilder {
    /// Writes hash-chained records under a key derived from `auditor`'s
    /// audit key. Opening continues the chain from the last record of the
    /// file (or of its newest rotated sibling when the file holds none), and
    /// fails if that record is not a chained record that verifies under
    /// this key.
    ///
    /// Each line is, in exactly this layout,
    /// `{"seq":N,"prev":"<64 hex>","receipt":<receipt JSON>,"mac":"<64 hex>"}`:
    /// `seq` from 0, `prev` the previous record's `mac` (32 zero bytes for
    /// record 0), the receipt as [`Receipt::to_json`] writes it, verbatim,
    /// and `mac = HMAC-SHA256(chain_key, u64_be(seq) || prev ||
    /// u64_be(receipt length) || receipt bytes)`, where the chain key is
    /// `HMAC-SHA256(audit_key, "capnagent audit chain v1")`
    /// ([`CHAIN_KEY_LABEL`](crate::CHAIN_KEY_LABEL)).
    /// `docs/audit-log.md` has the details; [`ChainVerifier`](crate::ChainVerifier)
    /// checks a log.
    pub fn chained(mut self, auditor: &Auditor) -> Self {
        self.auditor = Some(auditor.clone());
        self
    }

    /// Earlier audit keys, after a rotation of the audit key: opening also
    /// continues a chain whose last record verifies under one of these
    /// (new records are always made under the key given to
    /// [`chained`](Self::chained)). Verify such a log with every key, for
    /// example `ChainVerifier::new(&Auditor::all_from_keys(&ring)?)`.
    pub fn previous_keys(mut self, auditors: &[Auditor]) -> Self {
        self.previous = auditors.to_vec();
        self
    }

    /// How appended records are made durable (default [`Durability::Flush`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Rotates the file when an append would take it over `bytes`: the file
    /// is renamed `<path>.NNNNNN` (the next number, six digits or more) and
    /// a new file started, whose first chained record continues the chain.
    /// A file is larger only when it holds a single append bigger than
    /// `bytes`. No rotation by default.
    pub fn rotate_at(mut self, bytes: u64) -> Self {
        self.rotate_at = Some(bytes);
        self
    }

    /// Opens (creating if needed) the log.
    pub fn open(self) -> io::Result<AuditLog> {
        let previous = self.previous;
        let chain = self.auditor.map(|auditor| Chain {
            key: ChainKey::derive(&auditor),
            auditor,
            previous: previous
                .into_iter()
                .map(|auditor| {
                    let key = ChainKey::derive(&auditor);
                    (auditor, key)
                })
                .collect(),
        });
        let mut log = AuditLog {
            active: Mutex::new(Active {
                file: open_active(&self.path)?,
                head: Head::GENESIS,
                stale: false,
            }),
            path: self.path,
            durability: self.durability,
            chain,
            rotate_at: self.rotate_at,
        };
        let active = log
            .active
            .get_mut()
            .map_err(|_| io::Error::other("audit log mutex poisoned"))?;
        if let Some(chain) = &log.chain {
            active.head = read_head(&log.path, &mut active.file, chain)?;
        }
        Ok(log)
    }
}

/// Opens (creating if needed) the active file for appending, on a fresh
/// line: if a crash left a torn last line, the next record stays intact
/// and the torn one stays visible.
fn open_active(path: &Path) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// Most lines read back from the end of a file when looking for its last
/// record (blank lines and torn fragments are skipped).
const MAX_TAIL_LINES: usize = 64;

/// The chain's head: after the last record of the active file, or of the
/// newest rotated file holding one, or the genesis.
fn read_head(path: &Path, file: &mut File, chain: &Chain) -> io::Result<Head> {
    if let Some(head) = last_record_head(path, file, chain)? {
        return Ok(head);
    }
    for (_, rotated) in chain_files_newest_first(path)? {
        let mut file = File::open(&rotated)?;
        if let Some(head) = last_record_head(&rotated, &mut file, chain)? {
            return Ok(head);
        }
    }
    Ok(Head::GENESIS)
}

/// The rotated siblings of `path`, newest first.
fn chain_files_newest_first(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = rotated_files(path)?;
    files.reverse();
    Ok(files)
}

/// The head after the last record of `file`, `None` if it holds none.
/// Refuses a last record that is a plain receipt, malformed, or does not
/// verify under the chain's key.
fn last_record_head(path: &Path, file: &mut File, chain: &Chain) -> io::Result<Option<Head>> {
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "audit log {}: {why}; refusing to append a chained record",
                path.display()
            ),
        )
    };
    let mut end = file.metadata()?.len();
    for _ in 0..MAX_TAIL_LINES {
        let Some((start, bytes)) = line_before(file, end)? else {
            return Ok(None);
        };
        end = start;
        if bytes.trim_ascii().is_empty() || looks_torn(&bytes) {
            continue;
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| refuse("last line is not UTF-8"))?;
        if !is_chained(text) {
            return Err(refuse(
                "the last record is a plain receipt, not a chained record",
            ));
        }
        let record = parse_record(text).map_err(|e| refuse(&format!("last line: {e}")))?;
        let receipt = Receipt::from_json(record.receipt)
            .map_err(|e| refuse(&format!("last record's receipt: {e}")))?;
        if !chain.vouches_for(&record, &receipt) {
            return Err(refuse(
                "the last record does not verify under the audit key",
            ));
        }
        return Head::after(&record).map(Some);
    }
    Err(refuse(&format!(
        "no record in the last {MAX_TAIL_LINES} lines"
    )))
}

/// The line that ends at `end` (a newline at `end - 1` is not part of it):
/// its start and bytes; `None` when `end` is 0. Reads backwards in growing
/// windows, at most [`AuditLogIter::DEFAULT_MAX_LINE`] bytes of line.
fn line_before(file: &mut File, end: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    if end == 0 {
        return Ok(None);
    }
    let max_line = AuditLogIter::DEFAULT_MAX_LINE as u64;
    let mut window: u64 = 4096;
    loop {
        let low = end.saturating_sub(window);
        let len = usize::try_from(end - low).map_err(io::Error::other)?;
        let mut buf = vec![0; len];
        file.seek(SeekFrom::Start(low))?;
        file.read_exact(&mut buf)?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if let Some(i) = memchr::memrchr(b'\n', &buf) {
            let line = buf.split_off(i + 1);
            return Ok(Some((low + i as u64 + 1, line)));
        }
        if low == 0 {
            return Ok(Some((0, buf)));
        }
        if buf.len() as u64 > max_line {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("audit log: a line near the end is longer than {max_line} bytes"),
            ));
        }
        window = window.saturating_mul(2);
    }
}

impl AuditLog {
    /// Opens (creating if needed) a plain log with [`Durability::Flush`].
    pub fn open(path: impl AsRef<Path>) -> io::Result<AuditLog> {
        AuditLog::open_with(path, Durability::default())
    }

    /// Opens (creating if needed) a plain log with the given durability.
    pub fn open_with(path: impl AsRef<Path>, durability: Durability) -> io::Result<AuditLog> {
        AuditLog::builder(path).durability(durability).open()
    }

    /// A builder for a chained and/or rotated log at `path`.
    pub fn builder(path: impl AsRef<Path>) -> AuditLogBuilder {
        AuditLogBuilder {
            path: path.as_ref().to_path_buf(),
            durability: Durability::default(),
            auditor: None,
            previous: Vec::new(),
            rotate_at: None,
        }
    }

    /// The (active) file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How appended records are made durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// True when records are hash-chained.
    pub fn is_chained(&self) -> bool {
        self.chain.is_some()
    }

    /// The log's files, oldest first: rotated files, then the active file
    /// (see [`audit_log_files`](crate::audit_log_files)).
    pub fn files(&self) -> io::Result<Vec<PathBuf>> {
        audit_log_files(&self.path)
    }

    /// [`append`](Self::append), unless another append holds the file:
    /// then `None`, at once, and nothing is written. For callers that must
    /// not wait behind another writer (a request path that hands its
    /// record to a writer thread when the file is busy).
    pub fn try_append(&self, receipt: &Receipt) -> Option<io::Result<()>> {
        let plain = self.plain_lines([receipt]);
        let mut active = match self.active.try_lock() {
            Ok(active) => active,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Some(Err(io::Error::other("audit log mutex poisoned")));
            }
        };
        Some(self.write_locked(&mut active, plain, &[receipt]))
    }

    /// The plain lines of `receipts`, for a plain log (built before taking
    /// the lock); `None` for a chained log, whose lines need the head.
    fn plain_lines<'a>(&self, receipts: impl IntoIterator<Item = &'a Receipt>) -> Option<String> {
        if self.chain.is_some() {
            return None;
        }
        let mut buffer = String::new();
        for receipt in receipts {
            receipt.write_json(&mut buffer);
            buffer.push('\n');
        }
        Some(buffer)
    }

    /// Writes the receipts (as `plain` lines, or chained records built
    /// here) to the locked file, rotating first if needed, durably as
    /// [`Durability`] says.
    fn write_locked(
        &self,
        active: &mut Active,
        plain: Option<String>,
        receipts: &[&Receipt],
    ) -> io::Result<()> {
        if active.stale {
            self.recover(active)?;
        }
        let (bytes, head) = match (&self.chain, plain) {
            (_, Some(plain)) => (plain, active.head),
            (Some(chain), None) => {
                let mut head = active.head;
                let mut buffer = String::new();
                for receipt in receipts {
                    head.write(&chain.key, &receipt.to_json(), &mut buffer)?;
                }
                (buffer, head)
            }
            (None, None) => return Err(io::Error::other("audit log: no lines to write")),
        };
        if let Err(e) = self.rotate_if_full(active, bytes.len()) {
            active.stale = true;
            return Err(e);
        }
        let written = active.file.write_all(bytes.as_bytes()).and_then(|()| {
            if self.durability == Durability::Sync {
                active.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                active.head = head;
                Ok(())
            }
            Err(e) => {
                // Some records may be on disk: a chained log reads its head
                // back before the next append.
                if self.chain.is_some() {
                    active.stale = true;
                }
                Err(e)
            }
        }
    }

    /// Reopens the active file on a fresh line and reads the chain's head
    /// back from the files, after a failed write or rotation.
    fn recover(&self, active: &mut Active) -> io::Result<()> {
        let mut file = open_active(&self.path)?;
        if let Some(chain) = &self.chain {
            active.head = read_head(&self.path, &mut file, chain)?;
        }
        active.file = file;
        active.stale = false;
        Ok(())
    }

    /// Rotates when writing `incoming` more bytes would take the non-empty
    /// active file over the limit.
    fn rotate_if_full(&self, active: &mut Active, incoming: usize) -> io::Result<()> {
        let Some(limit) = self.rotate_at else {
            return Ok(());
        };
        let len = active.file.metadata()?.len();
        let incoming = u64::try_from(incoming).unwrap_or(u64::MAX);
        if len == 0 || len.saturating_add(incoming) <= limit {
            return Ok(());
        }
        self.rotate(active)
    }

    /// Renames the active file to the next numbered sibling and starts a
    /// new one. The head is unchanged: the next record continues the chain.
    /// A crash after the rename loses nothing: reopening finds no record in
    /// the (missing, so new) active file and reads the head from the
    /// rotated one.
    fn rotate(&self, active: &mut Active) -> io::Result<()> {
        let next = rotated_files(&self.path)?
            .last()
            .map_or(Some(1), |(n, _)| n.checked_add(1))
            .ok_or_else(|| io::Error::other("audit log: rotation numbers exhausted"))?;
        let target = rotated_name(&self.path, next);
        if target.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("audit log rotation: {} exists", target.display()),
            ));
        }
        if self.durability == Durability::Sync {
            active.file.sync_data()?;
        }
        std::fs::rename(&self.path, &target)?;
        // Until the new file is open, appends would go to the renamed one.
        active.stale = true;
        active.file = open_active(&self.path)?;
        active.stale = false;
        if self.durability == Durability::Sync {
            File::open(parent_dir(&self.path))?.sync_all()?;
        }
        Ok(())
    }

    /// Appends one receipt as one line. Durable as [`Durability`] says
    /// when this returns `Ok`.
    pub fn append(&self, receipt: &Receipt) -> io::Result<()> {
        self.append_all([receipt]).map(drop)
    }

    /// Appends several receipts with one `write` (one line each). Durable
    /// as [`Durability`] says when this returns `Ok`; on error, none or
    /// some of them may have been written (lines stay whole unless the
    /// process or the disk fails mid-write; a chained log then reads its
    /// head back from the file before the next append).
    pub fn append_all<'a>(
        &self,
        receipts: impl IntoIterator<Item = &'a Receipt>,
    ) -> io::Result<usize> {
        let receipts: Vec<&Receipt> = receipts.into_iter().collect();
        if receipts.is_empty() {
            return Ok(0);
        }
        let plain = self.plain_lines(receipts.iter().copied());
        let mut active = self
            .active
            .lock()
            .map_err(|_| io::Error::other("audit log mutex poisoned"))?;
        self.write_locked(&mut active, plain, &receipts)?;
        Ok(receipts.len())
    }

    /// Forces everything appended so far to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        let active = self
            .active
            .lock()
            .map_err(|_| io::Error::other("audit log mutex poisoned"))?;
        active.file.sync_data()
    }

    /// Reads the active file from the start through a fresh handle (plain
    /// and chained lines alike; rotated files through
    /// [`AuditLogIter::open`] on each of [`files`](Self::files)).
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
    /// The line starts like a chained record (`{"seq":`) but is not one in
    /// the exact layout.
    #[error("audit log line {line}: {source}")]
    Record {
        /// 1-based line number.
        line: usize,
        /// Why.
        source: RecordError,
    },
}

/// Iterates over an audit log file's receipts, plain or wrapped in chained
/// records (whose chain it does not check: see
/// [`ChainVerifier`](crate::ChainVerifier)); see [`AuditLog::iter`].
///
/// Blank lines are skipped. A bad line yields an error item and iteration
/// goes on with the next line.
pub struct AuditLogIter {
    lines: LineReader<BufReader<File>>,
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
            lines: LineReader::new(BufReader::new(File::open(path)?), Self::DEFAULT_MAX_LINE),
            line: 0,
            max_line: Self::DEFAULT_MAX_LINE,
            done: false,
        })
    }

    /// Sets the longest line accepted; longer lines yield
    /// [`AuditLogError::TooLong`] and are skipped.
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self.lines = LineReader::new(self.lines.into_inner(), bytes);
        self
    }
}

/// One line's receipt: `None` for a blank line.
fn receipt_of_line(
    line: usize,
    buf: &[u8],
    complete: bool,
) -> Option<Result<Receipt, AuditLogError>> {
    let torn = || AuditLogError::Torn {
        line,
        len: buf.len(),
    };
    let text = match std::str::from_utf8(buf) {
        Ok(text) => text.trim_end_matches('\r'),
        Err(_) if !complete => return Some(Err(torn())),
        Err(e) => {
            return Some(Err(AuditLogError::Invalid {
                line,
                source: ReceiptError::Json(e.to_string()),
            }));
        }
    };
    if text.trim().is_empty() {
        return None;
    }
    if is_chained(text) {
        let parsed = parse_record(text)
            .and_then(|record| Receipt::from_json(record.receipt).map_err(RecordError::Receipt));
        return Some(match parsed {
            Ok(receipt) => Ok(receipt),
            Err(_) if !complete => Err(torn()),
            Err(source) => Err(AuditLogError::Record { line, source }),
        });
    }
    Some(match Receipt::from_json(text) {
        Ok(receipt) => Ok(receipt),
        Err(_) if !complete => Err(torn()),
        Err(source) => Err(AuditLogError::Invalid { line, source }),
    })
}

impl Iterator for AuditLogIter {
    type Item = Result<Receipt, AuditLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.line += 1;
            let line = self.line;
            match self.lines.next_line() {
                Err(source) => {
                    self.done = true;
                    return Some(Err(AuditLogError::Io { line, source }));
                }
                Ok(None) => self.done = true,
                Ok(Some(RawLine::TooLong)) => {
                    return Some(Err(AuditLogError::TooLong {
                        line,
                        max: self.max_line,
                    }));
                }
                Ok(Some(RawLine::Complete(buf))) => {
                    if let Some(item) = receipt_of_line(line, &buf, true) {
                        return Some(item);
                    }
                }
                Ok(Some(RawLine::Partial(buf))) => {
                    if let Some(item) = receipt_of_line(line, &buf, false) {
                        return Some(item);
                    }
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
