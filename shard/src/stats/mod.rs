//! Per-shard counters. Each [`ShardStats`] is written by its shard thread only; a scraper
//! thread reads it through the shared `Arc` and sums the shards. A [`Counter`] update is a
//! relaxed load and store of the shard's own memory (no lock prefix, no line shared with
//! another shard's writes), so counting costs the hit path what a plain integer would.

mod bounds;
mod policy;
mod requests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use shardns_wire::Rcode;

use crate::config::Config;
pub(crate) use bounds::BoundLog;
pub use bounds::{Bound, BoundStats, LOG_EVERY, ReachedLog};
pub use policy::PolicyStats;
pub(crate) use requests::Exchange;
pub use requests::{
    QUERY_TYPES, RequestSlots, RequestStats, SIZE_BUCKETS, SizeHistogram, TYPE_SLOTS, Writer,
};

/// A monotonic counter with a single writer (its shard) and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard calls this, so load-then-store loses nothing.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value set by its shard (e.g. the number of cache entries).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value (owning shard only).
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Counters of one shard, aligned so that no other shard's data shares its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    /// Client queries received (UDP and TCP), well-formed or not.
    pub queries: Counter,
    /// Queries that needed an upstream answer (including coalesced ones).
    pub cache_misses: Counter,
    /// Misses that joined a query already waiting for the same key (in this shard or, for
    /// the key's owner, from another shard).
    pub coalesced: Counter,
    /// Responses inserted into the cache.
    pub cache_inserts: Counter,
    /// Entries evicted to make room.
    pub cache_evictions: Counter,
    /// Queries sent upstream (every attempt counts).
    pub upstream_queries: Counter,
    /// Upstream replies accepted (matching ID and question).
    pub upstream_replies: Counter,
    /// Upstream replies dropped: unknown ID, wrong question, unparseable.
    pub upstream_rejected: Counter,
    /// Attempts that timed out.
    pub upstream_timeouts: Counter,
    /// Attempts that failed because the link closed (refused, reset, EOF).
    pub upstream_link_failures: Counter,
    /// UDP attempts moved to TCP because a datagram on their socket answered nothing (a
    /// forgery, or a broken upstream).
    pub upstream_forgeries: Counter,
    /// Packets dropped without a reply (no header, QR=1).
    pub dropped: Counter,
    /// Messages sent to other shards (misses handed to a key's owner, answers sent back).
    pub peer_sent: Counter,
    /// Messages received from other shards.
    pub peer_received: Counter,
    /// Error replies sent, by RCODE: slot `n` for RCODE `n` up to 15, slot 16 for BADVERS
    /// (`Rcode::new(slot)` names a slot).
    pub error_replies: [Counter; 17],
    /// Cache counters per server block (indexed like [`crate::Config::servers`]).
    pub servers: Box<[CacheStats]>,
    /// Forwarding counters per upstream (indexed like [`crate::Config::upstreams`]).
    pub upstreams: Box<[UpstreamStats]>,
    /// `coredns_forward_healthcheck_broken_total`: queries that found every upstream down.
    pub healthcheck_broken: Counter,
    /// `coredns_forward_max_concurrent_rejects_total`.
    pub max_concurrent_rejects: Counter,
    /// CoreDNS's `coredns_dns_*` request metrics, per request slot ([`RequestSlots`]).
    pub requests: Box<[RequestStats]>,
    /// What `acl` and `ratelimit` did, per request slot (indexed like `requests`).
    pub policies: Box<[PolicyStats]>,
    /// How often each of the shard's bounds was reached.
    pub bounds: BoundStats,
    /// The I/O driver this shard runs (`shardns_shard_info{io}`): 0 not started, 1 epoll,
    /// 2 io_uring.
    pub driver: Gauge,
    /// Entries published to the in-kernel fast path ([`crate::fastpath`]).
    pub fastpath_published: Counter,
    /// Publications dropped because the fast path's channel was full.
    pub fastpath_dropped: Counter,
}

impl ShardStats {
    /// Queries answered from the packet cache (fresh or stale), all server blocks: the sum
    /// of their hits (one counter less per hit).
    pub fn cache_hits(&self) -> u64 {
        self.servers
            .iter()
            .map(|s| s.hits[0].get() + s.hits[1].get())
            .sum()
    }

    /// Counts an error reply with `rcode` (codes above BADVERS in its slot).
    pub(crate) fn count_error_reply(&self, rcode: Rcode) {
        self.error_replies[usize::from(rcode.value().min(16))].inc();
    }

    /// Counters for `config`, with room for `upstreams` upstreams (as many as it has, or
    /// more for upstreams a reload may add) and for its server blocks.
    pub fn new(config: &Config, upstreams: usize) -> ShardStats {
        ShardStats::with_room(config, config.servers.len(), upstreams)
    }

