//! The request families (`coredns_dns_*`), the process families and the shard info, as
//! CoreDNS's dashboards read them.

use shardns_shard::RequestSlots;

use super::*;

#[test]
fn request_families_sum_the_shards_under_coredns_labels() {
    let config = build("Corefile", COREFILE).unwrap();
    // Counters with room for blocks a reload may add, as the process makes them.
    let room = config.servers.len() + 3;
    let slots = RequestSlots::of(&config, room);
    let cluster = slots
        .slot(0, 0)
        .expect("169.254.20.10 serves cluster.local");
    let other_address = slots
        .slot(1, 0)
        .expect("10.96.0.10 serves cluster.local too");
    let dropped = slots.dropped(0).expect("169.254.20.10's dropped slot");
    let shards: Vec<Arc<ShardStats>> = (0..2u64)
        .map(|shard| {
            let stats = ShardStats::with_room(&config, room, config.upstreams.len());
            let block = &stats.requests[cluster];
            block.requests[0][0][1].add(5 + shard * 2); // udp, IPv4, A
            block.requests[1][1][0].add(1); // tcp, IPv6, AAAA
            block.do_requests.add(1);
            block.responses[1][0].add(4); // NOERROR from the cache
            block.responses[2][3].add(shard); // NXDOMAIN from forward, shard 1 only
            block.duration.observe(3_000);
            block.request_size[0].observe(33);
            block.response_size[0].observe(600);
            stats.requests[other_address].requests[0][0][1].add(2);
            stats.requests[dropped].responses[0][5].add(1); // REFUSED by the server
            stats.driver.set(if shard == 0 { 1 } else { 2 });
            Arc::new(stats)
        })
        .collect();
    let process = Arc::new(ProcessCounters::default());
    process.reload_failed.add(3);
    let page = Exposition::new(&config, shards, process).render();
    let at = "server=\"dns://169.254.20.10:53\",view=\"\",zone=\"cluster.local.\"";
    let expect = [
        (
            "coredns_dns_requests_total{family=\"1\",proto=\"udp\",server=\"dns://169.254.20.10:53\",type=\"A\",view=\"\",zone=\"cluster.local.\"}".to_string(),
            12,
        ),
        (
            "coredns_dns_requests_total{family=\"2\",proto=\"tcp\",server=\"dns://169.254.20.10:53\",type=\"AAAA\",view=\"\",zone=\"cluster.local.\"}".to_string(),
            2,
        ),
        (
            "coredns_dns_requests_total{family=\"1\",proto=\"udp\",server=\"dns://10.96.0.10:53\",type=\"A\",view=\"\",zone=\"cluster.local.\"}".to_string(),
            4,
        ),
        (format!("coredns_dns_do_requests_total{{{at}}}"), 2),
        (
            format!("coredns_dns_responses_total{{plugin=\"cache\",rcode=\"NOERROR\",{at}}}"),
            8,
        ),
        (
            format!("coredns_dns_responses_total{{plugin=\"forward\",rcode=\"NXDOMAIN\",{at}}}"),
            1,
        ),
        (
            "coredns_dns_responses_total{plugin=\"\",rcode=\"REFUSED\",server=\"dns://169.254.20.10:53\",view=\"\",zone=\"dropped\"}".to_string(),
            2,
        ),
        (
            format!("coredns_dns_request_duration_seconds_bucket{{{at},le=\"0.002\"}}"),
            0,
        ),
        (
            format!("coredns_dns_request_duration_seconds_bucket{{{at},le=\"0.004\"}}"),
            2,
        ),
        (
            format!("coredns_dns_request_duration_seconds_bucket{{{at},le=\"+Inf\"}}"),
            2,
        ),
        (
            format!("coredns_dns_request_duration_seconds_count{{{at}}}"),
            2,
        ),
        (
            format!("coredns_dns_request_size_bytes_bucket{{proto=\"udp\",{at},le=\"0\"}}"),
            0,
        ),
        (
            format!("coredns_dns_request_size_bytes_bucket{{proto=\"udp\",{at},le=\"100\"}}"),
            2,
        ),
        (
            format!("coredns_dns_request_size_bytes_sum{{proto=\"udp\",{at}}}"),
            66,
        ),
        (
            format!("coredns_dns_response_size_bytes_bucket{{proto=\"udp\",{at},le=\"511\"}}"),
            0,
        ),
        (
            format!("coredns_dns_response_size_bytes_bucket{{proto=\"udp\",{at},le=\"1023\"}}"),
            2,
        ),
        ("coredns_reload_failed_total".to_string(), 3),
        (
            "shardns_shard_info{io=\"epoll\",shard=\"0\"}".to_string(),
            1,
        ),
        (
            "shardns_shard_info{io=\"io_uring\",shard=\"1\"}".to_string(),
            1,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(value(&page, &series), want, "{series}\n{page}");
    }
    let sum = format!("coredns_dns_request_duration_seconds_sum{{{at}}} ");
    assert!(page.contains(&format!("{sum}0.006\n")), "{page}");
    assert!(
        !page.contains(
            "proto=\"tcp\",server=\"dns://169.254.20.10:53\",view=\"\",zone=\"cluster.local.\",le"
        ),
        "no TCP sizes were recorded"
    );
    assert!(
        !page.contains("zone=\"in-addr.arpa.\""),
        "a slot that counted nothing has no series"
    );
    let build_info = page
        .lines()
        .find(|line| line.starts_with("coredns_build_info{"))
        .expect("build info");
    assert!(
        build_info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build_info}"
    );
    assert!(build_info.ends_with(" 1"), "{build_info}");
}
