//! Which endpoint a call or stream takes: the [`Balance`] policies and the pick itself.
//! Ejection is not decided here: a node is a candidate while its last health check said
//! SERVING and its circuit breaker admits a call (`endpoint`); the policy only chooses
//! among the candidates.

use std::{
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rand::Rng as _;
use tonic::Status;

use crate::{
    endpoint::{Lease, Node},
    Client,
};

/// How calls and streams are spread over the endpoints that are up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each call goes to the next endpoint in turn (the default).
    #[default]
    RoundRobin,
    /// Everything goes to the first endpoint in list order that is up; when it is
    /// ejected, to the next one; and back to the first once it is up again. Unlike gRPC's
    /// `pick_first`, which stays on whichever endpoint it is connected to, the list is a
    /// priority order here (a primary and its stand-bys): the health checks tell when the
    /// primary is back. Open streams stay where they are.
    PickFirst,
    /// Power of two choices over in-flight work: two endpoints drawn at random, the one
    /// with fewer unary calls in flight plus open streams wins. A slow endpoint piles up
    /// calls and so gets fewer new ones.
    LeastPending,
}

impl Balance {
    /// The policy's name as flags and configuration spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::PickFirst => "pick_first",
            Balance::LeastPending => "least_pending",
        }
    }

    /// Every policy's name.
    pub const NAMES: [&'static str; 3] = ["round_robin", "pick_first", "least_pending"];
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Balance, String> {
        match s {
            "round_robin" => Ok(Balance::RoundRobin),
            "pick_first" => Ok(Balance::PickFirst),
            "least_pending" => Ok(Balance::LeastPending),
            other => Err(format!(
                "unknown balancing policy {other:?}: expected one of {}",
                Balance::NAMES.join(", ")
            )),
        }
    }
}

