//! `ratelimit` under a flood of unique source addresses (a test binary of its own, so that its
//! resident memory is its alone): 100,000 distinct clients grow neither the table nor the
//! process, and a client flooding among them stays limited.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Ask, Rig, Upstream, config_with, query};
use hickory_proto::rr::RecordType;
use shardns_shard::config::{CacheConfig, RateLimitConfig};
use shardns_shard::{Client, Outcome, Protocol};

/// The process's resident memory in bytes (Linux `/proc/self/statm`, 4 KiB pages).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn udp(ip: IpAddr) -> Client {
    Client {
        listener: 0,
        protocol: Protocol::Udp,
        peer: SocketAddr::new(ip, 4000),
        conn: 0,
    }
}

#[test]
fn a_hundred_thousand_sources_leave_the_table_bounded_and_the_flooder_limited() {
    let mut config = config_with(Some(CacheConfig::with_ttl(None)));
    config.servers[0].ratelimit = Some(RateLimitConfig {
        table: 4096,
        ..RateLimitConfig::with_qps(10)
    });
    let mut rig = Rig::one(config);
    // One cached name, so that every admitted query is a hit (the miss path has memory of
    // its own, bounded elsewhere).
    let bytes = query(1, "cached.example.", RecordType::A, Ask::default());
    let seed = udp("192.0.2.1".parse().unwrap());
    assert_eq!(rig.send_on(0, seed, &bytes), Outcome::Pending);
    rig.answer(&Upstream {
        answers: vec![([192, 0, 2, 1], 3600)],
        ..Upstream::default()
    });
    rig.replies.clear();
    let buckets = rig.engines[0].rate_limit_buckets(0);
    assert_eq!(buckets, Some(4096));
    let flooder = udp("198.51.100.7".parse().unwrap());
    let before = resident();
    let mut flooder_admitted = 0;
    // One second: 100,000 new clients (10.0.0.0 and up), each followed by the flooder.
    for n in 0..100_000u32 {
        let client = udp(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
        assert!(
            matches!(rig.outcome(client, &bytes), Outcome::Reply(_)),
            "a hit for a new client"
        );
        let admitted = rig.engines[0].stats().cache_hits();
        rig.outcome(flooder, &bytes);
        flooder_admitted += rig.engines[0].stats().cache_hits() - admitted;
        rig.wait(Duration::from_micros(10));
    }
    let grown = resident().saturating_sub(before);
    assert_eq!(
        rig.engines[0].rate_limit_buckets(0),
        buckets,
        "the table never grows"
    );
    assert!(grown < 1 << 20, "resident memory grew {grown} bytes");
    // The burst of 10, then 10 a second: about 20, wherever the new clients land.
    assert!(
        (19..=21).contains(&flooder_admitted),
        "the flooder was answered {flooder_admitted} times"
    );
    let limited = rig.engines[0].stats().policies[0].ratelimited[0].get();
    assert_eq!(limited, 100_000 - flooder_admitted);
}
