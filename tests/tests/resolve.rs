//! Resolution through shardns (`--shards 2`, both I/O backends) to a real Unbound: answers,
//! negative answers, UDP and TCP (pipelined), case and ID preservation, caching, TTLs, dig.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shardns_e2e::{
    Env, Io, QUERY_TIMEOUT, build_query, dig, dig_answers, dig_status, header_of, io_tests, new_id,
    wire_question, zone,
};

fn ips(msg: &Message) -> BTreeSet<IpAddr> {
    msg.answers()
        .iter()
        .filter_map(|r| r.data().ip_addr())
        .collect()
}

fn assert_answer(msg: &Message, qname: &str, rtype: RecordType, want: &[IpAddr]) {
    assert_eq!(
        msg.message_type(),
        MessageType::Response,
        "QR must be set: {msg}"
    );
    assert_eq!(
        msg.response_code(),
        ResponseCode::NoError,
        "{qname} {rtype}: {msg}"
    );
    assert_eq!(msg.queries().len(), 1, "question echoed: {msg}");
    assert!(
        msg.queries()[0]
            .name()
            .to_ascii()
            .eq_ignore_ascii_case(qname),
        "question name: {msg}"
    );
    assert_eq!(msg.queries()[0].query_type(), rtype, "question type: {msg}");
    assert_eq!(
        ips(msg),
        want.iter().copied().collect(),
        "{qname} {rtype} answer: {msg}"
    );
    for r in msg.answers() {
        assert_eq!(r.record_type(), rtype, "{msg}");
        assert!(r.ttl() <= 30, "TTL {} exceeds `cache 30`: {msg}", r.ttl());
    }
}

