//! `/ready`: whether this process should be taking the node's DNS traffic. node-cache has no
//! readiness at all; here `/ready` answers 200 only when
//!
//! 1. every listener is bound and every shard serves (the ready phase is over),
//! 2. the node's rules are in place, when shardns manages them (`-setupiptables`),
//! 3. an upstream of the cluster zone has answered at least once since start-up, and
//! 4. the process is not stopping (from SIGTERM on, `/ready` is 503 while lameduck and the
//!    drain go on).
//!
//! The cluster zone is the first server block that forwards (in the stock node-local-dns
//! Corefile, the cluster domain's). Its upstreams are looked up again on every reload. Once
//! one has answered, condition 3 holds for good: an upstream outage later is served from the
//! cache and is the cluster DNS's to fix, not a reason to take the node's cache out.
//!
//! So that an idle node gets ready too, a `/ready` asked while no upstream has answered sends
//! one query for the zone's SOA to the block's own listener (at most one a second): it goes
//! the whole way a pod's query goes, through a shard and out to the upstream.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shardns_shard::{Config, ShardStats};

use super::sockets::reachable;

/// Least time between two queries sent to wake the cluster zone's upstream.
const NUDGE_INTERVAL: Duration = Duration::from_secs(1);

/// The state `/ready` reads; shared by the lifecycle, the reload thread and the http thread.
#[derive(Debug)]
pub(crate) struct Readiness {
    /// The ready phase is over: every shard serves.
    serving: AtomicBool,
    /// SIGTERM (or another stop) came.
    stopping: AtomicBool,
    /// Set while the rules are in place; `None` when shardns does not manage them.
    rules: Option<Arc<AtomicBool>>,
    /// Latched once an upstream of the cluster zone has answered.
    answered: AtomicBool,
    stats: Vec<Arc<ShardStats>>,
    cluster: Mutex<Cluster>,
}

/// The cluster zone of the running configuration.
#[derive(Debug, Default)]
struct Cluster {
    /// The zone, as written (`cluster.local.`); `None` when no block forwards.
    zone: Option<String>,
    /// The zone in wire form, for the nudge query.
    wire: Vec<u8>,
    /// Indices of its upstreams in [`Config::upstreams`], and their addresses.
    upstreams: Vec<(usize, SocketAddr)>,
    /// Where the block listens (an unspecified IP replaced by loopback).
    listener: Option<SocketAddr>,
    /// When the last nudge query went.
    nudged: Option<Instant>,
}

impl Cluster {
    fn of(config: &Config) -> Cluster {
        let Some((block, server)) = config
            .servers
            .iter()
            .enumerate()
            .find(|(_, server)| server.forward.is_some())
        else {
            return Cluster::default();
        };
        let forward = server.forward.as_ref().expect("found by forward");
        let upstreams = forward
            .upstreams
            .iter()
            .filter_map(|&index| Some((index, config.upstreams.get(index)?.addr)))
            .collect();
        let listener = config
            .listeners
            .iter()
            .find(|listener| listener.servers.contains(&block))
            .map(|listener| reachable(listener.addr));
        Cluster {
            zone: Some(server.zone_text.clone()),
            wire: server.zone.clone(),
            upstreams,
            listener,
            nudged: None,
        }
    }
}

impl Readiness {
    /// Readiness of `config` (as bound) over the shards' counters; `rules` is the node
    /// setup's "rules in place" flag when shardns manages rules.
    pub(crate) fn new(
        config: &Config,
        stats: Vec<Arc<ShardStats>>,
        rules: Option<Arc<AtomicBool>>,
    ) -> Readiness {
        Readiness {
            serving: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            rules,
            answered: AtomicBool::new(false),
            stats,
            cluster: Mutex::new(Cluster::of(config)),
        }
    }

    /// The ready phase is over.
    pub(crate) fn serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    /// The stop has begun.
    pub(crate) fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// A reload installed `config`: its cluster zone is looked up again.
    pub(crate) fn reconfigured(&self, config: &Config) {
        *self.cluster.lock().unwrap_or_else(PoisonError::into_inner) = Cluster::of(config);
    }

    /// `Ok` when ready, else the reason (the body of the 503).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("shutting down".to_string());
        }
        if !self.serving.load(Ordering::SeqCst) {
            return Err("starting: not every shard serves yet".to_string());
        }
        if let Some(rules) = &self.rules
            && !rules.load(Ordering::SeqCst)
        {
            return Err("the node's iptables rules are not in place".to_string());
        }
        if self.answered.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut cluster = self.cluster.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(zone) = cluster.zone.clone() else {
            return Ok(());
        };
        if self.any_answered(&cluster.upstreams) {
            self.answered.store(true, Ordering::SeqCst);
            return Ok(());
        }
        nudge(&mut cluster);
        let addresses: Vec<String> = cluster
            .upstreams
            .iter()
            .map(|(_, addr)| addr.to_string())
            .collect();
        Err(format!(
            "no upstream of zone {zone} has answered yet ({})",
            addresses.join(" ")
        ))
    }

    /// Whether any shard has counted a reply from one of `upstreams`.
    fn any_answered(&self, upstreams: &[(usize, SocketAddr)]) -> bool {
        upstreams.iter().any(|&(index, _)| {
            self.stats.iter().any(|shard| {
                shard.upstreams.get(index).is_some_and(|upstream| {
                    upstream
                        .durations
                        .iter()
                        .any(|histogram| histogram.count() > 0)
                })
            })
        })
    }
}

