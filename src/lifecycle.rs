//! How server streams end at shutdown: every response stream is wrapped by
//! [`end_on_shutdown`] (or, for the hub's stream actors, built by [`actor_stream`], which
//! does the same in the one `select` it needs anyway), ending it with UNAVAILABLE the
//! moment shutdown begins, ahead of anything still queued, so a client never mistakes a
//! cut stream for a complete one and resumes elsewhere.

use std::pin::Pin;

use futures_util::{stream, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// A boxed response stream, the type every streaming handler returns.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The status open streams end with at shutdown.
pub fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; reconnect to resume")
}

/// `inner`, ended with [`shutting_down`] as soon as `token` is cancelled.
pub fn end_on_shutdown<T: Send + 'static>(
    inner: impl Stream<Item = Result<T, Status>> + Send + 'static,
    token: CancellationToken,
) -> ResponseStream<T> {
    Box::pin(stream::unfold(
        (Box::pin(inner), token, false),
        |(mut s, token, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => Some((Err(shutting_down()), (s, token, true))),
                item = s.next() => item.map(|i| (i, (s, token, false))),
            }
        },
    ))
}

/// A stream actor's outbox as a response stream that always ends with a status: the actor's terminal
/// one (ABORTED, INVALID_ARGUMENT...), UNAVAILABLE at shutdown (ahead of anything still
/// queued), or UNAVAILABLE if the actor died without one. Never a silent clean end.
/// Items are converted to the wire by `to_wire` here, on the transport's task.
pub(crate) fn actor_stream<I: Send + 'static, T: Send + 'static>(
    rx: mpsc::Receiver<I>,
    to_wire: fn(I) -> Result<T, Status>,
    terminal: oneshot::Receiver<Status>,
    shutdown: CancellationToken,
) -> ResponseStream<T> {
    let lost = || Status::unavailable("the stream ended unexpectedly; reconnect to resume");
    Box::pin(stream::unfold(
        Some((rx, terminal, shutdown)),
        move |st| async move {
            let (mut rx, mut term, shutdown) = st?;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => Some((Err(shutting_down()), None)),
                t = &mut term => Some((Err(t.unwrap_or_else(|_| lost())), None)),
                item = rx.recv() => match item.map(to_wire) {
                    Some(Ok(v)) => Some((Ok(v), Some((rx, term, shutdown)))),
                    Some(Err(s)) => Some((Err(s), None)),
                    None => Some((Err(term.await.unwrap_or_else(|_| lost())), None)),
                },
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_a_backed_up_stream_with_unavailable() {
        let token = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        for i in 0..4 {
            tx.send(Ok(i)).await.unwrap();
        }
        let mut s = end_on_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), token.clone());
        assert_eq!(s.next().await.unwrap().unwrap(), 0);
        token.cancel();
        let end = s.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(s.next().await.is_none());
    }
}
