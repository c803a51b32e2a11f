//! [`ResponseFuture`], the future returned by
//! [`CapabilityService`](crate::CapabilityService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use capnagent::{BoxFuture, Capability, Context as Facts, Error, Receipt};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::extract::BufferedBody;
use crate::layer::Shared;
use crate::response::{self, DenialKind, Reply};
use crate::service::{Buffering, Check, Decision, Next, Proving, too_large};
use crate::sink::Record;

pin_project! {
    /// Response future for [`CapabilityService`](crate::CapabilityService).
    ///
    /// Resolves to the inner service's response for an allowed request whose
    /// receipt was recorded, to a 503 for an allowed request whose receipt
    /// could not be, or to a denial response; the inner error type is kept
    /// unchanged.
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
            match this.project().kind.project() {
                KindProj::Buffering { state, .. } => {
                    if let Some(state) = state.take() {
                        state.shared.cancel(state.pending);
                    }
                }
                KindProj::Proving { state, .. } => {
                    if let Some(state) = state.take() {
                        state.shared.cancel_with(Some(&state.cap), &state.ctx);
                    }
                }
                _ => {}
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
        // service (or refuse, if it could not be) or answer with the denial.
        Decided {
            record: Record,
            next: Option<Next<S, Request<B>, S::Response>>,
        },
        // Reading the body the args come from.
        Buffering {
            #[pin]
            read: ReadBody<B>,
            state: Option<Buffering<S>>,
        },
        // Waiting for the verifier's answer on a holder-of-key proof.
        Proving {
            verdict: BoxFuture<'static, Result<Receipt, Error>>,
            state: Option<ProvingState<S, B>>,
        },
    }
}

/// What a request waiting on its proof keeps.
struct ProvingState<S, B> {
    inner: S,
    parts: Parts,
    body: B,
    shared: Arc<Shared>,
    cap: Arc<Capability>,
    uncached: Option<Box<str>>,
    ctx: Facts,
    check: Check,
    reply: Reply,
}