/// Sends the cluster zone's SOA query to its block's listener, unless one went less than
/// [`NUDGE_INTERVAL`] ago. The reply is not awaited (the upstream's counters tell); a
/// failure to send is only logged at debug, the next `/ready` tries again.
fn nudge(cluster: &mut Cluster) {
    let Some(listener) = cluster.listener else {
        return;
    };
    if cluster
        .nudged
        .is_some_and(|at| at.elapsed() < NUDGE_INTERVAL)
    {
        return;
    }
    cluster.nudged = Some(Instant::now());
    let local: SocketAddr = match listener {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let query = soa_query(rand::random::<u16>(), &cluster.wire);
    let sent = UdpSocket::bind(local).and_then(|socket| socket.send_to(&query, listener));
    if let Err(error) = sent {
        tracing::debug!(%error, %listener, "readiness query not sent");
    }
}

/// A recursive query for the SOA of `zone` (wire form), with ID `id`.
fn soa_query(id: u16, zone: &[u8]) -> Vec<u8> {
    let mut query = Vec::with_capacity(12 + zone.len() + 4);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(zone);
    query.extend_from_slice(&[0, 6, 0, 1]);
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let corefile = "example.:0 {\n bind 127.0.0.1\n}\n\
                        cluster.local.:0 {\n bind 127.0.0.1\n forward . 127.0.0.1:9 127.0.0.2:9\n}\n\
                        .:0 {\n bind 127.0.0.1\n forward . 127.0.0.3:9\n}\n";
        crate::corefile::build("Corefile", corefile).unwrap()
    }

    fn stats(config: &Config) -> Vec<Arc<ShardStats>> {
        (0..2)
            .map(|_| Arc::new(ShardStats::new(config, config.upstreams.len())))
            .collect()
    }

    #[test]
    fn each_condition_is_named_until_it_holds() {
        let config = config();
        let stats = stats(&config);
        let rules = Arc::new(AtomicBool::new(false));
        let readiness = Readiness::new(&config, stats.clone(), Some(Arc::clone(&rules)));
        assert_eq!(
            readiness.check(),
            Err("starting: not every shard serves yet".to_string())
        );
        readiness.serving();
        assert_eq!(
            readiness.check(),
            Err("the node's iptables rules are not in place".to_string())
        );
        rules.store(true, Ordering::SeqCst);
        assert_eq!(
            readiness.check(),
            Err(
                "no upstream of zone cluster.local. has answered yet (127.0.0.1:9 127.0.0.2:9)"
                    .to_string()
            )
        );
        // A reply from the `.` block's upstream does not count.
        stats[0].upstreams[2].durations[0].observe(100);
        assert!(readiness.check().is_err());
        // One from the cluster zone's second upstream, with any RCODE, in any shard.
        stats[1].upstreams[1].durations[2].observe(100);
        assert_eq!(readiness.check(), Ok(()));
        // Latched: the counters are not read again.
        rules.store(false, Ordering::SeqCst);
        assert!(readiness.check().is_err(), "the rules still count");
        rules.store(true, Ordering::SeqCst);
        readiness.stopping();
        assert_eq!(readiness.check(), Err("shutting down".to_string()));
    }

    #[test]
    fn without_rules_or_forward_those_conditions_hold() {
        let config = crate::corefile::build("Corefile", ".:0 {\n bind 127.0.0.1\n}\n").unwrap();
        let readiness = Readiness::new(&config, stats(&config), None);
        readiness.serving();
        assert_eq!(readiness.check(), Ok(()));
    }

    #[test]
    fn an_unanswered_check_sends_one_soa_query_a_second_to_the_block() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let corefile =
            format!("cluster.local.:{port} {{\n bind 127.0.0.1\n forward . 127.0.0.1:9\n}}\n");
        let config = crate::corefile::build("Corefile", &corefile).unwrap();
        let readiness = Readiness::new(&config, stats(&config), None);
        readiness.serving();
        assert!(readiness.check().is_err());
        assert!(
            readiness.check().is_err(),
            "a second check within the second"
        );
        let mut buffer = [0u8; 512];
        let (length, _) = server.recv_from(&mut buffer).expect("the SOA query");
        let query = &buffer[..length];
        assert_eq!(&query[2..12], &[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&query[12..], b"\x07cluster\x05local\x00\x00\x06\x00\x01");
        server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            server.recv_from(&mut buffer).is_err(),
            "only one query within the second"
        );
    }
}
