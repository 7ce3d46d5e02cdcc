//! Cache poisoning: forged upstream replies toward shardns's upstream-facing UDP sockets, and
//! the randomness a forger has to beat.
//!
//! shardns asks upstreams over the client's transport (UDP for UDP clients; `force_tcp` and
//! `prefer_udp` change that), from connected UDP sockets on random ports, each serving at most
//! 64 attempts (8 at once) and closed by any datagram that answers nothing. Its source
//! ports and message IDs must be random, and a forged reply must never be served or cached:
//!
//! - from another address or port on 127.0.0.0/8, every ID (all 65,536, the right one among
//!   them): the kernel does not deliver them (the socket is connected to the upstream), so
//!   shardns never sees them;
//! - from the upstream's own address and port (a socket sharing the test upstream's, as a
//!   forger spoofing its address sends them), to the ports the test finds in
//!   `/proc/PID/net/udp` for shardns's sockets: wrong IDs, the right ID with a wrong
//!   question, the right ID without QR, garbage; then the right ID with the right question
//!   and a forged address (a forger who guessed right, but after a wrong guess). The first
//!   datagram that answers nothing ends the UDP attempt: the query goes on over TCP, which a
//!   forger off the path cannot enter, so the right guess arrives too late;
//! - unsolicited, when nothing is pending: to every port seen before.
//!
//! Afterwards every name is asked again: the true records, from the cache. A forger's only
//! chance is its first datagram carrying the right ID before any other (1 in 65,536 per
//! query, knowing the port); the test leaves that one case out, as it cannot be defended with
//! 16-bit IDs. Figures are printed (`--nocapture`). Traffic goes to 127.0.0.0/8 only; every
//! loop is bounded in count and time.

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shardns_e2e::metrics::{family_sum, scrape};
use shardns_e2e::rng::Rng;
use shardns_e2e::upstream::zone;
use shardns_e2e::{SeenQuery, Shardns, TestUpstream, build_query, wait_for};

/// The address forged replies claim.
const FORGED: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);
/// How long the test upstream takes to answer: the window the forgers use (under the 2 s
/// attempt timeout).
const UPSTREAM_DELAY: Duration = Duration::from_millis(1500);
/// How long a forger floods one query, well inside the window.
const FLOOD_WINDOW: Duration = Duration::from_millis(1000);
/// Names of the randomness test.
const MISSES: usize = 512;

/// shardns (`--shards 2`) with a cache, forwarding to `upstream` over the client's transport,
/// with metrics. Returns it and the metrics address.
fn start(upstream: &TestUpstream) -> (Shardns, SocketAddr) {
    let corefile = |port| {
        format!(
            ".:0 {{\n    bind 127.0.0.1\n    cache 300\n    forward . {}\n    errors\n    \
             prometheus 127.0.0.1:{port}\n}}\n",
            upstream.addr()
        )
    };
    Shardns::start_with_http(corefile, &["--shards", "2"])
}

/// A client socket on 127.0.0.1 connected to shardns.
fn client(shardns: &Shardns) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(shardns.udp_addr()).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

/// The reply to `id` on `sock` (others skipped), within 5 s.
fn reply_to(sock: &UdpSocket, id: u16) -> Message {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..100 {
        let n = sock.recv(&mut buf).expect("a reply within 5 s");
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.id() == id
        {
            return m;
        }
    }
    panic!("no reply with ID {id}");
}

/// The A records of `reply`.
fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The query for `name` the upstream logged (UDP or TCP), waiting up to 2 s for it.
fn logged(upstream: &TestUpstream, name: &str, tcp: bool) -> Option<SeenQuery> {
    wait_for(Duration::from_secs(2), || {
        upstream
            .seen()
            .into_iter()
            .find(|q| q.name == name && q.tcp == tcp)
    })
}

/// Inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// `0100007F:1F90` (as in /proc/net/udp) → 127.0.0.1:8080.
fn proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    if ip.len() != 8 {
        return None;
    }
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(ip.swap_bytes())),
        port,
    ))
}

/// Process `pid`'s UDP sockets connected to `upstream` (`/proc/PID/net/udp`, matched by
/// inode): each one's local port and the bytes queued on it, not yet read.
fn upstream_sockets(pid: u32, upstream: SocketAddr) -> Vec<(u16, u64)> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = proc_addr(f.get(1)?)?;
            let remote = proc_addr(f.get(2)?)?;
            let rx = u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (remote == upstream && inodes.contains(&inode)).then_some((local.port(), rx))
        })
        .collect()
}

/// The local ports of process `pid`'s UDP sockets connected to `upstream`.
fn upstream_ports(pid: u32, upstream: SocketAddr) -> BTreeSet<u16> {
    upstream_sockets(pid, upstream)
        .into_iter()
        .map(|(port, _)| port)
        .collect()
}

