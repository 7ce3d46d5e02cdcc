//! The controllable test upstream ([`TestUpstream`]) does what each of its controls says.
//! Every test starts its own instance; every wait is bounded (the whole file runs in about a
//! second, tests in parallel).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shardns_e2e::upstream::zone;
use shardns_e2e::{
    Garbage, TcpClient, TestUpstream, TruncateTcp, UdpClient, build_query, dig, dig_answers,
    dig_status, header_of, new_id, query_message, query_message_plain, wait_for,
};

/// Timeout for a reply that should come.
const T: Duration = Duration::from_secs(2);
/// How long to listen for a reply that should not come.
const SILENT: Duration = Duration::from_millis(250);

fn upstream() -> TestUpstream {
    TestUpstream::start().expect("starting the test upstream")
}

fn a_addrs(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A raw TCP connection (to observe EOF and RST exactly).
fn raw_tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, T).expect("TCP connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    Ok(Message::from_vec(&body).expect("parseable reply"))
}

/// Reads until EOF (Ok(0)) or an error, within `T`; returns the read result.
fn read_end(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut b = [0u8; 512];
    s.read(&mut b)
}

#[test]
fn answers_from_the_zone() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();

    let r = udp.query(&zone::host(7), RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.authoritative());
    assert_eq!(a_addrs(&r), vec![zone::host_a(7)]);
    assert_eq!(r.answers()[0].ttl(), zone::TTL);
    let edns = r.extensions().as_ref().expect("OPT mirrored");
    assert_eq!(edns.max_payload(), zone::EDNS_PAYLOAD);

    // Without OPT in the query, none in the reply.
    let id = new_id();
    let r = udp
        .exchange(&query_message_plain(&zone::host(255), RecordType::A, id), T)
        .unwrap();
    assert_eq!(r.id(), id);
    assert!(r.extensions().is_none());
    assert_eq!(a_addrs(&r), vec![zone::host_a(255)]);

    // TCP, and the name's case is kept in the answer. (`query_message` parses names with
    // `Name::from_str`, which lowercases: set a mixed-case name with `from_ascii`.)
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let id = new_id();
    let mut q = query_message(&zone::host(0), RecordType::A, id);
    q.queries_mut()[0].set_name(Name::from_ascii("HOST0.Upstream.TEST.").unwrap());
    tcp.send_raw(&q.to_vec().unwrap()).unwrap();
    let r = tcp.recv(T).unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(a_addrs(&r), vec![zone::host_a(0)]);
    assert_eq!(r.answers()[0].name().to_ascii(), "HOST0.Upstream.TEST.");
    assert_eq!(up.queries_for(&zone::host(0), Some(RecordType::A)), 1);

    let r = udp.query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(a_addrs(&r), vec![zone::DUAL_A]);
    let r = udp.query(zone::DUAL, RecordType::AAAA).unwrap();
    assert!(matches!(r.answers()[0].data(), RData::AAAA(a) if a.0 == zone::DUAL_AAAA));

    // NODATA: NOERROR, no answer, the SOA.
    let r = udp.query(&zone::host(7), RecordType::AAAA).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);

    // `host256` is not a host.
    let r = udp.query("host256.upstream.test.", RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
}

#[test]
fn nxdomain_refused_and_health_probe() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();

    let r = udp.query(zone::MISSING, RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert!(r.answers().is_empty());
    let soa = &r.name_servers()[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.ttl(), zone::NEG_TTL);
    assert_eq!(soa.name().to_ascii(), zone::ZONE);

    let r = udp.query(zone::OUTSIDE, RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(r.answers().is_empty() && r.name_servers().is_empty());

    assert_eq!(up.health_probes(), 0);
    let r = udp.query(".", RecordType::NS).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(r.answers()[0].record_type(), RecordType::NS);
    assert_eq!(up.health_probes(), 1);
}

#[test]
fn big_reply_is_truncated_over_udp_without_edns() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();
    let id = new_id();
    let raw = udp
        .exchange_raw(
            &query_message_plain(zone::BIG, RecordType::A, id)
                .to_vec()
                .unwrap(),
            T,
        )
        .unwrap()
        .expect("a reply");
    let h = header_of(&raw).unwrap();
    assert!(h.tc && h.ancount == 0 && h.id == id, "{h:?}");
    assert!(raw.len() <= 512);

    let raw = udp
        .exchange_raw(&build_query(zone::BIG, RecordType::A, new_id()), T)
        .unwrap()
        .expect("a reply");
    assert!(raw.len() > 512, "{} bytes", raw.len());
    let r = Message::from_vec(&raw).unwrap();
    assert!(!r.truncated());
    assert_eq!(a_addrs(&r).len(), usize::from(zone::BIG_COUNT));

    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let r = tcp.query(zone::BIG, RecordType::A).unwrap();
    assert_eq!(a_addrs(&r).len(), usize::from(zone::BIG_COUNT));
}

