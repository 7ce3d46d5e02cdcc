//! Malformed and unusual packets over raw UDP: each gets the RFC-mandated treatment (silent
//! drop, FORMERR, NOTIMP, BADVERS), and afterwards the next valid query from the same socket
//! is still answered and the process is still alive.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_e2e::{
    Env, Io, QUERY_TIMEOUT, UdpClient, build_query, header_of, io_tests, new_id, query_message,
    zone,
};

/// How long to wait before concluding "no reply".
const SILENCE: Duration = Duration::from_millis(700);

const FORMERR: u8 = 1;
const NOTIMP: u8 = 4;

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

/// QTYPE A, QCLASS IN.
const A_IN: [u8; 4] = [0, 1, 0, 1];

/// `www.example.test` in wire form.
fn www() -> Vec<u8> {
    let mut v = Vec::new();
    for l in ["www", "example", "test"] {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// The next valid query on the same socket is answered correctly, and shardns still runs.
fn still_serving(env: &mut Env, udp: &UdpClient, what: &str) {
    let r = udp.query(zone::WWW, RecordType::A).unwrap_or_else(|e| {
        panic!(
            "after {what}: valid query not answered: {e:#}\n{}",
            env.shardns.log_text()
        )
    });
    assert_eq!(
        r.response_code(),
        ResponseCode::NoError,
        "after {what}: {r}"
    );
    let ips: Vec<IpAddr> = r
        .answers()
        .iter()
        .filter_map(|a| a.data().ip_addr())
        .collect();
    assert_eq!(ips, vec![IpAddr::V4(zone::WWW_A)], "after {what}: {r}");
    env.shardns.assert_alive();
}

fn expect_silence(io: Io, what: &str, packet: &[u8]) {
    let mut env = Env::start(io);
    let udp = env.udp();
    let reply = udp.exchange_raw(packet, SILENCE).unwrap();
    assert!(
        reply.is_none(),
        "{what}: expected no reply, got {:02x?}",
        reply.unwrap_or_default()
    );
    still_serving(&mut env, &udp, what);
    env.stop();
}

/// Sends each packet and expects a reply with QR=1, the same ID and opcode, and `rcode`
/// (header RCODE field).
fn expect_rcode(io: Io, what: &str, packets: &[Vec<u8>], rcode: u8) {
    let mut env = Env::start(io);
    let udp = env.udp();
    for (i, p) in packets.iter().enumerate() {
        let q = header_of(p).expect("test packet has a header");
        let reply = udp
            .exchange_raw(p, QUERY_TIMEOUT)
            .unwrap()
            .unwrap_or_else(|| {
                panic!("{what} (#{i}): no reply within {QUERY_TIMEOUT:?}, expected rcode {rcode}")
            });
        let h = header_of(&reply)
            .unwrap_or_else(|| panic!("{what} (#{i}): reply too short: {reply:02x?}"));
        assert_eq!(h.id, q.id, "{what} (#{i}): reply ID");
        assert!(h.qr, "{what} (#{i}): QR must be set: {h:?}");
        assert_eq!(h.opcode, q.opcode, "{what} (#{i}): opcode echoed: {h:?}");
        assert_eq!(
            h.rcode, rcode,
            "{what} (#{i}): rcode (got {h:?}, reply {reply:02x?})"
        );
        assert_eq!(
            h.ancount, 0,
            "{what} (#{i}): no answers in an error reply: {h:?}"
        );
        still_serving(&mut env, &udp, what);
    }
    env.stop();
}

fn truncated_header(io: Io) {
    expect_silence(io, "a 5-byte packet", &[0x12, 0x34, 0x01, 0x00, 0x00]);
}

fn response_bit_set(io: Io) {
    let mut p = build_query(zone::WWW, RecordType::A, new_id());
    p[2] |= 0x80; // QR=1: a response, must never be answered (reflection loops)
    expect_silence(io, "a packet with QR=1", &p);
}

fn no_question(io: Io) {
    expect_rcode(
        io,
        "QDCOUNT=0",
        &[header(new_id(), 0x0100, 0, 0, 0, 0)],
        FORMERR,
    );
}

fn two_questions(io: Io) {
    let mut p = header(new_id(), 0x0100, 2, 0, 0, 0);
    p.extend(www());
    p.extend(A_IN);
    p.extend(www());
    p.extend([0, 28, 0, 1]); // AAAA IN
    expect_rcode(io, "QDCOUNT=2", &[p], FORMERR);
}

fn compression_loop(io: Io) {
    // QNAME = pointer to itself (offset 12).
    let mut p1 = header(new_id(), 0x0100, 1, 0, 0, 0);
    p1.extend([0xc0, 0x0c]);
    p1.extend(A_IN);
    // QNAME = "a" then a pointer back to its own start.
    let mut p2 = header(new_id(), 0x0100, 1, 0, 0, 0);
    p2.extend([0x01, b'a', 0xc0, 0x0c]);
    p2.extend(A_IN);
    expect_rcode(io, "a compression loop in the question", &[p1, p2], FORMERR);
}

fn label_too_long(io: Io) {
    let mut p = header(new_id(), 0x0100, 1, 0, 0, 0);
    p.push(64); // 0x40: not a valid length (max 63) nor a pointer
    p.extend([b'a'; 64]);
    p.extend([4, b't', b'e', b's', b't', 0]);
    p.extend(A_IN);
    expect_rcode(io, "a 64-byte label", &[p], FORMERR);
}

fn name_too_long(io: Io) {
    let mut p = header(new_id(), 0x0100, 1, 0, 0, 0);
    for _ in 0..5 {
        p.push(63);
        p.extend([b'a'; 63]);
    }
    p.push(0); // 321-byte name, limit is 255
    p.extend(A_IN);
    expect_rcode(io, "a 321-byte name", &[p], FORMERR);
}

fn unknown_opcodes(io: Io) {
    let packets: Vec<Vec<u8>> = [3u16, 4, 5]
        .iter()
        .map(|op| {
            let mut p = header(new_id(), (op << 11) | 0x0100, 1, 0, 0, 0);
            p.extend(www());
            p.extend(A_IN);
            p
        })
        .collect();
    expect_rcode(
        io,
        "opcode 3 (unassigned), 4 (NOTIFY), 5 (UPDATE)",
        &packets,
        NOTIMP,
    );
}

fn edns_version_1(io: Io) {
    let mut env = Env::start(io);
    let udp = env.udp();
    let id = new_id();
    let mut q: Message = query_message(zone::WWW, RecordType::A, id);
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(1);
    q.set_edns(edns);
    let raw = udp
        .exchange_raw(&q.to_vec().unwrap(), QUERY_TIMEOUT)
        .unwrap()
        .expect("a BADVERS reply");
    let h = header_of(&raw).unwrap();
    assert_eq!(h.id, id);
    assert!(h.qr, "{h:?}");
    assert_eq!(
        h.rcode, 0,
        "BADVERS = 16: header RCODE bits 0, OPT extended bits 1: {h:?}"
    );
    assert_eq!(h.ancount, 0, "{h:?}");
    let r = Message::from_vec(&raw)
        .unwrap_or_else(|e| panic!("unparseable BADVERS reply {raw:02x?}: {e}"));
    let opt = r
        .extensions()
        .as_ref()
        .unwrap_or_else(|| panic!("BADVERS needs an OPT record: {r}"));
    assert_eq!(opt.version(), 0, "the server's own EDNS version: {r}");
    assert_eq!(
        u16::from(r.response_code()),
        16,
        "extended rcode BADVERS: {r}"
    );
    still_serving(&mut env, &udp, "EDNS version 1");
    env.stop();
}

io_tests!(
    truncated_header,
    response_bit_set,
    no_question,
    two_questions,
    compression_loop,
    label_too_long,
    name_too_long,
    unknown_opcodes,
    edns_version_1,
);