/// A negative answer: rcode, no answers, the zone's SOA in the authority section.
fn assert_negative(msg: &Message, rcode: ResponseCode, soa_owner: &str) {
    assert_eq!(msg.message_type(), MessageType::Response, "{msg}");
    assert_eq!(msg.response_code(), rcode, "{msg}");
    assert!(msg.answers().is_empty(), "no answers expected: {msg}");
    let soa = msg
        .name_servers()
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .unwrap_or_else(|| panic!("SOA expected in the authority section: {msg}"));
    assert!(
        soa.name().to_ascii().eq_ignore_ascii_case(soa_owner),
        "SOA owner: {msg}"
    );
    assert!(matches!(soa.data(), RData::SOA(_)), "{msg}");
    assert!(
        soa.ttl() <= 30,
        "negative TTL {} exceeds `cache 30`: {msg}",
        soa.ttl()
    );
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn v6(a: std::net::Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

fn a_records(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    assert_answer(
        &udp.query(zone::WWW, RecordType::A).unwrap(),
        zone::WWW,
        RecordType::A,
        &[v4(zone::WWW_A)],
    );
    let multi = zone::MULTI_A.map(v4);
    assert_answer(
        &udp.query(zone::MULTI, RecordType::A).unwrap(),
        zone::MULTI,
        RecordType::A,
        &multi,
    );
    let mut tcp = env.tcp();
    assert_answer(
        &tcp.query(zone::DUAL, RecordType::A).unwrap(),
        zone::DUAL,
        RecordType::A,
        &[v4(zone::DUAL_A)],
    );
    assert_answer(
        &tcp.query(zone::MULTI, RecordType::A).unwrap(),
        zone::MULTI,
        RecordType::A,
        &multi,
    );
    assert_answer(
        &tcp.query(zone::KUBE_DNS, RecordType::A).unwrap(),
        zone::KUBE_DNS,
        RecordType::A,
        &[v4(zone::KUBE_DNS_A)],
    );
    env.stop();
}

fn aaaa_records(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let r = udp.query(zone::DUAL, RecordType::AAAA).unwrap();
    assert_answer(&r, zone::DUAL, RecordType::AAAA, &[v6(zone::DUAL_AAAA)]);
    let mut tcp = env.tcp();
    let r = tcp.query(zone::V6, RecordType::AAAA).unwrap();
    assert_answer(&r, zone::V6, RecordType::AAAA, &[v6(zone::V6_AAAA)]);
    env.stop();
}

fn nxdomain(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    assert_negative(
        &udp.query(zone::MISSING, RecordType::A).unwrap(),
        ResponseCode::NXDomain,
        zone::ZONE,
    );
    let mut tcp = env.tcp();
    assert_negative(
        &tcp.query("nope.deeper.example.test.", RecordType::AAAA)
            .unwrap(),
        ResponseCode::NXDomain,
        zone::ZONE,
    );
    assert_negative(
        &udp.query("nope.default.svc.cluster.local.", RecordType::A)
            .unwrap(),
        ResponseCode::NXDomain,
        "svc.cluster.local.",
    );
    env.stop();
}

fn nodata(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    // www has an A record only; v6 has an AAAA only.
    assert_negative(
        &udp.query(zone::WWW, RecordType::AAAA).unwrap(),
        ResponseCode::NoError,
        zone::ZONE,
    );
    let mut tcp = env.tcp();
    assert_negative(
        &tcp.query(zone::V6, RecordType::A).unwrap(),
        ResponseCode::NoError,
        zone::ZONE,
    );
    env.stop();
}

fn tcp_pipelined(io: Io) {
    let env = Env::start(io);
    let mut tcp = env.tcp();
    let qs = [
        (zone::host(0), RecordType::A),
        (zone::DUAL.to_string(), RecordType::AAAA),
        (zone::MISSING.to_string(), RecordType::A),
    ];
    let ids: Vec<u16> = (0..qs.len()).map(|_| new_id()).collect();
    let wire: Vec<Vec<u8>> = qs
        .iter()
        .zip(&ids)
        .map(|((n, t), id)| build_query(n, *t, *id))
        .collect();
    tcp.send_many(&wire).unwrap(); // all three in one write
    let mut seen = BTreeSet::new();
    for _ in 0..qs.len() {
        let r = tcp.recv(QUERY_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "pipelined reply {} of 3 (got ids {seen:?} of {ids:?}): {e:#}",
                seen.len() + 1
            )
        });
        let i = ids
            .iter()
            .position(|id| *id == r.id())
            .unwrap_or_else(|| panic!("unknown reply ID: {r}"));
        assert!(
            seen.insert(r.id()),
            "duplicate reply for ID {:#06x}",
            r.id()
        );
        match i {
            0 => assert_answer(&r, &qs[0].0, RecordType::A, &[v4(zone::host_a(0))]),
            1 => assert_answer(&r, zone::DUAL, RecordType::AAAA, &[v6(zone::DUAL_AAAA)]),
            _ => assert_negative(&r, ResponseCode::NXDomain, zone::ZONE),
        }
    }
    // The connection stays usable, and the same three (now cached) pipelined again.
    let ids2: Vec<u16> = (0..qs.len()).map(|_| new_id()).collect();
    let wire: Vec<Vec<u8>> = qs
        .iter()
        .zip(&ids2)
        .map(|((n, t), id)| build_query(n, *t, *id))
        .collect();
    tcp.send_many(&wire).unwrap();
    let mut got: BTreeSet<u16> = BTreeSet::new();
    for _ in 0..qs.len() {
        got.insert(
            tcp.recv(QUERY_TIMEOUT)
                .expect("second pipelined batch")
                .id(),
        );
    }
    assert_eq!(got, ids2.iter().copied().collect::<BTreeSet<u16>>());
    assert_answer(
        &tcp.query(zone::WWW, RecordType::A).unwrap(),
        zone::WWW,
        RecordType::A,
        &[v4(zone::WWW_A)],
    );
    env.stop();
}

fn ids_echoed(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let mut tcp = env.tcp();
    for id in [0x0000u16, 0x0001, 0x7fff, 0xbeef, 0xffff] {
        // Same name each time: the first is a miss, the others cache hits.
        let q = build_query(zone::WWW, RecordType::A, id);
        let r = udp
            .exchange_raw(&q, QUERY_TIMEOUT)
            .unwrap()
            .expect("UDP reply");
        let h = header_of(&r).expect("header");
        assert_eq!(h.id, id, "UDP reply ID");
        assert!(h.qr && h.rd, "QR and RD set in the reply: {h:?}");
        tcp.send_raw(&q).unwrap();
        let r = tcp.recv_raw(QUERY_TIMEOUT).unwrap();
        assert_eq!(header_of(&r).expect("header").id, id, "TCP reply ID");
    }
    env.stop();
}

