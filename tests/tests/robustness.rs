//! Behaviour under concurrency, awkward TCP clients, a dead upstream, large answers and
//! protocol corners (EDNS, truncation, classes), for both I/O backends.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use shardns_e2e::{
    Env, Io, QUERY_TIMEOUT, UdpClient, build_query, header_of, io_tests, new_id, query_message,
    query_message_plain, zone,
};

fn first_ip(msg: &Message) -> Option<IpAddr> {
    msg.answers().iter().find_map(|r| r.data().ip_addr())
}

/// 16 UDP sockets each fire 12 queries at once (192 in flight, mostly misses on several
/// names), then collect: every query gets exactly its own, correct answer.
fn concurrent_udp_burst(io: Io) {
    let env = Env::start(io);
    let clients: Vec<UdpClient> = (0..16).map(|_| env.udp()).collect();
    let mut want: Vec<BTreeMap<u16, u8>> = vec![BTreeMap::new(); clients.len()];
    for (c, client) in clients.iter().enumerate() {
        for q in 0..12u8 {
            let n = (c as u8 + q) % zone::HOSTS;
            let id = new_id();
            if want[c].insert(id, n).is_some() {
                continue; // an ID repeated on this socket: skip it rather than confuse replies
            }
            client
                .send_raw(&build_query(&zone::host(n), RecordType::A, id))
                .unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (c, client) in clients.iter().enumerate() {
        let mut got = BTreeSet::new();
        while got.len() < want[c].len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = client.recv_raw(left).unwrap().unwrap_or_else(|| {
                panic!(
                    "client {c}: only {} of {} replies within 10 s\n{}",
                    got.len(),
                    want[c].len(),
                    env.shardns.log_text()
                )
            });
            let r = Message::from_vec(&raw).expect("parseable reply");
            let n = *want[c]
                .get(&r.id())
                .unwrap_or_else(|| panic!("client {c}: reply with unknown ID: {r}"));
            assert!(
                got.insert(r.id()),
                "client {c}: duplicate reply for ID {:#06x}",
                r.id()
            );
            assert_eq!(r.response_code(), ResponseCode::NoError, "{r}");
            assert_eq!(
                first_ip(&r),
                Some(IpAddr::V4(zone::host_a(n))),
                "client {c}, host{n}: {r}"
            );
        }
    }
    env.stop();
}

/// 40 queries pipelined in one write on one TCP connection, distinct names (misses and
/// negatives mixed): all answered, each correctly.
fn tcp_many_pipelined(io: Io) {
    let env = Env::start(io);
    let mut tcp = env.tcp();
    let mut want: BTreeMap<u16, Option<u8>> = BTreeMap::new();
    let mut wire = Vec::new();
    for i in 0..40u8 {
        let id = new_id();
        if want.contains_key(&id) {
            continue;
        }
        if i % 4 == 3 {
            want.insert(id, None);
            wire.push(build_query(
                &format!("absent{i}.example.test."),
                RecordType::A,
                id,
            ));
        } else {
            let n = i % zone::HOSTS;
            want.insert(id, Some(n));
            wire.push(build_query(&zone::host(n), RecordType::A, id));
        }
    }
    tcp.send_many(&wire).unwrap();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tcp.recv(left).unwrap_or_else(|e| {
            panic!(
                "{} of {} pipelined replies: {e:#}\n{}",
                got.len(),
                want.len(),
                env.shardns.log_text()
            )
        });
        let n = *want
            .get(&r.id())
            .unwrap_or_else(|| panic!("unknown ID: {r}"));
        assert!(got.insert(r.id()), "duplicate reply {:#06x}", r.id());
        match n {
            Some(n) => assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::host_a(n))), "{r}"),
            None => assert_eq!(r.response_code(), ResponseCode::NXDomain, "{r}"),
        }
    }
    env.stop();
}

