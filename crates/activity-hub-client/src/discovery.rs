//! Which endpoints exist: the configured targets (static URIs and `dns:` names), the
//! [`Resolver`] that turns a name into addresses, and the pool of nodes that follows it.
//!
//! A `dns:///NAME:PORT` target (or `dns://NAME:PORT`) becomes one node per address the
//! name resolves to, each with a channel pinned to its address (while TLS and the
//! `:authority` still use the name) and a health checker of its own. The name is resolved
//! again every [`ClientConfig::dns_refresh`] (the system resolver does not tell the
//! records' TTL, so the interval stands in for it), and soon after one of its nodes is
//! ejected (a failed health check, an opened breaker) or a resolution failed, at most once
//! a second. Addresses that stay keep their node (channel, breaker, counters); new ones
//! get a node; nodes whose address is gone leave the pool and their health checkers stop
//! (calls already on them finish). A failed or empty resolution keeps the last addresses.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, RwLock, Weak},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{client::Inner, config::backoff, endpoint::Node, ClientConfig, ClientError};

/// What a [`Resolver`] returns: the addresses of a name, in preference order.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a `dns:` target's name and port into addresses. The default is the system's
/// resolver (`getaddrinfo`, through tokio); a test or an application with its own service
/// discovery passes a function to [`ClientConfig::with_resolver`].
#[derive(Clone)]
pub struct Resolver(Arc<ResolveFn>);

type ResolveFn = dyn Fn(&str, u16) -> Resolution + Send + Sync;

impl Resolver {
    /// The system resolver: A and AAAA records (and /etc/hosts), as `getaddrinfo` sees them.
    pub fn system() -> Resolver {
        Resolver::new(|host, port| {
            let host = host.to_string();
            Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
        })
    }

    /// A resolver that calls `f(name, port)`.
    pub fn new(f: impl Fn(&str, u16) -> Resolution + Send + Sync + 'static) -> Resolver {
        Resolver(Arc::new(f))
    }
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::system()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// One configured endpoint.
enum Target {
    Static,
    Dns { host: String, port: u16 },
}

/// Parses a `dns:` target: `dns:///NAME:PORT` (gRPC's form, with the DNS server left to
/// the system) or `dns://NAME:PORT`; `None` for anything else (a URI).
fn parse_dns(spec: &str) -> Option<Result<(String, u16), String>> {
    let rest = spec.strip_prefix("dns:")?;
    let Some(rest) = rest.strip_prefix("//") else {
        return Some(Err(format!("{spec}: expected dns:///NAME:PORT")));
    };
    let name = match rest.strip_prefix('/') {
        Some(name) => name,
        None if rest.contains('/') => {
            return Some(Err(format!(
                "{spec}: naming a DNS server (dns://SERVER/NAME) is not supported; use dns:///NAME:PORT"
            )))
        }
        None => rest,
    };
    let (host, port) = match name.strip_prefix('[') {
        // An IPv6 literal: [::1]:PORT.
        Some(v6) => v6.split_once("]:").unwrap_or_default(),
        None => name
            .rsplit_once(':')
            .filter(|(host, _)| !host.contains(':'))
            .unwrap_or_default(),
    };
    if host.is_empty() {
        return Some(Err(format!(
            "{spec}: expected dns:///NAME:PORT (the port is required)"
        )));
    }
    Some(
        port.parse()
            .map(|port| (host.to_string(), port))
            .map_err(|_| format!("{spec}: bad port {port:?}")),
    )
}

/// The channel settings every endpoint shares, for `uri`.
fn endpoint(cfg: &ClientConfig, uri: &str) -> Result<Endpoint, ClientError> {
    let mut ep = Endpoint::from_shared(uri.to_string())
        .map_err(|e| ClientError::Config(format!("endpoint {uri}: {e}")))?
        .connect_timeout(cfg.connect_timeout)
        .http2_keep_alive_interval(cfg.keepalive)
        .keep_alive_timeout(cfg.keepalive)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(tls) = &cfg.tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|e| ClientError::Config(format!("endpoint {uri}: TLS: {e}")))?;
    }
    Ok(ep)
}

/// A channel to `addr` that otherwise behaves as one to `http(s)://host:port`: TLS checks
/// the certificate against the name, and requests carry it as their authority.
fn pinned_channel(
    cfg: &ClientConfig,
    host: &str,
    port: u16,
    addr: SocketAddr,
) -> Result<Channel, ClientError> {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let connect = tower::service_fn(move |_: Uri| async move {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok::<_, io::Error>(TokioIo::new(stream))
    });
    Ok(endpoint(cfg, &format!("{scheme}://{host}:{port}"))?.connect_with_connector_lazy(connect))
}