fn mixed_case_preserved(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let names = [
        "WwW.ExAmPlE.TeSt.",
        "wWw.eXaMpLe.tEsT.",
        "WWW.EXAMPLE.TEST.",
    ];
    for (i, name) in names.iter().enumerate() {
        let q = build_query(name, RecordType::A, new_id());
        let r = udp
            .exchange_raw(&q, QUERY_TIMEOUT)
            .unwrap()
            .expect("UDP reply");
        assert_eq!(
            wire_question(&r).map(String::from_utf8_lossy),
            wire_question(&q).map(String::from_utf8_lossy),
            "question #{i} must be echoed byte for byte, in the client's case"
        );
        let msg = Message::from_vec(&r).unwrap();
        assert_answer(&msg, zone::WWW, RecordType::A, &[v4(zone::WWW_A)]);
    }
    // One miss; the other spellings are hits on the same (case-insensitive) entry.
    assert_eq!(
        env.unbound.queries_for(zone::WWW, Some(RecordType::A)),
        1,
        "{}",
        env.unbound.logs()
    );
    let mut tcp = env.tcp();
    let q = build_query("Dual.Example.TEST.", RecordType::AAAA, new_id());
    tcp.send_raw(&q).unwrap();
    let r = tcp.recv_raw(QUERY_TIMEOUT).unwrap();
    assert_eq!(
        wire_question(&r),
        wire_question(&q),
        "TCP question echoed in the client's case"
    );
    env.stop();
}

fn cache_hit_not_forwarded(io: Io) {
    let env = Env::start(io);
    let ub = &env.unbound;
    let udp = env.udp(); // one source port → one shard
    let total0 = ub.total_queries();

    let name = zone::host(5);
    let r1 = udp.query(&name, RecordType::A).unwrap();
    assert_answer(&r1, &name, RecordType::A, &[v4(zone::host_a(5))]);
    assert_eq!(ub.queries_for(&name, None), 1, "the miss is forwarded once");
    let r2 = udp.query(&name, RecordType::A).unwrap();
    assert_answer(&r2, &name, RecordType::A, &[v4(zone::host_a(5))]);
    assert_eq!(
        ub.queries_for(&name, None),
        1,
        "the second identical query is a cache hit"
    );
    assert_eq!(
        ub.total_queries() - total0,
        1,
        "Unbound saw exactly one query for two\n{}",
        ub.logs()
    );

    // Negative answers are cached too (NXDOMAIN and NODATA).
    for (n, t, rc) in [
        ("gone.example.test.", RecordType::A, ResponseCode::NXDomain),
        (zone::WWW, RecordType::AAAA, ResponseCode::NoError),
    ] {
        for _ in 0..2 {
            assert_negative(&udp.query(n, t).unwrap(), rc, zone::ZONE);
        }
        assert_eq!(
            ub.queries_for(n, Some(t)),
            1,
            "{n} {t} forwarded once\n{}",
            ub.logs()
        );
    }
    // Different type, same name: a separate entry, so one more upstream query.
    let r = udp.query(&name, RecordType::AAAA).unwrap();
    assert_negative(&r, ResponseCode::NoError, zone::ZONE);
    assert_eq!(ub.queries_for(&name, None), 2);
    assert_eq!(ub.total_queries() - total0, 4, "{}", ub.logs());
    env.stop();
}

fn ttl_decreases(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let name = zone::host(7);
    let r1 = udp.query(&name, RecordType::A).unwrap();
    let t1 = r1.answers().first().expect("answer").ttl();
    // Unbound serves TTL 300; `cache 30` clamps it, and (as CoreDNS does) the miss reply
    // itself carries the clamped TTL.
    assert_eq!(t1, 30, "first reply TTL (Unbound 300, `cache 30`): {r1}");
    std::thread::sleep(Duration::from_millis(2100));
    let r2 = udp.query(&name, RecordType::A).unwrap();
    let t2 = r2.answers().first().expect("answer").ttl();
    assert!(
        t2 < t1,
        "cached TTL must decrease: {t1} then {t2} after 2.1 s"
    );
    assert!(
        t2 >= t1.saturating_sub(3) && t2 >= 1,
        "cached TTL {t2} after 2.1 s (first {t1})"
    );
    assert_eq!(
        env.unbound.queries_for(&name, None),
        1,
        "the second query was a cache hit"
    );
    env.stop();
}

