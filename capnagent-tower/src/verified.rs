//! [`Verified`]: the proof an allowed request carries into its handler,
//! and (with the `axum` feature) its extractor.

use std::fmt;
use std::sync::Arc;

use capnagent::JsonValue;
use capnagent::{Capability, Context, Receipt, Timestamp, Verifier};

/// Inserted into the request extensions of every allowed request: the
/// signed receipt of the decision and the capability that allowed it.
///
/// The same type for every protocol: a handler shared between an axum
/// route and a tonic service takes this `Verified`. Cheap to clone. In
/// axum, take it as a handler argument (a missing layer is a 500 that
/// names the fix); elsewhere read it with
/// [`Verified::from_extensions`].
///
/// ```
/// use capnagent_tower::Verified;
///
/// async fn purchase(verified: Verified) -> String {
///     verified.receipt().to_json()
/// }
/// # let _ = purchase;
/// ```
#[derive(Clone)]
pub struct Verified {
    receipt: Arc<Receipt>,
    capability: Arc<Capability>,
    /// The verifier that allowed the call: its predicate cache serves
    /// [`could_allow`](Self::could_allow).
    verifier: Verifier,
}

impl Verified {
    pub(crate) fn new(
        receipt: Arc<Receipt>,
        capability: Arc<Capability>,
        verifier: Verifier,
    ) -> Verified {
        Verified {
            receipt,
            capability,
            verifier,
        }
    }

    /// The `Verified` an allowed request carries in `extensions`: `None`
    /// when the request did not pass a capability layer (a wiring bug for
    /// a protected handler). Works for an `http::Request`, axum's `Parts`
    /// and a `tonic::Request` (`request.extensions()`) alike.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<&Verified> {
        extensions.get::<Verified>()
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

    /// Whether the capability could allow *some* call of `tool`: by the
    /// same caller, at the time of this request, with any arguments. For
    /// listings such as MCP's `tools/list`, so that an agent is shown only
    /// the tools it may use; every call is still judged in full.
    ///
    /// Each caveat is evaluated with `args` unknown: a caveat that comes
    /// out false without looking at the arguments (a `tool`, `caller` or
    /// `now` condition that fails) rules the tool out; one that needs the
    /// arguments or an `env` fact might hold, so the tool stays. A caveat
    /// that does not parse rules every tool out, as it denies every call.
    /// With `tool == "checkout_purchase" AND arg.amount_cents <= 5000`,
    /// `could_allow("checkout_purchase")` is true and
    /// `could_allow("bank_wire")` false.
    ///
    /// Caveats are parsed through the verifier's predicate cache (see
    /// [`Verifier::might_allow`]), so a listing of many tools parses each
    /// caveat once, not once per tool.
    pub fn could_allow(&self, tool: &str) -> bool {
        let summary = self.receipt.context_summary();
        let ctx = Context::builder()
            .timestamp(Timestamp::from_unix_millis(self.receipt.timestamp_ms()))
            .caller(summary.caller())
            .tool(tool)
            .args_json(JsonValue::Null)
            .build();
        self.verifier.might_allow(&self.capability, &ctx)
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("receipt", &self.receipt)
            .field("capability", &self.capability)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
pub use self::axum_impl::MissingVerified;

#[cfg(feature = "axum")]
mod axum_impl {
    use std::fmt;

    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::Verified;

    /// Rejection for [`Verified`] when the request carries none: the
    /// handler's route is not behind a [`CapabilityLayer`]. A wiring bug,
    /// so a 500 whose text names the fix.
    ///
    /// [`CapabilityLayer`]: crate::CapabilityLayer
    #[derive(Debug, Clone, Copy, Default)]
    #[non_exhaustive]
    pub struct MissingVerified;

    impl MissingVerified {
        /// The status: 500.
        pub fn status(&self) -> StatusCode {
            StatusCode::INTERNAL_SERVER_ERROR
        }

        /// The body text.
        pub fn body_text(&self) -> &'static str {
            "`capnagent_tower::Verified` was not found in the request extensions. \
             Is `CapabilityLayer` applied to this route? Add it with \
             `Router::route_layer(CapabilityLayer::new(..))` or `Router::layer(..)`, \
             after the route is added."
        }
    }

    impl fmt::Display for MissingVerified {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.body_text())
        }
    }

    impl std::error::Error for MissingVerified {}

    impl IntoResponse for MissingVerified {
        fn into_response(self) -> Response {
            tracing::error!(target: "capnagent::rejection", "{}", self.body_text());
            (self.status(), self.body_text()).into_response()
        }
    }

    impl<S> FromRequestParts<S> for Verified
    where
        S: Send + Sync,
    {
        type Rejection = MissingVerified;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<Verified>()
                .cloned()
                .ok_or(MissingVerified)
        }
    }

    impl<S> OptionalFromRequestParts<S> for Verified
    where
        S: Send + Sync,
    {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Verified>().cloned())
        }
    }
}
