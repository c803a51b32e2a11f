//! Where receipts go: the [`ReceiptSink`] trait, called exactly once for
//! every request the layer sees (allowed, denied, missing or forged token),
//! and its built-ins [`AuditLogSink`] (the core [`AuditLog`] file, written
//! ahead of every allowed call by default) and [`TracingSink`] (`tracing`
//! events).
//!
//! A sink answers each receipt with a [`Record`], a future that resolves
//! to `Ok(())` once the receipt is taken, or to a [`SinkError`] when it
//! cannot be. The layers (HTTP, MCP, gRPC) call the inner service for an
//! allowed request only after its `Record` resolved to `Ok`; on an error
//! they refuse the call instead (HTTP 503, an MCP JSON-RPC error with HTTP
//! 503, gRPC `UNAVAILABLE`), with the error's reason. A denial is sent
//! whatever its `Record` resolves to: it is a refusal already.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use capnagent::{AuditLog, Durability, Receipt};

use crate::metrics;
use tokio::sync::{mpsc, oneshot};

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'static>>;

/// Receives the signed receipt of every decision the layer makes.
///
/// [`record`](Self::record) is called once per request, before the inner
/// service is called (for an allowed request) or the denial is sent; a
/// request dropped while its body was being read (server shutdown, an
/// outer timeout) is recorded as denied when it is dropped. It returns a
/// [`Record`]: [`Record::done`] when the receipt was taken without waiting,
/// [`Record::failed`] when it cannot be taken, or [`Record::wait`] with a
/// future the request awaits first (a write-ahead log, backpressure).
///
/// **Fail closed.** An allowed request whose `Record` resolves to a
/// [`SinkError`] never reaches the inner service: the layer answers with
/// "service unavailable" and the error's reason. Closures `Fn(&Receipt)`
/// are sinks too (they always take the receipt); a pair `(a, b)` gives
/// every receipt to both and fails if either fails.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a receipt sink",
    note = "use `AuditLogSink`, `TracingSink`, a pair `(a, b)` of sinks, or a closure `|receipt: &capnagent::Receipt| {{ ... }}`"
)]
pub trait ReceiptSink: Send + Sync + 'static {
    /// Takes one receipt.
    fn record(&self, receipt: &Arc<Receipt>) -> Record;
}

impl<F> ReceiptSink for F
where
    F: Fn(&Receipt) + Send + Sync + 'static,
{
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        self(receipt);
        Record::done()
    }
}

/// Both sinks get every receipt; the record fails if either fails (both
/// are always driven to the end).
impl<A, B> ReceiptSink for (A, B)
where
    A: ReceiptSink,
    B: ReceiptSink,
{
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        let first = self.0.record(receipt);
        let second = self.1.record(receipt);
        match (first.into_state(), second.into_state()) {
            (State::Done, State::Done) => Record::done(),
            (State::Failed(e), State::Done) | (State::Done, State::Failed(e)) => Record::failed(e),
            (State::Failed(e), State::Failed(_)) => Record::failed(e),
            (State::Wait(a), State::Done) | (State::Done, State::Wait(a)) => Record(State::Wait(a)),
            (State::Wait(a), State::Failed(e)) | (State::Failed(e), State::Wait(a)) => {
                Record::wait(async move {
                    // The other sink still gets its chance to record.
                    let _ = a.await;
                    Err(e)
                })
            }
            (State::Wait(a), State::Wait(b)) => Record::wait(async move {
                let first = a.await;
                let second = b.await;
                first.and(second)
            }),
        }
    }
}

/// Why a sink could not take a receipt: the call it belongs to is refused
/// (when it was allowed), and the reason is what the client is told.
///
/// The reason should say what failed without secrets (no keys, no tokens;
/// a receipt holds neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    reason: Arc<str>,
}

impl SinkError {
    /// An error with this reason.
    pub fn new(reason: impl Into<String>) -> SinkError {
        SinkError {
            reason: Arc::from(reason.into()),
        }
    }