fn dig_queries(io: Io) {
    let env = Env::start(io);
    let addr = env.shardns.udp_addr();
    let out = dig(addr, zone::WWW, "A", false).unwrap();
    assert_eq!(dig_status(&out), Some("NOERROR"), "{out}");
    assert!(out.contains("(UDP)"), "{out}");
    let ans = dig_answers(&out);
    assert_eq!(ans.len(), 1, "{out}");
    assert_eq!(
        (ans[0][0].as_str(), ans[0][3].as_str(), ans[0][4].as_str()),
        (zone::WWW, "A", "192.0.2.10"),
        "{out}"
    );

    let out = dig(env.shardns.tcp_addr(), zone::DUAL, "AAAA", true).unwrap();
    assert_eq!(dig_status(&out), Some("NOERROR"), "{out}");
    assert!(out.contains("(TCP)"), "{out}");
    let ans = dig_answers(&out);
    assert_eq!(ans.len(), 1, "{out}");
    assert_eq!(ans[0][4], zone::DUAL_AAAA.to_string(), "{out}");

    let out = dig(addr, zone::MISSING, "A", true).unwrap();
    assert_eq!(dig_status(&out), Some("NXDOMAIN"), "{out}");
    env.stop();
}

fn force_tcp_upstream(io: Io) {
    let env = Env::start(io);
    let (total0, tcp0) = (env.unbound.total_queries(), env.unbound.tcp_queries());
    let udp = env.udp();
    for n in 10..13 {
        assert_answer(
            &udp.query(&zone::host(n), RecordType::A).unwrap(),
            &zone::host(n),
            RecordType::A,
            &[v4(zone::host_a(n))],
        );
    }
    let (total, tcp) = (
        env.unbound.total_queries() - total0,
        env.unbound.tcp_queries() - tcp0,
    );
    assert!(
        tcp >= 3,
        "force_tcp: the 3 misses reach Unbound over TCP (TCP queries seen: {tcp})"
    );
    assert_eq!(total - tcp, 0, "force_tcp: no UDP query may reach Unbound");
    env.stop();
}

fn upstream_follows_client_protocol(io: Io) {
    let env = Env::start_with(io, false);
    let ub = &env.unbound;
    let (total0, tcp0) = (ub.total_queries(), ub.tcp_queries());
    let udp = env.udp();
    assert_answer(
        &udp.query(&zone::host(14), RecordType::A).unwrap(),
        &zone::host(14),
        RecordType::A,
        &[v4(zone::host_a(14))],
    );
    assert_eq!(
        (ub.total_queries() - total0, ub.tcp_queries() - tcp0),
        (1, 0),
        "UDP client → UDP upstream (total, tcp)"
    );
    let mut tcp = env.tcp();
    assert_answer(
        &tcp.query(&zone::host(15), RecordType::A).unwrap(),
        &zone::host(15),
        RecordType::A,
        &[v4(zone::host_a(15))],
    );
    assert_eq!(
        (ub.total_queries() - total0, ub.tcp_queries() - tcp0),
        (2, 1),
        "TCP client → TCP upstream (total, tcp)"
    );
    env.stop();
}

fn log_names_backend_and_shards(io: Io) {
    let env = Env::start(io);
    let lines = env.shardns.log_lines();
    let backend = match io {
        Io::Uring => "io_uring",
        Io::Epoll => "epoll",
    };
    for proto in ["udp", "tcp"] {
        for shard in 0..2 {
            let want = format!("(shard {shard}, {backend})");
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("listening on {proto} ")) && l.contains(&want)),
                "expected a 'listening on {proto} ... {want}' line:\n{}",
                env.shardns.log_text()
            );
        }
    }
    env.stop();
}

io_tests!(
    a_records,
    aaaa_records,
    nxdomain,
    nodata,
    tcp_pipelined,
    ids_echoed,
    mixed_case_preserved,
    cache_hit_not_forwarded,
    ttl_decreases,
    dig_queries,
    force_tcp_upstream,
    upstream_follows_client_protocol,
    log_names_backend_and_shards,
);
