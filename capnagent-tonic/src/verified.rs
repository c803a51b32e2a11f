//! [`Verified`]: what an allowed gRPC call carries into its handler.

use std::fmt;
use std::sync::Arc;

use capnagent::{Capability, Receipt};

/// Inserted into the request extensions of every allowed call by
/// [`CapabilityLayer`](crate::CapabilityLayer) and
/// [`CapabilityInterceptor`](crate::CapabilityInterceptor): the signed
/// receipt of the decision and the capability that allowed it.
///
/// Read it in a tonic handler with
/// `request.extensions().get::<capnagent_tonic::Verified>()`. This is the
/// gRPC layer's type, not `capnagent_tower::Verified`. A handler that finds
/// none is not behind the layer: treat it as a wiring bug
/// ([`Verified::from_request`] answers `INTERNAL` naming the fix).
///
/// ```
/// use capnagent_tonic::Verified;
///
/// fn purchase(request: &tonic::Request<()>) -> Result<String, tonic::Status> {
///     let verified = Verified::from_request(request)?;
///     Ok(verified.receipt().signature_hex())
/// }
/// # let _ = purchase;
/// ```
#[derive(Clone)]
pub struct Verified {
    receipt: Arc<Receipt>,
    capability: Arc<Capability>,
}

impl Verified {
    pub(crate) fn new(receipt: Arc<Receipt>, capability: Arc<Capability>) -> Verified {
        Verified {
            receipt,
            capability,
        }
    }

    /// The `Verified` of a tonic request, or `INTERNAL` saying the layer
    /// is missing.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<&Verified, tonic::Status> {
        request.extensions().get::<Verified>().ok_or_else(|| {
            tracing::error!(target: "capnagent::rejection", "{MISSING}");
            tonic::Status::internal(MISSING)
        })
    }

    /// The signed receipt of the allowed decision.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The receipt, shared.
    pub fn receipt_arc(&self) -> &Arc<Receipt> {
        &self.receipt
    }

    /// The capability that allowed the call (its `Debug` never shows the
    /// signature).
    pub fn capability(&self) -> &Capability {
        &self.capability
    }
}

const MISSING: &str = "`capnagent_tonic::Verified` was not found in the request extensions. \
     Is this service behind the capability layer? Add it with \
     `Server::builder().layer(capnagent_tonic::CapabilityLayer::new(..))`, \
     wrap the service with `CapabilityLayer::layer`, or use \
     `XxxServer::with_interceptor(svc, CapabilityInterceptor::new(..))`.";

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("receipt", &self.receipt)
            .field("capability", &self.capability)
            .finish()
    }
}
