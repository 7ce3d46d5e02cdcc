//! Unit tests of the page: the shared fixture (a Corefile and two shards with distinct
//! counts), the cache, shard and format checks here, the upstream series in [`upstream`].

use super::*;
use crate::corefile::build;

mod requests;
mod upstream;

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
            let stats = ShardStats::new(config, config.upstreams.len());
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
            stats.upstream_forgeries.add(base + 13);
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
            for (i, reached) in stats.bounds.reached.iter().enumerate() {
                reached.add(base + 20 + i as u64);
            }
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
    let process = ProcessCounters::default();
    process.http_refused.add(7);
    Exposition::new(&config, two_shards(&config), Arc::new(process)).render()
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
        ("shardns_shard_upstream_forgeries_total", 13),
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
    let limit = |limit: &str, shard: u8| {
        let series =
            format!("shardns_shard_limit_reached_total{{limit=\"{limit}\",shard=\"{shard}\"}}");
        value(&page, &series)
    };
    assert_eq!(
        (
            limit("client_tcp_connections", 0),
            limit("client_tcp_backlog", 1),
            limit("pending_queries", 0),
            limit("waiting_clients", 1)
        ),
        (120, 221, 122, 223)
    );
    assert_eq!(value(&page, "shardns_http_connections_refused_total"), 7);
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
            } else if name.ends_with("_seconds") || name.ends_with("_bytes") {
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
            let histogram = current.ends_with("_seconds") || current.ends_with("_bytes");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| histogram && *family == current)
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
            + 6 // coredns_dns_*: requests, do_requests, duration, two sizes, responses
            + 2 // coredns_build_info, coredns_reload_failed_total
            + 1 // shardns_shard_info
            + 2 // shardns_shard_limit_reached_total, shardns_http_connections_refused_total
            + 10 // shardns_fastpath_*: 5 of the program's, entries, interfaces, refused,
                 // published and dropped per shard (zeros: no fast path here)
    );
    assert_eq!(value(&page, "shardns_fastpath_hits_total"), 0);
    assert_eq!(value(&page, "shardns_fastpath_interfaces"), 0);
    assert!(page.ends_with('\n'));
    // Stable: the same counters render the same page.
    assert_eq!(page, self::page());
}

#[test]
fn without_caches_or_shards() {
    let config = build("Corefile", ". {\n}").unwrap();
    let page = Exposition::new(&config, Vec::new(), Default::default()).render();
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
    let page = Exposition::new(&config, two_shards(&config), Default::default()).render();
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
    assert_eq!(error_rcode_label(3), "NXDOMAIN");
    assert_eq!(error_rcode_label(16), "BADVERS");
    assert_eq!(error_rcode_label(12), "RCODE12");
    assert_eq!(upstream_rcode_label(5), "REFUSED");
    assert_eq!(upstream_rcode_label(10), "NOTZONE");
    assert_eq!(upstream_rcode_label(15), "15");
}

#[test]
fn fast_path_hits_are_cache_hits_and_its_families_show_its_counters() {
    let config = build("Corefile", COREFILE).unwrap();
    let fastpath = crate::runtime::fastpath::FastpathCounters::new(config.servers.len());
    fastpath.servers[0].hits[0].add(1000);
    fastpath.servers[0].hits[1].add(100);
    fastpath.hits.set(1100);
    fastpath.misses.set(5);
    fastpath.entries.set(42);
    fastpath.interfaces.set(3);
    let process = ProcessCounters {
        fastpath: Some(Arc::new(fastpath)),
        ..ProcessCounters::default()
    };
    let with = Exposition::new(&config, two_shards(&config), Arc::new(process)).render();
    let without = page();
    let cluster = "server=\"dns://169.254.20.10:53\",view=\"\",zones=\"cluster.local.\"";
    let typed = |page: &str, name: &str, kind: &str| {
        value(
            page,
            &format!(
                "{name}{{server=\"dns://169.254.20.10:53\",type=\"{kind}\",view=\"\",\
                 zones=\"cluster.local.\"}}"
            ),
        )
    };
    for (kind, added) in [("success", 1000), ("denial", 100)] {
        assert_eq!(
            typed(&with, "coredns_cache_hits_total", kind),
            typed(&without, "coredns_cache_hits_total", kind) + added
        );
    }
    let requests = |page: &str| value(page, &format!("coredns_cache_requests_total{{{cluster}}}"));
    assert_eq!(requests(&with), requests(&without) + 1100);
    let misses = |page: &str| value(page, &format!("coredns_cache_misses_total{{{cluster}}}"));
    assert_eq!(
        misses(&with),
        misses(&without),
        "fast-path hits are no misses"
    );
    assert_eq!(value(&with, "shardns_fastpath_hits_total"), 1100);
    assert_eq!(value(&with, "shardns_fastpath_misses_total"), 5);
    assert_eq!(value(&with, "shardns_fastpath_entries"), 42);
    assert_eq!(value(&with, "shardns_fastpath_interfaces"), 3);
}
