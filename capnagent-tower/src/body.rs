//! Buffering a request body for the engine: one reader for every
//! protocol, bounded by the layer's body limit (checked against
//! `Content-Length` and the body's size hint before reading, and while
//! reading), without a copy when the body arrives as one chunk.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::request::Parts;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::BoxError;

/// The denial reason of a body over `limit`.
pub(crate) fn too_large(limit: usize) -> String {
    format!("request body exceeds the limit of {limit} bytes")
}

/// The denial reason of a body that could not be read.
pub(crate) fn unreadable(error: &BoxError) -> String {
    format!("request body could not be read: {error}")
}

/// Whether the head announces a body over `limit`.
pub(crate) fn announced_over(parts: &Parts, limit: usize) -> bool {
    content_length(parts).is_some_and(|len| len > limit as u64)
}

fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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
    pub(crate) fn new(body: B, limit: usize) -> ReadBody<B> {
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
