//! Checks of the harness itself against Unbound alone (no shardns needed): the fixture data,
//! the raw clients, `dig`, and query counting.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use shardns_e2e::{
    TcpClient, UdpClient, Unbound, build_query, dig, dig_answers, dig_status, new_id, zone,
};

fn ips(msg: &hickory_proto::op::Message) -> Vec<IpAddr> {
    msg.answers()
        .iter()
        .filter_map(|r| r.data().ip_addr())
        .collect()
}

#[test]
fn unbound_serves_fixture_data_and_counts_queries() {
    let ub = Unbound::start().expect("start unbound");
    let before = ub.total_queries();
    let tcp_before = ub.tcp_queries();

    let udp = UdpClient::new(ub.addr()).unwrap();
    let a = udp.query(zone::WWW, RecordType::A).unwrap();
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert_eq!(ips(&a), vec![IpAddr::V4(zone::WWW_A)]);
    assert_eq!(a.answers()[0].ttl(), zone::TTL);

    let nodata = udp.query(zone::WWW, RecordType::AAAA).unwrap();
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());
    assert!(matches!(
        nodata.name_servers().first().map(|r| r.data()),
        Some(RData::SOA(_))
    ));

    let mut tcp = TcpClient::connect(ub.addr()).unwrap();
    let nx = tcp.query(zone::MISSING, RecordType::A).unwrap();
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    let soa = nx.name_servers().first().expect("SOA in authority");
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.ttl(), zone::NEG_TTL);

    // Pipelined on one connection.
    let ids: Vec<u16> = (0..3).map(|_| new_id()).collect();
    let qs: Vec<Vec<u8>> = (0..3)
        .map(|i| build_query(&zone::host(i as u8), RecordType::A, ids[i]))
        .collect();
    tcp.send_many(&qs).unwrap();
    for _ in 0..3 {
        let r = tcp.recv(shardns_e2e::QUERY_TIMEOUT).unwrap();
        let i = ids.iter().position(|id| *id == r.id()).expect("known id");
        assert_eq!(ips(&r), vec![IpAddr::V4(zone::host_a(i as u8))]);
    }

    let refused = udp.query("example.com.", RecordType::A).unwrap();
    assert_eq!(refused.response_code(), ResponseCode::Refused);

    assert_eq!(ub.total_queries() - before, 7);
    assert_eq!(ub.tcp_queries() - tcp_before, 4);
    assert_eq!(ub.queries_for(zone::WWW, None), 2);
    assert_eq!(ub.queries_for(zone::WWW, Some(RecordType::AAAA)), 1);
    assert_eq!(ub.queries_for(zone::MISSING, Some(RecordType::A)), 1);
}

#[test]
fn dig_against_unbound() {
    let ub = Unbound::start().expect("start unbound");
    for tcp in [false, true] {
        let out = dig(ub.addr(), zone::DUAL, "AAAA", tcp).unwrap();
        assert_eq!(dig_status(&out), Some("NOERROR"), "{out}");
        let ans = dig_answers(&out);
        assert_eq!(ans.len(), 1, "{out}");
        assert_eq!(ans[0][4], zone::DUAL_AAAA.to_string(), "{out}");
        assert_eq!(out.contains("(TCP)"), tcp, "{out}");
    }
    assert_eq!(ub.tcp_queries(), 1);
}
