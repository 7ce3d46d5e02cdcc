//! The engine's cache-hit path: `handle_query` for a cached name, reply rendered into the
//! driver's buffer (ID, flags, client case, TTLs patched; OPT appended for EDNS clients).
//! Run: `cargo bench -p shardns-shard --bench hit`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use shardns_shard::config::{
    CacheConfig, ForwardConfig, Limits, ListenerConfig, ServerConfig, UpstreamConfig,
};
use shardns_shard::{
    Client, Coalesce, Config, Engine, Group, Handler, MAX_MESSAGE, Outcome, Protocol, Transmit,
};

const NAME: &[u8] = b"\x03www\x07example\x03com\x00";

fn query(id: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![
        (id >> 8) as u8,
        id as u8,
        1,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        edns as u8,
    ];
    q.extend_from_slice(NAME);
    q.extend_from_slice(&[0, 1, 0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    }
    q
}

fn engine() -> Engine {
    let root = b"\x00".to_vec();
    let config = Config {
        listeners: vec![ListenerConfig {
            addr: "127.0.0.1:53".parse().unwrap(),
            servers: vec![0],
        }],
        servers: vec![ServerConfig {
            zone: root.clone(),
            zone_text: ".".into(),
            cache: Some(CacheConfig::with_ttl(Some(30))),
            forward: Some(ForwardConfig {
                from: root,
                upstreams: vec![0],
                force_tcp: true,
                ..ForwardConfig::default()
            }),
            log_errors: false,
            log_queries: None,
            loop_probe: None,
            acl: None,
            ratelimit: None,
            fastpath: None,
        }],
        upstreams: vec![UpstreamConfig {
            addr: "127.0.0.1:5300".parse().unwrap(),
        }],
        limits: Limits::default(),
    };
    Engine::new(Arc::new(config), Group::new(1, Coalesce::Across), 0)
}

fn warm(engine: &mut Engine, client: Client, now: Instant, out: &mut [u8]) {
    assert_eq!(
        engine.handle_query(now, client, &query(1, false), out),
        Outcome::Pending
    );
    let Some(Transmit::Query { link, payload, .. }) = engine.poll_transmit() else {
        panic!("no upstream query")
    };
    // Answer: the upstream query with QR set and two A records.
    let mut reply = payload[..12 + NAME.len() + 4].to_vec();
    reply[2] |= 0x80;
    reply[7] = 2;
    reply[11] = 0;
    for last in [1u8, 2] {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, last]);
    }
    engine.handle_response(now, link, &reply);
    while engine.poll_transmit().is_some() {}
}

fn hit(c: &mut Criterion) {
    let mut engine = engine();
    let client = Client {
        listener: 0,
        protocol: Protocol::Udp,
        peer: SocketAddr::from(([127, 0, 0, 1], 9999)),
        conn: 0,
    };
    let now = Instant::now();
    let mut out = vec![0u8; MAX_MESSAGE];
    warm(&mut engine, client, now, &mut out);
    for edns in [false, true] {
        let q = query(0x1234, edns);
        let name = if edns {
            "cache hit (A, EDNS)"
        } else {
            "cache hit (A, no EDNS)"
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                let outcome = engine.handle_query(now, client, black_box(&q), &mut out);
                assert!(matches!(outcome, Outcome::Reply(_)));
                black_box(&out[..64]);
            })
        });
    }
}

criterion_group!(benches, hit);
criterion_main!(benches);
