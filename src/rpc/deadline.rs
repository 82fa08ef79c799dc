//! Deadlines of unary calls: the client's `grpc-timeout` or the server's
//! `--unary-timeout`, whichever comes first. Streams are never timed out by the server.
//! The race against the handler is run by [`super::response::RpcFuture`].

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use tonic::Status;

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The deadline that applies to a unary call, and whose it is.
#[derive(Clone, Copy)]
pub(super) struct Deadline {
    after: Duration,
    limit: Limit,
}

/// Which deadline applies to a unary call.
#[derive(Clone, Copy)]
enum Limit {
    Client,
    Server,
}

impl Deadline {
    /// The earlier of the client's `grpc-timeout` in `headers` and the server's cap.
    pub(super) fn of(headers: &HeaderMap, server: Option<Duration>) -> Option<Deadline> {
        let (after, limit) = match (grpc_timeout(headers), server) {
            (Some(c), Some(s)) if s < c => (s, Limit::Server),
            (Some(c), _) => (c, Limit::Client),
            (None, Some(s)) => (s, Limit::Server),
            (None, None) => return None,
        };
        Some(Deadline { after, limit })
    }

    /// The timer of a call that started at `started`.
    pub(super) fn timer(&self, started: Instant) -> Option<tokio::time::Sleep> {
        started
            .checked_add(self.after - self.lead())
            .map(|at| tokio::time::sleep_until(at.into()))
    }

    /// The client's deadline is answered a little early (2 ms, or a quarter of a short
    /// deadline): tonic runs its own timer on `grpc-timeout` outside this layer and would
    /// end the call with CANCELLED at the same instant; answering first gives the client
    /// the right code, and gives it before the client's own timer fires.
    fn lead(&self) -> Duration {
        match self.limit {
            Limit::Client => (self.after / 4).min(Duration::from_millis(2)),
            Limit::Server => Duration::ZERO,
        }
    }

    /// The status a call that ran past this deadline ends with.
    pub(super) fn exceeded(&self) -> Status {
        let after = self.after;
        Status::deadline_exceeded(match self.limit {
            Limit::Client => format!("the client's deadline of {after:?} (grpc-timeout) passed"),
            Limit::Server => {
                format!("the call ran past the server's --unary-timeout of {after:?}")
            }
        })
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("100m", Some(Duration::from_millis(100))),
            ("2S", Some(Duration::from_secs(2))),
            ("1H", Some(Duration::from_secs(3600))),
            ("5u", Some(Duration::from_micros(5))),
            ("123456789m", None),
            ("10x", None),
            ("m", None),
        ] {
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(grpc_timeout(&h), d, "{v}");
        }
    }
}