    /// The reason, as the refused client sees it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for SinkError {}

/// What a [`ReceiptSink`] returns: a future that resolves to `Ok(())` once
/// the receipt is taken, or to the [`SinkError`] that keeps it from being
/// taken.
///
/// A `Record` dropped before it completes (the client went away while its
/// request waited) is not lost: its future is moved onto the current tokio
/// runtime, or a helper thread when there is none, and runs to completion
/// there.
#[must_use = "a Record must be awaited or dropped (dropping detaches it)"]
pub struct Record(State);

enum State {
    Done,
    Failed(SinkError),
    Wait(BoxFuture),
}

impl Record {
    /// The receipt was taken; nothing to wait for.
    pub fn done() -> Record {
        Record(State::Done)
    }

    /// The receipt cannot be taken: an allowed call is refused with
    /// `error`'s reason.
    pub fn failed(error: SinkError) -> Record {
        Record(State::Failed(error))
    }

    /// The request waits for `future` before it goes on; an allowed call
    /// goes on only if it resolves to `Ok(())`.
    pub fn wait(future: impl Future<Output = Result<(), SinkError>> + Send + 'static) -> Record {
        Record(State::Wait(Box::pin(future)))
    }

    /// True when the receipt was taken and there is nothing to wait for.
    pub fn is_done(&self) -> bool {
        matches!(self.0, State::Done)
    }

    /// The outcome if it is known without waiting: `Some(Ok(()))` when
    /// done, `Some(Err(..))` when failed, `None` when it must be awaited.
    /// Does not poll the future.
    pub fn peek(&self) -> Option<Result<(), SinkError>> {
        match &self.0 {
            State::Done => Some(Ok(())),
            State::Failed(e) => Some(Err(e.clone())),
            State::Wait(_) => None,
        }
    }

    fn into_state(mut self) -> State {
        // Leaves `Done` behind, so that dropping `self` detaches nothing.
        std::mem::replace(&mut self.0, State::Done)
    }
}

impl Future for Record {
    type Output = Result<(), SinkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match &mut self.0 {
            State::Done => Ok(()),
            State::Failed(e) => Err(e.clone()),
            State::Wait(future) => match future.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            },
        };
        // Polled again after completion, it repeats the outcome.
        self.0 = match &result {
            Ok(()) => State::Done,
            Err(e) => State::Failed(e.clone()),
        };
        Poll::Ready(result)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let State::Wait(future) = std::mem::replace(&mut self.0, State::Done) else {
            return;
        };
        // The sink reports its own failures; the outcome has no one to go to.
        let future = async move {
            let _ = future.await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(future);
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("capnagent-record".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime.block_on(future),
                            Err(e) => tracing::error!(
                                target: "capnagent::sink",
                                error = %e,
                                "could not finish recording a receipt: no runtime"
                            ),
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(
                        target: "capnagent::sink",
                        error = %e,
                        "could not finish recording a receipt: no thread"
                    );
                }
            }
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            State::Done => "done",
            State::Failed(_) => "failed",
            State::Wait(_) => "waiting",
        };
        f.debug_struct("Record").field("state", &state).finish()
    }
}

// ---------------------------------------------------------------------------
// tracing

/// Emits one `tracing` event per receipt, target `capnagent::receipt`:
/// `INFO` for an allowed call, `WARN` for a denial, with the capability
/// identifier, caller, tool, args hash, reason and the full receipt JSON.
///
/// The default sink. Tokens are never logged (a receipt does not contain
/// one). It never fails: whether the event reaches a file is the
/// subscriber's business, so use [`AuditLogSink`] when a call must not run
/// without its record.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl ReceiptSink for TracingSink {
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        emit(receipt);
        Record::done()
    }
}

fn emit(receipt: &Receipt) {
    let summary = receipt.context_summary();
    match receipt.outcome().reason() {
        None => tracing::info!(
            target: "capnagent::receipt",
            capability = receipt.capability_identifier(),
            caller = summary.caller(),
            tool = summary.tool(),
            args_hash = summary.args_hash(),
            receipt = %receipt.to_json(),
            "capability allowed"
        ),
        Some(reason) => tracing::warn!(
            target: "capnagent::receipt",
            capability = receipt.capability_identifier(),
            caller = summary.caller(),
            tool = summary.tool(),
            args_hash = summary.args_hash(),
            reason,
            receipt = %receipt.to_json(),
            "capability denied"
        ),
    }
}

// ---------------------------------------------------------------------------
// audit log

