//! [`TestUpstream`]'s counters: the [`UpstreamStats`] snapshot and the handle's methods that
//! read and reset them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::RecordType;

use super::{TestUpstream, lock, normalize_name};

/// Queries kept in the log of [`TestUpstream::seen`] (the oldest are forgotten).
pub const SEEN_MAX: usize = 100_000;

/// One well-formed query as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenQuery {
    /// Over TCP (else UDP).
    pub tcp: bool,
    /// Where it came from: the proxy's source address and port.
    pub peer: SocketAddr,
    /// Its message ID.
    pub id: u16,
    /// Its name, lowercased, with the trailing dot.
    pub name: String,
    pub rtype: RecordType,
}

/// A snapshot of [`TestUpstream`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Well-formed queries received (UDP + TCP), answered or not.
    pub queries: u64,
    pub udp_queries: u64,
    pub tcp_queries: u64,
    /// Messages that were not a parseable query with one question (dropped).
    pub malformed: u64,
    /// `. IN NS` queries (the health-check probe of CoreDNS's forward).
    pub health_probes: u64,
    /// Queries answered (a reply written; a wrong-ID-then-right pair counts once).
    pub answered: u64,
    /// Garbage sent instead of a reply, and TCP replies cut short
    /// ([`Behaviour::garbage`](super::Behaviour::garbage),
    /// [`Behaviour::truncate_tcp`](super::Behaviour::truncate_tcp)); not in `answered`.
    pub garbled: u64,
    pub tcp_connections_accepted: u64,
    /// TCP connections open right now (a gauge: not cleared by `reset_counters`).
    pub tcp_connections_open: u64,
    /// The most queries outstanding (received, not yet answered) on one TCP connection at
    /// once. Dropped queries stay outstanding while their connection lives. All complete
    /// frames of one read are counted before any is answered, so pipelined queries show up
    /// even without a delay.
    pub max_outstanding_per_connection: u64,
}

impl TestUpstream {
    /// All counters at once.
    pub fn stats(&self) -> UpstreamStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        UpstreamStats {
            queries: get(&c.queries),
            udp_queries: get(&c.udp),
            tcp_queries: get(&c.tcp),
            malformed: get(&c.malformed),
            health_probes: get(&c.health_probes),
            answered: get(&c.answered),
            garbled: get(&c.garbled),
            tcp_connections_accepted: get(&c.tcp_accepted),
            tcp_connections_open: get(&c.tcp_open),
            max_outstanding_per_connection: get(&c.max_outstanding),
        }
    }

    /// Well-formed queries received, UDP + TCP.
    pub fn queries(&self) -> u64 {
        self.stats().queries
    }

    pub fn udp_queries(&self) -> u64 {
        self.stats().udp_queries
    }

    pub fn tcp_queries(&self) -> u64 {
        self.stats().tcp_queries
    }

    /// Queries received for `name` (any case; trailing dot optional), of type `rtype` or of
    /// any type.
    pub fn queries_for(&self, name: &str, rtype: Option<RecordType>) -> u64 {
        let key = normalize_name(name);
        lock(&self.inner.counters.per_name)
            .iter()
            .filter(|((n, t), _)| *n == key && rtype.is_none_or(|r| r == *t))
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn health_probes(&self) -> u64 {
        self.stats().health_probes
    }

    pub fn malformed(&self) -> u64 {
        self.stats().malformed
    }

    pub fn answered(&self) -> u64 {
        self.stats().answered
    }

    pub fn garbled(&self) -> u64 {
        self.stats().garbled
    }

    pub fn tcp_connections_accepted(&self) -> u64 {
        self.stats().tcp_connections_accepted
    }

    pub fn tcp_connections_open(&self) -> u64 {
        self.stats().tcp_connections_open
    }

    pub fn max_outstanding_per_connection(&self) -> u64 {
        self.stats().max_outstanding_per_connection
    }

    /// The last `SEEN_MAX` (100,000) well-formed queries received, oldest first (cleared by
    /// [`TestUpstream::reset_counters`]).
    pub fn seen(&self) -> Vec<SeenQuery> {
        lock(&self.inner.counters.seen).iter().cloned().collect()
    }

    /// Zeroes every counter except the `tcp_connections_open` gauge.
    pub fn reset_counters(&self) {
        let c = &self.inner.counters;
        for a in [
            &c.queries,
            &c.udp,
            &c.tcp,
            &c.malformed,
            &c.health_probes,
            &c.answered,
            &c.garbled,
            &c.tcp_accepted,
            &c.max_outstanding,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        lock(&c.per_name).clear();
        lock(&c.seen).clear();
    }
}
