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

use capnagent_tower::protocol::Protocol;
use capnagent_tower::{CapabilityLayer, Checked, Record, SinkError};
use tokio::runtime::{Handle, RuntimeFlavor};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::Grpc;
use crate::status;

/// A [`tonic::service::Interceptor`] that checks every call against its
/// capability, as one fixed tool with args `null`.
///
/// Build it from a configured [`CapabilityLayer`] (any protocol: its keys,
/// caller, sink, clock, token source, `env` and revocations are used) and
/// the tool name; use it with a generated server's `with_interceptor`
/// (`ToolServiceServer::with_interceptor(service, interceptor)`), which
/// keeps `NamedService`. Allowed calls carry
/// [`Verified`](crate::Verified) into the handler.
///
/// **When to use which.** The interceptor is enough when the tokens for a
/// service only name the tool, the caller, the time or `env` (no `arg.*`
/// caveats) and are not holder-bound. The layer sees each method's path
/// and its request message, so it can name one tool per method, check
/// `arg.*` caveats on unary calls, and check holder-of-key proofs.
///
/// **Compression.** The interceptor never reads a message, so compressed
/// ones go to the service as they are (it must accept their encoding); a
/// call in an encoding the layer could not read (`grpc-encoding: snappy`)
/// is refused here too, `UNIMPLEMENTED` with `grpc-accept-encoding`, as
/// tonic would refuse it after an allowed receipt.
///
/// **Receipts.** Exactly one per call, to the sink, and an allowed call
/// goes on only once the sink has recorded its receipt: when the sink
/// reports that it cannot ([`SinkError`]), the call is refused with
/// `UNAVAILABLE`, as the layer does. An interceptor is synchronous, so when
/// the sink asks an allowed call to wait (a write-ahead
/// [`AuditLogSink`](capnagent_tower::AuditLogSink) whose file is busy or
/// which syncs every record, a full queue) it
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
/// use capnagent_tonic::{Anonymous, CapabilityInterceptor, CapabilityLayer, Grpc};
///
/// # fn main() -> Result<(), capnagent::Error> {
/// let layer = CapabilityLayer::with_protocol(Verifier::new(&[7; 32])?, Auditor::new(&[9; 32])?, Grpc::new())?
///     .caller(Anonymous);
/// let interceptor = CapabilityInterceptor::new(layer, "logs.upload");
/// // ToolServiceServer::with_interceptor(service, interceptor)
/// # let _ = interceptor;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CapabilityInterceptor {
    layer: CapabilityLayer<Grpc>,
}

impl CapabilityInterceptor {
    /// Judges every call as `tool`, with `layer`'s configuration (its
    /// keys were checked when it was built: an audit key equal to the root
    /// key is refused there).
    pub fn new<P: Protocol>(layer: CapabilityLayer<P>, tool: impl Into<Arc<str>>) -> Self {
        let tool = tool.into();
        CapabilityInterceptor {
            layer: layer.protocol(Grpc::fixed_tool(tool)),
        }
    }
}

impl Interceptor for CapabilityInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        // The engine reads `http::request::Parts`: lend it the metadata and
        // the extensions (moves, no copies).
        let (metadata, extensions, ()) = request.into_parts();
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers = metadata.into_headers();
        parts.extensions = extensions;

        match self.layer.check_head(&mut parts) {
            Checked::Allowed { record, verified } => {
                // No receipt, no call (fail closed).
                wait_for(record).map_err(|error| status::unavailable(&error))?;
                if let Some(verified) = verified {
                    parts.extensions.insert(verified);
                }
                Ok(Request::from_parts(
                    MetadataMap::from_headers(parts.headers),
                    parts.extensions,
                    (),
                ))
            }
            Checked::Denied { record, answer } => {
                drop(record);
                Err(answer)
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
            .field("layer", &self.layer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use capnagent::{Auditor, Issuer, Receipt, Verifier};
    use capnagent_tower::Anonymous;
    use tonic::Code;

    use super::*;

    #[test]
    fn an_unknown_encoding_is_refused_with_the_accepted_ones() {
        let receipts: Arc<Mutex<Vec<Receipt>>> = Arc::default();
        let sink = {
            let receipts = Arc::clone(&receipts);
            move |receipt: &Receipt| receipts.lock().unwrap().push(receipt.clone())
        };
        let layer = CapabilityLayer::with_protocol(
            Verifier::new(&[7; 32]).unwrap(),
            Auditor::new(&[9; 32]).unwrap(),
            Grpc::new(),
        )
        .unwrap()
        .caller(Anonymous)
        .sink(sink);
        let mut interceptor = CapabilityInterceptor::new(layer, "logs.upload");
        let token = Issuer::from_key(&[7; 32])
            .unwrap()
            .issue("logs")
            .caveat(r#"tool == "logs.upload""#)
            .unwrap()
            .build()
            .unwrap()
            .serialize();
        let call = |encoding: &'static str| {
            let mut request = Request::new(());
            let metadata = request.metadata_mut();
            crate::client::bearer(metadata, &token).unwrap();
            metadata.insert("grpc-encoding", encoding.parse().unwrap());
            request
        };

        // A compressed stream in gzip is the service's to read.
        assert!(interceptor.call(call("gzip")).is_ok());
        let status = interceptor.call(call("snappy")).unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "gzip,deflate,zstd,identity"
        );
        assert!(
            status
                .metadata()
                .get_bin(status::RECEIPT_METADATA)
                .is_some()
        );
        let outcomes: Vec<bool> = receipts
            .lock()
            .unwrap()
            .iter()
            .map(Receipt::is_allowed)
            .collect();
        assert_eq!(outcomes, [true, false]);
    }
}