/// Feeds the core [`AuditLog`], with a dedicated writer thread, and by
/// default writes each allowed call's receipt **before** the call runs.
///
/// ## Write-ahead, fail closed (the default)
///
/// An allowed call reaches its handler only after its receipt is in the
/// file. With the default [`Durability::Flush`](capnagent::Durability::Flush),
/// a request whose receipt finds the file free writes it itself (one
/// `write` to the operating system, no hand-off to another thread and
/// back); when the file is busy, or with
/// [`Durability::Sync`](capnagent::Durability::Sync), it hands the receipt
/// to the writer thread and waits for the writer's answer. The writer takes
/// everything that queued up while it was busy and writes it with one
/// `write` (group commit), so under load many calls share one write; with
/// `Durability::Sync` that is one `fsync` per group, and a receipt then
/// survives power loss before its call runs.
/// With the default [`Durability::Flush`](capnagent::Durability::Flush) a
/// receipt is handed to the operating system before its call runs: it
/// survives a crash of this process, not of the machine.
///
/// When the receipt cannot be written (the write fails: a full disk, an
/// I/O error; the writer thread is gone: it panicked, or
/// [`close`](Self::close) stopped it), the call is **refused**: HTTP 503
/// (on an MCP endpoint a JSON-RPC error, HTTP 503), gRPC `UNAVAILABLE`,
/// with the reason, and counted in [`AuditLogStats::refused`]. Each write
/// is tried afresh, so service resumes as soon as writes succeed again. A
/// write that fails part-way may leave some of its group's lines in the
/// file although their calls were refused: the log may hold a receipt for
/// a call that did not run, never a call without its receipt.
///
/// **Denials** are written too, but never wait for the write: a denial is
/// a refusal already, and making it wait would only let a failing disk
/// slow down the answers to attackers. A denial waits only for queue space
/// (below); its response does not depend on the write's outcome. A failed
/// denial write is reported at `ERROR` with the receipt JSON and counted
/// in [`AuditLogStats::failed`], as every failed write is.
///
/// A write that never returns (a hung network file system) holds the calls
/// waiting on it; bound them with a timeout layer outside this one (for
/// example `tower::timeout`): a call dropped while it waits never runs. A
/// request writing its own receipt holds its runtime thread during the
/// write; every other request then finds the file busy and waits in the
/// queue, so a hung write holds at most one runtime thread. Keep the log
/// on a local disk.
///
/// ## Fail open
///
/// [`AuditLogSinkBuilder::fail_open`] keeps calls running when the log
/// cannot be written, for deployments that prefer availability to a
/// complete record: receipts are queued and the call goes on at once (no
/// write on the request path), and a receipt whose write fails survives
/// only as an `ERROR` event (target `capnagent::sink`) with its JSON. While
/// receipts keep coming, that writer polls the queue every 5 ms instead of
/// being woken for each one, so queuing a receipt costs a request no more
/// than a channel send.
///
/// ## Queue
///
/// Either way, receipts go through a bounded queue (default 4096). **When
/// the queue is full**, the request waits for space before it goes on
/// (backpressure): nothing is dropped to make room.
/// [`AuditLogStats::waited`] counts the requests that had to wait, so a
/// disk that cannot keep up shows up as a metric before it shows up as
/// latency.
///
/// Call [`flush`](Self::flush) before reading the file, or
/// [`close`](Self::close) before exiting: both return once every receipt
/// queued before them is written.
///
/// ```no_run
/// use capnagent::AuditLog;
/// use capnagent_tower::AuditLogSink;
///
/// # async fn demo() -> std::io::Result<()> {
/// // Write-ahead: no call runs unless its receipt is in the file.
/// let sink = AuditLogSink::new(AuditLog::open("audit.ndjson")?)?;
/// // Or keep serving when the log cannot be written:
/// let available = AuditLogSink::builder(AuditLog::open("audit-2.ndjson")?)
///     .fail_open()
///     .build()?;
/// // ... CapabilityLayer::new(verifier, auditor).sink(sink.clone()) ...
/// sink.close().await?;
/// # drop(available);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuditLogSink {
    log: Arc<AuditLog>,
    tx: mpsc::Sender<Msg>,
    stats: Arc<Counters>,
    capacity: usize,
    fail_open: bool,
}

/// The writer's answer to a write-ahead receipt.
type Ack = oneshot::Sender<Result<(), SinkError>>;