#[test]
fn dig_gets_answers() {
    let up = upstream();
    for tcp in [false, true] {
        let out = dig(up.addr(), "host9.upstream.test", "A", tcp).unwrap();
        assert_eq!(dig_status(&out), Some("NOERROR"), "{out}");
        let answers = dig_answers(&out);
        assert_eq!(answers.len(), 1, "{out}");
        assert_eq!(answers[0][4], "198.51.100.9", "{out}");
    }
    assert_eq!(up.udp_queries(), 1);
    assert_eq!(up.tcp_queries(), 1);
}

/// Three queries pipelined on one connection: host1 (300 ms), host2 and host3 (10 ms).
/// Returns the reply IDs in arrival order, the sent IDs, and when the second reply came.
fn pipelined(up: &TestUpstream) -> (Vec<u16>, [u16; 3], Duration) {
    up.delay(Duration::from_millis(10))
        .delay_name(&zone::host(1), Duration::from_millis(300));
    let ids = [new_id(), new_id(), new_id()];
    let mut c = TcpClient::connect(up.addr()).unwrap();
    let started = Instant::now();
    c.send_many(&[
        build_query(&zone::host(1), RecordType::A, ids[0]),
        build_query(&zone::host(2), RecordType::A, ids[1]),
        build_query(&zone::host(3), RecordType::A, ids[2]),
    ])
    .unwrap();
    let mut got = Vec::new();
    let mut second = Duration::ZERO;
    for i in 0..3 {
        got.push(c.recv(T).unwrap().id());
        if i == 1 {
            second = started.elapsed();
        }
    }
    (got, ids, second)
}

#[test]
fn serialize_tcp_answers_in_order() {
    let up = upstream();
    up.serialize_tcp(true);
    let (got, ids, second) = pipelined(&up);
    assert_eq!(got, ids.to_vec());
    assert!(second >= Duration::from_millis(300), "{second:?}");
    assert_eq!(up.max_outstanding_per_connection(), 3);
}

#[test]
fn concurrent_tcp_answers_fast_ones_first() {
    let up = upstream();
    let (got, ids, second) = pipelined(&up);
    assert_eq!(
        got[2], ids[0],
        "the slow one last: {got:04x?} vs {ids:04x?}"
    );
    assert!(got[..2].contains(&ids[1]) && got[..2].contains(&ids[2]));
    assert!(second < Duration::from_millis(250), "{second:?}");
    assert_eq!(up.max_outstanding_per_connection(), 3);
}

#[test]
fn delay_applies_per_name() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();
    up.delay_name("HOST5.upstream.test", Duration::from_millis(200));
    let t = Instant::now();
    udp.query(&zone::host(5), RecordType::A).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    let t = Instant::now();
    udp.query(&zone::host(6), RecordType::A).unwrap();
    assert!(t.elapsed() < Duration::from_millis(150));

    up.clear_name_delays().delay(Duration::from_millis(150));
    let t = Instant::now();
    udp.query(&zone::host(6), RecordType::A).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[test]
