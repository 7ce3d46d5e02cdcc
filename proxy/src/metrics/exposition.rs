//! The `/metrics` page in the Prometheus text format 0.0.4: each family once, with `# HELP`
//! and `# TYPE`, in a fixed order, every value summed over the shards when rendered.
//!
//! - CoreDNS's cache metrics, named and labelled as CoreDNS does so that existing dashboards
//!   work: `coredns_cache_*{server, type, view, zones}` for every server block with a
//!   `cache`. `server` is `dns://` plus the block's first listening address (`dns://:53` for
//!   the wildcard), `zones` the cache's zones joined by commas, `view` empty. Labels are
//!   written sorted by name, as the Go client writes them.
//! - CoreDNS's forward metrics, named and labelled as CoreDNS's `forward` plugin writes them:
//!   `coredns_proxy_*{proxy_name="forward", to}` for every upstream of
//!   [`Config::upstreams`], `to` being the upstream's `IP:PORT` (`[IPv6]:PORT`), and the
//!   unlabelled `coredns_forward_healthcheck_broken_total` and
//!   `coredns_forward_max_concurrent_rejects_total` (always written, as CoreDNS's registry
//!   does). The duration histogram has one series per upstream and RCODE seen (`rcode` as
//!   miekg/dns names it, else the number); its `le` label comes last, as the Go client writes
//!   it.
//! - shardns's own `shardns_upstream_*{shard, to}` gauges (per upstream and shard) and
//!   `shardns_shard_*{shard}` series, one per shard, for a per-shard dashboard.
//!
//! The upstream labels are those of the configuration the page was made for (at start-up).
//! A reload may change the upstreams but not the shards' counter arrays, which keep the
//! start-up length: only the indices present in both are written, and after a reload that
//! reorders or replaces upstreams, index `i` is still labelled with the start-up address of
//! index `i` (restart to relabel). Upstreams a reload adds beyond the start-up count are not
//! counted by the shards, so they have no series.
//!
//! `coredns_cache_requests_total` is hits plus misses: every lookup is one or the other, as in
//! CoreDNS, and the hit path does not count requests separately (one counter less per hit).
//! `coredns_cache_entries` sums what each shard holds: a key resolved through its owner
//! shard is stored by the owner and by the shard that asked, so it counts once per copy.

use std::fmt::{Display, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use shardns_shard::stats::{CacheStats, DURATION_BUCKETS, UpstreamStats};
use shardns_shard::{Config, ShardStats};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Values of the cache `type` label, indexed like the arrays of [`CacheStats`].
const CACHE_TYPES: [&str; 2] = ["success", "denial"];

/// CoreDNS's `proxy_name` label of the `forward` plugin's upstreams.
const PROXY_NAME: &str = "forward";

/// Values of the `proto` label, indexed like [`UpstreamStats::conn_cache_hits`].
const PROTOCOLS: [&str; 2] = ["udp", "tcp"];

/// `coredns_proxy_request_duration_seconds`'s `rcode` label, indexed like
/// [`UpstreamStats::durations`]: miekg/dns's name (`dns.RcodeToString`), else the number,
/// as CoreDNS's proxy writes it.
const UPSTREAM_RCODES: [&str; 16] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "12",
    "13",
    "14",
    "15",
];

/// The histogram of upstream exchange durations.
const DURATION_FAMILY: &str = "coredns_proxy_request_duration_seconds";

/// A per-upstream counter family with only `proxy_name` and `to` labels, or `proto` too.
struct UpstreamFamily {
    name: &'static str,
    help: &'static str,
    /// Whether it has a `proto` label (udp/tcp).
    by_protocol: bool,
    /// The value of one upstream in one shard, for `proto` index `protocol` when it has one.
    value: fn(&UpstreamStats, usize) -> u64,
}

