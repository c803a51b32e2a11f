//! [`ResponseFuture`], the future returned by
//! [`CapabilityService`](crate::CapabilityService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::extract::BufferedBody;
use crate::response::DenialKind;
use crate::service::{Buffering, Decision, Next, too_large};
use crate::sink::Record;

pin_project! {
    /// Response future for [`CapabilityService`](crate::CapabilityService).
    ///
    /// Resolves to the inner service's response for an allowed request, or
    /// to a denial response; the inner error type is kept unchanged.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        kind: Kind<S, B>,
    }

    impl<S, B> PinnedDrop for ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        fn drop(this: Pin<&mut Self>) {
            // Dropped while the body was still being read (the server shut
            // down, an outer timeout fired): no decision was made, but the
            // request was seen, so it still leaves a denied receipt.
            if let KindProj::Buffering { state, .. } = this.project().kind.project()
                && let Some(state) = state.take()
            {
                state.shared.cancel(state.pending);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        // Allowed, receipt recorded: the inner service's future.
        Inner {
            #[pin]
            future: S::Future,
        },
        // Decided: wait for the receipt to be recorded, then call the inner
        // service or answer with the denial.
        Decided {
            record: Record,
            next: Option<Next<S, Request<B>, S::Response>>,
        },
        // Reading the body the args come from.
        Buffering {
            #[pin]
            collect: Collect<Limited<B>>,
            state: Option<Buffering<S>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    pub(crate) fn inner(future: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn decided(record: Record, next: Next<S, Request<B>, S::Response>) -> Self {
        ResponseFuture {
            kind: Kind::Decided {
                record,
                next: Some(next),
            },
        }
    }

    pub(crate) fn buffering(collect: Collect<Limited<B>>, state: Buffering<S>) -> Self {
        ResponseFuture {
            kind: Kind::Buffering {
                collect,
                state: Some(state),
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Decided { record, next } => {
                    ready!(Pin::new(record).poll(cx));
                    match next.take().expect("future polled after completion") {
                        Next::Call { mut inner, request } => {
                            let future = inner.call(request);
                            this.kind.set(Kind::Inner { future });
                        }
                        Next::Deny(response) => return Poll::Ready(Ok(response)),
                    }
                }
                KindProj::Buffering { collect, state } => {
                    let result = ready!(collect.poll(cx));
                    let Buffering {
                        inner,
                        mut parts,
                        pending,
                        shared,
                    } = state.take().expect("future polled after completion");
                    let (record, next) = match result {
                        Ok(collected) => {
                            let bytes = collected.to_bytes();
                            let view = BufferedBody::new(&bytes, shared.json_limits());
                            match shared.decide(pending, &mut parts, view) {
                                Decision::Allow { record, verified } => {
                                    parts.extensions.insert(verified);
                                    // The handler gets exactly the bytes that were checked.
                                    let request = Request::from_parts(parts, B::from(bytes));
                                    (record, Next::Call { inner, request })
                                }
                                Decision::Deny(denied) => {
                                    (denied.record, Next::Deny(denied.response))
                                }
                            }
                        }
                        Err(error) => {
                            let (kind, reason) =
                                if error.downcast_ref::<LengthLimitError>().is_some() {
                                    (DenialKind::PayloadTooLarge, too_large(shared.body_limit))
                                } else {
                                    (
                                        DenialKind::BadRequest,
                                        format!("request body could not be read: {error}"),
                                    )
                                };
                            let denied = shared.deny_pending(pending, kind, reason);
                            (denied.record, Next::Deny(denied.response))
                        }
                    };
                    this.kind.set(Kind::Decided {
                        record,
                        next: Some(next),
                    });
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Decided { .. } => "Decided",
            Kind::Buffering { .. } => "Buffering",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