fn drop_queries_never_answers() {
    let up = upstream();
    up.drop_queries(true);
    let udp = UdpClient::new(up.addr()).unwrap();
    let none = udp
        .exchange_raw(
            &build_query(&zone::host(1), RecordType::A, new_id()),
            SILENT,
        )
        .unwrap();
    assert!(none.is_none());
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    tcp.send_raw(&build_query(&zone::host(1), RecordType::A, new_id()))
        .unwrap();
    assert!(tcp.recv_raw(SILENT).is_err());
    assert_eq!(up.queries(), 2);
    assert_eq!(up.answered(), 0);

    up.drop_queries(false);
    tcp.query(&zone::host(2), RecordType::A).unwrap();
    udp.query(&zone::host(2), RecordType::A).unwrap();
}

#[test]
fn reset_connections_sends_rst() {
    let up = upstream();
    up.reset_connections(true);
    let mut s = raw_tcp(up.addr());
    s.write_all(&framed(&build_query(
        &zone::host(1),
        RecordType::A,
        new_id(),
    )))
    .unwrap();
    let err = read_end(&mut s).expect_err("RST, not data or FIN");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(up.tcp_queries(), 1);
    // UDP is not affected.
    UdpClient::new(up.addr())
        .unwrap()
        .query(&zone::host(1), RecordType::A)
        .unwrap();

    up.reset_connections(false);
    TcpClient::connect(up.addr())
        .unwrap()
        .query(&zone::host(1), RecordType::A)
        .unwrap();
}

#[test]
fn close_after_two_answers() {
    let up = upstream();
    up.close_after(Some(2));
    // One at a time.
    let mut s = raw_tcp(up.addr());
    for n in 1..=2 {
        s.write_all(&framed(&build_query(
            &zone::host(n),
            RecordType::A,
            new_id(),
        )))
        .unwrap();
        assert_eq!(a_addrs(&read_frame(&mut s).unwrap()), vec![zone::host_a(n)]);
    }
    assert_eq!(read_end(&mut s).unwrap(), 0, "FIN after two answers");

    // Pipelined: two answers, then FIN; the third is not taken.
    let mut s = raw_tcp(up.addr());
    let mut buf = Vec::new();
    for n in 1..=3 {
        buf.extend(framed(&build_query(
            &zone::host(n),
            RecordType::A,
            new_id(),
        )));
    }
    s.write_all(&buf).unwrap();
    read_frame(&mut s).unwrap();
    read_frame(&mut s).unwrap();
    assert_eq!(read_end(&mut s).unwrap(), 0);
    assert_eq!(up.tcp_queries(), 4);
}

#[test]
fn idle_timeout_closes_idle_connections() {
    let up = upstream();
    up.idle_timeout(Some(Duration::from_millis(150)));
    let mut s = raw_tcp(up.addr());
    s.write_all(&framed(&build_query(
        &zone::host(1),
        RecordType::A,
        new_id(),
    )))
    .unwrap();
    read_frame(&mut s).unwrap();
    let t = Instant::now();
    assert_eq!(read_end(&mut s).unwrap(), 0);
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn wrong_id_and_then_right() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();
    up.wrong_id(true);
    let id = new_id();
    let r = udp
        .exchange(&query_message(&zone::host(1), RecordType::A, id), T)
        .unwrap();
    assert_eq!(r.id(), id.wrapping_add(1));
    assert!(
        udp.recv_raw(SILENT).unwrap().is_none(),
        "only the wrong one"
    );

    up.wrong_id_then_right(true);
    let id = new_id();
    let r = udp
        .exchange(&query_message(&zone::host(1), RecordType::A, id), T)
        .unwrap();
    assert_eq!(r.id(), id.wrapping_add(1));
    let right = udp.recv_raw(T).unwrap().expect("then the right one");
    assert_eq!(header_of(&right).unwrap().id, id);

    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let id = new_id();
    tcp.send_raw(&build_query(&zone::host(2), RecordType::A, id))
        .unwrap();
    assert_eq!(tcp.recv(T).unwrap().id(), id.wrapping_add(1));
    let r = tcp.recv(T).unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(a_addrs(&r), vec![zone::host_a(2)]);
}

#[test]
fn wrong_question_keeps_the_id() {
    let up = upstream();
    up.wrong_question(true);
    let udp = UdpClient::new(up.addr()).unwrap();
    let id = new_id();
    let r = udp
        .exchange(&query_message(&zone::host(1), RecordType::A, id), T)
        .unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(r.queries()[0].name().to_ascii(), zone::WRONG_QUESTION);
    assert_eq!(r.queries()[0].query_type(), RecordType::A);
}