/// CoreDNS's per-upstream counters, with CoreDNS's help texts.
const UPSTREAM_FAMILIES: &[UpstreamFamily] = &[
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
const FORWARD_FAMILIES: &[ShardFamily] = &[
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
type UpstreamGauge = (&'static str, &'static str, fn(&UpstreamStats) -> u64);

const UPSTREAM_GAUGES: &[UpstreamGauge] = &[
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
struct CacheFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Whether it has a `type` label (success/denial).
    typed: bool,
    /// The value of one block in one shard, for `type` index `kind` when typed.
    value: fn(&CacheStats, usize) -> u64,
}

/// CoreDNS's cache families, with CoreDNS's help texts.
const CACHE_FAMILIES: &[CacheFamily] = &[
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
type ShardFamily = (&'static str, &'static str, fn(&ShardStats) -> u64);

const SHARD_FAMILIES: &[ShardFamily] = &[
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
        "shardns_shard_dropped_total",
        "Client packets dropped without a reply (no header, or a response).",
        |stats| stats.dropped.get(),
    ),
];

/// The labels of one set of cache series and the server blocks counted under them (one,
/// unless two blocks share a first address and zones).
#[derive(Debug)]
struct CacheSeries {
    server: String,
    zones: String,
    blocks: Vec<usize>,
}

/// What `/metrics` shows: the label values worked out once from the configuration, and
/// every shard's counters.
#[derive(Debug)]
pub struct Exposition {
    caches: Vec<CacheSeries>,
    /// The `to` label of each upstream, indexed like [`Config::upstreams`]; only the indices
    /// every shard counts.
    upstreams: Vec<String>,
    shards: Vec<Arc<ShardStats>>,
}

impl Exposition {
    /// The page for `config` (with its listeners' bound addresses) over `shards`, indexed by
    /// shard.
    pub fn new(config: &Config, shards: Vec<Arc<ShardStats>>) -> Exposition {
        let mut caches: Vec<CacheSeries> = Vec::new();
        for (block, server) in config.servers.iter().enumerate() {
            let Some(cache) = &server.cache else { continue };
            let address = config
                .listeners
                .iter()
                .find(|listener| listener.servers.contains(&block))
                .map(|listener| listener.addr);
            let server = server_label(address);
            let zones = cache
                .zones
                .iter()
                .map(|zone| zone_text(zone))
                .collect::<Vec<_>>()
                .join(",");
            match caches
                .iter_mut()
                .find(|series| series.server == server && series.zones == zones)
            {
                Some(series) => series.blocks.push(block),
                None => caches.push(CacheSeries {
                    server,
                    zones,
                    blocks: vec![block],
                }),
            }
        }
        let counted = shards
            .iter()
            .map(|stats| stats.upstreams.len())
            .min()
            .unwrap_or(usize::MAX);
        let upstreams = config
            .upstreams
            .iter()
            .take(counted)
            .map(|upstream| upstream.addr.to_string())
            .collect();
        Exposition {
            caches,
            upstreams,
            shards,
        }
    }

    /// The sum over the shards of `value` of upstream `index`.
    fn upstream_sum(&self, index: usize, value: impl Fn(&UpstreamStats) -> u64) -> u64 {
        self.shards
            .iter()
            .filter_map(|shard| shard.upstreams.get(index))
            .fold(0, |sum, stats| sum.wrapping_add(value(stats)))
    }

    /// The forward families: CoreDNS's `coredns_proxy_*` per upstream (when there are
    /// upstreams) and `coredns_forward_*`, then shardns's per-upstream gauges.
    fn render_forward(&self, out: &mut String, shard_names: &[String]) {
        if !self.upstreams.is_empty() {
            self.render_durations(out);
        }
        for family in UPSTREAM_FAMILIES {
            if self.upstreams.is_empty() {
                break;
            }
            header(out, family.name, "counter", family.help);
            for (index, to) in self.upstreams.iter().enumerate() {
                let sum =
                    |protocol| self.upstream_sum(index, |stats| (family.value)(stats, protocol));
                if family.by_protocol {
                    for (protocol, proto) in PROTOCOLS.iter().enumerate() {
                        let labels = [("proto", *proto), ("proxy_name", PROXY_NAME), ("to", to)];
                        sample(out, family.name, &labels, sum(protocol));
                    }
                } else {
                    let labels = [("proxy_name", PROXY_NAME), ("to", to.as_str())];
                    sample(out, family.name, &labels, sum(0));
                }
            }
        }
        for &(name, help, value) in FORWARD_FAMILIES {
            header(out, name, "counter", help);
            let sum = self
                .shards
                .iter()
                .fold(0u64, |sum, stats| sum.wrapping_add(value(stats)));
            sample(out, name, &[], sum);
        }
        for &(name, help, value) in UPSTREAM_GAUGES {
            if self.upstreams.is_empty() {
                break;
            }
            header(out, name, "gauge", help);
            for (index, to) in self.upstreams.iter().enumerate() {
                for (stats, shard) in self.shards.iter().zip(shard_names) {
                    if let Some(stats) = stats.upstreams.get(index) {
                        let labels = [("shard", shard.as_str()), ("to", to.as_str())];
                        sample(out, name, &labels, value(stats));
                    }
                }
            }
        }
    }

    /// `coredns_proxy_request_duration_seconds`: per upstream, one histogram for each RCODE
    /// with at least one exchange; `_bucket` cumulative, `_sum` in seconds.
    fn render_durations(&self, out: &mut String) {
        header(
            out,
            DURATION_FAMILY,
            "histogram",
            "Histogram of the time each request took.",
        );
        let bucket_name = format!("{DURATION_FAMILY}_bucket");
        let sum_name = format!("{DURATION_FAMILY}_sum");
        let count_name = format!("{DURATION_FAMILY}_count");
        let bounds: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_string()])
            .collect();
        for (index, to) in self.upstreams.iter().enumerate() {
            for (rcode, rcode_label) in UPSTREAM_RCODES.iter().enumerate() {
                let mut buckets = [0u64; 17];
                let mut sum_micros = 0u64;
                for stats in self.shards.iter().filter_map(|s| s.upstreams.get(index)) {
                    let histogram = &stats.durations[rcode];
                    for (total, counter) in buckets.iter_mut().zip(&histogram.buckets) {
                        *total = total.wrapping_add(counter.get());
                    }
                    sum_micros = sum_micros.wrapping_add(histogram.sum_micros.get());
                }
                let count = buckets.iter().fold(0u64, |sum, n| sum.wrapping_add(*n));
                if count == 0 {
                    continue;
                }
                let labels = [
                    ("proxy_name", PROXY_NAME),
                    ("rcode", rcode_label),
                    ("to", to.as_str()),
                ];
                let mut cumulative = 0u64;
                for (bucket, le) in buckets.iter().zip(&bounds) {
                    cumulative = cumulative.wrapping_add(*bucket);
                    let [proxy_name, rcode, to] = labels;
                    let labels = [proxy_name, rcode, to, ("le", le.as_str())];
                    sample(out, &bucket_name, &labels, cumulative);
                }
                sample(out, &sum_name, &labels, sum_micros as f64 / 1e6);
                sample(out, &count_name, &labels, count);
            }
        }
    }

    /// The page, summing the shards' counters now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096 + 2048 * self.shards.len());
        for family in CACHE_FAMILIES {
            if self.caches.is_empty() {
                break;
            }
            header(&mut out, family.name, family.kind, family.help);
            for series in &self.caches {
                let sum = |kind: usize| {
                    let mut sum = 0u64;
                    for shard in &self.shards {
                        for &block in &series.blocks {
                            if let Some(stats) = shard.servers.get(block) {
                                sum = sum.wrapping_add((family.value)(stats, kind));
                            }
                        }
                    }
                    sum
                };
                let labels = |kind: Option<&'static str>| {
                    let mut labels = vec![("server", series.server.as_str())];
                    labels.extend(kind.map(|kind| ("type", kind)));
                    labels.extend([("view", ""), ("zones", series.zones.as_str())]);
                    labels
                };
                if family.typed {
                    for (index, kind) in CACHE_TYPES.iter().enumerate() {
                        sample(&mut out, family.name, &labels(Some(kind)), sum(index));
                    }
                } else {
                    sample(&mut out, family.name, &labels(None), sum(0));
                }
            }
        }
        let shard_names: Vec<String> = (0..self.shards.len()).map(|i| i.to_string()).collect();
        self.render_forward(&mut out, &shard_names);
        for &(name, help, value) in SHARD_FAMILIES {
            header(&mut out, name, "counter", help);
            for (stats, shard) in self.shards.iter().zip(&shard_names) {
                sample(&mut out, name, &[("shard", shard)], value(stats));
            }
        }
        let name = "shardns_shard_peer_messages_total";
        header(
            &mut out,
            name,
            "counter",
            "Messages exchanged with other shards (misses handed to a key's owner, answers \
             sent back).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            for (direction, count) in [
                ("sent", stats.peer_sent.get()),
                ("received", stats.peer_received.get()),
            ] {
                let labels = [("direction", direction), ("shard", shard.as_str())];
                sample(&mut out, name, &labels, count);
            }
        }
        let name = "shardns_shard_error_replies_total";
        header(
            &mut out,
            name,
            "counter",
            "Error replies sent to clients, by RCODE (RCODEs never sent are left out).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            for (rcode, counter) in stats.error_replies.iter().enumerate() {
                let count = counter.get();
                if count != 0 {
                    let labels = [("rcode", rcode_name(rcode)), ("shard", shard.as_str())];
                    sample(&mut out, name, &labels, count);
                }
            }
        }
        out
    }
}

