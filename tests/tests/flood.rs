//! A flood of malformed datagrams at the real binary (`--shards 2`, both I/O backends), with
//! valid queries interleaved: 1,000,000 malformed datagrams (epoll; 250,000 with io_uring),
//! from a seeded generator: random bytes, truncated headers and questions, mutated valid
//! queries, bad label lengths, names over 255 octets, compression loops and forward pointers,
//! wrong section counts, QR set, odd opcodes, odd classes and types, huge and repeated OPT
//! records, trailing garbage, empty datagrams.
//!
//! Each round sends 1,000 malformed datagrams from four client sockets (four source ports,
//! spread over the shards by SO_REUSEPORT) without waiting, then one valid query from each
//! socket, and waits for those four answers (the flow control that keeps every shard's queue
//! short, so the kernel does not drop the valid queries). Checked:
//!
//! - every valid query is answered, right: its ID and question, `hostN.upstream.test.` A
//!   198.51.100.N (first a miss, later a hit), `missing.upstream.test.` NXDOMAIN with the SOA;
//! - every datagram shardns sends back has a header with QR set, and none answers a query
//!   that had QR set itself (those, and only those, carry IDs from 0xF000 up);
//! - the process is up all along, and its resident memory grows by less than
//!   [`RSS_GROWTH_LIMIT`];
//! - shardns counted (its `shardns_shard_queries_total`) at least 90 % of what was sent.
//!
//! The figures (datagrams, time, RSS before and after, replies) are printed
//! (`--nocapture`). Traffic goes to 127.0.0.1 only; every loop is bounded in count and time.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shardns_e2e::metrics::{family_sum, scrape};
use shardns_e2e::rng::Rng;
use shardns_e2e::unbound::free_port;
use shardns_e2e::upstream::zone;
use shardns_e2e::{Io, Shardns, TestUpstream, build_query, io_tests};
use socket2::SockRef;

/// Malformed datagrams per round; one valid query per client socket follows each round.
const ROUND: usize = 1_000;
/// Client sockets (source ports).
const SOCKETS: usize = 4;
/// How long one valid query may wait for its answer behind a round.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole flood must be over by then (it takes well under a minute).
const FLOOD_DEADLINE: Duration = Duration::from_secs(240);
/// Most the resident memory may grow over the flood. The caches (2 × 9,984 entries) and the
/// pending table fill with what the mutated queries ask; a leak of 64 bytes a datagram would
/// be 61 MiB.
const RSS_GROWTH_LIMIT: u64 = 48 << 20;
/// Queries with QR set carry IDs from here up; nothing shardns sends may carry one.
const QR_IDS: u16 = 0xf000;

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn name(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// An OPT record: UDP size, version, DO, options data.
fn opt(size: u16, version: u8, data: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&size.to_be_bytes());
    o.extend_from_slice(&[0, version, 0x80, 0]);
    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
    o.extend_from_slice(data);
    o
}

/// The kinds of malformed datagram, in the order [`malformed`] numbers them.
const KINDS: [&str; 14] = [
    "random bytes",
    "truncated header",
    "truncated question",
    "mutated query",
    "bad label length",
    "name over 255 octets",
    "compression pointer",
    "wrong counts",
    "QR set",
    "odd opcode",
    "odd class or type",
    "huge or repeated OPT",
    "trailing garbage",
    "empty",
];