/// One target's nodes and its resolution state.
struct Group {
    spec: String,
    target: Target,
    nodes: Vec<Arc<Node>>,
    /// Why the last resolution gave nothing, if it did.
    error: Option<String>,
    /// Wakes the target's resolver early (an ejected node, a pick that found nothing).
    kick: Arc<Notify>,
}

/// Every node of the client, in target order (and resolution order within a target).
pub(crate) struct Pool {
    groups: Mutex<Vec<Group>>,
    /// What calls pick from: rebuilt whenever a group changes.
    snapshot: RwLock<Arc<Vec<Arc<Node>>>>,
}

impl Pool {
    /// The configured targets; static ones get their node now (connected lazily), DNS
    /// ones when [`resolve`] first succeeds.
    pub(crate) fn new(cfg: &ClientConfig, stop: &CancellationToken) -> Result<Pool, ClientError> {
        let mut groups = Vec::new();
        for spec in &cfg.endpoints {
            let (target, nodes, error) = match parse_dns(spec) {
                Some(Ok((host, port))) => (
                    Target::Dns { host, port },
                    Vec::new(),
                    Some("not resolved yet".into()),
                ),
                Some(Err(e)) => return Err(ClientError::Config(e)),
                None => {
                    let node = Node::new(spec.clone(), endpoint(cfg, spec)?.connect_lazy()).stopped_by(stop);
                    (Target::Static, vec![Arc::new(node)], None)
                }
            };
            groups.push(Group {
                spec: spec.clone(),
                target,
                nodes,
                error,
                kick: Arc::new(Notify::new()),
            });
        }
        let pool = Pool {
            groups: Mutex::new(groups),
            snapshot: RwLock::default(),
        };
        pool.publish(&pool.lock());
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, groups: &[Group]) {
        let all = groups.iter().flat_map(|g| g.nodes.iter().cloned()).collect();
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(all);
    }

    /// The nodes now.
    pub(crate) fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The indices of the DNS targets.
    pub(crate) fn dns_targets(&self) -> Vec<usize> {
        let groups = self.lock();
        (0..groups.len())
            .filter(|&t| matches!(groups[t].target, Target::Dns { .. }))
            .collect()
    }

    /// Asks every DNS target to resolve again soon.
    pub(crate) fn kick_all(&self) {
        for g in self.lock().iter() {
            g.kick.notify_one();
        }
    }

    /// Why there is no node: each target's last resolution error.
    pub(crate) fn why_empty(&self) -> String {
        let groups = self.lock();
        let why: Vec<String> = groups
            .iter()
            .map(|g| format!("{} ({})", g.spec, g.error.as_deref().unwrap_or("no addresses")))
            .collect();
        why.join(", ")
    }

    /// The DNS targets that resolve to nothing so far, and why.
    pub(crate) fn unresolved(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|g| g.nodes.is_empty())
            .map(|g| (g.spec.clone(), g.error.clone().unwrap_or_default()))
            .collect()
    }

    /// Replaces DNS target `t`'s addresses with `addrs`: kept addresses keep their node,
    /// new ones get a node (returned, for the caller to start their health checks),
    /// vanished ones are stopped. An empty `addrs` is a failure and keeps the old ones.
    fn update(
        &self,
        cfg: &ClientConfig,
        stop: &CancellationToken,
        t: usize,
        resolved: io::Result<Vec<SocketAddr>>,
    ) -> Vec<Arc<Node>> {
        let mut groups = self.lock();
        let g = &mut groups[t];
        let Target::Dns { host, port } = &g.target else {
            return Vec::new();
        };
        let mut addrs = match resolved {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) => {
                g.error = Some("the name has no addresses".into());
                return Vec::new();
            }
            Err(e) => {
                g.error = Some(format!("resolution failed: {e}"));
                return Vec::new();
            }
        };
        g.error = None;
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(*a));
        let mut added = Vec::new();
        let mut nodes = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(n) = g.nodes.iter().find(|n| n.addr == Some(addr)) {
                nodes.push(n.clone());
                continue;
            }
            let channel = match pinned_channel(cfg, host, *port, addr) {
                Ok(c) => c,
                Err(e) => {
                    g.error = Some(e.to_string());
                    continue;
                }
            };
            let uri = format!("{}://{addr}", if cfg.tls.is_some() { "https" } else { "http" });
            let node = Node::new(uri, channel).resolved(&g.spec, addr, stop.child_token(), g.kick.clone());
            let node = Arc::new(node);
            added.push(node.clone());
            nodes.push(node);
        }
        for gone in g
            .nodes
            .iter()
            .filter(|n| !nodes.iter().any(|k| Arc::ptr_eq(k, n)))
        {
            gone.stop.cancel();
        }
        g.nodes = nodes;
        self.publish(&groups);
        added
    }
}

