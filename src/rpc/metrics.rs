//! The grpc-ecosystem server metrics: their names and buckets, one method's pre-registered
//! handles (so the hot path does no label hashing), and the counting of messages in
//! request and response bodies by their gRPC frame prefixes. When a call's count and
//! duration are recorded is [`super::finish`]'s business.

use std::{
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use ::metrics::{Counter, Histogram};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{body::Body as TonicBody, Code, Status};

/// Calls started, by service, method and type.
pub const STARTED: &str = "grpc_server_started_total";
/// Calls finished, by service, method, type and code.
pub const HANDLED: &str = "grpc_server_handled_total";
/// Call duration in seconds, from headers received to the status sent.
pub const HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Request messages received.
pub const MSG_RECEIVED: &str = "grpc_server_msg_received_total";
/// Response messages sent.
pub const MSG_SENT: &str = "grpc_server_msg_sent_total";
/// Buckets of [`HANDLING_SECONDS`]: 100 µs to 60 s (streams land in the top buckets).
pub const HANDLING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// grpc-go's names for the codes, as the grpc-ecosystem metrics label them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The `grpc_code` of a call that ended without a status because the client went away
/// (dropped its stream or call, reset it, or lost its connection). Not a grpc code: the
/// server did not fail, so error ratios leave it out, unlike `Canceled` (a CANCELLED
/// status the server sent).
pub const CLIENT_CANCELED: &str = "ClientCanceled";

/// How a call ended, as `grpc_code` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The server sent this status.
    Status(Code),
    /// No status was sent: the client went away first ([`CLIENT_CANCELED`]).
    ClientCanceled,
}

impl Outcome {
    /// The `grpc_code` label value.
    pub(super) fn name(self) -> &'static str {
        match self {
            Outcome::Status(code) => code_name(code),
            Outcome::ClientCanceled => CLIENT_CANCELED,
        }
    }

    /// A failure of the server itself, logged at WARN.
    pub(super) fn is_server_failure(self) -> bool {
        matches!(
            self,
            Outcome::Status(Code::Internal | Code::Unknown | Code::DataLoss)
        )
    }

    /// Index into [`MethodMetrics`]' `handled` counters.
    fn index(self) -> usize {
        match self {
            Outcome::Status(code) => code as usize,
            Outcome::ClientCanceled => 17,
        }
    }
}

/// Describes the metrics to the installed recorder (help texts and units).
pub(super) fn describe() {
    use ::metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(STARTED, "RPCs started on the server.");
    describe_counter!(
        HANDLED,
        "RPCs completed on the server, by status code (ClientCanceled: the client went away first)."
    );
    describe_histogram!(
        HANDLING_SECONDS,
        Unit::Seconds,
        "RPC duration until the status was sent."
    );
    describe_counter!(MSG_RECEIVED, "Request messages received.");
    describe_counter!(MSG_SENT, "Response messages sent.");
}

/// One method's metric handles, registered once with its labels.
pub(super) struct MethodMetrics {
    service: &'static str,
    method: &'static str,
    kind: &'static str,
    pub(super) started: Counter,
    pub(super) received: Counter,
    pub(super) sent: Counter,
    pub(super) seconds: Histogram,
    handled: [OnceLock<Counter>; 18],
}

impl MethodMetrics {
    pub(super) fn new(service: &'static str, method: &'static str, kind: &'static str) -> MethodMetrics {
        let labels = [
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_type", kind),
        ];
        MethodMetrics {
            service,
            method,
            kind,
            started: ::metrics::counter!(STARTED, &labels),
            received: ::metrics::counter!(MSG_RECEIVED, &labels),
            sent: ::metrics::counter!(MSG_SENT, &labels),
            seconds: ::metrics::histogram!(HANDLING_SECONDS, &labels),
            handled: Default::default(),
        }
    }

    /// The `handled` counter of `outcome`, registered the first time it is seen.
    pub(super) fn handled(&self, outcome: Outcome) -> &Counter {
        self.handled[outcome.index()].get_or_init(|| {
            ::metrics::counter!(HANDLED,
                "grpc_service" => self.service,
                "grpc_method" => self.method,
                "grpc_type" => self.kind,
                "grpc_code" => outcome.name())
        })
    }
}

/// Counts gRPC messages in a byte stream by their 5-byte prefixes (flag, length).
#[derive(Default)]
pub(super) struct Frames {
    head: [u8; 5],
    have: usize,
    skip: usize,
}

impl Frames {
    /// Messages whose prefix completed in `buf`.
    pub(super) fn feed(&mut self, mut buf: &[u8]) -> u64 {
        let mut n = 0;
        while !buf.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(buf.len());
                self.skip -= k;
                buf = &buf[k..];
                continue;
            }
            let k = (5 - self.have).min(buf.len());
            self.head[self.have..self.have + k].copy_from_slice(&buf[..k]);
            self.have += k;
            buf = &buf[k..];
            if self.have == 5 {
                n += 1;
                self.have = 0;
                let h = self.head;
                self.skip = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
            }
        }
        n
    }
}

pin_project! {
    /// A request body that counts the messages it carries.
    pub(super) struct Inbound {
        #[pin]
        inner: TonicBody,
        frames: Frames,
        received: Counter,
    }
}

impl Inbound {
    /// `inner`, counting its messages on `received`.
    pub(super) fn new(inner: TonicBody, received: Counter) -> Inbound {
        Inbound {
            inner,
            frames: Frames::default(),
            received,
        }
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = this.frames.feed(data);
                if n > 0 {
                    this.received.increment(n);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_chunk_boundaries() {
        let msg = |len: u32| {
            let mut v = vec![0u8];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(7u8, len as usize));
            v
        };
        let mut all = msg(3);
        all.extend(msg(0));
        all.extend(msg(300));
        let mut f = Frames::default();
        let mut n = 0;
        for chunk in all.chunks(4) {
            n += f.feed(chunk);
        }
        assert_eq!(n, 3);
        assert_eq!(Frames::default().feed(&all), 3);
    }

    #[test]
    fn a_client_going_away_has_its_own_outcome_and_is_no_server_failure() {
        let gone = Outcome::ClientCanceled;
        assert_eq!(gone.name(), "ClientCanceled");
        assert_ne!(gone.index(), Outcome::Status(Code::Cancelled).index());
        assert_eq!(Outcome::Status(Code::Cancelled).name(), "Canceled");
        assert!(!gone.is_server_failure());
        assert!(Outcome::Status(Code::Internal).is_server_failure());
        assert!((0..17).all(|c| Outcome::Status(Code::from_i32(c)).index() < 17));
    }
}