#[test]
fn rcode_servfail() {
    let up = upstream();
    up.rcode(Some(ResponseCode::ServFail));
    let udp = UdpClient::new(up.addr()).unwrap();
    let r = udp.query(&zone::host(1), RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert!(r.answers().is_empty());
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let r = tcp.query(".", RecordType::NS).unwrap();
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert_eq!(up.health_probes(), 1);

    up.rcode(None);
    let r = udp.query(&zone::host(1), RecordType::A).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NoError);
}

#[test]
fn truncate_udp_then_tcp_works() {
    let up = upstream();
    up.truncate_udp(true);
    let udp = UdpClient::new(up.addr()).unwrap();
    let r = udp.query(&zone::host(1), RecordType::A).unwrap();
    assert!(r.truncated());
    assert!(r.answers().is_empty());
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let r = tcp.query(&zone::host(1), RecordType::A).unwrap();
    assert!(!r.truncated());
    assert_eq!(a_addrs(&r), vec![zone::host_a(1)]);
}

/// Whether `bytes` could be taken for a DNS reply to the query with ID `id`.
fn looks_like_a_reply_to(bytes: &[u8], id: u16) -> bool {
    header_of(bytes).is_some_and(|h| h.id == id)
}

#[test]
fn garbage_framed_over_udp_and_tcp() {
    let up = upstream();
    up.garbage(Garbage::Framed);
    let udp = UdpClient::new(up.addr()).unwrap();
    let id = new_id();
    let bytes = udp
        .exchange_raw(&build_query(&zone::host(1), RecordType::A, id), T)
        .unwrap()
        .expect("a datagram of garbage");
    assert!((40..=100).contains(&bytes.len()), "{} bytes", bytes.len());
    assert!(!looks_like_a_reply_to(&bytes, id), "{bytes:02x?}");

    // Over TCP, in a frame of its own length; two queries, two different frames.
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let mut frames = Vec::new();
    for n in 2..4 {
        let id = new_id();
        tcp.send_raw(&build_query(&zone::host(n), RecordType::A, id))
            .unwrap();
        let frame = tcp.recv_raw(T).expect("a frame of garbage");
        assert!((40..=100).contains(&frame.len()), "{} bytes", frame.len());
        assert!(!looks_like_a_reply_to(&frame, id), "{frame:02x?}");
        frames.push(frame);
    }
    assert_ne!(frames[0], frames[1]);
    assert_eq!(up.queries(), 3);
    assert_eq!((up.garbled(), up.answered()), (3, 0));

    // Off again: answers on the same connection.
    up.garbage(Garbage::Off);
    assert_eq!(
        a_addrs(&tcp.query(&zone::host(4), RecordType::A).unwrap()),
        vec![zone::host_a(4)]
    );
    assert_eq!(up.answered(), 1);
}