/// Malformed datagram number `kind` (modulo [`KINDS`]), with an ID below [`QR_IDS`] unless it
/// is a response.
fn malformed(rng: &mut Rng, kind: usize) -> Vec<u8> {
    let id = (rng.next_u64() as u16) % QR_IDS;
    let n = rng.below(256) as u8;
    let qname = name(&[format!("host{n}").as_bytes(), b"upstream", b"test"]);
    let question = [qname.as_slice(), &[0, 1, 0, 1]].concat();
    let query = [header(id, 0x0100, [1, 0, 0, 0]).as_slice(), &question].concat();
    let mut packet = match kind % KINDS.len() {
        0 => rng.bytes(0, 80),
        1 => query[..rng.below(12)].to_vec(),
        2 => query[..12 + rng.below(question.len())].to_vec(),
        3 => {
            let mut q = query.clone();
            for _ in 0..1 + rng.below(4) {
                let at = 2 + rng.below(q.len() - 2);
                q[at] = rng.byte();
            }
            q
        }
        4 => {
            let mut bad = vec![64 + rng.below(192) as u8];
            bad.extend(rng.bytes(0, 70));
            [
                header(id, 0x0100, [1, 0, 0, 0]).as_slice(),
                &bad,
                &[0, 0, 1, 0, 1],
            ]
            .concat()
        }
        5 => {
            let label = [b'a'; 63];
            let labels: Vec<&[u8]> = (0..4 + rng.below(3)).map(|_| &label[..]).collect();
            [
                header(id, 0x0100, [1, 0, 0, 0]).as_slice(),
                &name(&labels),
                &[0, 1, 0, 1],
            ]
            .concat()
        }
        6 => {
            let pointer: &[u8] = match rng.below(4) {
                0 => &[0xc0, 0x0c],             // to itself
                1 => &[0x01, b'a', 0xc0, 0x0c], // a loop through a label
                2 => &[0xc0, 0xff],             // past the end
                _ => &[0xc0, 0x02],             // into the header
            };
            [
                header(id, 0x0100, [1, 0, 0, 0]).as_slice(),
                pointer,
                &[0, 1, 0, 1],
            ]
            .concat()
        }
        7 => {
            let counts = [
                [0, 0, 0, 0],
                [2, 0, 0, 0],
                [0xffff, 0, 0, 0],
                [1, 0xffff, 0, 0],
                [1, 0, 3, 0],
                [1, 0, 0, 0xffff],
            ][rng.below(6)];
            [header(id, 0x0100, counts).as_slice(), &question].concat()
        }
        8 => {
            let id = QR_IDS + (rng.next_u64() as u16) % (u16::MAX - QR_IDS);
            [header(id, 0x8100, [1, 0, 0, 0]).as_slice(), &question].concat()
        }
        9 => {
            let opcode = 1 + rng.below(15) as u16;
            [
                header(id, opcode << 11 | 0x0100, [1, 0, 0, 0]).as_slice(),
                &question,
            ]
            .concat()
        }
        10 => {
            let (qtype, class): (u16, u16) = [
                (1, 3),
                (1, 255),
                (1, 254),
                (0, 1),
                (41, 1),
                (252, 1),
                (251, 1),
                (65535, 65535),
            ][rng.below(8)];
            let mut q = [header(id, 0x0100, [1, 0, 0, 0]).as_slice(), &qname].concat();
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&class.to_be_bytes());
            q
        }
        11 => {
            let (count, records) = match rng.below(5) {
                // Huge option data (up to 8 KiB), any size.
                0 => (1, opt(rng.next_u64() as u16, 0, &rng.bytes(0, 8192))),
                // Two OPT records.
                1 => (2, [opt(1232, 0, &[]), opt(4096, 0, &[])].concat()),
                // Version 1..255 (BADVERS).
                2 => (1, opt(65535, 1 + rng.below(255) as u8, &[])),
                // Option lengths that run past the record.
                3 => (1, opt(1232, 0, &[0, 10, 0xff, 0xff, 1, 2])),
                // An OPT whose RDLENGTH runs past the datagram.
                _ => {
                    let mut o = opt(1232, 0, &[]);
                    let len = o.len();
                    o[len - 2..].copy_from_slice(&0xfff0u16.to_be_bytes());
                    (1, o)
                }
            };
            [
                header(id, 0x0100, [1, 0, 0, count]).as_slice(),
                &question,
                &records,
            ]
            .concat()
        }
        12 => [query.as_slice(), &rng.bytes(1, 600)].concat(),
        _ => Vec::new(),
    };
    // Responses keep their reserved IDs; nothing else may carry one.
    if packet.len() >= 2 && kind % KINDS.len() != 8 {
        let id = u16::from_be_bytes([packet[0], packet[1]]) % QR_IDS;
        packet[..2].copy_from_slice(&id.to_be_bytes());
    }
    packet
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The valid query of round `round` from socket `socket`: its name, and the ID it goes with.
fn valid_name(round: usize, socket: usize) -> String {
    if (round + socket) % 16 == 15 {
        zone::MISSING.to_string()
    } else {
        zone::host(((round * SOCKETS + socket) % 256) as u8)
    }
}