enum Msg {
    /// A receipt, with where to say whether it was written (write-ahead).
    Receipt(Arc<Receipt>, Option<Ack>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    failed: AtomicU64,
    waited: AtomicU64,
    refused: AtomicU64,
    /// Receipts handed to the writer thread and not yet written (or
    /// failed): a request writes its own receipt only when this is 0, so
    /// the file keeps the order in which requests were answered.
    unwritten: AtomicUsize,
}

impl Counters {
    /// `n` receipts could not be written.
    fn failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        metrics::audit_write_failed(n);
    }

    /// An allowed call was refused: its receipt was not written.
    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics::audit_refused();
    }
}

/// Counters of an [`AuditLogSink`], read with [`AuditLogSink::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AuditLogStats {
    /// Receipts written to the file.
    pub written: u64,
    /// Receipts that could not be written (each reported at `ERROR` with
    /// its JSON): failed writes, and receipts that found the writer gone.
    pub failed: u64,
    /// Requests that found the queue full and waited for space.
    pub waited: u64,
    /// Allowed calls refused because their receipt could not be written
    /// (write-ahead mode only; each is also counted in `failed`).
    pub refused: u64,
    /// Receipts queued and not yet written.
    pub queued: usize,
}

/// Configures an [`AuditLogSink`]; from [`AuditLogSink::builder`].
#[derive(Debug)]
#[must_use = "call `build` to start the writer"]
pub struct AuditLogSinkBuilder {
    log: Arc<AuditLog>,
    capacity: usize,
    fail_open: bool,
}

impl AuditLogSinkBuilder {
    /// The queue length, in receipts (at least 1; default
    /// [`AuditLogSink::DEFAULT_CAPACITY`]).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Calls go on without waiting for their receipt to be written, and
    /// keep running when the log cannot be written (receipts that fail
    /// survive only as `ERROR` events). See [`AuditLogSink`].
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// Calls run only once their receipt is written, and are refused when
    /// it cannot be (the default). See [`AuditLogSink`].
    pub fn write_ahead(mut self) -> Self {
        self.fail_open = false;
        self
    }

    /// Starts the writer thread.
    pub fn build(self) -> io::Result<AuditLogSink> {
        let AuditLogSinkBuilder {
            log,
            capacity,
            fail_open,
        } = self;
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(Counters::default());
        let writer_stats = Arc::clone(&stats);
        let writer_log = Arc::clone(&log);
        std::thread::Builder::new()
            .name("capnagent-audit".into())
            .spawn(move || write_loop(&writer_log, rx, &writer_stats, fail_open))?;
        Ok(AuditLogSink {
            log,
            tx,
            stats,
            capacity,
            fail_open,
        })
    }
}

impl AuditLogSink {
    /// Default queue length.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// Starts a write-ahead writer thread for `log`, with the default
    /// queue length.
    pub fn new(log: impl Into<Arc<AuditLog>>) -> io::Result<AuditLogSink> {
        AuditLogSink::builder(log).build()
    }

    /// Starts a write-ahead writer thread for `log`, with a queue of
    /// `capacity` receipts (at least 1).
    pub fn with_capacity(
        log: impl Into<Arc<AuditLog>>,
        capacity: usize,
    ) -> io::Result<AuditLogSink> {
        AuditLogSink::builder(log).capacity(capacity).build()
    }

    /// Configures a sink for `log`: write-ahead unless told
    /// [`fail_open`](AuditLogSinkBuilder::fail_open).
    pub fn builder(log: impl Into<Arc<AuditLog>>) -> AuditLogSinkBuilder {
        AuditLogSinkBuilder {
            log: log.into(),
            capacity: Self::DEFAULT_CAPACITY,
            fail_open: false,
        }
    }

    /// True when calls do not wait for their receipts (see
    /// [`AuditLogSinkBuilder::fail_open`]).
    pub fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// Waits until every receipt queued before this call is written (not
    /// necessarily synced: see the log's [`Durability`](capnagent::Durability)).
    pub async fn flush(&self) -> io::Result<()> {
        self.ask_writer(Msg::Flush).await
    }

    /// Writes every receipt queued before this call, then stops the writer
    /// thread (for every clone of this sink). Receipts that come later are
    /// not written: in write-ahead mode their calls are refused. Call it
    /// when the server has stopped taking requests.
    pub async fn close(&self) -> io::Result<()> {
        self.ask_writer(Msg::Close).await
    }

