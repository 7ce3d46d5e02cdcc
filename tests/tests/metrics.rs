//! The `prometheus` endpoint of the real binary (`--shards 2`, both I/O backends): CoreDNS's
//! cache, forward and request (`coredns_dns_*`) counters and shardns's per-shard and
//! per-upstream series after known traffic, summed over the shards, on a page that
//! `promtool check metrics` accepts; 404 and 400 answers that leave the server running.
//!
//! Traffic goes to 127.0.0.1 only; every wait is bounded.

#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{HTTP_TIMEOUT, family_sum, http, promtool_accepts, scrape, value};
use shardns_e2e::{Io, Shardns, UdpClient, Unbound, io_tests, wait_for, zone};

/// shardns with a cache, forwarding to `unbound`, serving metrics on 127.0.0.1:`port`.
fn corefile(unbound: &Unbound, port: u16) -> String {
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {} {{\n        force_tcp\n    \
         }}\n    errors\n    prometheus 127.0.0.1:{port}\n}}\n",
        unbound.addr()
    )
}

/// Starts shardns on a free metrics port (a few tries, in case another process takes the
/// port between the check and the bind). Returns it and the metrics address.
fn start(unbound: &Unbound, io: Io) -> (Shardns, SocketAddr) {
    let args = ["--shards", "2", "--io", io.as_arg()];
    Shardns::start_with_http(|port| corefile(unbound, port), &args)
}

fn counts_queries(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let (mut shardns, metrics) = start(&unbound, io);
    // One client (one source port): every query reaches the same shard, so the repeated
    // names are hits there.
    let client = UdpClient::new(shardns.udp_addr()).expect("UDP client");
    let queries = [
        (zone::WWW, ResponseCode::NoError),
        (zone::WWW, ResponseCode::NoError),
        (zone::DUAL, ResponseCode::NoError),
        (zone::MISSING, ResponseCode::NXDomain),
        (zone::MISSING, ResponseCode::NXDomain),
    ];
    for (name, rcode) in queries {
        let reply = client.query(name, RecordType::A).expect("a reply");
        assert_eq!(reply.response_code(), rcode, "{name}: {reply}");
    }
    let sent = queries.len() as u64;

    let labels = format!(
        "server=\"dns://{}\",view=\"\",zones=\".\"",
        shardns.udp_addr()
    );
    let typed = |kind: &str| {
        format!(
            "server=\"dns://{}\",type=\"{kind}\",view=\"\",zones=\".\"",
            shardns.udp_addr()
        )
    };
    let requests = format!("coredns_cache_requests_total{{{labels}}}");
    // The shards publish their counters as they go; allow a moment for the last ones.
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(metrics);
        (value(&page, &requests) == Some(sent)).then_some(page)
    })
    .unwrap_or_else(|| panic!("{requests} never reached {sent}:\n{}", scrape(metrics)));

    for family in [
        "coredns_cache_entries",
        "coredns_cache_requests_total",
        "coredns_cache_hits_total",
        "coredns_cache_misses_total",
        "shardns_shard_queries_total",
    ] {
        let kind = if family.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            page.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{page}"
        );
        assert!(page.contains(&format!("# HELP {family} ")), "{page}");
    }
    let hits = |kind: &str| {
        value(
            &page,
            &format!("coredns_cache_hits_total{{{}}}", typed(kind)),
        )
    };
    assert_eq!(hits("success"), Some(1), "{page}");
    assert_eq!(hits("denial"), Some(1), "{page}");
    let misses = format!("coredns_cache_misses_total{{{labels}}}");
    assert_eq!(value(&page, &misses), Some(3), "{page}");
    assert_eq!(
        value(
            &page,
            &format!("coredns_cache_served_stale_total{{{labels}}}")
        ),
        Some(0)
    );
    // Each key is held by the shard that asked and by its owner: one or two copies.
    let entries =
        |kind: &str| value(&page, &format!("coredns_cache_entries{{{}}}", typed(kind))).unwrap();
    assert!((2..=4).contains(&entries("success")), "{page}");
    assert!((1..=2).contains(&entries("denial")), "{page}");

    let shard0 = value(&page, "shardns_shard_queries_total{shard=\"0\"}");
    let shard1 = value(&page, "shardns_shard_queries_total{shard=\"1\"}");
    assert_eq!(shard0.zip(shard1).map(|(a, b)| a + b), Some(sent), "{page}");
    assert_eq!(family_sum(&page, "shardns_shard_queries_total"), sent);
    assert_eq!(family_sum(&page, "shardns_shard_cache_hits_total"), 2);
    assert_eq!(family_sum(&page, "shardns_shard_cache_misses_total"), 3);
    assert_eq!(family_sum(&page, "shardns_shard_error_replies_total"), 0);
    assert!(family_sum(&page, "shardns_shard_upstream_replies_total") >= 3);

    assert_forward_series(&unbound, metrics);
    assert_request_series(&shardns, metrics, sent);
    shardns.assert_alive();
    shardns.stop();
}