/// CoreDNS's `server` label: `dns://` and the address, without the IP when it is the
/// wildcard (`dns://:53`).
fn server_label(addr: Option<SocketAddr>) -> String {
    match addr {
        Some(addr) if addr.ip().is_unspecified() => format!("dns://:{}", addr.port()),
        Some(addr) => format!("dns://{addr}"),
        None => "dns://".to_string(),
    }
}

/// A zone's presentation form with its trailing dot (`.` for the root), from the lowercase
/// wire form; bytes other than letters, digits, `-` and `_` are written `\DDD`.
fn zone_text(wire: &[u8]) -> String {
    let mut text = String::new();
    let mut rest = wire;
    while let Some((&length, tail)) = rest.split_first() {
        let length = usize::from(length);
        if length == 0 || length > tail.len() {
            break;
        }
        for &byte in &tail[..length] {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                text.push(char::from(byte));
            } else {
                let _ = write!(text, "\\{byte:03}");
            }
        }
        text.push('.');
        rest = &tail[length..];
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// RCODE names as CoreDNS's `rcode` labels spell them (index 16 counts BADVERS).
fn rcode_name(rcode: usize) -> &'static str {
    const NAMES: [&str; 17] = [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "DSOTYPENI",
        "RCODE12",
        "RCODE13",
        "RCODE14",
        "RCODE15",
        "BADVERS",
    ];
    NAMES.get(rcode).copied().unwrap_or("RCODE")
}

