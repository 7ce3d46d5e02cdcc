//! The metric families of the `/metrics` page as tables, for [`super::exposition`] to write:
//! each family's name, help text (CoreDNS's own for CoreDNS's families), type, and the
//! counter of [`ShardStats`] it reads, with the fixed label values some of them take.

use shardns_shard::{CacheStats, ShardStats, UpstreamStats};
use shardns_wire::Rcode;

/// Values of the cache `type` label, indexed like the arrays of [`CacheStats`].
pub(super) const CACHE_TYPES: [&str; 2] = ["success", "denial"];

/// CoreDNS's `proxy_name` label of the `forward` plugin's upstreams.
pub(super) const PROXY_NAME: &str = "forward";

/// Values of the `proto` label, indexed like [`UpstreamStats::conn_cache_hits`].
pub(super) const PROTOCOLS: [&str; 2] = ["udp", "tcp"];

/// `coredns_proxy_request_duration_seconds`'s `rcode` label of slot `slot` of
/// [`UpstreamStats::durations`]: the code's name as miekg/dns spells it
/// (`dns.RcodeToString`), else the number, as CoreDNS's proxy writes it (`12`).
pub(super) fn upstream_rcode_label(slot: usize) -> String {
    let rcode = Rcode::new(slot as u16);
    rcode
        .name()
        .map_or_else(|| slot.to_string(), str::to_string)
}

/// `shardns_shard_error_replies_total`'s `rcode` label of slot `slot` of
/// [`ShardStats::error_replies`]: the name, else `RCODE` and the number, as CoreDNS's
/// `rcode.ToString` writes it (`RCODE12`).
pub(super) fn error_rcode_label(slot: usize) -> String {
    Rcode::new(slot as u16).to_string()
}

/// The histogram of upstream exchange durations.
pub(super) const DURATION_FAMILY: &str = "coredns_proxy_request_duration_seconds";

/// A per-upstream counter family with only `proxy_name` and `to` labels, or `proto` too.
pub(super) struct UpstreamFamily {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    /// Whether it has a `proto` label (udp/tcp).
    pub(super) by_protocol: bool,
    /// The value of one upstream in one shard, for `proto` index `protocol` when it has one.
    pub(super) value: fn(&UpstreamStats, usize) -> u64,
}

/// CoreDNS's per-upstream counters, with CoreDNS's help texts.
pub(super) const UPSTREAM_FAMILIES: &[UpstreamFamily] = &[
    UpstreamFamily {
        name: "coredns_proxy_healthcheck_failures_total",
        help: "Counter of the number of failed healthchecks.",
        by_protocol: false,
        value: |stats, _| stats.healthcheck_failures.get(),
    },
    UpstreamFamily {
        name: "coredns_proxy_conn_cache_hits_total",
        help: "Counter of connection cache hits per upstream and protocol.",
        by_protocol: true,
        value: |stats, protocol| stats.conn_cache_hits[protocol].get(),
    },
    UpstreamFamily {
        name: "coredns_proxy_conn_cache_misses_total",
        help: "Counter of connection cache misses per upstream and protocol.",
        by_protocol: true,
        value: |stats, protocol| stats.conn_cache_misses[protocol].get(),
    },
];

/// CoreDNS's unlabelled forward counters: name, help, value in one shard.
pub(super) const FORWARD_FAMILIES: &[ShardFamily] = &[
    (
        "coredns_forward_healthcheck_broken_total",
        "Counter of the number of complete failures of the healthchecks.",
        |stats| stats.healthcheck_broken.get(),
    ),
    (
        "coredns_forward_max_concurrent_rejects_total",
        "Counter of the number of queries rejected because the concurrent queries were at \
         maximum.",
        |stats| stats.max_concurrent_rejects.get(),
    ),
];

/// shardns's per-upstream gauges, one series per upstream and shard: name, help, value.
pub(super) type UpstreamGauge = (&'static str, &'static str, fn(&UpstreamStats) -> u64);

pub(super) const UPSTREAM_GAUGES: &[UpstreamGauge] = &[
    (
        "shardns_upstream_connections",
        "Open TCP connections to the upstream.",
        |stats| stats.open_connections.get(),
    ),
    (
        "shardns_upstream_inflight",
        "Upstream attempts in flight.",
        |stats| stats.inflight.get(),
    ),
];

/// A `coredns_cache_*` family.
pub(super) struct CacheFamily {
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
    pub(super) help: &'static str,
    /// Whether it has a `type` label (success/denial).
    pub(super) typed: bool,
    /// The value of one block in one shard, for `type` index `kind` when typed.
    pub(super) value: fn(&CacheStats, usize) -> u64,
}

