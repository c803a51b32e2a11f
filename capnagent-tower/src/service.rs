//! [`CapabilityService`]: hands each request to the engine and the inner
//! service to the [`ResponseFuture`], which records the receipt and calls
//! the inner service, or answers with the denial.
//!
//! A request is decided here, in `call`, when its head is enough (a denial
//! from the head, or a protocol that does not read the body); otherwise
//! the future reads the body, decides, and waits for a holder-of-key proof
//! when there is one.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::BoxError;
use crate::engine::{Engine, Head};
use crate::future::ResponseFuture;
use crate::layer::CapabilityLayer;
use crate::protocol::{Protocol, RequestBody, ResponseBody};

/// Middleware that checks every request's capability; see
/// [`CapabilityLayer`] and the [crate docs](crate) for an example.
///
/// The inner service receives the body the protocol hands on (HTTP: the
/// same `B`, rebuilt from exactly the bytes that were checked when they
/// were read); denials are answers in the protocol's shape, and the inner
/// error type is kept.
pub struct CapabilityService<S, P> {
    inner: S,
    engine: Arc<Engine<P>>,
}

impl<S, P: Protocol> CapabilityService<S, P> {
    /// Wraps `inner` with `layer`'s configuration.
    ///
    /// # Panics
    ///
    /// When the layer's protocol lacks what it needs (an HTTP layer without
    /// a tool source): see [`CapabilityLayer`]'s `Layer` implementation.
    pub fn new(inner: S, layer: &CapabilityLayer<P>) -> CapabilityService<S, P> {
        if let Err(error) = layer.clone().build() {
            panic!("{error}");
        }
        let engine = Arc::clone(&layer.engine);
        CapabilityService { inner, engine }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, P> Clone for CapabilityService<S, P> {
    fn clone(&self) -> Self {
        let (inner, engine) = (self.inner.clone(), Arc::clone(&self.engine));
        CapabilityService { inner, engine }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for CapabilityService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapabilityService")
            .field("inner", &self.inner)
            .field("layer", &self.engine)
            .finish()
    }
}

/// Keeps a wrapped tonic service addable with `add_service`.
#[cfg(feature = "tonic")]
impl<S: tonic::server::NamedService, P> tonic::server::NamedService for CapabilityService<S, P> {
    const NAME: &'static str = S::NAME;
}

impl<S, P, B, R> Service<Request<B>> for CapabilityService<S, P>
where
    P: RequestBody<B> + ResponseBody<R>,
    S: Service<Request<P::Body>, Response = Response<R>> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, P>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let pending = match self.engine.head(&mut parts) {
            Head::Deny(denied) => return ResponseFuture::denied(denied),
            Head::Ready(pending) => pending,
        };
        ResponseFuture::new(&self.engine, &mut self.inner, parts, body, pending)
    }
}