/// The ports of process `pid`'s UDP sockets connected to `upstream` that have datagrams
/// queued (not yet read).
fn queued(pid: u32, upstream: SocketAddr) -> Vec<u16> {
    upstream_sockets(pid, upstream)
        .into_iter()
        .filter(|&(_, rx)| rx > 0)
        .map(|(port, _)| port)
        .collect()
}

/// A forged answer to `name` A: `FORGED`, a day's TTL, ID `id`; `question` names another
/// question, `qr` false leaves QR clear.
fn forged(id: u16, name: &str, question: &str, qr: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(if qr {
            MessageType::Response
        } else {
            MessageType::Query
        })
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .set_authoritative(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(Query::query(
            Name::from_ascii(question).unwrap(),
            RecordType::A,
        ))
        .add_answer(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            86_400,
            RData::A(A(FORGED)),
        ));
    m.to_vec().unwrap()
}

/// `bytes` with ID `id`.
fn with_id(bytes: &[u8], id: u16) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[..2].copy_from_slice(&id.to_be_bytes());
    b
}

/// The first kind of forgery of phase B, by query.
const FIRST: [&str; 4] = [
    "wrong IDs",
    "the right ID with a wrong question",
    "the right ID without QR",
    "garbage",
];

#[test]
fn forged_replies_are_neither_served_nor_cached() {
    let upstream = TestUpstream::start().expect("test upstream");
    upstream.delay(UPSTREAM_DELAY);
    let (mut shardns, metrics) = start(&upstream);
    let pid = shardns.pid();
    let rejected = || family_sum(&scrape(metrics), "shardns_shard_upstream_rejected_total");
    let spoofer = upstream.spoofer().expect("the upstream's UDP socket");
    let sock = client(&shardns);
    let mut rng = Rng(0xf0_4e_ed);
    let mut names = Vec::new();
    let mut seen_ports = BTreeSet::new();
    let mut forged_sent = [0u64; 3];

    // Phase A: from other addresses and ports of 127.0.0.0/8, every ID.
    let strangers: Vec<UdpSocket> = (2..=9u8)
        .map(|i| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, i), 0)).expect("bind 127.0.0.x"))
        .chain([UdpSocket::bind("127.0.0.1:0").expect("bind")])
        .collect();
    let rejected_before = rejected();
    for n in 100..103u8 {
        let name = zone::host(n);
        let id = 0x1000 + u16::from(n);
        sock.send(&build_query(&name, RecordType::A, id)).unwrap();
        let query = logged(&upstream, &name, false).expect("the query reached the upstream");
        seen_ports.insert(query.peer.port());
        let target = SocketAddr::from(([127, 0, 0, 1], query.peer.port()));
        let answer = forged(0, &name, &name, true);
        // The right ID first (from each source), then guesses until the window closes.
        let started = Instant::now();
        let mut sent = 0u64;
        for from in &strangers {
            if from.send_to(&with_id(&answer, query.id), target).is_ok() {
                sent += 1;
            }
        }
        for guess in 0..=u16::MAX {
            if started.elapsed() >= FLOOD_WINDOW {
                break;
            }
            let from = &strangers[usize::from(guess) % strangers.len()];
            if from.send_to(&with_id(&answer, guess), target).is_ok() {
                sent += 1;
            }
        }
        forged_sent[0] += sent;
        let flooded = started.elapsed();
        let reply = reply_to(&sock, id);
        let answered = started.elapsed();
        assert_eq!(addresses(&reply), [zone::host_a(n)], "{name}: {reply}");
        // Had shardns seen a forged datagram, the query would have gone on over TCP before
        // this answer.
        assert!(
            !upstream.seen().iter().any(|q| q.name == name && q.tcp),
            "{name}: went to TCP, so shardns saw a forged datagram"
        );
        eprintln!(
            "phase A, {name}: {sent} forged replies from 9 other sources in {flooded:.0?} (the \
             right ID first), the true answer after {answered:.1?}"
        );
        names.push((n, name));
    }
    assert_eq!(
        rejected(),
        rejected_before,
        "datagrams from other sources reached shardns"
    );

    // Phase B: from the upstream's address and port, to the ports shardns's sockets have.
    let rejected_before = rejected();
    let mut forged_to: BTreeSet<u16> = BTreeSet::new();
    for (i, n) in (110..118u8).enumerate() {
        let name = zone::host(n);
        let id = 0x2000 + u16::from(n);
        sock.send(&build_query(&name, RecordType::A, id)).unwrap();
        let query = logged(&upstream, &name, false).expect("the query reached the upstream");
        let ports = upstream_ports(pid, upstream.addr());
        assert!(
            ports.contains(&query.peer.port()),
            "the query came from port {}, not among shardns's sockets {ports:?}",
            query.peer.port()
        );
        seen_ports.extend(ports.iter().copied());
        forged_to.extend(ports.iter().copied());
        let answer = forged(0, &name, &name, true);
        let first: Vec<Vec<u8>> = match i % FIRST.len() {
            0 => (0..1_000)
                .map(|_| rng.id())
                .filter(|&g| g != query.id)
                .map(|g| with_id(&answer, g))
                .collect(),
            1 => vec![forged(query.id, &name, "evil.upstream.test.", true); 100],
            2 => vec![forged(query.id, &name, &name, false); 100],
            _ => vec![with_id(b"\0\0garbage", query.id); 100],
        };
        let right = with_id(&answer, query.id);
        let later: Vec<Vec<u8>> = (0..1_000).map(|_| with_id(&answer, rng.id())).collect();
        let mut send = |datagrams: &mut dyn Iterator<Item = &Vec<u8>>| {
            for datagram in datagrams {
                for port in &ports {
                    let target = SocketAddr::from(([127, 0, 0, 1], *port));
                    if spoofer.send_to(datagram, target).is_ok() {
                        forged_sent[1] += 1;
                    }
                }
            }
        };
        // The first kind in bursts that fit a socket buffer, each read by shardns before
        // the next; then the right guess (nothing queued before it); then more guesses.
        for burst in first.chunks(100) {
            send(&mut burst.iter());
            wait_for(Duration::from_millis(500), || {
                queued(pid, upstream.addr()).is_empty().then_some(())
            });
        }
        send(&mut [&right; 10].into_iter());
        send(&mut later.iter());
        let reply = reply_to(&sock, id);
        assert_eq!(addresses(&reply), [zone::host_a(n)], "{name}: {reply}");
        assert!(
            logged(&upstream, &name, true).is_some(),
            "{name}: the query did not go on over TCP after {}",
            FIRST[i % FIRST.len()]
        );
        names.push((n, name));
    }
    let rejected_b = rejected() - rejected_before;
    assert!(
        rejected_b >= 8,
        "shardns rejected only {rejected_b} forged replies"
    );

    // Phase C: unsolicited, nothing pending, to every port seen.
    let started = Instant::now();
    for port in &seen_ports {
        let target = SocketAddr::from(([127, 0, 0, 1], *port));
        for _ in 0..10_000 {
            let (n, name) = &names[usize::from(rng.id()) % names.len()];
            let _ = n;
            if spoofer
                .send_to(&forged(rng.id(), name, name, true), target)
                .is_ok()
            {
                forged_sent[2] += 1;
            }
        }
    }
    let unsolicited_took = started.elapsed();

    // Every name again: the truth, from the cache (the upstream is not asked again).
    shardns.assert_alive();
    let asked = upstream.queries();
    for (n, name) in &names {
        let id = 0x3000 + u16::from(*n);
        sock.send(&build_query(name, RecordType::A, id)).unwrap();
        let started = Instant::now();
        let reply = reply_to(&sock, id);
        assert_eq!(addresses(&reply), [zone::host_a(*n)], "{name}: {reply}");
        assert!(
            reply.answers().iter().all(|r| r.ttl() <= zone::TTL),
            "{name}: the TTL is not the upstream's: {reply}"
        );
        assert!(
            started.elapsed() < UPSTREAM_DELAY,
            "{name}: not from the cache"
        );
    }
    assert_eq!(upstream.queries(), asked, "a name was asked upstream again");
    let udp_open = upstream_ports(pid, upstream.addr());
    eprintln!(
        "poisoning: forged replies sent: {} from other sources (phase A), {} spoofing the \
         upstream to shardns's ports (phase B, rejected by shardns: {rejected_b}, every query \
         went on over TCP), {} unsolicited to {} ports in {unsolicited_took:.0?} (phase C); \
         accepted: 0 (every answer and every cached answer is the upstream's); UDP sockets to \
         the upstream left open: {}",
        forged_sent[0],
        forged_sent[1],
        forged_sent[2],
        seen_ports.len(),
        udp_open.len()
    );
    // Idle sockets may stay for the next exchanges (8 per upstream and shard), but none that
    // a forged datagram reached: those are never used again.
    assert!(
        udp_open.len() <= 2 * 8,
        "UDP sockets to the upstream still open with nothing pending: {udp_open:?}"
    );
    assert!(
        udp_open.is_disjoint(&forged_to),
        "sockets still open after forged datagrams reached them: {:?}",
        udp_open.intersection(&forged_to).collect::<Vec<_>>()
    );
    shardns.stop();
}