/// What the socket received while waiting for a valid answer.
#[derive(Debug, Default)]
struct Received {
    other: u64,
    /// Datagrams without a header or without QR (must stay 0).
    not_replies: u64,
    /// Replies with an ID from [`QR_IDS`] up (must stay 0).
    to_responses: u64,
}

/// Reads `sock` until the reply to `id` for `name` arrives (returning it), counting the rest.
fn await_answer(
    sock: &UdpSocket,
    id: u16,
    name: &str,
    received: &mut Received,
    buf: &mut [u8],
) -> Option<Message> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    for _ in 0..100_000 {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        let n = sock.recv(buf).ok()?;
        let datagram = &buf[..n];
        if n < 12 || datagram[2] & 0x80 == 0 {
            received.not_replies += 1;
            continue;
        }
        let reply_id = u16::from_be_bytes([datagram[0], datagram[1]]);
        if reply_id >= QR_IDS {
            received.to_responses += 1;
            continue;
        }
        if reply_id == id
            && let Ok(message) = Message::from_vec(datagram)
            && message
                .queries()
                .first()
                .is_some_and(|q| q.name().to_ascii().eq_ignore_ascii_case(name))
        {
            return Some(message);
        }
        received.other += 1;
    }
    None
}

/// The answer to `name` is right: A 198.51.100.N for `hostN`, NXDOMAIN with the SOA for
/// `missing`.
fn check_answer(name: &str, reply: &Message) {
    if name == zone::MISSING {
        assert_eq!(
            reply.response_code(),
            ResponseCode::NXDomain,
            "{name}: {reply}"
        );
        assert!(
            reply
                .name_servers()
                .iter()
                .any(|r| r.record_type() == RecordType::SOA),
            "{name}: NXDOMAIN without the SOA: {reply}"
        );
        return;
    }
    assert_eq!(
        reply.response_code(),
        ResponseCode::NoError,
        "{name}: {reply}"
    );
    let n: u8 = name
        .strip_prefix("host")
        .and_then(|r| r.strip_suffix(".upstream.test."))
        .and_then(|n| n.parse().ok())
        .expect("a host name");
    let ips: Vec<Ipv4Addr> = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(ips, [zone::host_a(n)], "{name}: {reply}");
}