/// A TCP query written in pieces (length prefix split, pauses between) is still answered.
fn tcp_split_writes(io: Io) {
    let env = Env::start(io);
    let mut s =
        TcpStream::connect_timeout(&env.shardns.tcp_addr(), Duration::from_secs(3)).unwrap();
    s.set_nodelay(true).unwrap();
    let id = new_id();
    let q = build_query(zone::WWW, RecordType::A, id);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(&q);
    for chunk in [&framed[..1], &framed[1..7], &framed[7..]] {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Read the reply through a TcpClient-like framed read.
    let mut client = shardns_e2e::TcpClient::connect(env.shardns.tcp_addr()).unwrap();
    drop(client.query(zone::DUAL, RecordType::A).unwrap()); // another connection works meanwhile
    s.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let mut len = [0u8; 2];
    std::io::Read::read_exact(&mut s, &mut len).expect("reply length prefix");
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut s, &mut body).expect("reply body");
    let r = Message::from_vec(&body).unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");
    env.stop();
}

/// Clients that vanish (close with queries in flight, send half a frame, send garbage
/// lengths) do not disturb the server.
fn tcp_clients_that_vanish(io: Io) {
    let mut env = Env::start(io);
    for n in 0..5u8 {
        let mut s =
            TcpStream::connect_timeout(&env.shardns.tcp_addr(), Duration::from_secs(3)).unwrap();
        let q = build_query(&zone::host(n), RecordType::A, new_id());
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend(&q);
        match n {
            0 | 1 => s.write_all(&framed).unwrap(), // then close before the reply
            2 => s.write_all(&framed[..framed.len() / 2]).unwrap(), // half a frame
            3 => s.write_all(&[0, 0]).unwrap(),     // a zero-length message
            _ => s.write_all(&[0, 5, 1, 2, 3, 4, 5]).unwrap(), // a 5-byte message
        }
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    env.shardns.assert_alive();
    let mut tcp = env.tcp();
    assert_eq!(
        first_ip(&tcp.query(zone::WWW, RecordType::A).unwrap()),
        Some(IpAddr::V4(zone::WWW_A))
    );
    assert_eq!(
        first_ip(&env.udp().query(zone::WWW, RecordType::A).unwrap()),
        Some(IpAddr::V4(zone::WWW_A))
    );
    env.stop();
}

/// With Unbound gone: a cached name is still answered from the cache, an uncached one gets
/// SERVFAIL within the 5 s query deadline, and shardns keeps running and stops cleanly.
fn upstream_down(io: Io) {
    let Env {
        mut shardns,
        unbound,
    } = Env::start(io);
    let udp = UdpClient::new(shardns.udp_addr()).unwrap();
    let cached = udp.query(zone::WWW, RecordType::A).unwrap();
    assert_eq!(first_ip(&cached), Some(IpAddr::V4(zone::WWW_A)));
    drop(unbound); // killed: its port now refuses connections

    let r = udp
        .query(zone::WWW, RecordType::A)
        .expect("a cached answer while the upstream is down");
    assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");

    let started = Instant::now();
    let id = new_id();
    let r = udp
        .exchange(
            &query_message(zone::DUAL, RecordType::A, id),
            Duration::from_secs(7),
        )
        .unwrap_or_else(|e| {
            panic!(
                "no reply for an uncached name with the upstream down: {e:#}\n{}",
                shardns.log_text()
            )
        });
    assert_eq!(r.id(), id);
    assert_eq!(r.response_code(), ResponseCode::ServFail, "{r}");
    assert!(
        started.elapsed() <= Duration::from_millis(6500),
        "SERVFAIL took {:?}",
        started.elapsed()
    );
    let mut tcp = shardns_e2e::TcpClient::connect(shardns.tcp_addr()).unwrap();
    let id = new_id();
    tcp.send_raw(&build_query(zone::V6, RecordType::AAAA, id))
        .unwrap();
    let r = tcp
        .recv(Duration::from_secs(7))
        .expect("TCP reply with the upstream down");
    assert_eq!(
        (r.id(), r.response_code()),
        (id, ResponseCode::ServFail),
        "{r}"
    );
    shardns.assert_alive();
    shardns.stop();
}

/// Answers bigger than 512 bytes: truncated (TC=1, ≤ 512 bytes) over UDP without EDNS,
/// whole with EDNS (1232) and over TCP; both when the big reply is a miss and a hit.
fn large_answers_truncation(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let mut tcp = env.tcp();
    let count = usize::from(zone::BIG_COUNT);
    // big0: first seen by a plain (512-byte) UDP client: a miss.
    // big1: first fetched whole with EDNS, then asked plainly: a hit.
    udp.query(&zone::big(1), RecordType::A).unwrap();
    for n in [0u8, 1] {
        let id = new_id();
        let raw = udp
            .exchange_raw(
                &query_message_plain(&zone::big(n), RecordType::A, id)
                    .to_vec()
                    .unwrap(),
                QUERY_TIMEOUT,
            )
            .unwrap()
            .expect("a reply");
        let h = header_of(&raw).unwrap();
        assert_eq!(h.id, id);
        assert!(
            raw.len() <= 512,
            "big{n}: {} bytes over UDP without EDNS (limit 512)",
            raw.len()
        );
        assert!(
            h.tc,
            "big{n}: TC must be set on a truncated reply: {h:?} ({} bytes)",
            raw.len()
        );
        assert!(usize::from(h.ancount) < count, "{h:?}");

        let r = udp.query(&zone::big(n), RecordType::A).unwrap(); // with EDNS 1232
        assert!(!r.truncated(), "big{n} with EDNS 1232: {r}");
        assert_eq!(r.answers().len(), count, "big{n} with EDNS 1232");

        let r = tcp.query(&zone::big(n), RecordType::A).unwrap();
        assert!(!r.truncated(), "big{n} over TCP");
        assert_eq!(r.answers().len(), count, "big{n} over TCP");
        let ips: BTreeSet<IpAddr> = r
            .answers()
            .iter()
            .filter_map(|a| a.data().ip_addr())
            .collect();
        assert_eq!(
            ips,
            (0..zone::BIG_COUNT)
                .map(|i| IpAddr::V4(zone::big_a(i)))
                .collect()
        );
    }
    env.stop();
}

/// EDNS is mirrored: an OPT in the reply exactly when the query had one.
fn edns_mirrored(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    for name in [zone::WWW, zone::WWW] {
        // miss, then hit
        let r = udp
            .exchange(&query_message(name, RecordType::A, new_id()), QUERY_TIMEOUT)
            .unwrap();
        assert!(
            r.extensions().is_some(),
            "OPT expected in the reply to an EDNS query: {r}"
        );
        let r = udp
            .exchange(
                &query_message_plain(name, RecordType::A, new_id()),
                QUERY_TIMEOUT,
            )
            .unwrap();
        assert!(
            r.extensions().is_none(),
            "no OPT expected in the reply to a plain query: {r}"
        );
        assert_eq!(first_ip(&r), Some(IpAddr::V4(zone::WWW_A)), "{r}");
    }
    env.stop();
}

/// A query of class CHAOS (not IN) is refused, as CoreDNS does, and not forwarded.
fn non_in_class_refused(io: Io) {
    let env = Env::start(io);
    let udp = env.udp();
    let id = new_id();
    let mut q = query_message(zone::WWW, RecordType::A, id);
    q.queries_mut().clear();
    let mut question = Query::query(Name::from_ascii(zone::WWW).unwrap(), RecordType::A);
    question.set_query_class(DNSClass::CH);
    q.add_query(question);
    let r = udp.exchange(&q, QUERY_TIMEOUT).unwrap();
    assert_eq!(r.id(), id);
    assert_eq!(r.response_code(), ResponseCode::Refused, "class CH: {r}");
    assert_eq!(
        env.unbound.queries_for(zone::WWW, None),
        0,
        "a CH query must not be forwarded"
    );
    env.stop();
}

/// SIGTERM with idle client TCP connections open still exits 0 promptly.
fn sigterm_with_open_connections(io: Io) {
    let env = Env::start(io);
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut c = env.tcp();
        c.query(zone::WWW, RecordType::A).unwrap();
        conns.push(c);
    }
    let started = Instant::now();
    env.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    drop(conns);
}

io_tests!(
    concurrent_udp_burst,
    tcp_many_pipelined,
    tcp_split_writes,
    tcp_clients_that_vanish,
    upstream_down,
    large_answers_truncation,
    edns_mirrored,
    non_in_class_refused,
    sigterm_with_open_connections,
);
