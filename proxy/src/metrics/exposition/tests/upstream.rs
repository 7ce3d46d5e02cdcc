//! Unit tests of the per-upstream series: the duration histogram, CoreDNS's upstream
//! counters, shardns's upstream gauges, and which upstreams get series.

use super::*;

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
        let stats = ShardStats::new(&config, upstreams);
        for upstream in stats.upstreams.iter() {
            upstream.durations[0].observe(1);
            upstream.healthcheck_failures.inc();
        }
        Arc::new(stats)
    };
    // The shards count fewer upstreams than the configuration names (a reload added one).
    let page = Exposition::new(&config, vec![filled(2), filled(2)], Default::default()).render();
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
    let page = Exposition::new(&config, vec![filled(4)], Default::default()).render();
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
