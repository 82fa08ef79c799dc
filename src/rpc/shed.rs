//! Load shedding of unary calls: beyond `--max-concurrent-unary` in flight, a call is
//! answered UNAVAILABLE at once instead of queueing. Streams are never shed.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The unary calls in flight, up to a limit.
pub(super) struct UnaryGate {
    slots: Arc<Semaphore>,
    max: usize,
}

impl UnaryGate {
    pub(super) fn new(max: usize) -> UnaryGate {
        UnaryGate {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot, held until the call finishes, or the UNAVAILABLE that sheds the call.
    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::unavailable(format!(
                "server overloaded: {} unary calls in flight (--max-concurrent-unary); retry with backoff",
                self.max
            ))
        })
    }
}