/// The `# HELP` and `# TYPE` lines of a family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// One sample line: `name{label="value",...} value` (an integer, or a float for a histogram's
/// `_sum`).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (index, (label, text)) in labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, text);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label_value(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::build;

    /// Four blocks: two cached on explicit addresses, one cached on the wildcard with two
    /// cache zones and forwarding to two upstreams (IPv4 and IPv6), one without a cache.
    const COREFILE: &str = "cluster.local:53 {\n bind 169.254.20.10 10.96.0.10\n \
                            cache 30\n}\nin-addr.arpa:5353 {\n bind ::1\n cache 30\n}\n\
                            . {\n cache 30 b.example a.example\n \
                            forward . 10.0.0.1 [fd00::53]:5353\n}\nexample.org {\n}\n";

    /// The `to` labels of [`COREFILE`]'s upstreams.
    const TO: [&str; 2] = ["10.0.0.1:53", "[fd00::53]:5353"];

    /// Two shards with distinct values in every counter used.
    fn two_shards(config: &Config) -> Vec<Arc<ShardStats>> {
        (0..2u64)
            .map(|shard| {
                let stats = ShardStats::new(config.servers.len(), config.upstreams.len());
                let base = 100 * (shard + 1);
                stats.queries.add(base + 1);
                stats.cache_misses.add(base + 3);
                stats.coalesced.add(base + 4);
                stats.upstream_queries.add(base + 5);
                stats.upstream_replies.add(base + 6);
                stats.upstream_rejected.add(base + 7);
                stats.upstream_timeouts.add(base + 8);
                stats.dropped.add(base + 9);
                stats.peer_sent.add(base + 10);
                stats.peer_received.add(base + 11);
                stats.error_replies[2].add(base + 12);
                if shard == 1 {
                    stats.error_replies[16].add(3);
                }
                for (block, server) in stats.servers.iter().enumerate() {
                    let block = block as u64 * 10 + base;
                    server.hits[0].add(block + 2);
                    server.hits[1].add(block + 3);
                    server.misses.add(block + 4);
                    server.prefetch.add(block + 5);
                    server.drops.add(block + 6);
                    server.served_stale.add(block + 7);
                    server.evictions[0].add(block + 8);
                    server.evictions[1].add(block + 9);
                    server.entries[0].set(block + 10);
                    server.entries[1].set(block + 11);
                }
                stats.healthcheck_broken.add(base + 13);
                stats.max_concurrent_rejects.add(base + 14);
                for (index, upstream) in stats.upstreams.iter().enumerate() {
                    let index = index as u64;
                    // NOERROR: 0.1 ms (first bucket) and 1.5 ms (le 0.002) in both shards,
                    // 9 s (+Inf only) in shard 1.
                    upstream.durations[0].observe(100 + index);
                    upstream.durations[0].observe(1_500);
                    if shard == 1 {
                        upstream.durations[0].observe(9_000_000);
                    }
                    // NXDOMAIN from upstream 1 in shard 0 only (0.3 ms: le 0.0005); RCODE 12
                    // from upstream 0 in shard 1 only (exactly 8.192 s: the last bound).
                    if index == 1 && shard == 0 {
                        upstream.durations[3].observe(300);
                    }
                    if index == 0 && shard == 1 {
                        upstream.durations[12].observe(8_192_000);
                    }
                    upstream.healthcheck_failures.add(base + 20 + index);
                    upstream.conn_cache_hits[0].add(base + 30 + index);
                    upstream.conn_cache_hits[1].add(base + 40 + index);
                    upstream.conn_cache_misses[0].add(base + 50 + index);
                    upstream.conn_cache_misses[1].add(base + 60 + index);
                    upstream.open_connections.set(base + 70 + index);
                    upstream.inflight.set(base + 80 + index);
                }
                Arc::new(stats)
            })
            .collect()
    }

    fn page() -> String {
        let config = build("Corefile", COREFILE).unwrap();
        Exposition::new(&config, two_shards(&config)).render()
    }

    /// The value of the sample line starting with `series` (name and labels).
    fn value(page: &str, series: &str) -> u64 {
        text(page, series).parse().unwrap()
    }

    /// The value of the sample line starting with `series`, as written.
    fn text<'a>(page: &'a str, series: &str) -> &'a str {
        let mut found = page
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
        let value = found
            .next()
            .unwrap_or_else(|| panic!("{series} missing:\n{page}"));
        assert!(found.next().is_none(), "{series} twice");
        value
    }

    #[test]
    fn cache_series_sum_the_shards() {
        let page = page();
        let cluster = "server=\"dns://169.254.20.10:53\",view=\"\",zones=\"cluster.local.\"";
        let arpa = "server=\"dns://[::1]:5353\",view=\"\",zones=\"in-addr.arpa.\"";
        let root = "server=\"dns://:53\",view=\"\",zones=\"b.example.,a.example.\"";
        // Block b in shard s (base 100 or 200) holds base + 10 b + offset.
        let sum = |block: u64, offset: u64| 300 + 20 * block + 2 * offset;
        // Requests are hits (success and denial) plus misses.
        assert_eq!(
            value(&page, &format!("coredns_cache_requests_total{{{cluster}}}")),
            sum(0, 2) + sum(0, 3) + sum(0, 4)
        );
        assert_eq!(
            value(&page, &format!("coredns_cache_misses_total{{{arpa}}}")),
            sum(1, 4)
        );
        assert_eq!(
            value(&page, &format!("coredns_cache_prefetch_total{{{root}}}")),
            sum(2, 5)
        );
        assert_eq!(
            value(&page, &format!("coredns_cache_drops_total{{{root}}}")),
            sum(2, 6)
        );
        assert_eq!(
            value(
                &page,
                &format!("coredns_cache_served_stale_total{{{root}}}")
            ),
            sum(2, 7)
        );
        let typed = |name: &str, kind: &str| {
            value(
                &page,
                &format!(
                    "{name}{{server=\"dns://169.254.20.10:53\",type=\"{kind}\",view=\"\",\
                     zones=\"cluster.local.\"}}"
                ),
            )
        };
        assert_eq!(typed("coredns_cache_hits_total", "success"), sum(0, 2));
        assert_eq!(typed("coredns_cache_hits_total", "denial"), sum(0, 3));
        assert_eq!(typed("coredns_cache_evictions_total", "success"), sum(0, 8));
        assert_eq!(typed("coredns_cache_evictions_total", "denial"), sum(0, 9));
        assert_eq!(typed("coredns_cache_entries", "success"), sum(0, 10));
        assert_eq!(typed("coredns_cache_entries", "denial"), sum(0, 11));
        // No series for the block without a cache, none for the second bind address.
        assert!(!page.contains("example.org"));
        assert!(!page.contains("10.96.0.10"));
        assert_eq!(page.matches("coredns_cache_requests_total{").count(), 3);
        assert_eq!(page.matches("coredns_cache_entries{").count(), 6);
    }

    #[test]
    fn shard_series() {
        let page = page();
        for (name, offset) in [
            ("shardns_shard_queries_total", 1),
            ("shardns_shard_cache_misses_total", 3),
            ("shardns_shard_coalesced_total", 4),
            ("shardns_shard_upstream_queries_total", 5),
            ("shardns_shard_upstream_replies_total", 6),
            ("shardns_shard_upstream_rejected_total", 7),
            ("shardns_shard_upstream_timeouts_total", 8),
            ("shardns_shard_dropped_total", 9),
        ] {
            assert_eq!(
                value(&page, &format!("{name}{{shard=\"0\"}}")),
                100 + offset
            );
            assert_eq!(
                value(&page, &format!("{name}{{shard=\"1\"}}")),
                200 + offset
            );
        }
        // Hits are the blocks' hits summed: blocks b = 0..4 add 10 b + base + 2 and + 3.
        let hits = |base: u64| (0..4).map(|b| 2 * (10 * b + base) + 5).sum::<u64>();
        assert_eq!(
            value(&page, "shardns_shard_cache_hits_total{shard=\"0\"}"),
            hits(100)
        );
        assert_eq!(
            value(&page, "shardns_shard_cache_hits_total{shard=\"1\"}"),
            hits(200)
        );
        let peer = |direction: &str, shard: u8| {
            let series = format!(
                "shardns_shard_peer_messages_total{{direction=\"{direction}\",shard=\"{shard}\"}}"
            );
            value(&page, &series)
        };
        assert_eq!(
            (peer("sent", 0), peer("received", 0), peer("sent", 1)),
            (110, 111, 210)
        );
        let errors = |rcode: &str, shard: u8| {
            let series =
                format!("shardns_shard_error_replies_total{{rcode=\"{rcode}\",shard=\"{shard}\"}}");
            value(&page, &series)
        };
        assert_eq!(
            (
                errors("SERVFAIL", 0),
                errors("SERVFAIL", 1),
                errors("BADVERS", 1)
            ),
            (112, 212, 3)
        );
        assert_eq!(
            page.matches("shardns_shard_error_replies_total{").count(),
            3
        );
        assert!(!page.contains("shardns_shard_error_replies_total{rcode=\"NOERROR\""));
    }

    #[test]
    fn every_family_has_help_and_type_once_and_in_one_group() {
        let page = page();
        let mut seen: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name.clone());
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current);
                let want = if name.ends_with("_total") {
                    "counter"
                } else if name.ends_with("_seconds") {
                    "histogram"
                } else {
                    "gauge"
                };
                assert_eq!(kind, want, "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (_, value) = line.rsplit_once(' ').unwrap();
                if name.ends_with("_sum") {
                    value.parse::<f64>().unwrap();
                } else {
                    value.parse::<u64>().unwrap();
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|family| *family == DURATION_FAMILY)
                    .unwrap_or(name);
                assert_eq!(family, current, "sample outside its family: {line}");
            }
        }
        assert_eq!(
            seen.len(),
            CACHE_FAMILIES.len()
                + 1
                + UPSTREAM_FAMILIES.len()
                + FORWARD_FAMILIES.len()
                + UPSTREAM_GAUGES.len()
                + SHARD_FAMILIES.len()
                + 2
        );
        assert!(page.ends_with('\n'));
        // Stable: the same counters render the same page.
        assert_eq!(page, self::page());
    }

    #[test]
    fn without_caches_or_shards() {
        let config = build("Corefile", ". {\n}").unwrap();
        let page = Exposition::new(&config, Vec::new()).render();
        assert!(!page.contains("coredns_cache"));
        assert!(page.contains("# TYPE shardns_shard_queries_total counter\n"));
        assert!(!page.contains("shard=\""));
        // No upstreams: no per-upstream families; CoreDNS's unlabelled ones are always there.
        assert!(!page.contains("coredns_proxy"));
        assert!(!page.contains("shardns_upstream"));
        assert_eq!(value(&page, "coredns_forward_healthcheck_broken_total"), 0);
        assert_eq!(
            value(&page, "coredns_forward_max_concurrent_rejects_total"),
            0
        );
    }

    #[test]
    fn duration_histogram() {
        let page = page();
        let series = |suffix: &str, rcode: &str, to: &str, le: Option<&str>| {
            let le = le.map(|le| format!(",le=\"{le}\"")).unwrap_or_default();
            format!(
                "coredns_proxy_request_duration_seconds{suffix}{{proxy_name=\"forward\",\
                 rcode=\"{rcode}\",to=\"{to}\"{le}}}"
            )
        };
        let bucket = |rcode, to, le| value(&page, &series("_bucket", rcode, to, Some(le)));
        // NOERROR, upstream 0: 0.1 ms twice, 1.5 ms twice, 9 s once; cumulative buckets.
        for (le, want) in [
            ("0.00025", 2),
            ("0.0005", 2),
            ("0.001", 2),
            ("0.002", 4),
            ("0.004", 4),
            ("1.024", 4),
            ("8.192", 4),
            ("+Inf", 5),
        ] {
            assert_eq!(bucket("NOERROR", TO[0], le), want, "le {le}");
        }
        assert_eq!(value(&page, &series("_count", "NOERROR", TO[0], None)), 5);
        assert_eq!(
            text(&page, &series("_sum", "NOERROR", TO[0], None)),
            "9.0032"
        );
        // Upstream 1: 0.101 ms instead of 0.1 ms.
        assert_eq!(bucket("NOERROR", TO[1], "+Inf"), 5);
        assert_eq!(
            text(&page, &series("_sum", "NOERROR", TO[1], None)),
            "9.003202"
        );
        // NXDOMAIN from upstream 1 only, 0.3 ms.
        assert_eq!(bucket("NXDOMAIN", TO[1], "0.00025"), 0);
        assert_eq!(bucket("NXDOMAIN", TO[1], "0.0005"), 1);
        assert_eq!(bucket("NXDOMAIN", TO[1], "+Inf"), 1);
        assert_eq!(
            text(&page, &series("_sum", "NXDOMAIN", TO[1], None)),
            "0.0003"
        );
        // RCODE 12 by number, exactly on the last bound.
        assert_eq!(bucket("12", TO[0], "4.096"), 0);
        assert_eq!(bucket("12", TO[0], "8.192"), 1);
        assert_eq!(bucket("12", TO[0], "+Inf"), 1);
        assert_eq!(text(&page, &series("_sum", "12", TO[0], None)), "8.192");
        // Only RCODEs with exchanges: NOERROR twice, NXDOMAIN and 12 once; 17 buckets each.
        assert_eq!(
            page.matches("coredns_proxy_request_duration_seconds_count{")
                .count(),
            4
        );
        assert_eq!(
            page.matches("coredns_proxy_request_duration_seconds_bucket{")
                .count(),
            4 * 17
        );
        assert!(!page.contains("rcode=\"NXDOMAIN\",to=\"10.0.0.1:53\""));
        assert!(!page.contains("rcode=\"SERVFAIL\",to="));
        // Buckets, sum and count of one series are written together, in order.
        let lines: Vec<&str> = page
            .lines()
            .filter(|line| line.contains(&format!("rcode=\"NOERROR\",to=\"{}\"", TO[0])))
            .collect();
        assert_eq!(lines.len(), 19);
        assert!(lines[0].contains("le=\"0.00025\"}"), "{}", lines[0]);
        assert!(lines[16].contains("le=\"+Inf\"}"), "{}", lines[16]);
        assert!(lines[17].starts_with("coredns_proxy_request_duration_seconds_sum{"));
        assert!(lines[18].starts_with("coredns_proxy_request_duration_seconds_count{"));
        assert!(page.contains("# TYPE coredns_proxy_request_duration_seconds histogram\n"));
    }

    #[test]
    fn upstream_counters_and_gauges() {
        let page = page();
        // Shard s (base 100 or 200), upstream i: base + offset + i; summed: 300 + 2 (offset + i).
        let sum = |offset: u64, index: u64| 300 + 2 * (offset + index);
        for (index, to) in TO.iter().enumerate() {
            let index = index as u64;
            assert_eq!(
                value(
                    &page,
                    &format!(
                        "coredns_proxy_healthcheck_failures_total{{proxy_name=\"forward\",\
                         to=\"{to}\"}}"
                    )
                ),
                sum(20, index)
            );
            for (name, proto, offset) in [
                ("hits", "udp", 30),
                ("hits", "tcp", 40),
                ("misses", "udp", 50),
                ("misses", "tcp", 60),
            ] {
                let series = format!(
                    "coredns_proxy_conn_cache_{name}_total{{proto=\"{proto}\",\
                     proxy_name=\"forward\",to=\"{to}\"}}"
                );
                assert_eq!(value(&page, &series), sum(offset, index), "{series}");
            }
            // Gauges: one series per upstream and shard, not summed.
            for (name, offset) in [
                ("shardns_upstream_connections", 70),
                ("shardns_upstream_inflight", 80),
            ] {
                for shard in 0..2u64 {
                    let series = format!("{name}{{shard=\"{shard}\",to=\"{to}\"}}");
                    let want = 100 * (shard + 1) + offset + index;
                    assert_eq!(value(&page, &series), want, "{series}");
                }
            }
        }
        assert_eq!(
            value(&page, "coredns_forward_healthcheck_broken_total"),
            113 + 213
        );
        assert_eq!(
            value(&page, "coredns_forward_max_concurrent_rejects_total"),
            114 + 214
        );
        assert_eq!(
            page.matches("coredns_proxy_conn_cache_hits_total{").count(),
            4
        );
        assert_eq!(page.matches("shardns_upstream_connections{").count(), 4);
        assert!(page.contains("# TYPE shardns_upstream_inflight gauge\n"));
    }

    #[test]
    fn only_upstreams_present_in_config_and_stats() {
        let config = build("Corefile", ". {\n forward . 10.0.0.1 10.0.0.2 10.0.0.3\n}").unwrap();
        let filled = |upstreams: usize| {
            let stats = ShardStats::new(config.servers.len(), upstreams);
            for upstream in stats.upstreams.iter() {
                upstream.durations[0].observe(1);
                upstream.healthcheck_failures.inc();
            }
            Arc::new(stats)
        };
        // The shards count fewer upstreams than the configuration names (a reload added one).
        let page = Exposition::new(&config, vec![filled(2), filled(2)]).render();
        assert!(page.contains("to=\"10.0.0.2:53\""));
        assert!(!page.contains("10.0.0.3"), "{page}");
        assert_eq!(
            value(
                &page,
                "coredns_proxy_healthcheck_failures_total{proxy_name=\"forward\",to=\"10.0.0.1:53\"}"
            ),
            2
        );
        // More counted than named: the extra slots have no label to be written under.
        let page = Exposition::new(&config, vec![filled(4)]).render();
        assert_eq!(
            page.matches("coredns_proxy_healthcheck_failures_total{")
                .count(),
            3
        );
        assert_eq!(
            page.matches("coredns_proxy_request_duration_seconds_count{")
                .count(),
            3
        );
    }

    #[test]
    fn escaping() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, "a\\\\b\\\"c\\nd");
        let mut out = String::new();
        header(&mut out, "x_total", "counter", "back\\slash\nnew \"line\"");
        assert_eq!(
            out,
            "# HELP x_total back\\\\slash\\nnew \"line\"\n# TYPE x_total counter\n"
        );
        // A zone whose labels hold odd bytes (not possible from a Corefile) stays one line.
        let mut config = build("Corefile", ". {\n cache 30\n}").unwrap();
        let cache = config.servers[0].cache.as_mut().unwrap();
        cache.zones = vec![b"\x03a\"b\x02\\\n\x00".to_vec()];
        let page = Exposition::new(&config, two_shards(&config)).render();
        assert!(
            page.contains("zones=\"a\\\\034b.\\\\092\\\\010.\""),
            "{page}"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(
            server_label(Some("0.0.0.0:53".parse().unwrap())),
            "dns://:53"
        );
        assert_eq!(server_label(Some("[::]:53".parse().unwrap())), "dns://:53");
        assert_eq!(
            server_label(Some("[fd00::1]:53".parse().unwrap())),
            "dns://[fd00::1]:53"
        );
        assert_eq!(zone_text(b"\x00"), ".");
        assert_eq!(zone_text(b"\x07cluster\x05local\x00"), "cluster.local.");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(16), "BADVERS");
        assert_eq!(rcode_name(99), "RCODE");
        assert_eq!(UPSTREAM_RCODES[5], "REFUSED");
        assert_eq!(UPSTREAM_RCODES[10], "NOTZONE");
        assert_eq!(UPSTREAM_RCODES[15], "15");
    }
}
