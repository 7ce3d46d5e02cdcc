//! The upstream path end to end: the real binary forwarding to the controllable
//! [`TestUpstream`] (serialising like CoreDNS, slow, silent, resetting, closing, lying), with
//! the `forward` options that govern it.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::upstream::zone;
use shardns_e2e::{Shardns, TestUpstream, UdpClient, build_query, new_id, query_message};

fn first_ip(msg: &Message) -> Option<IpAddr> {
    msg.answers().iter().find_map(|r| r.data().ip_addr())
}

/// shardns (1 shard, no cache) forwarding to `upstreams` with `options` in the block.
fn start(upstreams: &[&TestUpstream], options: &str, args: &[&str]) -> Shardns {
    let to: Vec<String> = upstreams.iter().map(|u| u.addr().to_string()).collect();
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    forward . {} {{\n{options}\n    }}\n    errors\n}}\n",
        to.join(" ")
    );
    let mut all = vec!["--shards", "1"];
    all.extend_from_slice(args);
    Shardns::start(&corefile, &all).expect("starting shardns")
}

/// Sends `names` (type A) at once and returns, per name, the reply and how long it took.
fn ask_all(shardns: &Shardns, names: &[String]) -> Vec<(Message, Duration)> {
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    let started = Instant::now();
    let ids: Vec<u16> = names
        .iter()
        .map(|name| {
            let id = new_id();
            client
                .send_raw(&build_query(name, RecordType::A, id))
                .unwrap();
            id
        })
        .collect();
    let mut got: Vec<Option<(Message, Duration)>> = vec![None; names.len()];
    while got.iter().any(Option::is_none) {
        let raw = client
            .recv_raw(Duration::from_secs(8))
            .unwrap()
            .unwrap_or_else(|| panic!("replies missing:\n{}", shardns.log_text()));
        let reply = Message::from_vec(&raw).unwrap();
        if let Some(i) = ids.iter().position(|&id| id == reply.id()) {
            got[i] = Some((reply, started.elapsed()));
        }
    }
    got.into_iter().flatten().collect()
}

fn ask(shardns: &Shardns, name: &str) -> (Message, Duration) {
    ask_all(shardns, &[name.to_string()]).remove(0)
}

#[test]
fn a_slow_query_does_not_hold_up_others_on_a_serialising_upstream() {
    let upstream = TestUpstream::start().unwrap();
    upstream
        .serialize_tcp(true)
        .delay_name(&zone::host(0), Duration::from_millis(1500));
    let names: Vec<String> = (0..5).map(zone::host).collect();
    // One query per connection until the cap: the fast ones never queue behind host0.
    let shardns = start(
        &[&upstream],
        "        force_tcp",
        &["--upstream-inflight", "1"],
    );
    let replies = ask_all(&shardns, &names);
    for (n, (reply, took)) in replies.iter().enumerate().skip(1) {
        assert_eq!(first_ip(reply), Some(IpAddr::V4(zone::host_a(n as u8))));
        assert!(*took < Duration::from_millis(700), "host{n} took {took:?}");
    }
    assert!(replies[0].1 >= Duration::from_millis(1400));
    assert!(upstream.tcp_connections_accepted() >= 5);
    shardns.stop();
    // The control: all on one connection, the fast ones wait for the slow one.
    let upstream = TestUpstream::start().unwrap();
    upstream
        .serialize_tcp(true)
        .delay_name(&zone::host(0), Duration::from_millis(1500));
    let shardns = start(
        &[&upstream],
        "        force_tcp",
        &["--upstream-inflight", "8", "--upstream-conns", "1"],
    );
    let replies = ask_all(&shardns, &names);
    assert!(
        replies[1].1 >= Duration::from_millis(1400),
        "{:?}",
        replies[1].1
    );
    assert_eq!(upstream.max_outstanding_per_connection(), 5);
    shardns.stop();
}

#[test]
fn refused_and_reset_connections_fail_over_at_once() {
    let stopped = TestUpstream::start().unwrap();
    stopped.stop_listening();
    let resetting = TestUpstream::start().unwrap();
    resetting.reset_connections(true);
    let good = TestUpstream::start().unwrap();
    let shardns = start(
        &[&stopped, &resetting, &good],
        "        force_tcp\n        policy sequential",
        &[],
    );
    let (reply, took) = ask(&shardns, &zone::host(7));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(7))));
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert!(resetting.tcp_queries() >= 1);
    // Every upstream refusing: SERVFAIL at once, not after the 5 s deadline.
    good.stop_listening();
    resetting.stop_listening();
    let (reply, took) = ask(&shardns, &zone::host(8));
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    assert!(took < Duration::from_millis(500), "took {took:?}");
    shardns.stop();
}

#[test]
fn connections_closed_by_the_upstream_are_replaced() {
    let upstream = TestUpstream::start().unwrap();
    upstream.close_after(Some(2));
    let shardns = start(&[&upstream], "        force_tcp", &[]);
    for n in 0..6u8 {
        let (reply, _) = ask(&shardns, &zone::host(n));
        assert_eq!(
            first_ip(&reply),
            Some(IpAddr::V4(zone::host_a(n))),
            "{reply}"
        );
    }
    assert!(upstream.tcp_connections_accepted() >= 3);
    shardns.stop();
}