    /// Counters for `config` with room for `blocks` server blocks (at least its own: more
    /// for blocks a reload may add) and `upstreams` upstreams.
    pub fn with_room(config: &Config, blocks: usize, upstreams: usize) -> ShardStats {
        let blocks = blocks.max(config.servers.len());
        let requests = RequestSlots::of(config, blocks).len();
        ShardStats {
            servers: (0..blocks).map(|_| CacheStats::default()).collect(),
            upstreams: (0..upstreams).map(|_| UpstreamStats::default()).collect(),
            requests: (0..requests).map(|_| RequestStats::default()).collect(),
            policies: (0..requests).map(|_| PolicyStats::default()).collect(),
            ..ShardStats::default()
        }
    }

    /// Whether these counters fit `config`: a slot for each server block and each upstream
    /// at least, and the request slots of its listeners.
    pub fn fits(&self, config: &Config) -> bool {
        self.servers.len() >= config.servers.len()
            && self.upstreams.len() >= config.upstreams.len()
            && self.requests.len() == RequestSlots::of(config, self.servers.len()).len()
            && self.policies.len() == self.requests.len()
    }
}

/// One server block's cache counters in one shard, named after CoreDNS's `coredns_cache_*`
/// metrics. Arrays are indexed by the kind of entry (0 success, 1 denial).
/// `coredns_cache_requests_total` is not counted: every query that consults the cache is
/// exactly one hit or one miss, so it is their sum (one counter less per hit).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// `coredns_cache_hits_total{type}`.
    pub hits: [Counter; 2],
    /// `coredns_cache_misses_total`.
    pub misses: Counter,
    /// `coredns_cache_prefetch_total`: refreshes started before expiry.
    pub prefetch: Counter,
    /// `coredns_cache_drops_total`: upstream replies not cached because they were malformed
    /// or answered another question.
    pub drops: Counter,
    /// `coredns_cache_served_stale_total`.
    pub served_stale: Counter,
    /// `coredns_cache_evictions_total{type}`.
    pub evictions: [Counter; 2],
    /// `coredns_cache_entries{type}`.
    pub entries: [Gauge; 2],
}

/// Upper bounds (seconds) of `coredns_proxy_request_duration_seconds`'s buckets: CoreDNS's
/// 0.25 ms × 2^k, k = 0..15 (0.00025 … 8.192 s); a last bucket takes the rest (+Inf).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
    2.048, 4.096, 8.192,
];

/// Upstream exchanges with one RCODE: a histogram of their durations.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Exchanges per bucket (not cumulative); the last slot is above 8.192 s.
    pub buckets: [Counter; 17],
    /// Sum of the durations, in microseconds.
    pub sum_micros: Counter,
}

/// [`DURATION_BUCKETS`] in microseconds, compared with integers on the hot path.
const DURATION_BUCKETS_MICROS: [u64; 16] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
    1_024_000, 2_048_000, 4_096_000, 8_192_000,
];

impl DurationHistogram {
    /// Records one exchange of `micros` microseconds.
    #[inline]
    pub fn observe(&self, micros: u64) {
        let slot = DURATION_BUCKETS_MICROS
            .iter()
            .position(|&le| micros <= le)
            .unwrap_or(DURATION_BUCKETS_MICROS.len());
        self.buckets[slot].inc();
        self.sum_micros.add(micros);
    }

    /// Exchanges recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }
}

/// One upstream's forwarding counters in one shard, after CoreDNS's `coredns_proxy_*` and
/// `coredns_forward_*` metrics, plus shardns's gauges.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// `coredns_proxy_request_duration_seconds{rcode}`, by the reply header's RCODE (0..15;
    /// `Rcode::new(slot)` names a slot).
    pub durations: [DurationHistogram; UpstreamStats::RCODES],
    /// `coredns_proxy_healthcheck_failures_total`.
    pub healthcheck_failures: Counter,
    /// `coredns_proxy_conn_cache_hits_total{proto}`: an open connection (or the UDP socket)
    /// was used (0 udp, 1 tcp).
    pub conn_cache_hits: [Counter; 2],
    /// `coredns_proxy_conn_cache_misses_total{proto}`: a new one had to be made.
    pub conn_cache_misses: [Counter; 2],
    /// Open TCP connections (`shardns_upstream_connections`).
    pub open_connections: Gauge,
    /// Attempts in flight (`shardns_upstream_inflight`).
    pub inflight: Gauge,
}

impl UpstreamStats {
    /// Slots of [`UpstreamStats::durations`]: the RCODEs a reply header carries (0..15).
    pub const RCODES: usize = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_bounds_in_micros_are_the_seconds_ones() {
        for (micros, seconds) in DURATION_BUCKETS_MICROS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(*micros as f64 / 1e6, seconds);
        }
        let histogram = DurationHistogram::default();
        for micros in [0, 250, 251, 8_192_000, 8_192_001] {
            histogram.observe(micros);
        }
        let counts: Vec<u64> = histogram.buckets.iter().map(Counter::get).collect();
        assert_eq!((counts[0], counts[1], counts[15], counts[16]), (2, 1, 1, 1));
    }
}