fn flood(io: Io, malformed_total: usize) {
    let upstream = TestUpstream::start().expect("starting the test upstream");
    let metrics_port = free_port().expect("a free port");
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {}\n    errors\n    \
         prometheus 127.0.0.1:{metrics_port}\n}}\n",
        upstream.addr()
    );
    let mut shardns = Shardns::start(&corefile, &["--shards", "2", "--io", io.as_arg()])
        .expect("starting shardns");
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let server = shardns.udp_addr();
    assert!(server.ip().is_loopback());
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(server).expect("connect");
            // Room for a round's replies; a smaller buffer only drops replies we count.
            let _ = SockRef::from(&s).set_recv_buffer_size(4 << 20);
            s
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    let mut received = Received::default();

    // Warm up: one valid query per socket, then the baseline.
    for (i, sock) in sockets.iter().enumerate() {
        let name = zone::host(200 + i as u8);
        sock.send(&build_query(&name, RecordType::A, 1))
            .expect("send");
        let reply = await_answer(sock, 1, &name, &mut received, &mut buf)
            .unwrap_or_else(|| panic!("warm-up query not answered\n{}", shardns.log_text()));
        check_answer(&name, &reply);
    }
    let counted_before = family_sum(&scrape(metrics), "shardns_shard_queries_total");
    let rss_before = rss(shardns.pid());

    let mut rng = Rng(0x0f10_0d5e_ed00_0001);
    let rounds = malformed_total.div_ceil(ROUND);
    let (mut sent, mut valid, mut send_errors) = (0usize, 0usize, 0u64);
    let mut rss_peak = rss_before;
    let started = Instant::now();
    for round in 0..rounds {
        assert!(
            started.elapsed() < FLOOD_DEADLINE,
            "the flood took over {FLOOD_DEADLINE:?} (round {round} of {rounds})"
        );
        for i in 0..ROUND.min(malformed_total - sent) {
            let packet = malformed(&mut rng, sent + i);
            // A full send buffer (ENOBUFS) or an ICMP error from an earlier datagram is not
            // the test's concern; it is counted.
            if sockets[i % SOCKETS].send(&packet).is_err() {
                send_errors += 1;
            }
        }
        sent += ROUND.min(malformed_total - sent);
        for (s, sock) in sockets.iter().enumerate() {
            let name = valid_name(round, s);
            let id = 0xe000 | ((round * SOCKETS + s) as u16 & 0x0fff);
            sock.send(&build_query(&name, RecordType::A, id))
                .expect("send");
            let reply =
                await_answer(sock, id, &name, &mut received, &mut buf).unwrap_or_else(|| {
                    shardns.assert_alive();
                    panic!(
                        "round {round}: the valid query {name} from socket {s} was not answered \
                     within {ANSWER_TIMEOUT:?}\n{}",
                        shardns.log_text()
                    )
                });
            check_answer(&name, &reply);
            valid += 1;
        }
        if round % 100 == 99 {
            shardns.assert_alive();
            rss_peak = rss_peak.max(rss(shardns.pid()));
        }
    }
    let took = started.elapsed();
    shardns.assert_alive();
    let rss_after = rss(shardns.pid());
    let counted = family_sum(&scrape(metrics), "shardns_shard_queries_total") - counted_before;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "flood ({io:?}): {sent} malformed datagrams + {valid} valid queries in {took:.1?} \
         ({:.0} datagrams/s); shardns counted {counted} queries; {send_errors} send errors; \
         replies to malformed datagrams read: {}; RSS {:.1} MiB before, {:.1} MiB after \
         (peak seen {:.1} MiB); every valid query answered right",
        (sent + valid) as f64 / took.as_secs_f64(),
        received.other,
        mib(rss_before),
        mib(rss_after),
        mib(rss_peak.max(rss_after)),
    );
    assert_eq!(
        received.not_replies, 0,
        "datagrams without a header or QR came back"
    );
    assert_eq!(received.to_responses, 0, "responses (QR set) were answered");
    assert!(
        counted as usize >= (sent + valid) * 9 / 10,
        "shardns counted {counted} of {} datagrams: the flood did not reach it",
        sent + valid
    );
    let growth = rss_peak.max(rss_after).saturating_sub(rss_before);
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {:.1} MiB (limit {:.0} MiB)",
        mib(growth),
        mib(RSS_GROWTH_LIMIT)
    );
    shardns.stop();
}

fn malformed_flood(io: Io) {
    let total = match io {
        Io::Epoll => 1_000_000,
        Io::Uring => 250_000,
    };
    flood(io, total);
}

io_tests!(malformed_flood);

#[test]
fn generator_makes_every_kind() {
    let mut rng = Rng(1);
    for kind in 0..KINDS.len() * 50 {
        let packet = malformed(&mut rng, kind);
        if packet.len() >= 2 {
            let id = u16::from_be_bytes([packet[0], packet[1]]);
            assert_eq!(
                id >= QR_IDS,
                kind % KINDS.len() == 8,
                "{}",
                KINDS[kind % KINDS.len()]
            );
        }
        if kind % KINDS.len() == 13 {
            assert!(packet.is_empty());
        }
    }
}
