//! How server streams end at shutdown: every response stream is wrapped by
//! [`end_on_shutdown`], which ends it with UNAVAILABLE the moment shutdown begins, ahead of
//! anything still queued, so a client never mistakes a cut stream for a complete one and
//! resumes elsewhere.

use std::pin::Pin;

use futures_util::{stream, Stream, StreamExt};
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
