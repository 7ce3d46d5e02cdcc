//! The `ratelimit` directive in the engine, one scenario each on the virtual clock of
//! `common::Rig`: a client flooding unique names is limited while another keeps being answered
//! (and the upstream sees no more than the rates allow), the limit refills over time, each
//! action (refuse, truncate with TCP left alone, drop), the whitelist, prefixes, a reload, and
//! the counters.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Ask, Rig, Upstream, config_with, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_shard::config::{CacheConfig, Cidr, RateLimitAction, RateLimitConfig};
use shardns_shard::{Client, Config, Outcome, Protocol, Writer};

fn from(addr: &str, protocol: Protocol) -> Client {
    Client {
        listener: 0,
        protocol,
        peer: addr.parse::<SocketAddr>().unwrap(),
        conn: u32::from(protocol == Protocol::Tcp),
    }
}

fn udp(addr: &str) -> Client {
    from(addr, Protocol::Udp)
}

/// The root block with a cache and `ratelimit`.
fn config(limit: RateLimitConfig) -> Config {
    let mut config = config_with(Some(CacheConfig::with_ttl(None)));
    config.servers[0].ratelimit = Some(limit);
    config
}

/// `qps` a second with bursts of `burst`.
fn limit(qps: u32, burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        burst,
        ..RateLimitConfig::with_qps(qps)
    }
}

/// What the engine does with `name` (type A) from `client`; an immediate reply is queued.
fn ask(rig: &mut Rig, client: Client, name: &str) -> Outcome {
    let bytes = query(1, name, RecordType::A, Ask::default());
    rig.send_on(0, client, &bytes)
}

fn answer_all(rig: &mut Rig) {
    while !rig.upstream.is_empty() {
        rig.answer(&Upstream {
            answers: vec![([192, 0, 2, 1], 300)],
            ..Upstream::default()
        });
    }
}

#[test]
fn a_flooding_client_is_limited_while_another_is_answered() {
    let mut rig = Rig::one(config(limit(10, 10)));
    let flooder = udp("10.0.0.1:5000");
    let neighbour = udp("10.0.0.2:5000");
    let (mut flooder_refused, mut neighbour_refused) = (0, 0);
    // 100 ms: the flooder asks 1,000 unique names (one every 100 µs), the neighbour one name
    // every 10 ms.
    for step in 0..1000 {
        let outcome = ask(&mut rig, flooder, &format!("flood{step}.example."));
        if matches!(outcome, Outcome::Reply(_)) {
            flooder_refused += 1;
            let reply = rig.replies.pop_back().unwrap().message();
            assert_eq!(reply.response_code(), ResponseCode::Refused);
        }
        if step % 100 == 0 {
            let name = format!("neighbour{step}.example.");
            if !matches!(ask(&mut rig, neighbour, &name), Outcome::Pending) {
                neighbour_refused += 1;
            }
        }
        rig.wait(Duration::from_micros(100));
        answer_all(&mut rig);
    }
    assert_eq!(neighbour_refused, 0, "the neighbour is always answered");
    // The burst, then one more every 100 ms: 10 or 11 in the first 100 ms.
    assert!(
        (989..=990).contains(&flooder_refused),
        "{flooder_refused} refused"
    );
    assert!(
        rig.upstream_sent() <= 21,
        "the upstream saw {} queries: the flood stopped here",
        rig.upstream_sent()
    );
    let stats = rig.engines[0].stats();
    assert_eq!(stats.policies[0].ratelimited[0].get(), flooder_refused);
    assert_eq!(
        stats.requests[0].responses[Writer::Ratelimit as usize][5].get(),
        flooder_refused,
        "REFUSED written by ratelimit"
    );
}

#[test]
fn the_limit_refills_over_time() {
    let mut rig = Rig::one(config(limit(10, 5)));
    let client = udp("192.0.2.7:1");
    let admitted = |rig: &mut Rig, count: usize| {
        (0..count)
            .filter(|n| ask(rig, client, &format!("n{n}.example.")) == Outcome::Pending)
            .count()
    };
    assert_eq!(admitted(&mut rig, 20), 5, "the burst");
    rig.wait(Duration::from_millis(100));
    assert_eq!(admitted(&mut rig, 20), 1, "one interval");
    rig.wait(Duration::from_millis(350));
    assert_eq!(admitted(&mut rig, 20), 3, "three and a half intervals");
    rig.wait(Duration::from_secs(10));
    assert_eq!(admitted(&mut rig, 20), 5, "never more than the burst");
}

#[test]
fn cache_hits_count_too() {
    let mut rig = Rig::one(config(limit(1, 2)));
    let client = udp("192.0.2.7:1");
    assert_eq!(ask(&mut rig, client, "hit.example."), Outcome::Pending);
    answer_all(&mut rig);
    rig.replies.clear();
    assert!(matches!(
        ask(&mut rig, client, "hit.example."),
        Outcome::Reply(_)
    ));
    assert_eq!(
        rig.next_reply().answers().len(),
        1,
        "a hit within the burst"
    );
    ask(&mut rig, client, "hit.example.");
    assert_eq!(rig.next_reply().response_code(), ResponseCode::Refused);
}