/// After `counts_queries`'s traffic (five UDP queries for A over IPv4: two hits, three
/// misses, of which one NXDOMAIN miss and one NXDOMAIN hit): CoreDNS's request families under
/// its labels, the shard info series, and a page that Prometheus's own linter accepts.
fn assert_request_series(shardns: &Shardns, metrics: SocketAddr, sent: u64) {
    let at = format!(
        "server=\"dns://{}\",view=\"\",zone=\".\"",
        shardns.udp_addr()
    );
    let requests = format!(
        "coredns_dns_requests_total{{family=\"1\",proto=\"udp\",server=\"dns://{}\",\
         type=\"A\",view=\"\",zone=\".\"}}",
        shardns.udp_addr()
    );
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(metrics);
        (value(&page, &requests) == Some(sent)).then_some(page)
    })
    .unwrap_or_else(|| panic!("{requests} never reached {sent}:\n{}", scrape(metrics)));
    let responses = |plugin: &str, rcode: &str| {
        let series =
            format!("coredns_dns_responses_total{{plugin=\"{plugin}\",rcode=\"{rcode}\",{at}}}");
        value(&page, &series).unwrap_or(0)
    };
    assert_eq!(responses("cache", "NOERROR"), 1, "{page}");
    assert_eq!(responses("cache", "NXDOMAIN"), 1, "{page}");
    assert_eq!(responses("forward", "NOERROR"), 2, "{page}");
    assert_eq!(responses("forward", "NXDOMAIN"), 1, "{page}");
    for histogram in [
        format!("coredns_dns_request_duration_seconds_count{{{at}}}"),
        format!("coredns_dns_request_size_bytes_count{{proto=\"udp\",{at}}}"),
        format!("coredns_dns_response_size_bytes_count{{proto=\"udp\",{at}}}"),
    ] {
        assert_eq!(value(&page, &histogram), Some(sent), "{histogram}\n{page}");
    }
    assert_eq!(family_sum(&page, "shardns_shard_info"), 2, "{page}");
    assert!(page.contains("\ncoredns_build_info{"), "{page}");
    assert_eq!(value(&page, "coredns_reload_failed_total"), Some(0));
    promtool_accepts(&page);
}