#[test]
fn wrong_ids_and_wrong_questions_are_skipped() {
    let liar = TestUpstream::start().unwrap();
    liar.wrong_id_then_right(true);
    let shardns = start(&[&liar], "        force_tcp", &[]);
    let (reply, took) = ask(&shardns, &zone::host(1));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(1))));
    assert!(took < Duration::from_millis(500));
    shardns.stop();

    let confused = TestUpstream::start().unwrap();
    confused.wrong_question(true);
    let good = TestUpstream::start().unwrap();
    let shardns = start(&[&confused, &good], "        policy sequential", &[]);
    // The wrong answer over UDP takes the query to TCP on the same upstream (a datagram that
    // answers nothing may be a forgery); the wrong answer over TCP is ignored; after the 2 s
    // attempt timeout the next upstream answers.
    let (reply, took) = ask(&shardns, &zone::host(2));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(2))));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let transports: Vec<bool> = confused
        .seen()
        .iter()
        .filter(|q| q.name == zone::host(2))
        .map(|q| q.tcp)
        .collect();
    assert_eq!(transports, [false, true], "UDP, then TCP");
    shardns.stop();
}

#[test]
fn health_checks_take_a_silent_upstream_out_and_bring_it_back() {
    let silent = TestUpstream::start().unwrap();
    silent.drop_queries(true);
    let good = TestUpstream::start().unwrap();
    let shardns = start(
        &[&silent, &good],
        "        policy sequential\n        max_fails 1\n        health_check 200ms",
        &[],
    );
    // First query: the silent one times out (2 s), the good one answers.
    let (reply, took) = ask(&shardns, &zone::host(3));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(3))));
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    // Its probes go unanswered (1 s each): after two it is down and skipped.
    std::thread::sleep(Duration::from_millis(2600));
    assert!(
        silent.health_probes() >= 2,
        "{} probes",
        silent.health_probes()
    );
    let (reply, took) = ask(&shardns, &zone::host(4));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(4))));
    assert!(
        took < Duration::from_millis(500),
        "down upstream skipped: {took:?}"
    );
    assert_eq!(silent.queries_for(&zone::host(4), None), 0);
    // It answers again: the next probe brings it back, first in line.
    silent.drop_queries(false);
    std::thread::sleep(Duration::from_millis(1500));
    let (reply, _) = ask(&shardns, &zone::host(5));
    assert_eq!(first_ip(&reply), Some(IpAddr::V4(zone::host_a(5))));
    assert_eq!(silent.queries_for(&zone::host(5), None), 1);
    shardns.stop();
}

#[test]
fn failfast_answers_servfail_at_once_when_every_upstream_is_down() {
    let silent = TestUpstream::start().unwrap();
    silent.drop_queries(true);
    let shardns = start(
        &[&silent],
        "        max_fails 1\n        health_check 200ms\n        failfast_all_unhealthy_upstreams",
        &[],
    );
    let (reply, _) = ask(&shardns, &zone::host(1));
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    std::thread::sleep(Duration::from_millis(2600));
    let (reply, took) = ask(&shardns, &zone::host(2));
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    assert!(took < Duration::from_millis(300), "{took:?}");
    assert_eq!(
        silent.queries_for(&zone::host(2), None),
        0,
        "nothing sent upstream"
    );
    shardns.stop();
}

#[test]
fn prefer_udp_asks_again_over_tcp_when_truncated() {
    let upstream = TestUpstream::start().unwrap();
    upstream.truncate_udp(true);
    let shardns = start(&[&upstream], "        prefer_udp", &[]);
    let mut tcp = shardns_e2e::TcpClient::connect(shardns.tcp_addr()).unwrap();
    let id = new_id();
    tcp.send_raw(
        &query_message(zone::BIG, RecordType::A, id)
            .to_vec()
            .unwrap(),
    )
    .unwrap();
    let reply = tcp.recv(Duration::from_secs(3)).unwrap();
    assert_eq!(reply.answers().len(), zone::BIG_COUNT as usize, "{reply}");
    assert_eq!(upstream.udp_queries(), 1);
    assert_eq!(upstream.tcp_queries(), 1);
    shardns.stop();
}

#[test]
fn max_concurrent_refuses_beyond_the_limit() {
    let silent = TestUpstream::start().unwrap();
    silent.drop_queries(true);
    let shardns = start(
        &[&silent],
        "        max_concurrent 2\n        max_fails 0",
        &[],
    );
    let client = UdpClient::new(shardns.udp_addr()).unwrap();
    for n in 0..2u8 {
        client
            .send_raw(&build_query(
                &zone::host(n),
                RecordType::A,
                u16::from(n) + 1,
            ))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let r = client
        .exchange(
            &query_message(&zone::host(9), RecordType::A, 99),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(r.response_code(), ResponseCode::Refused);
    shardns.stop();
}

#[test]
fn next_rcodes_become_servfail() {
    let upstream = TestUpstream::start().unwrap();
    let shardns = start(&[&upstream], "        next NXDOMAIN", &[]);
    let (reply, _) = ask(&shardns, zone::MISSING);
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    let (reply, _) = ask(&shardns, &zone::host(1));
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    shardns.stop();
}

#[test]
fn the_attempt_and_query_timeouts_are_configurable() {
    let silent = TestUpstream::start().unwrap();
    silent.drop_queries(true);
    let shardns = start(
        &[&silent],
        "        max_fails 0",
        &["--upstream-timeout", "300ms", "--query-timeout", "3s"],
    );
    // Two attempts (2 × 1 upstream) of 300 ms, then SERVFAIL.
    let (reply, took) = ask(&shardns, &zone::host(1));
    assert_eq!(reply.response_code(), ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1200),
        "{took:?}"
    );
    assert_eq!(silent.queries_for(&zone::host(1), None), 2);
    shardns.stop();
}