#[test]
fn truncate_sends_tc_over_udp_and_leaves_tcp_alone() {
    let truncate = RateLimitConfig {
        action: RateLimitAction::Truncate,
        ..limit(1, 1)
    };
    let mut rig = Rig::one(config(truncate));
    let client = udp("192.0.2.7:1");
    assert_eq!(ask(&mut rig, client, "a.example."), Outcome::Pending);
    assert!(matches!(
        ask(&mut rig, client, "b.example."),
        Outcome::Reply(_)
    ));
    let reply = rig.replies.pop_back().unwrap();
    let message = Message::from_vec(&reply.bytes).unwrap();
    assert!(message.truncated());
    assert_eq!(message.response_code(), ResponseCode::NoError);
    assert!(message.answers().is_empty());
    assert_eq!(message.queries()[0].name().to_ascii(), "b.example.");
    // The same address over TCP (a real client retrying) is not limited.
    let tcp = from("192.0.2.7:2", Protocol::Tcp);
    for n in 0..5 {
        assert_eq!(
            ask(&mut rig, tcp, &format!("t{n}.example.")),
            Outcome::Pending
        );
    }
    let stats = rig.engines[0].stats();
    assert_eq!(stats.policies[0].ratelimited[1].get(), 1);
    assert_eq!(
        stats.requests[0].responses[Writer::Ratelimit as usize][0].get(),
        1,
        "NOERROR written by ratelimit"
    );
    assert_eq!(stats.error_replies[0].get(), 0, "not an error reply");
}

#[test]
fn drop_sends_nothing() {
    let drop = RateLimitConfig {
        action: RateLimitAction::Drop,
        ..limit(1, 1)
    };
    let mut rig = Rig::one(config(drop));
    let client = udp("192.0.2.7:1");
    assert_eq!(ask(&mut rig, client, "a.example."), Outcome::Pending);
    assert_eq!(ask(&mut rig, client, "b.example."), Outcome::Drop);
    // TCP is limited too with drop.
    let tcp = from("192.0.2.7:2", Protocol::Tcp);
    assert_eq!(ask(&mut rig, tcp, "c.example."), Outcome::Drop);
    assert_eq!(rig.engines[0].stats().policies[0].ratelimited[2].get(), 2);
}

#[test]
fn whitelisted_clients_and_prefixes() {
    let mut limit = RateLimitConfig {
        whitelist: vec![Cidr::new("10.0.0.0".parse().unwrap(), 8).unwrap()],
        ipv4_prefix: 24,
        ..limit(1, 1)
    };
    let mut rig = Rig::one(config(limit.clone()));
    for n in 0..10 {
        let name = format!("w{n}.example.");
        assert_eq!(ask(&mut rig, udp("10.1.2.3:1"), &name), Outcome::Pending);
    }
    assert_eq!(
        ask(&mut rig, udp("192.0.2.1:1"), "a.example."),
        Outcome::Pending
    );
    assert!(
        matches!(
            ask(&mut rig, udp("192.0.2.99:1"), "b.example."),
            Outcome::Reply(_)
        ),
        "the same /24"
    );
    assert_eq!(
        ask(&mut rig, udp("192.0.3.1:1"), "c.example."),
        Outcome::Pending
    );
    // A reload with another limit starts afresh; an unchanged one keeps the debts.
    let now = rig.now;
    rig.engines[0]
        .reconfigure(now, Arc::new(config(limit.clone())))
        .unwrap();
    assert!(matches!(
        ask(&mut rig, udp("192.0.2.1:1"), "d.example."),
        Outcome::Reply(_)
    ));
    limit.burst = 2;
    rig.engines[0]
        .reconfigure(now, Arc::new(config(limit)))
        .unwrap();
    assert_eq!(
        ask(&mut rig, udp("192.0.2.1:1"), "e.example."),
        Outcome::Pending
    );
    let plain = config_with(Some(CacheConfig::with_ttl(None)));
    rig.engines[0].reconfigure(now, Arc::new(plain)).unwrap();
    assert_eq!(rig.engines[0].rate_limit_buckets(0), None);
    for n in 0..5 {
        let name = format!("p{n}.example.");
        assert_eq!(ask(&mut rig, udp("192.0.2.1:1"), &name), Outcome::Pending);
    }
}

/// A loop probe coming back is seen even when its copy is over the rate (the policies come
/// after the loop check).
#[test]
fn a_limited_loop_probe_is_still_a_loop() {
    use shardns_shard::LoopProbe;
    let probe = LoopProbe::new(b"\x00", || 1234 << 2);
    let mut looped = config(limit(1, 1));
    looped.servers[0].loop_probe = Some(probe.clone());
    let mut rig = Rig::one(looped);
    let hinfo = query(1, "1234.1234.", RecordType::HINFO, Ask::default());
    assert_eq!(
        rig.send_on(0, udp("127.0.0.1:4000"), &hinfo),
        Outcome::Pending
    );
    let again = rig.send_on(0, udp("127.0.0.1:5353"), &hinfo);
    assert!(matches!(again, Outcome::Reply(_)), "over the rate");
    assert!(probe.detected());
}