/// After `counts_queries`'s traffic (two NOERROR misses, one NXDOMAIN miss, `force_tcp`):
/// CoreDNS's `coredns_proxy_*` and `coredns_forward_*` series for the one upstream, and
/// shardns's per-upstream gauges for both shards.
fn assert_forward_series(unbound: &Unbound, metrics: SocketAddr) {
    let to = unbound.addr().to_string();
    let histogram = |suffix: &str, rcode: &str, le: &str| {
        format!(
            "coredns_proxy_request_duration_seconds{suffix}{{proxy_name=\"forward\",\
             rcode=\"{rcode}\",to=\"{to}\"{le}}}"
        )
    };
    let noerror = histogram("_count", "NOERROR", "");
    let nxdomain = histogram("_count", "NXDOMAIN", "");
    let upstream_queries = "shardns_shard_upstream_queries_total";
    // Every upstream attempt was answered: one observation per attempt, by RCODE.
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(metrics);
        let observed = family_sum(&page, "coredns_proxy_request_duration_seconds_count");
        (value(&page, &noerror) == Some(2)
            && value(&page, &nxdomain) == Some(1)
            && observed == family_sum(&page, upstream_queries))
        .then_some(page)
    })
    .unwrap_or_else(|| {
        panic!(
            "{noerror} never reached 2 with every upstream query observed:\n{}",
            scrape(metrics)
        )
    });
    assert_eq!(family_sum(&page, upstream_queries), 3, "{page}");
    assert!(
        page.contains("\n# TYPE coredns_proxy_request_duration_seconds histogram\n"),
        "{page}"
    );
    assert_eq!(
        value(&page, &histogram("_bucket", "NOERROR", ",le=\"+Inf\"")),
        Some(2)
    );
    let sum = histogram("_sum", "NOERROR", "");
    let sum = page
        .lines()
        .find_map(|line| line.strip_prefix(&sum)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{sum} missing:\n{page}"));
    let seconds: f64 = sum.parse().expect("a float sum");
    assert!(seconds > 0.0 && seconds < 10.0, "{sum}");

    // force_tcp: every attempt took a pooled TCP connection or opened one; none used UDP.
    let conn_cache = |outcome: &str, proto: &str| {
        let series = format!(
            "coredns_proxy_conn_cache_{outcome}_total{{proto=\"{proto}\",proxy_name=\"forward\",\
             to=\"{to}\"}}"
        );
        value(&page, &series).unwrap_or_else(|| panic!("{series} missing:\n{page}"))
    };
    assert!(conn_cache("misses", "tcp") >= 1, "{page}");
    assert_eq!(
        conn_cache("misses", "tcp") + conn_cache("hits", "tcp"),
        3,
        "{page}"
    );
    assert_eq!(
        conn_cache("misses", "udp") + conn_cache("hits", "udp"),
        0,
        "{page}"
    );
    let failures =
        format!("coredns_proxy_healthcheck_failures_total{{proxy_name=\"forward\",to=\"{to}\"}}");
    assert_eq!(value(&page, &failures), Some(0), "{page}");
    assert_eq!(
        value(&page, "coredns_forward_healthcheck_broken_total"),
        Some(0)
    );
    assert_eq!(
        value(&page, "coredns_forward_max_concurrent_rejects_total"),
        Some(0)
    );

    // One gauge series per shard; no attempt is left in flight.
    for shard in 0..2 {
        for name in ["shardns_upstream_connections", "shardns_upstream_inflight"] {
            let series = format!("{name}{{shard=\"{shard}\",to=\"{to}\"}}");
            assert!(value(&page, &series).is_some(), "{series} missing:\n{page}");
        }
    }
    assert!(
        page.contains("\n# TYPE shardns_upstream_connections gauge\n"),
        "{page}"
    );
    assert_eq!(family_sum(&page, "shardns_upstream_inflight"), 0, "{page}");
}

fn bad_requests_leave_it_running(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let (mut shardns, metrics) = start(&unbound, io);
    let missing = http(
        metrics,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
    let started = Instant::now();
    let garbage = http(
        metrics,
        b"\x16\x03\x01 definitely not HTTP \xff\xfe\r\n\r\n",
    );
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    assert!(started.elapsed() < HTTP_TIMEOUT);
    let line = http(metrics, b"hello\n\n");
    assert!(line.starts_with("HTTP/1.1 400 "), "{line}");
    let post = http(
        metrics,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    // A client that connects and leaves costs nothing.
    drop(TcpStream::connect_timeout(&metrics, HTTP_TIMEOUT).expect("connect"));
    shardns.assert_alive();
    // Still serving metrics, and DNS.
    let page = scrape(metrics);
    assert!(page.contains("# TYPE coredns_cache_requests_total counter\n"));
    let client = UdpClient::new(shardns.udp_addr()).expect("UDP client");
    let reply = client.query(zone::WWW, RecordType::A).expect("a reply");
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    shardns.assert_alive();
    shardns.stop();
}

io_tests!(counts_queries, bad_requests_leave_it_running);
