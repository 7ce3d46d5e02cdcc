//! Per-shard counters. Each [`ShardStats`] is written by its shard thread only; a scraper
//! thread reads it through the shared `Arc` and sums the shards. A [`Counter`] update is a
//! relaxed load and store of the shard's own memory (no lock prefix, no line shared with
//! another shard's writes), so counting costs the hit path what a plain integer would.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
    /// Packets dropped without a reply (no header, QR=1).
    pub dropped: Counter,
    /// Messages sent to other shards (misses handed to a key's owner, answers sent back).
    pub peer_sent: Counter,
    /// Messages received from other shards.
    pub peer_received: Counter,
    /// Error replies sent, by RCODE (0..16; BADVERS counted at 16).
    pub error_replies: [Counter; 17],
    /// Cache counters per server block (indexed like [`crate::Config::servers`]).
    pub servers: Box<[CacheStats]>,
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

    /// Counters for a configuration with `servers` server blocks.
    pub fn new(servers: usize) -> ShardStats {
        ShardStats {
            servers: (0..servers).map(|_| CacheStats::default()).collect(),
            ..ShardStats::default()
        }
    }
}

/// One server block's cache counters in one shard, named after CoreDNS's `coredns_cache_*`
/// metrics. Arrays are indexed by [`crate::cache::Kind`] (0 success, 1 denial).
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