#[test]
fn garbage_unframed_over_tcp() {
    let up = upstream();
    up.garbage(Garbage::Unframed);
    // UDP: a datagram of garbage, as framed.
    let udp = UdpClient::new(up.addr()).unwrap();
    let id = new_id();
    let bytes = udp
        .exchange_raw(&build_query(&zone::host(1), RecordType::A, id), T)
        .unwrap()
        .expect("a datagram of garbage");
    assert!(!looks_like_a_reply_to(&bytes, id));

    // TCP: 40 to 100 raw bytes, no length prefix; nothing else on the connection.
    let mut s = raw_tcp(up.addr());
    let id = new_id();
    s.write_all(&framed(&build_query(&zone::host(2), RecordType::A, id)))
        .unwrap();
    s.set_read_timeout(Some(SILENT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let started = Instant::now();
    while started.elapsed() < T {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!((40..=100).contains(&got.len()), "{} bytes", got.len());
    // Not a frame: the first two bytes are not the length of the rest.
    let prefix = usize::from(u16::from_be_bytes([got[0], got[1]]));
    assert_ne!(prefix, got.len() - 2, "{got:02x?}");
    assert_eq!(
        prefix,
        usize::from(!id),
        "the first two bytes are the ID, inverted"
    );
    assert_eq!((up.garbled(), up.answered()), (2, 0));
}

#[test]
fn truncate_tcp_then_close() {
    let up = upstream();
    up.truncate_tcp(TruncateTcp::ThenClose);
    let mut s = raw_tcp(up.addr());
    let id = new_id();
    s.write_all(&framed(&build_query(&zone::host(1), RecordType::A, id)))
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("FIN after the cut frame");
    let promised = usize::from(u16::from_be_bytes([got[0], got[1]]));
    assert!(promised > 12, "{got:02x?}");
    assert_eq!(got.len() - 2, promised / 2, "half of the promised bytes");
    assert_eq!(
        header_of(&got[2..]).unwrap().id,
        id,
        "the reply's own start"
    );
    assert_eq!((up.garbled(), up.answered()), (1, 0));

    // UDP is not affected.
    let r = UdpClient::new(up.addr())
        .unwrap()
        .query(&zone::host(1), RecordType::A)
        .unwrap();
    assert_eq!(a_addrs(&r), vec![zone::host_a(1)]);
    assert_eq!(up.answered(), 1);
}

#[test]
fn truncate_tcp_then_silence() {
    let up = upstream();
    up.truncate_tcp(TruncateTcp::ThenSilence);
    let mut s = raw_tcp(up.addr());
    let id = new_id();
    s.write_all(&framed(&build_query(&zone::host(1), RecordType::A, id)))
        .unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let promised = usize::from(u16::from_be_bytes(head));
    let mut half = vec![0u8; promised / 2];
    s.read_exact(&mut half).unwrap();
    assert_eq!(header_of(&half).unwrap().id, id);
    // Then silence, even for later queries and with the behaviour back to normal: the
    // connection stays open and sends nothing more.
    up.truncate_tcp(TruncateTcp::Off);
    s.write_all(&framed(&build_query(
        &zone::host(2),
        RecordType::A,
        new_id(),
    )))
    .unwrap();
    s.set_read_timeout(Some(SILENT)).unwrap();
    let mut more = [0u8; 64];
    let err = s.read(&mut more).expect_err("silence, not data or FIN");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert_eq!(up.tcp_connections_open(), 1);
    assert_eq!((up.garbled(), up.answered(), up.tcp_queries()), (1, 0, 1));
    // A new connection is answered.
    let r = TcpClient::connect(up.addr())
        .unwrap()
        .query(&zone::host(3), RecordType::A)
        .unwrap();
    assert_eq!(a_addrs(&r), vec![zone::host_a(3)]);
}

#[test]
fn stop_and_start_listening() {
    let up = upstream();
    let addr = up.addr();
    let mut old = TcpClient::connect(addr).unwrap();
    old.query(&zone::host(1), RecordType::A).unwrap();

    up.stop_listening();
    assert!(!up.is_listening());
    let err = TcpStream::connect_timeout(&addr, T).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let udp = UdpClient::new(addr).unwrap();
    udp.send_raw(&build_query(&zone::host(1), RecordType::A, new_id()))
        .unwrap();
    let err = udp.recv_raw(T).expect_err("ICMP port unreachable");
    assert!(format!("{err:#}").contains("refused"), "{err:#}");
    let err = old.recv_raw(T).expect_err("old connection closed");
    assert!(format!("{err:#}").contains("closed"), "{err:#}");
    assert_eq!(up.tcp_connections_open(), 0);

    up.start_listening().unwrap();
    assert!(up.is_listening());
    assert_eq!(up.addr(), addr);
    udp.query(&zone::host(2), RecordType::A).unwrap();
    TcpClient::connect(addr)
        .unwrap()
        .query(&zone::host(2), RecordType::A)
        .unwrap();
}

#[test]
fn counters() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();
    udp.query(&zone::host(1), RecordType::A).unwrap();
    udp.query("HOST1.upstream.test.", RecordType::AAAA).unwrap();
    {
        let mut a = TcpClient::connect(up.addr()).unwrap();
        let mut b = TcpClient::connect(up.addr()).unwrap();
        a.query(&zone::host(1), RecordType::A).unwrap();
        b.query(zone::DUAL, RecordType::A).unwrap();
        b.query(".", RecordType::NS).unwrap();
        assert_eq!(up.tcp_connections_open(), 2);
        // Malformed input over TCP: counted, dropped, the connection keeps working.
        b.send_raw(&[1, 2, 3]).unwrap();
        b.query(zone::DUAL, RecordType::AAAA).unwrap();
    }
    // Malformed over UDP: short, a response, and no question.
    udp.send_raw(&[0xff; 5]).unwrap();
    let mut resp = build_query(&zone::host(1), RecordType::A, 7);
    resp[2] |= 0x80;
    udp.send_raw(&resp).unwrap();
    udp.send_raw(&[0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    udp.query(&zone::host(3), RecordType::A).unwrap();

    let s = up.stats();
    assert_eq!(s.queries, 7, "{s:?}");
    assert_eq!(s.udp_queries, 3, "{s:?}");
    assert_eq!(s.tcp_queries, 4, "{s:?}");
    assert_eq!(s.malformed, 4, "{s:?}");
    assert_eq!(s.answered, 7, "{s:?}");
    assert_eq!(s.health_probes, 1, "{s:?}");
    assert_eq!(s.tcp_connections_accepted, 2, "{s:?}");
    assert_eq!(s.max_outstanding_per_connection, 1, "{s:?}");
    assert_eq!(up.queries_for("host1.UPSTREAM.test", None), 3);
    assert_eq!(up.queries_for(&zone::host(1), Some(RecordType::A)), 2);
    assert_eq!(up.queries_for(&zone::host(1), Some(RecordType::AAAA)), 1);
    assert_eq!(up.queries_for(".", Some(RecordType::NS)), 1);
    assert!(
        wait_for(T, || (up.tcp_connections_open() == 0).then_some(())).is_some(),
        "connections closed by the clients are noticed"
    );

    up.reset_counters();
    assert_eq!(up.stats(), Default::default());
    assert_eq!(up.queries_for(&zone::host(1), None), 0);
}

#[test]
fn drop_is_prompt_with_work_pending() {
    let up = upstream();
    up.delay(Duration::from_secs(5));
    let udp = UdpClient::new(up.addr()).unwrap();
    udp.send_raw(&build_query(&zone::host(1), RecordType::A, new_id()))
        .unwrap();
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    tcp.send_raw(&build_query(&zone::host(1), RecordType::A, new_id()))
        .unwrap();
    assert!(wait_for(T, || (up.queries() == 2).then_some(())).is_some());
    let t = Instant::now();
    drop(up);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        tcp.recv_raw(T).is_err(),
        "connection closed, never answered"
    );
}

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TestUpstream>();
}

#[test]
fn seen_logs_every_query_with_its_source_and_id() {
    let up = upstream();
    let udp = UdpClient::new(up.addr()).unwrap();
    let id = new_id();
    udp.exchange(&query_message(&zone::host(5), RecordType::A, id), T)
        .unwrap();
    let mut tcp = TcpClient::connect(up.addr()).unwrap();
    let tcp_id = new_id();
    tcp.send_raw(&build_query(&zone::host(6), RecordType::AAAA, tcp_id))
        .unwrap();
    tcp.recv(T).unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen[0].tcp && seen[1].tcp, "{seen:?}");
    assert_eq!(seen[0].peer, udp.local_addr());
    assert_eq!(
        (seen[0].id, seen[0].name.as_str()),
        (id, "host5.upstream.test.")
    );
    assert_eq!((seen[1].id, seen[1].rtype), (tcp_id, RecordType::AAAA));
    up.reset_counters();
    assert!(up.seen().is_empty());
}

#[test]
fn spoofer_sends_from_the_upstreams_address() {
    let up = upstream();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    // A socket connected to the upstream accepts what its spoofer sends.
    client.connect(up.addr()).unwrap();
    let spoofer = up.spoofer().expect("listening");
    spoofer
        .send_to(b"forged", client.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = client.recv_from(&mut buf).expect("the forged datagram");
    assert_eq!((&buf[..n], from), (&b"forged"[..], up.addr()));
    up.stop_listening();
    assert!(up.spoofer().is_none());
}