    /// Queues `request` (a flush or a close) and waits for the writer's
    /// answer.
    async fn ask_writer(&self, request: fn(oneshot::Sender<()>) -> Msg) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(request(done))
            .await
            .map_err(|_| io::Error::other(WRITER_GONE))?;
        wait.await.map_err(|_| io::Error::other(WRITER_GONE))
    }

    /// The counters so far.
    pub fn stats(&self) -> AuditLogStats {
        AuditLogStats {
            written: self.stats.written.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            waited: self.stats.waited.load(Ordering::Relaxed),
            refused: self.stats.refused.load(Ordering::Relaxed),
            queued: self.capacity.saturating_sub(self.tx.capacity()),
        }
    }
}

/// What a refused call and `flush` are told when the writer thread is gone.
const WRITER_GONE: &str = "audit log unavailable: the audit writer thread has stopped";

impl ReceiptSink for AuditLogSink {
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        if self.fail_open || !receipt.is_allowed() {
            return self.enqueue(receipt);
        }
        if let Some(record) = self.write_now(receipt) {
            return record;
        }
        let (ack, answer) = oneshot::channel();
        let stats = Arc::clone(&self.stats);
        let msg = Msg::Receipt(Arc::clone(receipt), Some(ack));
        self.stats.unwritten.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(msg) {
            Ok(()) => Record::wait(async move { written(answer.await, &stats) }),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                let tx = self.tx.clone();
                Record::wait(async move {
                    if let Err(mpsc::error::SendError(msg)) = tx.send(msg).await {
                        return Err(refuse_gone(msg, &stats));
                    }
                    written(answer.await, &stats)
                })
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                Record::failed(refuse_gone(msg, &self.stats))
            }
        }
    }
}

impl AuditLogSink {
    /// Writes a write-ahead receipt on the calling thread when the file is
    /// free and the log does not `fsync` (one `write` to the page cache):
    /// no hand-off to the writer thread and back. `None` when the writer
    /// (or another request) holds the file, when a receipt handed to the
    /// writer is not written yet (so the file keeps the order in which
    /// calls were answered), when the log syncs every record, or when the
    /// sink is closed: the receipt then goes through the queue. Only the one request holding the file can be held up by
    /// a write that never returns; every other request finds it busy.
    fn write_now(&self, receipt: &Receipt) -> Option<Record> {
        if self.log.durability() != Durability::Flush
            || self.tx.is_closed()
            || self.stats.unwritten.load(Ordering::Acquire) != 0
        {
            return None;
        }
        match self.log.try_append(receipt)? {
            Ok(()) => {
                self.stats.written.fetch_add(1, Ordering::Relaxed);
                Some(Record::done())
            }
            Err(e) => {
                self.stats.failed(1);
                self.stats.refused();
                report_failed_write(&self.log, receipt, &e);
                Some(Record::failed(write_error(&e)))
            }
        }
    }

    /// Queues a receipt without waiting for its write (a denial, or any
    /// receipt when failing open): waits only for queue space.
    fn enqueue(&self, receipt: &Arc<Receipt>) -> Record {
        self.stats.unwritten.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(Msg::Receipt(Arc::clone(receipt), None)) {
            Ok(()) => Record::done(),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                let tx = self.tx.clone();
                let stats = Arc::clone(&self.stats);
                Record::wait(async move {
                    if let Err(mpsc::error::SendError(msg)) = tx.send(msg).await {
                        writer_gone(msg, &stats);
                    }
                    Ok(())
                })
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                writer_gone(msg, &self.stats);
                Record::done()
            }
        }
    }
}

/// What a refused call is told when its receipt could not be written.
/// Neither the path nor anything else about the server goes to the client:
/// the kind of failure is enough to act on.
fn write_error(e: &io::Error) -> SinkError {
    SinkError::new(format!(
        "audit log unavailable: the receipt could not be written ({e})"
    ))
}

/// A receipt that could not be written survives as an `ERROR` event.
fn report_failed_write(log: &AuditLog, receipt: &Receipt, e: &io::Error) {
    tracing::error!(
        target: "capnagent::sink",
        error = %e,
        path = %log.path().display(),
        receipt = %receipt.to_json(),
        "could not write a receipt to the audit log"
    );
}

