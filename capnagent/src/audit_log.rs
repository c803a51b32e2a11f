//! [`AuditLog`]: an append-only file of receipts, one compact JSON object
//! per line, with its [`Durability`] policy, and [`AuditLogIter`], which
//! reads the receipts back and reports each bad line as an
//! [`AuditLogError`] without stopping.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

    /// How appended records are made durable.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// [`append`](Self::append), unless another append holds the file:
    /// then `None`, at once, and nothing is written. For callers that must
    /// not wait behind another writer (a request path that hands its
    /// record to a writer thread when the file is busy).
    pub fn try_append(&self, receipt: &Receipt) -> Option<io::Result<()>> {
        let mut line = String::new();
        receipt.write_json(&mut line);
        line.push('\n');
        let mut file = match self.file.try_lock() {
            Ok(file) => file,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Some(Err(io::Error::other("audit log mutex poisoned")));
            }
        };
        Some(self.write_locked(&mut file, line.as_bytes()))
    }

    /// Writes `bytes` (whole lines) to the locked file, durably as
    /// [`Durability`] says.
    fn write_locked(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)?;
        if self.durability == Durability::Sync {
            file.sync_data()?;
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
        self.write_locked(&mut file, buffer.as_bytes())?;
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