impl<S, B> ProvingState<S, B> {
    fn new(
        proving: Proving,
        inner: S,
        parts: Parts,
        body: B,
        shared: Arc<Shared>,
    ) -> (BoxFuture<'static, Result<Receipt, Error>>, Self) {
        let Proving {
            verdict,
            cap,
            uncached,
            ctx,
            check,
            reply,
        } = proving;
        (
            verdict,
            ProvingState {
                inner,
                parts,
                body,
                shared,
                cap,
                uncached,
                ctx,
                check,
                reply,
            },
        )
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

    pub(crate) fn proving(
        proving: Proving,
        inner: S,
        parts: Parts,
        body: B,
        shared: Arc<Shared>,
    ) -> Self {
        let (verdict, state) = ProvingState::new(proving, inner, parts, body, shared);
        ResponseFuture {
            kind: Kind::Proving {
                verdict,
                state: Some(state),
            },
        }
    }

    pub(crate) fn buffering(body: B, limit: usize, state: Buffering<S>) -> Self {
        ResponseFuture {
            kind: Kind::Buffering {
                read: ReadBody::new(body, limit),
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
                    let recorded = ready!(Pin::new(record).poll(cx));
                    match next.take().expect("future polled after completion") {
                        Next::Call {
                            mut inner,
                            request,
                            reply,
                        } => match recorded {
                            Ok(()) => {
                                let future = inner.call(request);
                                this.kind.set(Kind::Inner { future });
                            }
                            // No receipt, no call (fail closed).
                            Err(error) => {
                                return Poll::Ready(Ok(response::unavailable(&error, &reply)));
                            }
                        },
                        // A denial is a refusal whatever became of its
                        // receipt (the sink reports its own failures).
                        Next::Deny(response) => return Poll::Ready(Ok(response)),
                    }
                }
                KindProj::Buffering { read, state } => {
                    let result = ready!(read.poll(cx));
                    let Buffering {
                        inner,
                        mut parts,
                        pending,
                        shared,
                    } = state.take().expect("future polled after completion");
                    let (record, next) = match result {
                        Ok(bytes) => {
                            let view = BufferedBody::new(&bytes, shared.json_limits());
                            match shared.decide(pending, &mut parts, view) {
                                Decision::Allow {
                                    record,
                                    verified,
                                    reply,
                                } => {
                                    if let Some(verified) = verified {
                                        parts.extensions.insert(verified);
                                    }
                                    // The handler gets exactly the bytes that were checked.
                                    let request = Request::from_parts(parts, B::from(bytes));
                                    if record.is_done() {
                                        let mut inner = inner;
                                        let future = inner.call(request);
                                        this.kind.set(Kind::Inner { future });
                                        continue;
                                    }
                                    let next = Next::Call {
                                        inner,
                                        request,
                                        reply,
                                    };
                                    (record, next)
                                }
                                Decision::Deny(denied) => {
                                    (denied.record, Next::Deny(denied.response))
                                }
                                Decision::Prove(proving) => {
                                    let (verdict, state) = ProvingState::new(
                                        proving,
                                        inner,
                                        parts,
                                        B::from(bytes),
                                        shared,
                                    );
                                    this.kind.set(Kind::Proving {
                                        verdict,
                                        state: Some(state),
                                    });
                                    continue;
                                }
                            }
                        }
                        Err(error) => {
                            let (kind, reason) = match error {
                                ReadError::TooLarge => {
                                    (DenialKind::PayloadTooLarge, too_large(shared.body_limit))
                                }
                                ReadError::Body(error) => (
                                    DenialKind::BadRequest,
                                    format!("request body could not be read: {error}"),
                                ),
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
                KindProj::Proving { verdict, state } => {
                    let verdict = ready!(verdict.as_mut().poll(cx));
                    let ProvingState {
                        inner,
                        mut parts,
                        body,
                        shared,
                        cap,
                        uncached,
                        ctx,
                        check,
                        reply,
                    } = state.take().expect("future polled after completion");
                    let decision = shared.conclude(verdict, cap, uncached, &ctx, check, reply);
                    let (record, next) = match decision {
                        Decision::Allow {
                            record,
                            verified,
                            reply,
                        } => {
                            if let Some(verified) = verified {
                                parts.extensions.insert(verified);
                            }
                            let request = Request::from_parts(parts, body);
                            let next = Next::Call {
                                inner,
                                request,
                                reply,
                            };
                            (record, next)
                        }
                        Decision::Deny(denied) => (denied.record, Next::Deny(denied.response)),
                        // `conclude` never asks for another proof.
                        Decision::Prove(_) => unreachable!("a verdict is final"),
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

pin_project! {
    /// Reads a whole body, up to `limit` bytes. A body that arrives as one
    /// chunk (the usual case for a small request) is kept as that chunk,
    /// without a copy; more chunks are gathered into one buffer. Trailers
    /// are ignored.
    pub(crate) struct ReadBody<B> {
        #[pin]
        body: B,
        first: Option<Bytes>,
        rest: BytesMut,
        len: usize,
        limit: usize,
    }
}

pub(crate) enum ReadError {
    TooLarge,
    Body(BoxError),
}

impl<B> ReadBody<B> {
    fn new(body: B, limit: usize) -> ReadBody<B> {
        ReadBody {
            body,
            first: None,
            rest: BytesMut::new(),
            len: 0,
            limit,
        }
    }
}

impl<B> Future for ReadBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Bytes, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if usize::try_from(this.body.size_hint().lower()).map_or(true, |len| len > *this.limit) {
            return Poll::Ready(Err(ReadError::TooLarge));
        }
        loop {
            let Some(frame) = ready!(this.body.as_mut().poll_frame(cx)) else {
                return Poll::Ready(Ok(take_whole(this.first, this.rest)));
            };
            let frame = frame.map_err(|e| ReadError::Body(e.into()))?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let len = data.remaining();
            *this.len = this.len.saturating_add(len);
            if *this.len > *this.limit {
                return Poll::Ready(Err(ReadError::TooLarge));
            }
            if len == 0 {
                continue;
            }
            let chunk = data.copy_to_bytes(len);
            match this.first.take() {
                None if this.rest.is_empty() => *this.first = Some(chunk),
                first => {
                    if let Some(first) = first {
                        this.rest.reserve(*this.len);
                        this.rest.extend_from_slice(&first);
                    }
                    this.rest.extend_from_slice(&chunk);
                }
            }
            if this.body.is_end_stream() {
                // The body says nothing follows (hyper: Content-Length
                // reached): done, without polling it again.
                return Poll::Ready(Ok(take_whole(this.first, this.rest)));
            }
        }
    }
}

/// The body read so far: the one chunk as it came, or the gathered ones.
fn take_whole(first: &mut Option<Bytes>, rest: &mut BytesMut) -> Bytes {
    match first.take() {
        Some(first) if rest.is_empty() => first,
        _ => std::mem::take(rest).freeze(),
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
            Kind::Proving { .. } => "Proving",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body::Frame;

    /// One data frame, then says it has ended; polled again, it never
    /// answers (a reader that did not trust `is_end_stream` would hang).
    struct OneFrame(Option<Bytes>);

    impl Body for OneFrame {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[test]
    fn reading_stops_where_the_body_says_it_ends() {
        let body = OneFrame(Some(Bytes::from_static(b"{\"a\":1}")));
        let mut read = std::pin::pin!(ReadBody::new(body, 64));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(bytes)) => assert_eq!(&bytes[..], b"{\"a\":1}"),
            Poll::Ready(Err(_)) => panic!("read failed"),
            Poll::Pending => panic!("polled the body again after its end"),
        }
    }
}
