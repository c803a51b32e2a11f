//! Where receipts go: the [`ReceiptSink`] trait, called exactly once for
//! every request the layer sees (allowed, denied, missing or forged token),
//! and its built-ins [`AuditLogSink`] (the core [`AuditLog`] file, written
//! off the request path) and [`TracingSink`] (`tracing` events).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use capnagent::{AuditLog, Receipt};
use tokio::sync::{mpsc, oneshot};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Receives the signed receipt of every decision the layer makes.
///
/// [`record`](Self::record) is called once per request, before the inner
/// service is called (for an allowed request) or the denial is sent; a
/// request dropped while its body was being read (server shutdown, an
/// outer timeout) is recorded as denied when it is dropped. It
/// returns a [`Record`]: [`Record::done`] when the receipt was taken
/// without waiting, or [`Record::wait`] with a future the request awaits
/// first (backpressure). Closures `Fn(&Receipt)` are sinks too.
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

/// Both sinks get every receipt.
impl<A, B> ReceiptSink for (A, B)
where
    A: ReceiptSink,
    B: ReceiptSink,
{
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        let mut first = self.0.record(receipt);
        let mut second = self.1.record(receipt);
        match (first.0.take(), second.0.take()) {
            (None, None) => Record::done(),
            (Some(a), None) | (None, Some(a)) => Record(Some(a)),
            (Some(a), Some(b)) => Record::wait(async move {
                a.await;
                b.await;
            }),
        }
    }
}

/// What a [`ReceiptSink`] returns: done already, or a future to await
/// before the request goes on.
///
/// A `Record` dropped before it completes (the client went away while its
/// request waited for queue space) is not lost: its future is moved onto
/// the current tokio runtime, or a helper thread when there is none, and
/// runs to completion there.
#[must_use = "a Record must be awaited or dropped (dropping detaches it)"]
pub struct Record(Option<BoxFuture>);

impl Record {
    /// The receipt was taken; nothing to wait for.
    pub fn done() -> Record {
        Record(None)
    }

    /// The request waits for `future` before it goes on.
    pub fn wait(future: impl Future<Output = ()> + Send + 'static) -> Record {
        Record(Some(Box::pin(future)))
    }

    /// True when there is nothing left to wait for.
    pub fn is_done(&self) -> bool {
        self.0.is_none()
    }
}

impl Future for Record {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(future) = self.0.as_mut() {
            if future.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.0 = None;
        }
        Poll::Ready(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let Some(future) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(future);
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("capnagent-record".into())
                    .spawn(
                        move || match tokio::runtime::Builder::new_current_thread().build() {
                            Ok(runtime) => runtime.block_on(future),
                            Err(e) => tracing::error!(
                                target: "capnagent::sink",
                                error = %e,
                                "could not finish recording a receipt: no runtime"
                            ),
                        },
                    );
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
        f.debug_struct("Record")
            .field("done", &self.is_done())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// tracing

/// Emits one `tracing` event per receipt, target `capnagent::receipt`:
/// `INFO` for an allowed call, `WARN` for a denial, with the capability
/// identifier, caller, tool, args hash, reason and the full receipt JSON.
///
/// The default sink. Tokens are never logged (a receipt does not contain
/// one).
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

/// Feeds the core [`AuditLog`] without doing disk I/O on the request path.
///
/// Receipts go into a bounded queue (default 4096) that one dedicated
/// writer thread drains into the file, one line per receipt. While
/// receipts keep coming the writer polls the queue every 5 ms instead of
/// being woken for each one, so queuing a receipt costs a request no more
/// than a channel send, and the writer wakes a few hundred times a second
/// at most; an idle writer parks. [`flush`](Self::flush) waits for the
/// file, whatever the poll.
///
/// **When the queue is full**, the request waits for space before it goes
/// on (backpressure): an allowed call is not handed to its handler, and a
/// denial is not sent, until its receipt is queued. Nothing is ever dropped
/// to make room. [`AuditLogStats::waited`] counts the requests that had to
/// wait, so a disk that cannot keep up shows up as a metric before it shows
/// up as latency. A write that fails is reported at `ERROR` (target
/// `capnagent::sink`) with the full receipt JSON, so the record survives in
/// the logs, and counted in [`AuditLogStats::failed`].
///
/// Call [`flush`](Self::flush) before reading the file or exiting: it
/// returns once every receipt queued before it is written.
///
/// ```no_run
/// use capnagent::AuditLog;
/// use capnagent_tower::AuditLogSink;
///
/// # async fn demo() -> std::io::Result<()> {
/// let sink = AuditLogSink::new(AuditLog::open("audit.ndjson")?)?;
/// // ... CapabilityLayer::new(verifier, auditor).sink(sink.clone()) ...
/// sink.flush().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuditLogSink {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Counters>,
    capacity: usize,
}

enum Msg {
    Receipt(Arc<Receipt>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    failed: AtomicU64,
    waited: AtomicU64,
}

/// Counters of an [`AuditLogSink`], read with [`AuditLogSink::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AuditLogStats {
    /// Receipts written to the file.
    pub written: u64,
    /// Receipts whose write failed (each reported at `ERROR` with its JSON).
    pub failed: u64,
    /// Requests that found the queue full and waited for space.
    pub waited: u64,
    /// Receipts queued and not yet written.
    pub queued: usize,
}

impl AuditLogSink {
    /// Default queue length.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// Starts the writer thread for `log`, with the default queue length.
    pub fn new(log: impl Into<Arc<AuditLog>>) -> io::Result<AuditLogSink> {
        AuditLogSink::with_capacity(log, Self::DEFAULT_CAPACITY)
    }

