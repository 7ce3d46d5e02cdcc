//! The `/metrics` page in the Prometheus text format 0.0.4: each family once, with `# HELP`
//! and `# TYPE`, in a fixed order, every value summed over the shards when rendered.
//!
//! - CoreDNS's cache metrics, named and labelled as CoreDNS does so that existing dashboards
//!   work: `coredns_cache_*{server, type, view, zones}` for every server block with a
//!   `cache`. `server` is `dns://` plus the block's first listening address (`dns://:53` for
//!   the wildcard), `zones` the cache's zones joined by commas, `view` empty. Labels are
//!   written sorted by name, as the Go client writes them.
//! - shardns's own `shardns_shard_*{shard}` series, one per shard, for a per-shard dashboard.
//!
//! `coredns_cache_requests_total` is hits plus misses: every lookup is one or the other, as in
//! CoreDNS, and the hit path does not count requests separately (one counter less per hit).
//! `coredns_cache_entries` sums what each shard holds: a key resolved through its owner
//! shard is stored by the owner and by the shard that asked, so it counts once per copy.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use shardns_shard::stats::CacheStats;
use shardns_shard::{Config, ShardStats};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Values of the cache `type` label, indexed like the arrays of [`CacheStats`].
const CACHE_TYPES: [&str; 2] = ["success", "denial"];

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
        Exposition { caches, shards }
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

/// One sample line: `name{label="value",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
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
    /// cache zones, one without a cache.
    const COREFILE: &str = "cluster.local:53 {\n bind 169.254.20.10 10.96.0.10\n \
                            cache 30\n}\nin-addr.arpa:5353 {\n bind ::1\n cache 30\n}\n\
                            . {\n cache 30 b.example a.example\n}\nexample.org {\n}\n";

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
        let mut found = page
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '));
        let value = found
            .next()
            .unwrap_or_else(|| panic!("{series} missing:\n{page}"));
        assert!(found.next().is_none(), "{series} twice");
        value.parse().unwrap()
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
        assert!(!page.contains("rcode=\"NOERROR\""));
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
                } else {
                    "gauge"
                };
                assert_eq!(kind, want, "{line}");
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample outside its family: {line}");
                let (_, value) = line.rsplit_once(' ').unwrap();
                value.parse::<u64>().unwrap();
            }
        }
        assert_eq!(seen.len(), CACHE_FAMILIES.len() + SHARD_FAMILIES.len() + 2);
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
    }
}
