//! [`ResponseFuture`], the future returned by
//! [`CapabilityService`](crate::CapabilityService): a small state machine
//! that reads the body, waits for a holder-of-key proof, waits for the
//! receipt to be recorded, then calls the inner service or answers with
//! the denial. Every decision is the engine's; this file only sequences.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use capnagent::{BoxFuture, Error, Receipt};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::body::{ReadBody, ReadError, announced_over, too_large, unreadable};
use crate::engine::{Decision, Engine, Judged, Pending, Proving};
use crate::protocol::{Denial, Protocol, RequestBody, ResponseBody};
use crate::sink::Record;

type InnerRequest<B, P> = Request<<P as RequestBody<B>>::Body>;

pin_project! {
    /// Response future for [`CapabilityService`](crate::CapabilityService).
    ///
    /// Resolves to the inner service's response for an allowed request whose
    /// receipt was recorded, to the protocol's "unavailable" answer for an
    /// allowed request whose receipt could not be, or to a denial; the
    /// inner error type is kept unchanged.
    pub struct ResponseFuture<S, B, P>
    where
        S: Service<InnerRequest<B, P>>,
        P: RequestBody<B>,
    {
        #[pin]
        kind: Kind<S, B, P>,
    }

    impl<S, B, P> PinnedDrop for ResponseFuture<S, B, P>
    where
        S: Service<InnerRequest<B, P>>,
        P: RequestBody<B>,
    {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before a decision (the server shut down, an outer
            // timeout fired): the request was seen, so it still leaves a
            // denied receipt.
            match this.project().kind.project() {
                KindProj::Reading { state, .. } => {
                    if let Some(state) = state.take() {
                        state.engine.cancel_pending(state.pending);
                    }
                }
                KindProj::Proving { state, .. } => {
                    if let Some(state) = state.take() {
                        state.engine.cancel_judged(&state.judged);
                    }
                }
                _ => {}
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B, P>
    where
        S: Service<InnerRequest<B, P>>,
        P: RequestBody<B>,
    {
        // Allowed, receipt recorded: the inner service's future.
        Inner {
            #[pin]
            future: S::Future,
        },
        // Decided: wait for the receipt to be recorded, then go on.
        Recording {
            record: Record,
            next: Option<Next<S, InnerRequest<B, P>, P>>,
        },
        // Reading the body the protocol classifies the request by.
        Reading {
            #[pin]
            read: ReadBody<B>,
            state: Option<Reading<S, P>>,
        },
        // Waiting for the verifier's answer on a holder-of-key proof.
        Proving {
            verdict: BoxFuture<'static, Result<Receipt, Error>>,
            state: Option<Waiting<S, P, P::Body>>,
        },
    }
}

/// What to do once the receipt is recorded.
enum Next<S, Req, P: Protocol> {
    /// Call the (ready) inner service, or refuse in `reply`'s shape if the
    /// receipt could not be recorded.
    Call {
        inner: S,
        request: Req,
        reply: P::Reply,
    },
    /// Answer with the denial, whatever became of its receipt (the sink
    /// reports its own failures).
    Deny(P::Answer),
}

/// What a request whose body is being read keeps.
struct Reading<S, P: Protocol> {
    inner: S,
    parts: Parts,
    pending: Pending<P>,
    engine: Arc<Engine<P>>,
}

/// What a request waiting on its proof keeps.
struct Waiting<S, P: Protocol, Body> {
    inner: S,
    parts: Parts,
    body: Body,
    engine: Arc<Engine<P>>,
    judged: Judged<P>,
}

impl<S, B, P> ResponseFuture<S, B, P>
where
    S: Service<InnerRequest<B, P>> + Clone,
    P: RequestBody<B>,
    B: Body,
{
    /// A denial decided from the head.
    pub(crate) fn denied((record, answer): (Record, P::Answer)) -> Self {
        let next = Some(Next::Deny(answer));
        ResponseFuture {
            kind: Kind::Recording { record, next },
        }
    }

    /// A request that passed its head: decided now when the protocol does
    /// not read the body, else read first. `inner` is the service
    /// `poll_ready` was called on.
    pub(crate) fn new(
        engine: &Arc<Engine<P>>,
        inner: &mut S,
        mut parts: Parts,
        body: B,
        pending: Pending<P>,
    ) -> Self {
        let kind = if !pending.reads_body(&engine.protocol) {
            let decision = engine.decide(pending, &mut parts, &Bytes::new());
            act(engine, decision, Slot::Ready(inner), parts, P::pass(body))
        } else if announced_over(&parts, engine.body_limit()) {
            let reason = too_large(engine.body_limit());
            let decision = engine.deny_pending(pending, Denial::TooLarge, reason);
            act(engine, decision, Slot::Ready(inner), parts, P::pass(body))
        } else {
            let inner = Slot::Ready(inner).take();
            let read = ReadBody::new(body, engine.body_limit());
            let engine = Arc::clone(engine);
            let state = Reading {
                inner,
                parts,
                pending,
                engine,
            };
            Kind::Reading {
                read,
                state: Some(state),
            }
        };
        ResponseFuture { kind }
    }
}

/// The inner service: the service's own (ready, still in `call`) or one
/// the future owns.
enum Slot<'a, S> {
    Ready(&'a mut S),
    Owned(S),
}

impl<S: Clone> Slot<'_, S> {
    /// The service, owned: the service's own is replaced by a clone, so
    /// that the one `poll_ready` was called on is the one used (see "Be
    /// careful when cloning inner services" in the tower docs).
    fn take(self) -> S {
        match self {
            Slot::Ready(inner) => {
                let not_ready = inner.clone();
                std::mem::replace(inner, not_ready)
            }
            Slot::Owned(inner) => inner,
        }
    }

    fn call<Req>(self, request: Req) -> S::Future
    where
        S: Service<Req>,
    {
        match self {
            Slot::Ready(inner) => inner.call(request),
            Slot::Owned(mut inner) => inner.call(request),
        }
    }
}

/// The state after `decision`: call the inner service at once when the
/// receipt is already recorded, else wait for it (or for the proof).
fn act<S, B, P>(
    engine: &Arc<Engine<P>>,
    decision: Decision<P>,
    inner: Slot<'_, S>,
    mut parts: Parts,
    body: P::Body,
) -> Kind<S, B, P>
where
    S: Service<InnerRequest<B, P>> + Clone,
    P: RequestBody<B>,
{
    match decision {
        Decision::Allow {
            record,
            verified,
            reply,
        } => {
            if let Some(verified) = verified {
                parts.extensions.insert(verified);
            }
            let request = Request::from_parts(parts, body);
            if record.is_done() {
                return Kind::Inner {
                    future: inner.call(request),
                };
            }
            // Write-ahead: the inner service is called once the receipt is
            // recorded.
            let next = Next::Call {
                inner: inner.take(),
                request,
                reply,
            };
            Kind::Recording {
                record,
                next: Some(next),
            }
        }
        Decision::Deny { record, answer } => Kind::Recording {
            record,
            next: Some(Next::Deny(answer)),
        },
        Decision::Prove(Proving { verdict, judged }) => {
            let engine = Arc::clone(engine);
            let state = Waiting {
                inner: inner.take(),
                parts,
                body,
                engine,
                judged,
            };
            Kind::Proving {
                verdict,
                state: Some(state),
            }
        }
    }
}

impl<S, B, P, R> Future for ResponseFuture<S, B, P>
where
    S: Service<InnerRequest<B, P>, Response = Response<R>> + Clone,
    P: RequestBody<B> + ResponseBody<R>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<R>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Recording { record, next } => {
                    let recorded = ready!(Pin::new(record).poll(cx));
                    match next.take() {
                        Some(Next::Call {
                            mut inner,
                            request,
                            reply,
                        }) => match recorded {
                            Ok(()) => Kind::Inner {
                                future: inner.call(request),
                            },
                            // No receipt, no call (fail closed).
                            Err(error) => {
                                let answer = P::unavailable(&error, &reply);
                                return Poll::Ready(Ok(P::respond(answer)));
                            }
                        },
                        Some(Next::Deny(answer)) => return Poll::Ready(Ok(P::respond(answer))),
                        None => panic!("ResponseFuture polled after completion"),
                    }
                }
                KindProj::Reading { read, state } => {
                    let result = ready!(read.poll(cx));
                    let Some(Reading {
                        inner,
                        mut parts,
                        pending,
                        engine,
                    }) = state.take()
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    match result {
                        Ok(bytes) => {
                            let decision = engine.decide(pending, &mut parts, &bytes);
                            // The inner service gets exactly the bytes that
                            // were checked.
                            act(
                                &engine,
                                decision,
                                Slot::Owned(inner),
                                parts,
                                P::rebuild(bytes),
                            )
                        }
                        Err(error) => {
                            let (denial, reason) = match error {
                                ReadError::TooLarge => {
                                    (Denial::TooLarge, too_large(engine.body_limit()))
                                }
                                ReadError::Body(error) => (Denial::BadRequest, unreadable(&error)),
                            };
                            let decision = engine.deny_pending(pending, denial, reason);
                            act(
                                &engine,
                                decision,
                                Slot::Owned(inner),
                                parts,
                                P::rebuild(Bytes::new()),
                            )
                        }
                    }
                }
                KindProj::Proving { verdict, state } => {
                    let verdict = ready!(verdict.as_mut().poll(cx));
                    let Some(Waiting {
                        inner,
                        parts,
                        body,
                        engine,
                        judged,
                    }) = state.take()
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let decision = engine.conclude(verdict, judged);
                    act(&engine, decision, Slot::Owned(inner), parts, body)
                }
            };
            this.kind.set(next);
        }
    }
}

impl<S, B, P> fmt::Debug for ResponseFuture<S, B, P>
where
    S: Service<InnerRequest<B, P>>,
    P: RequestBody<B>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Recording { .. } => "Recording",
            Kind::Reading { .. } => "Reading",
            Kind::Proving { .. } => "Proving",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