/// The index of the node `policy` chooses among those `ok` accepts, if any. `next` is
/// the round-robin counter.
fn choose(
    policy: Balance,
    nodes: &[Arc<Node>],
    next: &AtomicUsize,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    let n = nodes.len();
    match policy {
        Balance::RoundRobin => {
            let start = next.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
        }
        Balance::PickFirst => (0..n).find(|&i| ok(i)),
        Balance::LeastPending => {
            let candidates: Vec<usize> = (0..n).filter(|&i| ok(i)).collect();
            match candidates.len() {
                0 => None,
                1 => Some(candidates[0]),
                len => {
                    let mut rng = rand::thread_rng();
                    let a = rng.gen_range(0..len);
                    let mut b = rng.gen_range(0..len - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (a, b) = (candidates[a], candidates[b]);
                    Some(if nodes[b].in_flight() < nodes[a].in_flight() {
                        b
                    } else {
                        a
                    })
                }
            }
        }
    }
}

/// The node for the next call under `policy`: among healthy nodes whose breaker admits a
/// call; if there is none, among those whose breaker admits one (a wrong "all down"
/// verdict of the health checks must not stop traffic); if there is none either, any.
/// `None` only when there are no nodes at all.
pub(crate) fn pick(policy: Balance, nodes: &[Arc<Node>], next: &AtomicUsize) -> Option<Lease> {
    if nodes.is_empty() {
        return None;
    }
    for healthy_only in [true, false] {
        // `available` does not take a half-open breaker's probe; `admit` on the chosen
        // node does, and may lose that race to another call: then choose again.
        let mut lost = vec![false; nodes.len()];
        while let Some(i) = choose(policy, nodes, next, |i| {
            !lost[i] && (!healthy_only || nodes[i].healthy()) && nodes[i].available()
        }) {
            if nodes[i].admit() {
                return Some(Lease::new(nodes[i].clone()));
            }
            lost[i] = true;
        }
    }
    let i = choose(policy, nodes, next, |_| true)?;
    Some(Lease::new(nodes[i].clone()))
}

impl Client {
    /// The endpoint for the next call or stream under the configured policy, counted in
    /// flight until the lease drops; UNAVAILABLE when there is no endpoint at all (every
    /// name resolved to nothing so far).
    pub(crate) fn pick(&self) -> Result<Lease, Status> {
        let nodes = self.inner.pool.nodes();
        pick(self.inner.cfg.balance, &nodes, &self.inner.next).ok_or_else(|| {
            self.inner.pool.kick_all();
            Status::unavailable(format!("no endpoint to call: {}", self.inner.pool.why_empty()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use tonic::transport::Endpoint;

    use super::*;
    use crate::ClientConfig;

    fn nodes(n: usize) -> Vec<Arc<Node>> {
        (0..n)
            .map(|i| {
                let ch = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
                Arc::new(Node::new(format!("http://n{i}"), ch))
            })
            .collect()
    }

    fn shares(policy: Balance, nodes: &[Arc<Node>], calls: usize) -> BTreeMap<usize, usize> {
        let next = AtomicUsize::new(0);
        let mut out = BTreeMap::new();
        for _ in 0..calls {
            let lease = pick(policy, nodes, &next).expect("a node");
            let i = nodes.iter().position(|n| std::ptr::eq(&**n, &*lease)).unwrap();
            *out.entry(i).or_default() += 1;
        }
        out
    }

    #[test]
    fn policies_parse_from_their_names_and_print_them() {
        for name in Balance::NAMES {
            assert_eq!(name.parse::<Balance>().unwrap().to_string(), name);
        }
        let e = "fastest".parse::<Balance>().unwrap_err();
        assert!(e.contains("round_robin, pick_first, least_pending"), "{e}");
    }

    #[tokio::test]
    async fn round_robin_takes_turns_and_skips_an_unhealthy_node() {
        let ns = nodes(3);
        assert_eq!(
            shares(Balance::RoundRobin, &ns, 30),
            BTreeMap::from([(0, 10), (1, 10), (2, 10)])
        );
        ns[1].set_healthy(false);
        let s = shares(Balance::RoundRobin, &ns, 30);
        assert_eq!(s.get(&1), None, "{s:?}");
    }

    #[tokio::test]
    async fn pick_first_fails_over_in_list_order_and_comes_back() {
        let ns = nodes(3);
        assert_eq!(shares(Balance::PickFirst, &ns, 5), BTreeMap::from([(0, 5)]));
        ns[0].set_healthy(false);
        assert_eq!(shares(Balance::PickFirst, &ns, 5), BTreeMap::from([(1, 5)]));
        let mut cfg = ClientConfig::new(["http://x"]);
        cfg.breaker_failures = 1;
        cfg.breaker_cooldown = Duration::from_secs(60);
        ns[1].record(false, &cfg);
        assert_eq!(
            shares(Balance::PickFirst, &ns, 5),
            BTreeMap::from([(2, 5)]),
            "an open breaker ejects too"
        );
        ns[0].set_healthy(true);
        assert_eq!(
            shares(Balance::PickFirst, &ns, 5),
            BTreeMap::from([(0, 5)]),
            "back to the first"
        );
    }

    #[tokio::test]
    async fn least_pending_avoids_the_node_with_most_in_flight() {
        let ns = nodes(3);
        // Node 0 is slow: 50 calls still pending on it.
        let held: Vec<Lease> = (0..50).map(|_| Lease::new(ns[0].clone())).collect();
        let next = AtomicUsize::new(0);
        let mut to_slow = 0;
        for _ in 0..300 {
            // The fast nodes finish each call at once: the lease drops here.
            let lease = pick(Balance::LeastPending, &ns, &next).unwrap();
            to_slow += usize::from(std::ptr::eq(&*lease, &*ns[0]));
        }
        assert_eq!(to_slow, 0, "never chosen over a node with fewer in flight");
        drop(held);
        // Counting is live: with equal loads both halves of a pair win equally often.
        let s = shares(Balance::LeastPending, &ns, 3000);
        assert!(s.values().all(|&c| c > 800), "{s:?}");
    }

    #[tokio::test]
    async fn when_every_node_is_ejected_calls_still_go_somewhere() {
        let ns = nodes(2);
        for n in &ns {
            n.set_healthy(false);
        }
        for policy in [Balance::RoundRobin, Balance::PickFirst, Balance::LeastPending] {
            assert!(pick(policy, &ns, &AtomicUsize::new(0)).is_some(), "{policy}");
        }
        assert!(pick(Balance::RoundRobin, &[], &AtomicUsize::new(0)).is_none());
    }
}
