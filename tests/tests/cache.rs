//! The cache against a real Unbound, through the real binary with two shards: misses for one
//! name on both shards reach the upstream once (and twice without cross-shard coalescing, the
//! control), and serve-stale keeps answering while Unbound is stopped or silent.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{Io, Shardns, UdpClient, Unbound, io_tests, zone};

/// Clients on this many source ports: SO_REUSEPORT spreads them over both shards.
const PORTS: usize = 8;

fn first_ip(msg: &Message) -> Option<IpAddr> {
    msg.answers().iter().find_map(|r| r.data().ip_addr())
}

fn start(unbound: &Unbound, cache_block: &str, args: &[&str]) -> Shardns {
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30 {{\n{cache_block}\n    }}\n    forward . {} {{\n        force_tcp\n    }}\n    errors\n}}\n",
        unbound.addr()
    );
    let mut all = vec!["--shards", "2"];
    all.extend_from_slice(args);
    Shardns::start(&corefile, &all).expect("starting shardns")
}

/// Asks each of the zone's host names from [`PORTS`] source ports, one after the other, and
/// returns how many queries Unbound received for them.
fn upstream_queries_for_hosts(io: Io, coalesce: &str) -> u64 {
    let unbound = Unbound::start().expect("starting Unbound");
    let shardns = start(
        &unbound,
        "        success 9984",
        &["--io", io.as_arg(), "--coalesce", coalesce],
    );
    let clients: Vec<UdpClient> = (0..PORTS)
        .map(|_| UdpClient::new(shardns.udp_addr()).unwrap())
        .collect();
    let before = unbound.total_queries();
    for n in 0..zone::HOSTS {
        for client in &clients {
            let r = client.query(&zone::host(n), RecordType::A).unwrap();
            assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::host_a(n))), "{r}");
        }
    }
    let sent = unbound.total_queries() - before;
    shardns.stop();
    sent
}

fn one_upstream_query_per_name_across_shards(io: Io) {
    let across = upstream_queries_for_hosts(io, "across");
    assert_eq!(
        across,
        u64::from(zone::HOSTS),
        "one upstream query per name"
    );
    // The control: each shard resolving its own misses asks again for names first seen on
    // the other shard (the test can tell the two apart).
    let within = upstream_queries_for_hosts(io, "within");
    assert!(
        within > u64::from(zone::HOSTS),
        "within: {within} upstream queries for {} names",
        zone::HOSTS
    );
}

/// 1000 queries for one uncached name from 50 source ports (both shards), sent while Unbound
/// is frozen so that they are all in flight together: Unbound sees one query, every client
/// gets the answer (CoreDNS would forward all 1000: CVE-2023-30464).
fn a_flood_of_one_uncached_name_is_one_upstream_query(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let shardns = start(&unbound, "        success 9984", &["--io", io.as_arg()]);
    let clients: Vec<UdpClient> = (0..50)
        .map(|_| UdpClient::new(shardns.udp_addr()).unwrap())
        .collect();
    let before = unbound.total_queries();
    send_signal(unbound.pid(), "STOP").unwrap();
    let mut ids = Vec::new();
    for client in &clients {
        let mut mine = Vec::new();
        for id in 1..=20u16 {
            client
                .send_raw(&shardns_e2e::build_query(zone::MULTI, RecordType::A, id))
                .unwrap();
            mine.push(id);
        }
        ids.push(mine);
    }
    std::thread::sleep(Duration::from_millis(300));
    send_signal(unbound.pid(), "CONT").unwrap();
    for (client, mine) in clients.iter().zip(&ids) {
        let mut got = Vec::new();
        while got.len() < mine.len() {
            let raw = client
                .recv_raw(Duration::from_secs(5))
                .unwrap()
                .unwrap_or_else(|| panic!("{} of {} replies", got.len(), mine.len()));
            let r = Message::from_vec(&raw).unwrap();
            assert_eq!(r.response_code(), ResponseCode::NoError, "{r}");
            assert_eq!(r.answers().len(), 2, "{r}");
            got.push(r.id());
        }
        got.sort_unstable();
        let mut want = mine.clone();
        want.sort_unstable();
        assert_eq!(got, want);
    }
    assert_eq!(unbound.total_queries() - before, 1, "upstream queries");
    shardns.stop();
}

/// Entries live 2 s; Unbound is then killed. Every client, on either shard, still gets the
/// cached address (TTL 30, stale) at once; a name never cached gets SERVFAIL.
fn stale_answers_while_the_upstream_is_down(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let shardns = start(
        &unbound,
        "        success 9984 2 0\n        serve_stale 1h",
        &["--io", io.as_arg()],
    );
    let clients: Vec<UdpClient> = (0..PORTS)
        .map(|_| UdpClient::new(shardns.udp_addr()).unwrap())
        .collect();
    let r = clients[0].query(zone::WWW, RecordType::A).unwrap();
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)));
    assert_eq!(r.answers()[0].ttl(), 2, "{r}");
    drop(unbound);
    std::thread::sleep(Duration::from_millis(2500));
    for client in &clients {
        let started = Instant::now();
        let r = client.query(zone::WWW, RecordType::A).unwrap();
        assert_eq!(r.response_code(), ResponseCode::NoError, "{r}");
        assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");
        assert_eq!(r.answers()[0].ttl(), 30, "stale TTL: {r}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    let r = clients[1].query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::ServFail, "{r}");
    // The failed refreshes did not replace the stale entry.
    let r = clients[2].query(zone::WWW, RecordType::A).unwrap();
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");
    shardns.stop();
}

/// `verify`: with Unbound frozen (SIGSTOP: connections accepted, nothing answered), an
/// expired entry is served stale after RFC 8767's 1.8 s client timer, not after the 5 s
/// upstream deadline.
fn verify_serves_stale_when_the_upstream_is_silent(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let shardns = start(
        &unbound,
        "        success 9984 2 0\n        serve_stale 1h verify",
        &["--io", io.as_arg()],
    );
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    let r = client.query(zone::WWW, RecordType::A).unwrap();
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)));
    send_signal(unbound.pid(), "STOP").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let started = Instant::now();
    let query = shardns_e2e::query_message(zone::WWW, RecordType::A, shardns_e2e::new_id());
    let r = client.exchange(&query, Duration::from_secs(4)).unwrap();
    let took = started.elapsed();
    send_signal(unbound.pid(), "CONT").unwrap();
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");
    assert_eq!(r.answers()[0].ttl(), 30, "stale TTL: {r}");
    assert!(
        took >= Duration::from_millis(1700) && took < Duration::from_millis(2600),
        "stale answer after {took:?}"
    );
    shardns.stop();
}

io_tests!(
    one_upstream_query_per_name_across_shards,
    a_flood_of_one_uncached_name_is_one_upstream_query,
    stale_answers_while_the_upstream_is_down,
    verify_serves_stale_when_the_upstream_is_silent,
);