/// The writer's answer to a write-ahead receipt; a writer that went away
/// without answering (it panicked) did not write it.
fn written(
    answer: Result<Result<(), SinkError>, oneshot::error::RecvError>,
    stats: &Counters,
) -> Result<(), SinkError> {
    let result = answer.unwrap_or_else(|_| {
        stats.failed(1);
        Err(SinkError::new(WRITER_GONE))
    });
    if result.is_err() {
        stats.refused();
    }
    result
}

/// A write-ahead receipt found the writer gone: the call is refused.
fn refuse_gone(msg: Msg, stats: &Counters) -> SinkError {
    writer_gone(msg, stats);
    stats.refused();
    SinkError::new(WRITER_GONE)
}

/// The writer thread is gone (it stops when closed or when every sender is
/// dropped, or if it panicked): never lose the record silently.
fn writer_gone(msg: Msg, stats: &Counters) {
    if let Msg::Receipt(receipt, _) = msg {
        stats.unwritten.fetch_sub(1, Ordering::AcqRel);
        stats.failed(1);
        tracing::error!(
            target: "capnagent::sink",
            receipt = %receipt.to_json(),
            "audit writer thread has stopped; receipt not written to the audit log"
        );
    }
}

/// How long the fail-open writer naps between polls while receipts keep
/// coming.
const POLL: Duration = Duration::from_millis(5);
/// Empty polls in a row before the fail-open writer parks until the next
/// receipt.
const IDLE_POLLS: u32 = 3;

/// Most receipts written with one `write`.
const MAX_BATCH: usize = 256;

/// What the writer thread keeps between batches.
struct Writer<'a> {
    log: &'a AuditLog,
    stats: &'a Counters,
    batch: Vec<Msg>,
    /// Who asked for the writer to stop, answered once it has.
    closers: Vec<oneshot::Sender<()>>,
}

fn write_loop(log: &AuditLog, mut rx: mpsc::Receiver<Msg>, stats: &Counters, nap: bool) {
    let mut writer = Writer {
        log,
        stats,
        batch: Vec::new(),
        closers: Vec::new(),
    };
    if nap {
        writer.run_polling(&mut rx);
    } else {
        writer.run_group_commit(&mut rx);
    }
    for closer in writer.closers.drain(..) {
        let _ = closer.send(());
    }
}

