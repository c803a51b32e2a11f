//! [`ResponseFuture`], the future returned by
//! [`CapabilityService`](crate::CapabilityService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::Status;
use tonic::body::Body as TonicBody;
use tower_service::Service;

use capnagent_tower::Record;

use crate::status;

/// What a decision leads to: the request for the inner service, or the
/// denial's status.
pub(crate) type Next = Result<Request<TonicBody>, Status>;

/// The output of the deciding future: the receipt's record, and what next.
pub(crate) type Decided = (Record, Next);

type Deciding = Pin<Box<dyn Future<Output = Decided> + Send + 'static>>;

pin_project! {
    /// Response future for [`CapabilityService`](crate::CapabilityService).
    ///
    /// Resolves to the inner service's response for an allowed call, or to
    /// a trailers-only gRPC response for a denial; the inner error type is
    /// kept unchanged.
    pub struct ResponseFuture<S>
    where
        S: Service<Request<TonicBody>>,
    {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<Request<TonicBody>>,
    {
        // Allowed, receipt recorded: the inner service's future.
        Inner {
            #[pin]
            future: S::Future,
        },
        // Decided: wait for the receipt to be recorded, then call the
        // (ready) inner service or answer with the status.
        Decided {
            record: Record,
            next: Option<(Option<S>, Next)>,
        },
        // Reading the message and/or checking the proof.
        Deciding {
            future: Deciding,
            inner: Option<S>,
        },
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<TonicBody>>,
{
    pub(crate) fn inner(future: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }

    /// A denial decided in `call`.
    pub(crate) fn decided(record: Record, next: Next) -> Self {
        ResponseFuture {
            kind: Kind::Decided {
                record,
                next: Some((None, next)),
            },
        }
    }

    /// An allowed call whose receipt must be recorded before the call.
    pub(crate) fn decided_call(record: Record, inner: S, request: Request<TonicBody>) -> Self {
        ResponseFuture {
            kind: Kind::Decided {
                record,
                next: Some((Some(inner), Ok(request))),
            },
        }
    }

    pub(crate) fn deciding(future: Deciding, inner: S) -> Self {
        ResponseFuture {
            kind: Kind::Deciding {
                future,
                inner: Some(inner),
            },
        }
    }
}

impl<S, ResBody> Future for ResponseFuture<S>
where
    S: Service<Request<TonicBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Decided { record, next } => {
                    let recorded = ready!(Pin::new(record).poll(cx));
                    match next.take() {
                        Some((Some(mut inner), Ok(request))) => match recorded {
                            Ok(()) => {
                                let future = inner.call(request);
                                this.kind.set(Kind::Inner { future });
                            }
                            // No receipt, no call (fail closed).
                            Err(error) => {
                                return Poll::Ready(Ok(status::unavailable(&error).into_http()));
                            }
                        },
                        // A denial is a refusal whatever became of its
                        // receipt (the sink reports its own failures).
                        Some((_, Err(status))) => return Poll::Ready(Ok(status.into_http())),
                        // An allowed call always carries its inner service;
                        // polled again after completion: nothing to give.
                        Some((None, Ok(_))) | None => {
                            return Poll::Ready(Ok(Status::internal(
                                "capability layer: response future polled after completion",
                            )
                            .into_http()));
                        }
                    }
                }
                KindProj::Deciding { future, inner } => {
                    let (record, next) = ready!(future.as_mut().poll(cx));
                    let inner = inner.take();
                    this.kind.set(Kind::Decided {
                        record,
                        next: Some((inner, next)),
                    });
                }
            }
        }
    }
}

impl<S> fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<TonicBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Decided { .. } => "Decided",
            Kind::Deciding { .. } => "Deciding",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
