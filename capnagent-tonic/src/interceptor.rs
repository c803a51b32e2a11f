//! [`CapabilityInterceptor`]: the same check as a
//! [`tonic::service::Interceptor`], for a fixed tool per service.
//!
//! An interceptor is synchronous and sees only the metadata and the
//! extensions of a call, never its path or its message. So it judges every
//! call it sees as one fixed tool with args `null`, and it cannot check
//! holder-of-key proofs (they cover the message). Any caveat on `arg.*`
//! denies ("unknown identifier"), and a holder-bound token is refused with
//! `UNAUTHENTICATED`: use [`CapabilityLayer`](crate::CapabilityLayer) for
//! those.

use std::fmt;
use std::sync::Arc;

use capnagent::JsonValue;
use capnagent::{Auditor, RevocationCell, Verifier};
use capnagent_tower::{CallerExtractor, Clock, ReceiptSink, Record, SinkError, TokenSource};
use tokio::runtime::{Handle, RuntimeFlavor};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::gate::{Gate, Verdict, named};
use crate::status;

/// A [`tonic::service::Interceptor`] that checks every call against its
/// capability, as one fixed tool with args `null`.
///
/// Use it with a generated server's `with_interceptor`
/// (`ToolServiceServer::with_interceptor(service, interceptor)`), which
/// keeps `NamedService`. Caller, sink, clock and token source are
/// configured as on [`CapabilityLayer`](crate::CapabilityLayer), and
/// allowed calls carry [`Verified`](crate::Verified) into the handler.
///
/// **When to use which.** The interceptor is enough when the tokens for a
/// service only name the tool, the caller, the time or `env` (no `arg.*`
/// caveats) and are not holder-bound. The layer sees each method's path
/// and its request message, so it can name one tool per method, check
/// `arg.*` caveats on unary calls, and check holder-of-key proofs.
///
/// **Receipts.** Exactly one per call, to the sink, and an allowed call
/// goes on only once the sink has recorded its receipt: when the sink
/// reports that it cannot ([`SinkError`]), the call is refused with
/// `UNAVAILABLE`, as the layer does. An interceptor is synchronous, so when
/// the sink asks an allowed call to wait (a write-ahead
/// [`AuditLogSink`](capnagent_tower::AuditLogSink), a full queue) it
/// blocks its thread until the receipt is recorded, with
/// [`tokio::task::block_in_place`] so the runtime's other tasks move to
/// another thread. That needs tokio's multi-thread runtime (tonic's
/// default); on any other, such a call is refused with `UNAVAILABLE`
/// (fail closed) and its receipt still recorded in the background. The
/// layer waits without blocking: prefer it under load, or give the
/// interceptor a sink that does not wait (a
/// [`fail_open`](capnagent_tower::AuditLogSinkBuilder::fail_open) audit
/// log). A denial never waits: its receipt is recorded in the background
/// (no backpressure).
///
/// ```
/// use capnagent::{Auditor, Verifier};
/// use capnagent_tonic::{Anonymous, CapabilityInterceptor};
///
/// # fn main() -> Result<(), capnagent::Error> {
/// let interceptor = CapabilityInterceptor::new(
///     Verifier::new(&[7; 32])?,
///     Auditor::new(&[9; 32])?,
///     "logs.upload",
/// )?
/// .caller(Anonymous);
/// // ToolServiceServer::with_interceptor(service, interceptor)
/// # let _ = interceptor;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CapabilityInterceptor {
    gate: Arc<Gate>,
    tool: Arc<str>,
}

impl CapabilityInterceptor {
    /// Judges every call as `tool`, with capabilities minted under
    /// `verifier`'s root key, and signs receipts with `auditor`.
    ///
    /// Refuses an auditor whose key is the root key
    /// ([`KeyError::AuditKeyIsRootKey`](capnagent::KeyError::AuditKeyIsRootKey)):
    /// every receipt in a denial would then be a capability (see
    /// [`Verifier::check_audit_key`]). Checked here, once, never per call.
    pub fn new(
        verifier: Verifier,
        auditor: Auditor,
        tool: impl Into<String>,
    ) -> Result<Self, capnagent::Error> {
        Ok(CapabilityInterceptor {
            gate: Arc::new(Gate::new(verifier, auditor)?),
            tool: Arc::from(tool.into()),
        })
    }

    fn edit(mut self, f: impl FnOnce(&mut Gate)) -> Self {
        f(Arc::make_mut(&mut self.gate));
        self
    }

    /// Sets how the `caller` fact is found; see
    /// [`CapabilityLayer::caller`](crate::CapabilityLayer::caller).
    pub fn caller(self, extractor: impl CallerExtractor) -> Self {
        self.edit(|g| g.caller = named!(extractor, CallerExtractor))
    }

    /// Sets where receipts go (exactly once per call).
    pub fn sink(self, sink: impl ReceiptSink) -> Self {
        self.edit(|g| g.sink = named!(sink, ReceiptSink))
    }

    /// Sets the clock that supplies `now`.
    pub fn clock(self, clock: impl Clock) -> Self {
        self.edit(|g| g.clock = named!(clock, Clock))
    }

    /// Sets where the token is read from (default
    /// `authorization: Bearer <token>`).
    pub fn token_source(self, source: TokenSource) -> Self {
        self.edit(|g| g.token = source)
    }

    /// Adds a static `env.<key>` fact.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edit(|g| {
            g.env.retain(|(k, _)| *k != key);
            g.env.push((key, value));
        })
    }

    /// Enforces a revocation list (the verifier's
    /// [`with_revocations`](Verifier::with_revocations)).
    pub fn revocations(self, cell: RevocationCell) -> Self {
        self.edit(|g| g.verifier = g.verifier.clone().with_revocations(cell))
    }
}

impl Interceptor for CapabilityInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        // The caller extractors read `http::request::Parts`: lend them the
        // metadata and extensions (moves, no copies).
        let (metadata, extensions, ()) = request.into_parts();
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers = metadata.into_headers();
        parts.extensions = extensions;

        let verdict = match self.gate.admit(&mut parts, self.tool.to_string(), false) {
            Ok(admitted) => self.gate.decide_bearer(&admitted, JsonValue::Null),
            Err(denial) => Verdict::Deny(denial),
        };
        match verdict {
            Verdict::Allow { record, verified } => {
                // No receipt, no call (fail closed).
                wait_for(record).map_err(|error| status::unavailable(&error))?;
                parts.extensions.insert(verified);
                Ok(Request::from_parts(
                    MetadataMap::from_headers(parts.headers),
                    parts.extensions,
                    (),
                ))
            }
            Verdict::Deny(denial) => {
                drop(denial.record);
                Err(denial.status)
            }
        }
    }
}

/// The outcome of an allowed call's record, waiting for it if it must (see
/// "Receipts" on [`CapabilityInterceptor`]).
fn wait_for(record: Record) -> Result<(), SinkError> {
    if let Some(outcome) = record.peek() {
        return outcome;
    }
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(record))
        }
        // Dropping the record finishes it in the background.
        _ => Err(SinkError::new(
            "audit log unavailable: the interceptor cannot wait for the receipt \
             to be written outside a multi-thread tokio runtime",
        )),
    }
}

impl fmt::Debug for CapabilityInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapabilityInterceptor")
            .field("tool", &self.tool)
            .field("gate", &self.gate)
            .finish()
    }
}