/// Resolves DNS target `t` once and updates the pool; true if it gave addresses.
pub(crate) async fn resolve(inner: &Inner, t: usize) -> bool {
    let (host, port) = match &inner.pool.lock()[t].target {
        Target::Dns { host, port } => (host.clone(), *port),
        Target::Static => return true,
    };
    let lookup = inner.cfg.resolver.0(&host, port);
    let resolved = match tokio::time::timeout(inner.cfg.deadline, lookup).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    };
    let ok = matches!(&resolved, Ok(a) if !a.is_empty());
    for node in inner.pool.update(&inner.cfg, &inner.stop, t, resolved) {
        node.spawn_health_check(inner.cfg.health_interval);
    }
    ok
}

/// Re-resolution after failures waits at least this long after the previous one.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Keeps DNS target `t` current until the client is dropped: every `dns_refresh`, and
/// soon after a kick or a failed resolution (with backoff).
pub(crate) fn spawn_resolver(inner: &Arc<Inner>, t: usize) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let stop = inner.stop.clone();
    let kick = inner.pool.lock()[t].kick.clone();
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut last = Instant::now();
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let refresh = inner.cfg.dns_refresh;
            let gap = MIN_GAP.min(refresh);
            let wait = match failures {
                0 => refresh,
                n => backoff(&inner.cfg, n).clamp(gap, refresh),
            };
            // No strong reference while waiting, so dropping the client ends this.
            drop(inner);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(last + wait) => {}
                _ = kick.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(last + gap) => {}
                    }
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            failures = if resolve(&inner, t).await { 0 } else { failures + 1 };
            last = Instant::now();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets_parse_in_both_spellings() {
        let ok = |s: &str| parse_dns(s).expect("a dns target").expect("valid");
        assert_eq!(ok("dns:///hub.internal:50051"), ("hub.internal".into(), 50051));
        assert_eq!(ok("dns://hub.internal:50051"), ("hub.internal".into(), 50051));
        assert_eq!(ok("dns:///localhost:1"), ("localhost".into(), 1));
        assert_eq!(ok("dns:///[::1]:7"), ("::1".into(), 7));
        assert!(parse_dns("http://hub:1").is_none(), "a URI is not a dns target");
        for bad in [
            "dns:///hub",
            "dns:///hub:x",
            "dns://8.8.8.8/hub:1",
            "dns:hub:1",
            "dns:///:1",
        ] {
            let e = parse_dns(bad).expect("a dns target").unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn an_update_keeps_known_addresses_adds_new_ones_and_stops_vanished_ones() {
        let mut cfg = ClientConfig::new(["http://10.0.0.9:1", "dns:///hub:1"]);
        cfg.resolver = Resolver::new(|_, _| Box::pin(async { Ok(vec![]) }));
        let stop = CancellationToken::new();
        let pool = Pool::new(&cfg, &stop).unwrap();
        assert_eq!(pool.dns_targets(), vec![1]);
        assert_eq!(
            pool.nodes().len(),
            1,
            "the static node; the name is not resolved yet"
        );
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let c: SocketAddr = "127.0.0.3:1".parse().unwrap();

        let added = pool.update(&cfg, &stop, 1, Ok(vec![a, b, a]));
        assert_eq!(added.len(), 2, "duplicates collapse");
        let first = pool.nodes();
        let uris: Vec<&str> = first.iter().map(|n| n.uri.as_str()).collect();
        assert_eq!(
            uris,
            ["http://10.0.0.9:1", "http://127.0.0.1:1", "http://127.0.0.2:1"]
        );
        assert_eq!(first[1].target, "dns:///hub:1");

        let added = pool.update(&cfg, &stop, 1, Ok(vec![c, b]));
        assert_eq!(added.len(), 1);
        let second = pool.nodes();
        let uris: Vec<&str> = second.iter().map(|n| n.uri.as_str()).collect();
        assert_eq!(
            uris,
            ["http://10.0.0.9:1", "http://127.0.0.3:1", "http://127.0.0.2:1"]
        );
        assert!(Arc::ptr_eq(&first[2], &second[2]), "b kept its node");
        assert!(
            first[1].stop.is_cancelled(),
            "a's node stopped (its health checker ends)"
        );
        assert!(!second[2].stop.is_cancelled());

        assert!(pool.update(&cfg, &stop, 1, Ok(vec![])).is_empty());
        assert!(pool
            .update(&cfg, &stop, 1, Err(io::Error::other("SERVFAIL")))
            .is_empty());
        assert_eq!(
            pool.nodes().len(),
            3,
            "a failed resolution keeps the last addresses"
        );
        assert!(pool.why_empty().contains("SERVFAIL"), "{}", pool.why_empty());
        assert!(pool.unresolved().is_empty(), "it still has addresses");
        stop.cancel();
        assert!(
            second[2].stop.is_cancelled(),
            "dropping the client stops every node"
        );
    }
}
