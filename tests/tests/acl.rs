//! `acl` in the real binary (both I/O backends) in front of a real Unbound: a rule blocking
//! type AAAA from 127.0.0.0/8 answers REFUSED (with the Extended DNS Error "Blocked") for
//! AAAA, which never reaches Unbound, and answers A; a rule dropping one loopback address
//! leaves it without a reply while another address is answered; CoreDNS's acl counters on a
//! page `promtool` accepts.
//!
//! Traffic goes to 127.0.0.0/8 only; every wait is bounded.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{promtool_accepts, scrape, value};
use shardns_e2e::{Io, Shardns, UdpClient, Unbound, build_query, io_tests, new_id, wait_for, zone};

/// shardns (2 shards) with a cache and `acl_block`, forwarding to `unbound`, serving metrics
/// on 127.0.0.1; returns it and the metrics address.
fn start(unbound: &Unbound, acl_block: &str, io: Io) -> (Shardns, SocketAddr) {
    let corefile = |port| {
        format!(
            ".:0 {{\n    bind 127.0.0.1\n    acl {{\n{acl_block}\n    }}\n    cache 30\n    \
             forward . {}\n    prometheus 127.0.0.1:{port}\n}}\n",
            unbound.addr()
        )
    };
    Shardns::start_with_http(corefile, &["--shards", "2", "--io", io.as_arg()])
}

/// A client sending from 127.0.0.`last`.
fn client_at(last: u8, shardns: &Shardns) -> UdpClient {
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    UdpClient::from_source(source, shardns.udp_addr()).expect("a loopback client")
}

fn blocks_aaaa_from_loopback_and_answers_a(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(&unbound, "        block type AAAA net 127.0.0.0/8", io);
    let client = client_at(1, &shardns);
    let id = new_id();
    let raw = client
        .exchange_raw(
            &build_query(zone::DUAL, RecordType::AAAA, id),
            Duration::from_secs(3),
        )
        .expect("sending")
        .expect("a reply to AAAA");
    let refused = Message::from_vec(&raw).expect("a DNS reply");
    assert_eq!(refused.id(), id);
    assert_eq!(refused.response_code(), ResponseCode::Refused, "{refused}");
    assert!(refused.answers().is_empty());
    assert_eq!(
        &raw[raw.len() - 6..],
        &[0, 15, 0, 2, 0, 15],
        "the OPT record ends with the Extended DNS Error Blocked"
    );
    let answered = client
        .query(zone::DUAL, RecordType::A)
        .expect("a reply to A");
    assert_eq!(
        answered.response_code(),
        ResponseCode::NoError,
        "{answered}"
    );
    let ips: Vec<IpAddr> = answered
        .answers()
        .iter()
        .filter_map(|record| record.data().ip_addr())
        .collect();
    assert_eq!(ips, [IpAddr::V4(zone::DUAL_A)]);
    assert_eq!(
        unbound.queries_for(zone::DUAL, Some(RecordType::AAAA)),
        0,
        "the blocked query never went upstream"
    );
    let server = shardns.udp_addr();
    let blocked = format!(
        "coredns_acl_blocked_requests_total{{server=\"dns://{server}\",view=\"\",zone=\".\"}}"
    );
    let allowed =
        format!("coredns_acl_allowed_requests_total{{server=\"dns://{server}\",view=\"\"}}");
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(metrics);
        (value(&page, &blocked) == Some(1) && value(&page, &allowed) == Some(1)).then_some(page)
    })
    .unwrap_or_else(|| {
        panic!(
            "{blocked} and {allowed} never reached 1:\n{}",
            scrape(metrics)
        )
    });
    promtool_accepts(&page);
    shardns.stop();
}

fn drops_one_address_and_answers_another(io: Io) {
    let unbound = Unbound::start().expect("starting Unbound");
    let (shardns, metrics) = start(&unbound, "        drop net 127.0.0.66", io);
    let dropped = client_at(66, &shardns);
    let reply = dropped
        .exchange_raw(
            &build_query(zone::WWW, RecordType::A, new_id()),
            Duration::from_millis(500),
        )
        .expect("sending");
    assert!(reply.is_none(), "no reply to a dropped query");
    let other = client_at(67, &shardns);
    let answered = other.query(zone::WWW, RecordType::A).expect("a reply");
    assert_eq!(
        answered.response_code(),
        ResponseCode::NoError,
        "{answered}"
    );
    let series = format!(
        "coredns_acl_dropped_requests_total{{server=\"dns://{}\",view=\"\",zone=\".\"}}",
        shardns.udp_addr()
    );
    wait_for(Duration::from_secs(3), || {
        (value(&scrape(metrics), &series) == Some(1)).then_some(())
    })
    .unwrap_or_else(|| panic!("{series} never reached 1:\n{}", scrape(metrics)));
    shardns.stop();
}

io_tests!(
    blocks_aaaa_from_loopback_and_answers_a,
    drops_one_address_and_answers_another
);