    /// Starts the writer thread for `log`, with a queue of `capacity`
    /// receipts (at least 1).
    pub fn with_capacity(
        log: impl Into<Arc<AuditLog>>,
        capacity: usize,
    ) -> io::Result<AuditLogSink> {
        let capacity = capacity.max(1);
        let log = log.into();
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(Counters::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("capnagent-audit".into())
            .spawn(move || write_loop(&log, rx, &writer_stats))?;
        Ok(AuditLogSink {
            tx,
            stats,
            capacity,
        })
    }

    /// Waits until every receipt queued before this call is written (not
    /// necessarily synced: see the log's [`Durability`](capnagent::Durability)).
    pub async fn flush(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| io::Error::other("audit writer thread has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("audit writer thread has stopped"))
    }

    /// The counters so far.
    pub fn stats(&self) -> AuditLogStats {
        AuditLogStats {
            written: self.stats.written.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            waited: self.stats.waited.load(Ordering::Relaxed),
            queued: self.capacity.saturating_sub(self.tx.capacity()),
        }
    }
}

impl ReceiptSink for AuditLogSink {
    fn record(&self, receipt: &Arc<Receipt>) -> Record {
        match self.tx.try_send(Msg::Receipt(Arc::clone(receipt))) {
            Ok(()) => Record::done(),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stats.waited.fetch_add(1, Ordering::Relaxed);
                let tx = self.tx.clone();
                let stats = Arc::clone(&self.stats);
                Record::wait(async move {
                    if let Err(mpsc::error::SendError(msg)) = tx.send(msg).await {
                        writer_gone(msg, &stats);
                    }
                })
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                writer_gone(msg, &self.stats);
                Record::done()
            }
        }
    }
}

/// The writer thread is gone (it only stops when every sender is dropped,
/// or if it panicked): never lose the record silently.
fn writer_gone(msg: Msg, stats: &Counters) {
    if let Msg::Receipt(receipt) = msg {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            target: "capnagent::sink",
            receipt = %receipt.to_json(),
            "audit writer thread has stopped; receipt not written to the audit log"
        );
    }
}

/// How long the writer naps between polls while receipts keep coming.
const POLL: Duration = Duration::from_millis(5);
/// Empty polls in a row before the writer parks until the next receipt.
const IDLE_POLLS: u32 = 3;

/// Most receipts written with one `write`.
const MAX_BATCH: usize = 256;

fn write_loop(log: &AuditLog, mut rx: mpsc::Receiver<Msg>, stats: &Counters) {
    // Park until something arrives (one wake-up), then keep draining by
    // polling while traffic lasts: under load, a request queuing a receipt
    // never pays for waking this thread, and whatever queued up meanwhile
    // goes to the file in one write.
    let mut batch: Vec<Msg> = Vec::new();
    while let Some(msg) = rx.blocking_recv() {
        batch.push(msg);
        let mut idle = 0;
        while idle < IDLE_POLLS {
            let mut disconnected = false;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                idle += 1;
                std::thread::sleep(POLL);
            } else {
                write_batch(log, &mut batch, stats);
                idle = 0;
            }
            if disconnected {
                return;
            }
        }
    }
}

/// Writes the queued receipts in order, acknowledging each flush once
/// everything queued before it is written.
fn write_batch(log: &AuditLog, batch: &mut Vec<Msg>, stats: &Counters) {
    let mut receipts: Vec<Arc<Receipt>> = Vec::with_capacity(batch.len());
    for msg in batch.drain(..) {
        match msg {
            Msg::Receipt(receipt) => receipts.push(receipt),
            Msg::Flush(done) => {
                write_receipts(log, &mut receipts, stats);
                let _ = done.send(());
            }
        }
    }
    write_receipts(log, &mut receipts, stats);
}

fn write_receipts(log: &AuditLog, receipts: &mut Vec<Arc<Receipt>>, stats: &Counters) {
    if receipts.is_empty() {
        return;
    }
    match log.append_all(receipts.iter().map(|r| &**r)) {
        Ok(written) => {
            stats.written.fetch_add(written as u64, Ordering::Relaxed);
        }
        Err(e) => {
            stats
                .failed
                .fetch_add(receipts.len() as u64, Ordering::Relaxed);
            for receipt in receipts.iter() {
                tracing::error!(
                    target: "capnagent::sink",
                    error = %e,
                    path = %log.path().display(),
                    receipt = %receipt.to_json(),
                    "could not write a receipt to the audit log"
                );
            }
        }
    }
    receipts.clear();
}

impl fmt::Debug for AuditLogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLogSink")
            .field("capacity", &self.capacity)
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
            sink.record(&receipt(n)).await;
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
