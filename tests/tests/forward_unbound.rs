//! The upstream path against real Unbound instances (no cache in shardns, so every query is
//! forwarded): many concurrent misses multiplexed over a few persistent TCP connections, answers matched
//! whatever order Unbound sends them in, a frozen upstream (SIGSTOP: connections accepted,
//! nothing answered) taken out by health checks and brought back when it thaws, and a killed
//! one failed over at once.
//!
//! Traffic goes to 127.0.0.1 only; every wait is bounded.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics;
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{Shardns, UdpClient, Unbound, build_query, new_id, wait_for, zone};

/// shardns (1 shard, no cache) forwarding to `upstreams` with `options` in the block and a
/// metrics endpoint; returns it and the endpoint's address.
fn start(upstreams: &[&Unbound], options: &str, args: &[&str]) -> (Shardns, SocketAddr) {
    let to: Vec<String> = upstreams.iter().map(|u| u.addr().to_string()).collect();
    let corefile = |port| {
        format!(
            ".:0 {{\n    bind 127.0.0.1\n    forward . {} {{\n{options}\n    }}\n    errors\n    \
             prometheus 127.0.0.1:{port}\n}}\n",
            to.join(" ")
        )
    };
    let mut all = vec!["--shards", "1"];
    all.extend_from_slice(args);
    Shardns::start_with_http(corefile, &all)
}

/// The sum of every sample of family `name` on the metrics page at `addr`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    metrics::family_sum(&metrics::scrape(addr), name)
}

/// Names that miss: the fixture's hosts (A records) and names that do not exist (NXDOMAIN).
fn names(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match u8::try_from(i) {
            Ok(n) if n < zone::HOSTS => zone::host(n),
            _ => format!("nx{i}.example.test."),
        })
        .collect()
}

/// The answer `name` must get from the fixture.
fn check(name: &str, reply: &Message) {
    let host = (0..zone::HOSTS).find(|&n| zone::host(n) == name);
    match host {
        Some(n) => {
            assert_eq!(reply.response_code(), ResponseCode::NoError, "{reply}");
            let ips: Vec<IpAddr> = reply
                .answers()
                .iter()
                .filter_map(|r| r.data().ip_addr())
                .collect();
            assert_eq!(ips, [IpAddr::V4(zone::host_a(n))], "{name}: {reply}");
        }
        None => assert_eq!(reply.response_code(), ResponseCode::NXDomain, "{reply}"),
    }
    let question = &reply.queries()[0];
    assert_eq!(question.name().to_ascii(), name, "{reply}");
}

/// Most queries a test client keeps outstanding: their replies must fit its receive buffer
/// (Linux's default 208 KiB holds about 270 small datagrams) even while it is not scheduled.
const WINDOW: usize = 128;

/// Sends the names (type A) from one UDP socket, keeping [`WINDOW`] queries outstanding,
/// waits for all the replies and checks each against the fixture.
fn ask_all_and_check(shardns: &Shardns, names: &[String]) {
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    let mut waiting: HashMap<u16, &str> = HashMap::new();
    let mut next = names.iter();
    loop {
        while waiting.len() < WINDOW {
            let Some(name) = next.next() else { break };
            let mut id = new_id();
            while waiting.contains_key(&id) {
                id = new_id();
            }
            client
                .send_raw(&build_query(name, RecordType::A, id))
                .unwrap();
            waiting.insert(id, name);
        }
        if waiting.is_empty() {
            break;
        }
        let raw = client
            .recv_raw(Duration::from_secs(8))
            .unwrap()
            .unwrap_or_else(|| {
                panic!("{} replies missing:\n{}", waiting.len(), shardns.log_text())
            });
        let reply = Message::from_vec(&raw).unwrap();
        let name = waiting
            .remove(&reply.id())
            .unwrap_or_else(|| panic!("a reply to no query: {reply}"));
        check(name, &reply);
    }
}

/// One query for `name`: its reply (checked) and how long it took.
fn ask(shardns: &Shardns, name: &str) -> Duration {
    let started = Instant::now();
    ask_all_and_check(shardns, &[name.to_string()]);
    started.elapsed()
}