#[test]
fn upstream_ids_and_source_ports_are_random() {
    let upstream = TestUpstream::start().expect("test upstream");
    let (shardns, _) = start(&upstream);
    let sock = client(&shardns);
    // Distinct names under the upstream's zone (NXDOMAIN), so each is one upstream query;
    // 32 at a time.
    let names: Vec<String> = (0..MISSES)
        .map(|i| format!("r{i}.upstream.test."))
        .collect();
    for (chunk_index, chunk) in names.chunks(32).enumerate() {
        for (i, name) in chunk.iter().enumerate() {
            let id = (chunk_index * 32 + i) as u16;
            sock.send(&build_query(name, RecordType::A, id)).unwrap();
        }
        // Replies come in any order (two shards).
        let mut waiting: HashSet<u16> = (0..chunk.len())
            .map(|i| (chunk_index * 32 + i) as u16)
            .collect();
        let mut buf = vec![0u8; 65_536];
        for _ in 0..chunk.len() * 4 {
            if waiting.is_empty() {
                break;
            }
            let n = sock.recv(&mut buf).expect("a reply within 5 s");
            let reply = Message::from_vec(&buf[..n]).expect("a reply that parses");
            if waiting.remove(&reply.id()) {
                assert_eq!(reply.response_code(), ResponseCode::NXDomain, "{reply}");
            }
        }
        assert!(waiting.is_empty(), "unanswered: {waiting:?}");
    }
    let seen: Vec<SeenQuery> = upstream
        .seen()
        .into_iter()
        .filter(|q| !q.tcp && q.name.starts_with('r'))
        .collect();
    assert_eq!(seen.len(), MISSES, "one upstream query per name");
    let ids: Vec<u16> = seen.iter().map(|q| q.id).collect();
    let ports: Vec<u16> = seen.iter().map(|q| q.peer.port()).collect();
    let distinct = |v: &[u16]| v.iter().collect::<HashSet<_>>().len();
    // Neighbours in arrival order within 16 of each other (either way): ~0.3 expected for
    // random IDs, ~1 for random ports; a counter makes nearly all of them.
    let close = |v: &[u16], range: u16| {
        v.windows(2)
            .filter(|w| {
                let d = w[1].wrapping_sub(w[0]);
                d != 0 && (d <= 16 || d >= u16::MAX - 15) && w[1].abs_diff(w[0]) <= range
            })
            .count()
    };
    // Eighths of the ID space by the top and by the bottom three bits: 64 each expected
    // (standard deviation 7.5), at least 32 asked.
    let eighths = |v: &[u16], shift: u32| {
        let mut counts = [0usize; 8];
        for x in v {
            counts[usize::from((x >> shift) & 7)] += 1;
        }
        counts
    };
    let (low, high) = (
        ports.iter().min().copied().unwrap_or(0),
        ports.iter().max().copied().unwrap_or(0),
    );
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    eprintln!(
        "upstream IDs: {} distinct of {MISSES}, {} neighbours within 16, top eighths {:?}, \
         bottom eighths {:?}; source ports: {} distinct of {MISSES}, from {low} to {high} \
         (ephemeral range {}-{}), {} neighbours within 16",
        distinct(&ids),
        close(&ids, u16::MAX),
        eighths(&ids, 13),
        eighths(&ids, 0),
        distinct(&ports),
        range.0,
        range.1,
        close(&ports, u16::MAX),
    );
    assert!(distinct(&ids) >= MISSES - 12, "IDs repeat: {ids:?}");
    assert!(close(&ids, u16::MAX) <= 5, "IDs follow each other: {ids:?}");
    for counts in [eighths(&ids, 13), eighths(&ids, 0)] {
        assert!(
            counts.iter().all(|&c| c >= 32),
            "IDs unevenly spread: {counts:?}"
        );
    }
    // A socket serves at most 64 exchanges, then closes.
    let mut uses: HashMap<u16, usize> = HashMap::new();
    for &port in &ports {
        *uses.entry(port).or_default() += 1;
    }
    assert!(
        uses.values().all(|&n| n <= 64),
        "a source port served more than 64 queries: {uses:?}"
    );
    assert!(
        distinct(&ports) >= MISSES / 64,
        "{} source ports for {MISSES} queries: {ports:?}",
        distinct(&ports)
    );
    assert!(
        close(&ports, u16::MAX) <= 10,
        "ports follow each other: {ports:?}"
    );
    let width = u32::from(range.1 - range.0);
    assert!(
        u32::from(high - low) >= width / 2,
        "ports only from {low} to {high} of {}-{}",
        range.0,
        range.1
    );
    shardns.stop();
}
