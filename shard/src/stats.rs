//! Per-shard counters: plain integers owned and written by one shard thread only (no shared
//! atomics on the hit path). A scraper sums the shards' snapshots.

/// Counters of one shard. Every field only grows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Client queries received (UDP and TCP), well-formed or not.
    pub queries: u64,
    /// Queries answered from the packet cache.
    pub cache_hits: u64,
    /// Queries that needed an upstream answer (including coalesced ones).
    pub cache_misses: u64,
    /// Misses that joined a query already in flight for the same key.
    pub coalesced: u64,
    /// Responses inserted into the cache.
    pub cache_inserts: u64,
    /// Entries evicted to make room.
    pub cache_evictions: u64,
    /// Queries sent upstream (every attempt counts).
    pub upstream_queries: u64,
    /// Upstream replies accepted (matching ID and question).
    pub upstream_replies: u64,
    /// Upstream replies dropped: unknown ID, wrong question, unparseable.
    pub upstream_rejected: u64,
    /// Attempts that timed out.
    pub upstream_timeouts: u64,
    /// Attempts that failed because the link closed (refused, reset, EOF).
    pub upstream_link_failures: u64,
    /// Packets dropped without a reply (no header, QR=1).
    pub dropped: u64,
    /// Error replies sent, by RCODE (0..16; BADVERS counted at 16).
    pub error_replies: [u64; 17],
}