#[test]
fn misses_share_a_few_persistent_tcp_connections_to_unbound() {
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(&[&unbound], "        force_tcp", &[]);
    let before = unbound.tcp_queries();
    let names = names(300);
    ask_all_and_check(&shardns, &names);
    assert_eq!(
        unbound.tcp_queries() - before,
        300,
        "one TCP query per miss"
    );
    // Each connection carries up to 2 at a time (the default), at most 16 of them: a
    // connection per query would be 300.
    let opened = metric(metrics, "coredns_proxy_conn_cache_misses_total");
    let reused = metric(metrics, "coredns_proxy_conn_cache_hits_total");
    assert!((1..=16).contains(&opened), "{opened} connections opened");
    assert_eq!(opened + reused, 300);
    assert!(metric(metrics, "shardns_upstream_connections") <= 16);
    // A second wave reuses them: no new connection.
    ask_all_and_check(&shardns, &names[..100]);
    assert_eq!(
        metric(metrics, "coredns_proxy_conn_cache_misses_total"),
        opened
    );
    shardns.stop();
}

#[test]
fn many_queries_pipelined_on_one_connection_are_matched_by_id_and_question() {
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(
        &[&unbound],
        "        force_tcp",
        &["--upstream-conns", "1", "--upstream-inflight", "64"],
    );
    ask_all_and_check(&shardns, &names(200));
    assert_eq!(metric(metrics, "coredns_proxy_conn_cache_misses_total"), 1);
    assert_eq!(unbound.tcp_queries(), 200);
    shardns.stop();
}

#[test]
fn a_frozen_unbound_is_taken_out_by_health_checks_and_comes_back_when_it_thaws() {
    let first = Unbound::start().expect("starting Unbound");
    let second = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(
        &[&first, &second],
        "        force_tcp\n        policy sequential\n        health_check 200ms",
        &["--upstream-timeout", "500ms"],
    );
    // Healthy: the first in line answers.
    ask(&shardns, &zone::host(0));
    assert_eq!(first.queries_for(&zone::host(0), None), 1);

    send_signal(first.pid(), "STOP").unwrap();
    let names = names(200);
    let mut names = names[1..].iter();
    // While it is still counted up, each query waits out one attempt (500 ms) on it, then
    // the second answers; once its probes have failed (more than max_fails 2, 1 s each) it
    // is skipped and answers come at once.
    let took = ask(&shardns, names.next().unwrap());
    assert!(took >= Duration::from_millis(450), "{took:?}");
    let skipped = wait_for(Duration::from_secs(10), || {
        let took = ask(&shardns, names.next().unwrap());
        (took < Duration::from_millis(250)).then_some(took)
    });
    assert!(
        skipped.is_some(),
        "the frozen upstream was never skipped:\n{}",
        shardns.log_text()
    );
    assert!(metric(metrics, "coredns_proxy_healthcheck_failures_total") >= 3);

    // Thawed: a probe is answered and queries go to it first again.
    send_signal(first.pid(), "CONT").unwrap();
    let back = wait_for(Duration::from_secs(10), || {
        let name = names.next().unwrap();
        let took = ask(&shardns, name);
        (first.queries_for(name, None) == 1 && took < Duration::from_millis(250)).then_some(())
    });
    assert!(
        back.is_some(),
        "the thawed upstream never came back:\n{}",
        shardns.log_text()
    );
    shardns.stop();
}

#[test]
fn a_killed_unbound_is_failed_over_at_once() {
    let first = Unbound::start().expect("starting Unbound");
    let second = Unbound::start().expect("starting Unbound");
    let (shardns, _metrics) = start(
        &[&first, &second],
        "        force_tcp\n        policy sequential",
        &[],
    );
    ask(&shardns, &zone::host(0));
    assert_eq!(first.queries_for(&zone::host(0), None), 1);
    let first_addr = first.addr();
    drop(first); // killed: its port refuses connections
    let took = ask(&shardns, &zone::host(1));
    assert!(
        took < Duration::from_millis(500),
        "a refused connection fails over at once, not after the 2 s attempt timeout: {took:?}"
    );
    assert_eq!(second.queries_for(&zone::host(1), None), 1);
    // Queries keep flowing while the dead one is probed, each answered at once.
    for n in 2..8 {
        let took = ask(&shardns, &zone::host(n));
        assert!(
            took < Duration::from_millis(500),
            "{first_addr} is dead: {took:?}"
        );
    }
    shardns.stop();
}
