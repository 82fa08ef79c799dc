//! The answer side of a call: the response future (the handler raced against a unary
//! deadline), and the response body that counts sent messages, reads the final status
//! and finishes the call when it ends or is dropped.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{body::Body as TonicBody, Status};
use tracing::Span;

use super::{
    deadline::Deadline, finish::Finish, metrics::Frames, request_id::REQUEST_ID_H, status::status_in, Shared,
};

/// What a running call needs once it is answered.
pub(super) struct Pending {
    pub(super) finish: Finish,
    pub(super) request_id: HeaderValue,
    pub(super) deadline: Option<Deadline>,
    pub(super) shared: Arc<Shared>,
}

pin_project! {
    /// The response future of [`Rpc`](super::Rpc): the inner call, raced against the
    /// unary deadline when there is one (no allocation, no timer otherwise).
    pub struct RpcFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        ready: Option<Response<RpcBody>>,
        pending: Option<Pending>,
        span: Span,
    }
}

impl<F> RpcFuture<F> {
    /// A call answered by this layer without running the handler.
    pub(super) fn answered(res: Response<RpcBody>, span: Span) -> RpcFuture<F> {
        RpcFuture {
            inner: None,
            deadline: None,
            ready: Some(res),
            pending: None,
            span,
        }
    }

    /// The handler's `call`, timed by `deadline` if it has one.
    pub(super) fn running(
        call: F,
        deadline: Option<tokio::time::Sleep>,
        pending: Pending,
        span: Span,
    ) -> RpcFuture<F> {
        RpcFuture {
            inner: Some(call),
            deadline,
            ready: None,
            pending: Some(pending),
            span,
        }
    }
}

impl<F, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<Response<TonicBody>, E>>,
{
    type Output = Result<Response<RpcBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(res) = this.ready.take() {
            return Poll::Ready(Ok(res));
        }
        let _in = this.span.enter();
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            if let Poll::Ready(res) = inner.poll(cx) {
                this.inner.set(None);
                let res = res?;
                let Some(Pending {
                    finish,
                    request_id,
                    shared,
                    ..
                }) = this.pending.take()
                else {
                    return Poll::Pending;
                };
                return Poll::Ready(Ok(wrap(res, request_id, finish, &shared)));
            }
        }
        if let Some(sleep) = this.deadline.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                // Dropping the handler here cancels the store work it has not done yet.
                this.inner.set(None);
                if let Some(Pending {
                    finish,
                    request_id,
                    deadline: Some(deadline),
                    shared,
                }) = this.pending.take()
                {
                    return Poll::Ready(Ok(respond(deadline.exceeded(), request_id, finish, &shared)));
                }
            }
        }
        Poll::Pending
    }
}

/// The response of a call, answered by the server with `status` (no handler response).
pub(super) fn respond(
    status: Status,
    request_id: HeaderValue,
    finish: Finish,
    shared: &Arc<Shared>,
) -> Response<RpcBody> {
    wrap(status.into_http(), request_id, finish, shared)
}

/// Tags a response with the request id, reads (and if need be rewrites) a status already
/// in its headers, and wraps its body to count messages and finish the call.
fn wrap(
    res: Response<TonicBody>,
    request_id: HeaderValue,
    mut finish: Finish,
    shared: &Arc<Shared>,
) -> Response<RpcBody> {
    let (mut parts, inner) = res.into_parts();
    finish.code = status_in(&mut parts.headers, &shared.opts);
    parts.headers.insert(REQUEST_ID_H.clone(), request_id);
    Response::from_parts(
        parts,
        RpcBody {
            inner,
            frames: Frames::default(),
            opts: shared.clone(),
            finish: Some(finish),
        },
    )
}

pin_project! {
    /// A response body that counts messages, reads (and if need be rewrites) the status in
    /// the trailers, and finishes the call when it ends or is dropped.
    pub struct RpcBody {
        #[pin]
        inner: TonicBody,
        frames: Frames,
        opts: Arc<Shared>,
        finish: Option<Finish>,
    }
}

impl Body for RpcBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = this.frames.feed(data);
                    if let (Some(f), true) = (this.finish.as_ref(), n > 0) {
                        f.info.metrics.sent.increment(n);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(f) = this.finish.as_mut() {
                            f.code = status_in(&mut trailers, &this.opts.opts);
                        }
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Err(other) => Poll::Ready(Some(Ok(other))),
                }
            }
            Poll::Ready(None) => {
                this.finish.take();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(f) = this.finish.as_mut() {
                    f.code = Some(status.code());
                }
                Poll::Ready(Some(Err(status)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
