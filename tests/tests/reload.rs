//! Live reload through the real binary: SIGUSR1 and the `reload` directive apply a changed
//! Corefile on every shard, keeping the cache (CoreDNS empties it); a broken Corefile is
//! logged and the running configuration keeps serving.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{Io, Shardns, UdpClient, Unbound, io_tests, wait_for, zone};

fn corefile(upstream: &Unbound, extra: &str) -> String {
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 300\n    forward . {}\n    errors\n{extra}}}\n",
        upstream.addr()
    )
}

fn first_ip(msg: &Message) -> Option<IpAddr> {
    msg.answers().iter().find_map(|r| r.data().ip_addr())
}

/// Waits until the log holds `count` lines containing `needle`.
fn wait_log(shardns: &Shardns, needle: &str, count: usize) {
    let seen = wait_for(Duration::from_secs(10), || {
        (shardns
            .log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            >= count)
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "no {count} × {needle:?} in:\n{}",
        shardns.log_text()
    );
}

fn sigusr1_keeps_the_cache_and_applies_the_new_upstream(io: Io) {
    let first = Unbound::start().unwrap();
    let second = Unbound::start().unwrap();
    let shardns = Shardns::start(
        &corefile(&first, ""),
        &["--shards", "2", "--io", io.as_arg()],
    )
    .unwrap();
    let clients: Vec<UdpClient> = (0..4)
        .map(|_| UdpClient::new(shardns.udp_addr()).unwrap())
        .collect();
    for c in &clients {
        let r = c.query(zone::WWW, RecordType::A).unwrap();
        assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)));
    }
    assert_eq!(first.queries_for(zone::WWW, Some(RecordType::A)), 1);

    std::fs::write(shardns.dir().join("Corefile"), corefile(&second, "")).unwrap();
    send_signal(shardns.pid(), "USR1").unwrap();
    wait_log(&shardns, "configuration reloaded", 2);

    // Cached before the reload: still answered from the cache, on every shard.
    for c in &clients {
        let r = c.query(zone::WWW, RecordType::A).unwrap();
        assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)));
        assert!(r.authoritative(), "a cache hit: {r}");
    }
    // A miss goes to the new upstream.
    let r = clients[0].query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::DUAL_A)));
    assert_eq!(first.queries_for(zone::WWW, Some(RecordType::A)), 1);
    assert_eq!(first.queries_for(zone::DUAL, None), 0);
    assert_eq!(second.queries_for(zone::DUAL, Some(RecordType::A)), 1);
    assert_eq!(second.queries_for(zone::WWW, None), 0);
    shardns.stop();
}

fn metrics_follow_a_reload_to_new_upstreams(io: Io) {
    let first = Unbound::start().unwrap();
    let second = Unbound::start().unwrap();
    let port = shardns_e2e::unbound::free_port().unwrap();
    let metrics: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let extra = format!("    prometheus {metrics}\n");
    let shardns = Shardns::start(
        &corefile(&first, &extra),
        &["--shards", "2", "--io", io.as_arg()],
    )
    .unwrap();
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    client.query(zone::WWW, RecordType::A).unwrap();
    std::fs::write(shardns.dir().join("Corefile"), corefile(&second, &extra)).unwrap();
    send_signal(shardns.pid(), "USR1").unwrap();
    wait_log(&shardns, "configuration reloaded", 2);
    client.query(zone::DUAL, RecordType::A).unwrap();
    let to = |u: &Unbound| format!("to=\"{}\"", u.addr());
    let page = shardns_e2e::metrics::scrape(metrics);
    let count = |u: &Unbound| {
        page.lines()
            .filter(|l| l.starts_with("coredns_proxy_request_duration_seconds_count{"))
            .filter(|l| l.contains(&to(u)))
            .count()
    };
    assert_eq!(count(&second), 1, "the new upstream is labelled:\n{page}");
    shardns.stop();
}

fn a_broken_corefile_keeps_the_running_configuration(io: Io) {
    let upstream = Unbound::start().unwrap();
    let shardns = Shardns::start(
        &corefile(&upstream, ""),
        &["--shards", "2", "--io", io.as_arg()],
    )
    .unwrap();
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    client.query(zone::WWW, RecordType::A).unwrap();
    std::fs::write(
        shardns.dir().join("Corefile"),
        ".:0 {\n    bind 127.0.0.1\n    cache 0\n}\n",
    )
    .unwrap();
    send_signal(shardns.pid(), "USR1").unwrap();
    wait_log(&shardns, "reload failed", 1);
    assert!(
        shardns.log_text().contains("Corefile:3: bad cache TTL"),
        "{}",
        shardns.log_text()
    );
    // A new listening address needs a restart: refused, logged, still serving.
    std::fs::write(
        shardns.dir().join("Corefile"),
        ".:0 {\n    bind 127.0.0.2\n}\n",
    )
    .unwrap();
    send_signal(shardns.pid(), "USR1").unwrap();
    wait_log(&shardns, "a restart is needed", 1);
    let r = client.query(zone::WWW, RecordType::A).unwrap();
    assert!(r.authoritative(), "still cached: {r}");
    let r = client.query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(
        first_ip(&r),
        Some(IpAddr::V4(zone::DUAL_A)),
        "still forwarding"
    );
    shardns.stop();
}

fn the_reload_directive_picks_up_a_changed_corefile(io: Io) {
    let first = Unbound::start().unwrap();
    let second = Unbound::start().unwrap();
    let reload = "    reload 2s 1s\n";
    let shardns = Shardns::start(
        &corefile(&first, reload),
        &["--shards", "2", "--io", io.as_arg()],
    )
    .unwrap();
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    client.query(zone::WWW, RecordType::A).unwrap();
    std::fs::write(shardns.dir().join("Corefile"), corefile(&second, reload)).unwrap();
    wait_log(&shardns, "configuration reloaded", 2);
    let r = client.query(zone::WWW, RecordType::A).unwrap();
    assert!(r.authoritative(), "kept in the cache: {r}");
    client.query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(second.queries_for(zone::DUAL, Some(RecordType::A)), 1);
    shardns.stop();
}

io_tests!(
    sigusr1_keeps_the_cache_and_applies_the_new_upstream,
    metrics_follow_a_reload_to_new_upstreams,
    a_broken_corefile_keeps_the_running_configuration,
    the_reload_directive_picks_up_a_changed_corefile,
);