/// CoreDNS's cache families, with CoreDNS's help texts.
pub(super) const CACHE_FAMILIES: &[CacheFamily] = &[
    CacheFamily {
        name: "coredns_cache_entries",
        kind: "gauge",
        help: "The number of elements in the cache.",
        typed: true,
        value: |stats, kind| stats.entries[kind].get(),
    },
    CacheFamily {
        name: "coredns_cache_requests_total",
        kind: "counter",
        help: "The count of cache requests.",
        typed: false,
        value: |stats, _| {
            let hits = stats.hits[0].get().wrapping_add(stats.hits[1].get());
            hits.wrapping_add(stats.misses.get())
        },
    },
    CacheFamily {
        name: "coredns_cache_hits_total",
        kind: "counter",
        help: "The count of cache hits.",
        typed: true,
        value: |stats, kind| stats.hits[kind].get(),
    },
    CacheFamily {
        name: "coredns_cache_misses_total",
        kind: "counter",
        help: "The count of cache misses. Deprecated, derive misses from cache hits/requests \
               counters.",
        typed: false,
        value: |stats, _| stats.misses.get(),
    },
    CacheFamily {
        name: "coredns_cache_prefetch_total",
        kind: "counter",
        help: "The number of times the cache has prefetched a cached item.",
        typed: false,
        value: |stats, _| stats.prefetch.get(),
    },
    CacheFamily {
        name: "coredns_cache_drops_total",
        kind: "counter",
        help: "The number responses that are not cached, because the reply is malformed.",
        typed: false,
        value: |stats, _| stats.drops.get(),
    },
    CacheFamily {
        name: "coredns_cache_served_stale_total",
        kind: "counter",
        help: "The number of requests served from stale cache entries.",
        typed: false,
        value: |stats, _| stats.served_stale.get(),
    },
    CacheFamily {
        name: "coredns_cache_evictions_total",
        kind: "counter",
        help: "The count of cache evictions.",
        typed: true,
        value: |stats, kind| stats.evictions[kind].get(),
    },
];

/// The per-shard counter families with only a `shard` label: name, help, value.
pub(super) type ShardFamily = (&'static str, &'static str, fn(&ShardStats) -> u64);

pub(super) const SHARD_FAMILIES: &[ShardFamily] = &[
    (
        "shardns_shard_queries_total",
        "Client queries received (UDP and TCP), well-formed or not.",
        |stats| stats.queries.get(),
    ),
    (
        "shardns_shard_cache_hits_total",
        "Queries answered from the cache (fresh or stale).",
        |stats| stats.cache_hits(),
    ),
    (
        "shardns_shard_cache_misses_total",
        "Queries that needed an upstream answer (coalesced ones included).",
        |stats| stats.cache_misses.get(),
    ),
    (
        "shardns_shard_coalesced_total",
        "Misses that joined a resolution already under way for the same key.",
        |stats| stats.coalesced.get(),
    ),
    (
        "shardns_shard_cache_inserts_total",
        "Responses inserted into the cache.",
        |stats| stats.cache_inserts.get(),
    ),
    (
        "shardns_shard_cache_evictions_total",
        "Cache entries evicted to make room.",
        |stats| stats.cache_evictions.get(),
    ),
    (
        "shardns_shard_upstream_queries_total",
        "Queries sent upstream (every attempt).",
        |stats| stats.upstream_queries.get(),
    ),
    (
        "shardns_shard_upstream_replies_total",
        "Upstream replies accepted (matching ID and question).",
        |stats| stats.upstream_replies.get(),
    ),
    (
        "shardns_shard_upstream_rejected_total",
        "Upstream replies dropped: unknown ID, wrong question or unparseable.",
        |stats| stats.upstream_rejected.get(),
    ),
    (
        "shardns_shard_upstream_timeouts_total",
        "Upstream attempts that timed out.",
        |stats| stats.upstream_timeouts.get(),
    ),
    (
        "shardns_shard_upstream_link_failures_total",
        "Upstream attempts that failed because the connection closed (refused, reset, EOF).",
        |stats| stats.upstream_link_failures.get(),
    ),
    (
        "shardns_shard_upstream_forgeries_total",
        "Upstream UDP attempts moved to TCP: a datagram on their socket answered nothing (a \
         forgery, or a broken upstream).",
        |stats| stats.upstream_forgeries.get(),
    ),
    (
        "shardns_shard_dropped_total",
        "Client packets dropped without a reply (no header, or a response).",
        |stats| stats.dropped.get(),
    ),
];