impl Writer<'_> {
    /// Write-ahead: requests wait for their write, so the writer never
    /// naps. It blocks for the first receipt, then takes whatever else
    /// queued up meanwhile (up to [`MAX_BATCH`]) into the same write: group
    /// commit, the batch growing with the load.
    fn run_group_commit(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            self.batch.push(msg);
            while self.batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => self.batch.push(msg),
                    Err(_) => break,
                }
            }
            self.write_batch(rx);
        }
    }

    /// Fail open: park until something arrives (one wake-up), then keep
    /// draining by polling while traffic lasts: under load, a request
    /// queuing a receipt never pays for waking this thread, and whatever
    /// queued up meanwhile goes to the file in one write.
    fn run_polling(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            self.batch.push(msg);
            let mut idle = 0;
            while idle < IDLE_POLLS {
                let mut disconnected = false;
                while self.batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => self.batch.push(msg),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                }
                if self.batch.is_empty() {
                    idle += 1;
                    std::thread::sleep(POLL);
                } else {
                    self.write_batch(rx);
                    idle = 0;
                }
                if disconnected {
                    return;
                }
            }
        }
    }

    /// Writes the batch's receipts in order, acknowledging each flush once
    /// everything queued before it is written; a close stops the queue
    /// (what is already in it is still written).
    fn write_batch(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        let mut receipts: Vec<(Arc<Receipt>, Option<Ack>)> = Vec::with_capacity(self.batch.len());
        let batch = std::mem::take(&mut self.batch);
        for msg in batch {
            match msg {
                Msg::Receipt(receipt, ack) => receipts.push((receipt, ack)),
                Msg::Flush(done) => {
                    self.write_receipts(&mut receipts);
                    let _ = done.send(());
                }
                Msg::Close(done) => {
                    self.write_receipts(&mut receipts);
                    rx.close();
                    self.closers.push(done);
                }
            }
        }
        self.write_receipts(&mut receipts);
    }

    fn write_receipts(&mut self, receipts: &mut Vec<(Arc<Receipt>, Option<Ack>)>) {
        if receipts.is_empty() {
            return;
        }
        let log = self.log;
        let result = log.append_all(receipts.iter().map(|(r, _)| &**r));
        self.stats
            .unwritten
            .fetch_sub(receipts.len(), Ordering::AcqRel);
        match result {
            Ok(written) => {
                self.stats
                    .written
                    .fetch_add(written as u64, Ordering::Relaxed);
                for (_, ack) in receipts.drain(..) {
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                self.stats.failed(receipts.len() as u64);
                let error = write_error(&e);
                for (receipt, ack) in receipts.drain(..) {
                    report_failed_write(log, &receipt, &e);
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}

impl fmt::Debug for AuditLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLogSink")
            .field("capacity", &self.capacity)
            .field("fail_open", &self.fail_open)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use capnagent::{Auditor, Context as Ctx, Outcome};

    fn receipt(n: u64) -> Arc<Receipt> {
        let auditor = Auditor::new(&[9; 32]).unwrap();
        let ctx = Ctx::builder().now_millis(n).tool("t").build();
        Arc::new(auditor.sign("cap", Vec::new(), &ctx, Outcome::Allowed))
    }

    #[tokio::test]
    async fn full_queue_waits_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let sink = AuditLogSink::with_capacity(AuditLog::open(&path).unwrap(), 1).unwrap();
        for n in 0..200 {
            sink.record(&receipt(n)).await.unwrap();
        }
        sink.flush().await.unwrap();
        let stats = sink.stats();
        assert_eq!(stats.written, 200);
        assert_eq!(stats.failed, 0);
        let lines = AuditLog::open(&path).unwrap().iter().unwrap().count();
        assert_eq!(lines, 200);
    }

    #[tokio::test]
    async fn a_dropped_record_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let sink = AuditLogSink::with_capacity(AuditLog::open(&path).unwrap(), 1).unwrap();
        let mut pending = Vec::new();
        for n in 0..50 {
            pending.push(sink.record(&receipt(n)));
        }
        drop(pending);
        // Detached sends run on this runtime; give them a turn, then flush.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if sink.stats().written + sink.stats().queued as u64 >= 50 {
                break;
            }
        }
        sink.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        sink.flush().await.unwrap();
        assert_eq!(sink.stats().written, 50);
    }

    fn denied(n: u64) -> Arc<Receipt> {
        let auditor = Auditor::new(&[9; 32]).unwrap();
        let ctx = Ctx::builder().now_millis(n).tool("t").build();
        let outcome = Outcome::Denied {
            reason: "no".into(),
        };
        Arc::new(auditor.sign("cap", Vec::new(), &ctx, outcome))
    }

    #[tokio::test]
    async fn write_ahead_waits_for_the_write_and_reports_a_full_disk() {
        let sink = AuditLogSink::new(AuditLog::open("/dev/full").unwrap()).unwrap();
        let error = sink.record(&receipt(1)).await.unwrap_err();
        assert!(
            error.reason().starts_with("audit log unavailable"),
            "{error}"
        );
        assert!(!error.reason().contains("/dev/full"), "no path to clients");
        // A denial is not held back by the failing disk.
        sink.record(&denied(2)).await.unwrap();
        sink.flush().await.unwrap();
        let stats = sink.stats();
        assert_eq!((stats.written, stats.failed, stats.refused), (0, 2, 1));
    }

    #[tokio::test]
    async fn the_file_keeps_the_order_in_which_calls_were_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
        for round in 0..50 {
            // A denial is queued without waiting; the allowed call answered
            // after it must not overtake it by writing its own receipt.
            sink.record(&denied(round * 2)).await.unwrap();
            sink.record(&receipt(round * 2 + 1)).await.unwrap();
        }
        sink.flush().await.unwrap();
        let order: Vec<u64> = AuditLog::open(&path)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| r.unwrap().timestamp_ms())
            .collect();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_chained_rotating_log_behind_the_sink_keeps_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let auditor = Auditor::new(&[9; 32]).unwrap();
        let log = AuditLog::builder(&path)
            .chained(&auditor)
            .rotate_at(4096)
            .open()
            .unwrap();
        let sink = Arc::new(AuditLogSink::with_capacity(log, 4).unwrap());
        // Write-ahead records (written by the request when the file is
        // free) and queued denials (written by the writer thread), from
        // several tasks at once.
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    for n in 0..40 {
                        let id = t * 100 + n;
                        let r = if n % 2 == 0 { receipt(id) } else { denied(id) };
                        sink.record(&r).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        sink.flush().await.unwrap();
        assert_eq!(sink.stats().written, 160);
        let files = capnagent::audit_log_files(&path).unwrap();
        assert!(files.len() > 1, "{files:?}");
        let report = capnagent::verify_audit_log(&files, &[auditor], None).unwrap();
        assert_eq!(report.records, 160);
        assert_eq!(report.head.map(|h| h.seq), Some(159));
    }

    #[tokio::test]
    async fn write_ahead_answers_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
        sink.record(&receipt(1)).await.unwrap();
        // Written before the record resolved: no flush needed.
        let lines = AuditLog::open(&path).unwrap().iter().unwrap().count();
        assert_eq!(lines, 1);
        // A log that syncs every record is written by the writer thread
        // (one `fsync` per group): the record waits for it.
        let log = AuditLog::open_with(&path, capnagent::Durability::Sync).unwrap();
        let sink = AuditLogSink::new(log).unwrap();
        let record = sink.record(&receipt(2));
        assert!(!record.is_done());
        record.await.unwrap();
        assert_eq!(AuditLog::open(&path).unwrap().iter().unwrap().count(), 2);
        assert_eq!(sink.stats().written, 1);
    }

    #[tokio::test]
    async fn a_closed_sink_refuses_allowed_calls_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.ndjson");
        let sink = AuditLogSink::new(AuditLog::open(&path).unwrap()).unwrap();
        sink.record(&receipt(1)).await.unwrap();
        sink.close().await.unwrap();
        let record = sink.record(&receipt(2));
        assert!(matches!(record.peek(), Some(Err(_))));
        assert_eq!(record.await.unwrap_err().reason(), WRITER_GONE);
        sink.record(&denied(3)).await.unwrap();
        assert!(sink.flush().await.is_err());
        let stats = sink.stats();
        assert_eq!((stats.written, stats.failed, stats.refused), (1, 2, 1));
    }

    #[tokio::test]
    async fn fail_open_lets_calls_go_on_when_the_disk_is_full() {
        let sink = AuditLogSink::builder(AuditLog::open("/dev/full").unwrap())
            .fail_open()
            .build()
            .unwrap();
        assert!(sink.is_fail_open());
        let record = sink.record(&receipt(1));
        assert!(record.is_done());
        record.await.unwrap();
        sink.flush().await.unwrap();
        let stats = sink.stats();
        assert_eq!((stats.written, stats.failed, stats.refused), (0, 1, 0));
    }

    #[tokio::test]
    async fn a_pair_fails_when_either_fails_and_drives_both() {
        let count = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&count);
        let failing = |_: &Arc<Receipt>| Record::failed(SinkError::new("down"));
        struct Failing<F>(F);
        impl<F: Fn(&Arc<Receipt>) -> Record + Send + Sync + 'static> ReceiptSink for Failing<F> {
            fn record(&self, receipt: &Arc<Receipt>) -> Record {
                (self.0)(receipt)
            }
        }
        struct Slow(Arc<AtomicU64>);
        impl ReceiptSink for Slow {
            fn record(&self, _: &Arc<Receipt>) -> Record {
                let counter = Arc::clone(&self.0);
                Record::wait(async move {
                    tokio::task::yield_now().await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
            }
        }
        let pair = (Slow(counter), Failing(failing));
        let error = pair.record(&receipt(1)).await.unwrap_err();
        assert_eq!(error.reason(), "down");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let ok = (Slow(Arc::clone(&count)), TracingSink);
        ok.record(&receipt(2)).await.unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn pairs_and_closures_are_sinks() {
        let count = Arc::new(AtomicU64::new(0));
        let (a, b) = (Arc::clone(&count), Arc::clone(&count));
        let pair = (
            move |_: &Receipt| {
                a.fetch_add(1, Ordering::Relaxed);
            },
            move |_: &Receipt| {
                b.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert!(pair.record(&receipt(1)).is_done());
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
