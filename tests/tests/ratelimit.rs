//! `ratelimit` in the real binary (both I/O backends) in front of a real Unbound: one loopback
//! address floods unique names and is refused beyond its rate, while another loopback
//! address is answered every time during the flood; the upstream sees no more of the flood
//! than the rate allows, and `shardns_ratelimited_total` counts the refusals.
//!
//! Traffic goes to 127.0.0.0/8 only; every wait is bounded.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{scrape, value};
use shardns_e2e::{Io, Shardns, UdpClient, Unbound, build_query, io_tests, wait_for, zone};

/// Queries a second (and burst) each client may send.
const RATE: u64 = 20;

/// Names the flooder asks.
const FLOOD: u16 = 600;

/// shardns (1 shard, so that one client's rate is the process's) with `ratelimit RATE`, a
/// cache, forwarding to `unbound`, serving metrics on 127.0.0.1.
fn start(unbound: &Unbound, io: Io) -> (Shardns, SocketAddr) {
    let corefile = |port| {
        format!(
            ".:0 {{\n    bind 127.0.0.1\n    ratelimit {RATE}\n    cache 30\n    forward . {}\n    \
             prometheus 127.0.0.1:{port}\n}}\n",
            unbound.addr()
        )
    };
    Shardns::start_with_http(corefile, &["--shards", "1", "--io", io.as_arg()])
}

fn client_at(last: u8, shardns: &Shardns) -> UdpClient {
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    UdpClient::from_source(source, shardns.udp_addr()).expect("a loopback client")
}

fn a_flood_from_one_address_leaves_another_answered(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(&unbound, io);
    let flooder = client_at(2, &shardns);
    let neighbour = client_at(3, &shardns);
    let started = Instant::now();
    let mut waiting: HashSet<u16> = HashSet::new();
    let (mut refused, mut answered, mut neighbour_answers) = (0u64, 0u64, 0);
    for n in 0..FLOOD {
        let id = n + 1;
        let name = format!("flood{n}.example.test.");
        flooder
            .send_raw(&build_query(&name, RecordType::A, id))
            .expect("sending");
        waiting.insert(id);
        // Keep the flooder's replies flowing (its socket buffer is finite).
        while let Some(raw) = flooder.recv_raw(Duration::ZERO).expect("receiving") {
            count(&raw, &mut waiting, &mut refused, &mut answered);
        }
        if n % 100 == 0 {
            let reply = neighbour
                .query(zone::WWW, RecordType::A)
                .unwrap_or_else(|e| panic!("the neighbour during the flood: {e:#}"));
            assert_eq!(reply.response_code(), ResponseCode::NoError, "{reply}");
            neighbour_answers += 1;
        }
    }
    while !waiting.is_empty() {
        let raw = flooder
            .recv_raw(Duration::from_secs(5))
            .expect("receiving")
            .unwrap_or_else(|| panic!("{} flood replies missing", waiting.len()));
        count(&raw, &mut waiting, &mut refused, &mut answered);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(neighbour_answers, 6);
    // The burst, then RATE a second.
    let allowed = RATE + (RATE as f64 * elapsed).ceil() as u64 + 1;
    assert!(
        answered <= allowed,
        "{answered} flood queries answered in {elapsed:.2} s (at most {allowed})"
    );
    assert!(answered >= RATE, "the burst is answered ({answered})");
    assert_eq!(refused + answered, u64::from(FLOOD));
    // Only the admitted names reached Unbound (its log may lag a little behind its replies).
    let upstream = || {
        (0..FLOOD)
            .filter(|n| unbound.queries_for(&format!("flood{n}.example.test."), None) > 0)
            .count() as u64
    };
    wait_for(Duration::from_secs(3), || {
        (upstream() == answered).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "Unbound saw {} flood names, {answered} answered",
            upstream()
        )
    });
    let series = format!(
        "shardns_ratelimited_total{{action=\"refuse\",server=\"dns://{}\",zone=\".\"}}",
        shardns.udp_addr()
    );
    wait_for(Duration::from_secs(3), || {
        (value(&scrape(metrics), &series) == Some(refused)).then_some(())
    })
    .unwrap_or_else(|| panic!("{series} never reached {refused}:\n{}", scrape(metrics)));
    shardns.stop();
}

/// Counts one flood reply: REFUSED (over the rate) or NXDOMAIN (answered by Unbound).
fn count(raw: &[u8], waiting: &mut HashSet<u16>, refused: &mut u64, answered: &mut u64) {
    let reply = Message::from_vec(raw).expect("a DNS reply");
    assert!(waiting.remove(&reply.id()), "a reply to no query: {reply}");
    match reply.response_code() {
        ResponseCode::Refused => *refused += 1,
        ResponseCode::NXDomain => *answered += 1,
        other => panic!("unexpected {other}: {reply}"),
    }
}

io_tests!(a_flood_from_one_address_leaves_another_answered);
