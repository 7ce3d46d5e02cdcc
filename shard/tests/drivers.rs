//! The same suite run against both I/O drivers (epoll and io_uring) with a small test
//! handler and fake upstreams on 127.0.0.1.
//!
//! Test message format (not DNS, just enough for the handler): bytes 0-1 the ID, byte 2
//! bit 0x80 the QR flag, byte 3 the action, byte 4 its argument, byte 5 (in replies to
//! peer actions) 1 + the index of the shard that answered.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shardns_shard::config::Limits;
use shardns_shard::{
    Bound, Client, Config, Control, DRIVER_EPOLL, DRIVER_URING, Drain, Handler, IoMode, Link,
    LinkError, Outcome, PeerLinks, Protocol, ShardSockets, ShardSpec, ShardStats, Transmit,
    peer_mesh, run_shard,
};

/// Reply at once (copy with QR set).
const ECHO: u8 = 0;
/// Forward over UDP to the UDP upstream.
const UP_UDP: u8 = 1;
/// Forward over TCP link `arg` to the TCP upstream.
const UP_TCP: u8 = 2;
/// Reply from `handle_timeout` after `arg` × 10 ms.
const LATER: u8 = 3;
/// Silently drop.
const DROP: u8 = 4;
/// Like [`UP_TCP`], and close the link (`Transmit::Close`) once the response is in.
const UP_TCP_CLOSE: u8 = 5;
/// Ask shard `arg` (a [`TestPeer::Ask`]); reply when its [`TestPeer::Answer`] is in.
const PEER: u8 = 6;
/// Like [`PEER`] with [`FAN_OUT`] misses at once; reply when all are answered.
const PEER_FAN: u8 = 7;
/// Misses sent for one [`PEER_FAN`] query: more than a shard serves per wake-up.
const FAN_OUT: usize = 3000;
/// Forward over UDP link `arg` (a socket of its own) to the UDP upstream, and close the
/// link once the response is in.
const UP_UDP_CONN: u8 = 8;
/// Marker in byte 3 of a reply whose upstream link failed.
const FAILED: u8 = 0xEE;

fn query(id: u16, action: u8, arg: u8) -> Vec<u8> {
    let mut q = vec![0u8; 12];
    q[..2].copy_from_slice(&id.to_be_bytes());
    q[3] = action;
    q[4] = arg;
    q
}

/// A configuration with nothing in it (the test handler does not read it).
fn empty_config() -> Config {
    Config {
        listeners: Vec::new(),
        servers: Vec::new(),
        upstreams: Vec::new(),
        limits: Limits::default(),
    }
}

fn id_of(m: &[u8]) -> u16 {
    u16::from_be_bytes([m[0], m[1]])
}

/// `msg` with its 2-byte TCP length prefix.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    framed
}

/// Takes the complete length-prefixed messages off the front of `stream`.
fn unframe(stream: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while stream.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([stream[0], stream[1]]));
        if stream.len() < 2 + len {
            break;
        }
        messages.push(stream[2..2 + len].to_vec());
        stream.drain(..2 + len);
    }
    messages
}

/// What the test handlers of a group send each other (the drivers only carry it).
#[derive(Debug)]
enum TestPeer {
    /// Shard `from` asks about `key`.
    Ask { from: usize, key: u64 },
    /// Shard `by` − 1 answers about `key`.
    Answer { key: u64, by: u8 },
}

#[derive(Debug, Default)]
struct Events {
    link_closed: Vec<Link>,
    client_closed: usize,
    forwarded: usize,
    responses: usize,
    /// Messages received from other shards.
    peer_in: usize,
    reconfigured: usize,
}

/// A client query waiting for answers from another shard.
struct PeerWaiter {
    client: Client,
    reply: Vec<u8>,
    remaining: usize,
}

struct TestHandler {
    /// This shard's index in its group.
    shard: usize,
    up_udp: SocketAddr,
    up_tcp: SocketAddr,
    next_id: u16,
    /// Upstream ID → (client, original ID, link, close the link after the response).
    pending: HashMap<u16, (Client, [u8; 2], Link, bool)>,
    timers: Vec<(Instant, Client, Vec<u8>)>,
    out: VecDeque<Transmit>,
    peers_out: VecDeque<(usize, TestPeer)>,
    events: Arc<Mutex<Events>>,
    /// Key of the next peer question → the client waiting for it.
    next_key: u64,
    peer_waiters: HashMap<u64, PeerWaiter>,
}

impl TestHandler {
    fn new(
        shard: usize,
        up_udp: SocketAddr,
        up_tcp: SocketAddr,
        events: Arc<Mutex<Events>>,
    ) -> Self {
        TestHandler {
            shard,
            up_udp,
            up_tcp,
            next_id: 0,
            pending: HashMap::new(),
            timers: Vec::new(),
            out: VecDeque::new(),
            peers_out: VecDeque::new(),
            events,
            next_key: 0,
            peer_waiters: HashMap::new(),
        }
    }

    /// Sends `count` misses for a new key to shard `to`, remembering `client`.
    fn ask_peer(&mut self, client: Client, q: &[u8], to: usize, count: usize) {
        self.next_key += 1;
        let key = self.next_key;
        let mut reply = q.to_vec();
        reply[2] |= 0x80;
        self.peer_waiters.insert(
            key,
            PeerWaiter {
                client,
                reply,
                remaining: count,
            },
        );
        for _ in 0..count {
            let from = self.shard;
            self.peers_out.push_back((to, TestPeer::Ask { from, key }));
        }
    }
}

impl Handler for TestHandler {
    type Peer = TestPeer;

    fn handle_query(&mut self, now: Instant, client: Client, q: &[u8], out: &mut [u8]) -> Outcome {
        if q.len() < 5 || q[2] & 0x80 != 0 {
            return Outcome::Drop;
        }
        match q[3] {
            ECHO => {
                out[..q.len()].copy_from_slice(q);
                out[2] |= 0x80;
                Outcome::Reply(q.len())
            }
            UP_UDP | UP_TCP | UP_TCP_CLOSE | UP_UDP_CONN => {
                self.next_id = self.next_id.wrapping_add(1);
                let uid = self.next_id;
                let (link, addr) = if q[3] == UP_UDP || q[3] == UP_UDP_CONN {
                    let conn = if q[3] == UP_UDP { 0 } else { u32::from(q[4]) };
                    (
                        Link {
                            upstream: 0,
                            protocol: Protocol::Udp,
                            conn,
                        },
                        self.up_udp,
                    )
                } else {
                    let conn = u32::from(q[4]);
                    (
                        Link {
                            upstream: 1,
                            protocol: Protocol::Tcp,
                            conn,
                        },
                        self.up_tcp,
                    )
                };
                let mut payload = q.to_vec();
                payload[..2].copy_from_slice(&uid.to_be_bytes());
                let close = q[3] == UP_TCP_CLOSE || q[3] == UP_UDP_CONN;
                self.pending
                    .insert(uid, (client, [q[0], q[1]], link, close));
                self.events.lock().expect("lock").forwarded += 1;
                self.out.push_back(Transmit::Query {
                    link,
                    addr,
                    payload,
                });
                Outcome::Pending
            }
            LATER => {
                let mut r = q.to_vec();
                r[2] |= 0x80;
                let due = now + Duration::from_millis(10 * u64::from(q[4]));
                self.timers.push((due, client, r));
                Outcome::Pending
            }
            PEER => {
                self.ask_peer(client, q, usize::from(q[4]), 1);
                Outcome::Pending
            }
            PEER_FAN => {
                self.ask_peer(client, q, usize::from(q[4]), FAN_OUT);
                Outcome::Pending
            }
            _ => Outcome::Drop,
        }
    }

    fn handle_response(&mut self, _now: Instant, _link: Link, r: &[u8]) {
        if r.len() < 2 {
            return;
        }
        if let Some((client, id, link, close)) = self.pending.remove(&id_of(r)) {
            self.events.lock().expect("lock").responses += 1;
            let mut payload = r.to_vec();
            payload[..2].copy_from_slice(&id);
            self.out.push_back(Transmit::Reply { client, payload });
            if close {
                self.out.push_back(Transmit::Close { link });
            }
        }
    }

    fn handle_link_closed(&mut self, _now: Instant, link: Link, _error: LinkError) {
        self.events.lock().expect("lock").link_closed.push(link);
        let failed: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, v)| v.2 == link)
            .map(|(k, _)| *k)
            .collect();
        for uid in failed {
            if let Some((client, id, _, _)) = self.pending.remove(&uid) {
                let mut payload = query(u16::from_be_bytes(id), FAILED, 0);
                payload[2] = 0x80;
                self.out.push_back(Transmit::Reply { client, payload });
            }
        }
    }

    fn handle_control(&mut self, _now: Instant, control: Control) {
        match control {
            Control::Reconfigure(_) => self.events.lock().expect("lock").reconfigured += 1,
            _ => unreachable!("the only control message"),
        }
    }

    fn handle_peer(&mut self, _now: Instant, message: TestPeer) {
        self.events.lock().expect("lock").peer_in += 1;
        match message {
            TestPeer::Ask { from, key } => {
                let by = 1 + self.shard as u8;
                self.peers_out
                    .push_back((from, TestPeer::Answer { key, by }));
            }
            TestPeer::Answer { key, by } => {
                let Some(w) = self.peer_waiters.get_mut(&key) else {
                    return;
                };
                w.remaining -= 1;
                if w.remaining > 0 {
                    return;
                }
                let Some(mut w) = self.peer_waiters.remove(&key) else {
                    return;
                };
                w.reply[5] = by;
                self.out.push_back(Transmit::Reply {
                    client: w.client,
                    payload: w.reply,
                });
            }
        }
    }

    fn handle_client_closed(&mut self, _now: Instant, _client: Client) {
        self.events.lock().expect("lock").client_closed += 1;
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.timers.len() {
            if self.timers[i].0 <= now {
                let (_, client, payload) = self.timers.swap_remove(i);
                self.out.push_back(Transmit::Reply { client, payload });
            } else {
                i += 1;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().map(|t| t.0).min()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_peer(&mut self) -> Option<(usize, TestPeer)> {
        self.peers_out.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.timers.is_empty()
            && self.peer_waiters.is_empty()
            && self.out.is_empty()
            && self.peers_out.is_empty()
    }
}

/// A shard running on its own thread; shut down and joined on drop.
struct Server {
    udp: SocketAddr,
    tcp: SocketAddr,
    /// The shard's counters.
    stats: Arc<ShardStats>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    events: Arc<Mutex<Events>>,
}

fn start(mode: IoMode, limits: Limits, up_udp: SocketAddr, up_tcp: SocketAddr) -> Server {
    let peers = PeerLinks::single().expect("peer links");
    start_shard(mode, limits, up_udp, up_tcp, peers)
}

/// Starts shard `peers.index()` of a group.
fn start_shard(
    mode: IoMode,
    limits: Limits,
    up_udp: SocketAddr,
    up_tcp: SocketAddr,
    peers: PeerLinks<TestPeer>,
) -> Server {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let drain = Arc::new(Drain::new(peers.shards()));
    start_on(mode, limits, (up_udp, up_tcp), peers, (udp, tcp), drain)
}

/// Starts shard `peers.index()` of a group on the given listening sockets.
fn start_on(
    mode: IoMode,
    limits: Limits,
    (up_udp, up_tcp): (SocketAddr, SocketAddr),
    peers: PeerLinks<TestPeer>,
    (udp, tcp): (UdpSocket, TcpListener),
    drain: Arc<Drain>,
) -> Server {
    let index = peers.index();
    let (udp_addr, tcp_addr) = (
        udp.local_addr().expect("addr"),
        tcp.local_addr().expect("addr"),
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    let events = Arc::new(Mutex::new(Events::default()));
    let handler = TestHandler::new(index, up_udp, up_tcp, events.clone());
    let stats = Arc::new(ShardStats::default());
    let spec = ShardSpec {
        index,
        io: mode,
        sockets: ShardSockets {
            udp: vec![(0, udp)],
            tcp: vec![(0, tcp)],
        },
        shutdown: shutdown.clone(),
        limits,
        peers,
        stats: Some(Arc::clone(&stats)),
        drain,
    };
    let thread = thread::spawn(move || run_shard(spec, handler));
    Server {
        udp: udp_addr,
        tcp: tcp_addr,
        stats,
        shutdown,
        thread: Some(thread),
        events,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let r = t.join().expect("shard thread panicked");
            if !thread::panicking() {
                r.expect("run_shard failed");
            }
        }
    }
}

/// Fake upstreams that answer every message with QR set; stopped on drop.
struct Upstreams {
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn upstreams() -> Upstreams {
    let stop = Arc::new(AtomicBool::new(false));
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (ua, ta) = (
        udp.local_addr().expect("addr"),
        tcp.local_addr().expect("addr"),
    );
    let s1 = stop.clone();
    let t1 = thread::spawn(move || {
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        while !s1.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                buf[2] |= 0x80;
                let _ = udp.send_to(&buf[..n], peer);
            }
        }
    });
    let s2 = stop.clone();
    let t2 = thread::spawn(move || {
        tcp.set_nonblocking(true).expect("nonblocking");
        let mut conns = Vec::new();
        while !s2.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((stream, _)) => {
                    let s = s2.clone();
                    conns.push(thread::spawn(move || serve_tcp_upstream(stream, &s)));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        for c in conns {
            let _ = c.join();
        }
    });
    Upstreams {
        udp: ua,
        tcp: ta,
        stop,
        threads: vec![t1, t2],
    }
}

fn serve_tcp_upstream(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                let mut out = Vec::new();
                for mut r in unframe(&mut received) {
                    r[2] |= 0x80;
                    out.extend_from_slice(&frame(&r));
                }
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An address with (very likely) nothing listening: bound, then closed.
fn dead_addrs() -> (SocketAddr, SocketAddr) {
    let u = UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let t = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    (u, t)
}

fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

fn tcp_client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn send_tcp(s: &mut TcpStream, m: &[u8]) {
    s.write_all(&frame(m)).expect("write");
}

fn read_tcp(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("read length");
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut m).expect("read message");
    m
}

fn recv_udp(s: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).expect("udp reply");
    buf[..n].to_vec()
}

fn assert_reply(r: &[u8], id: u16) {
    assert_eq!(id_of(r), id, "reply ID");
    assert_ne!(r[2] & 0x80, 0, "QR set");
}

fn default_server(mode: IoMode) -> (Upstreams, Server) {
    let up = upstreams();
    let srv = start(mode, Limits::default(), up.udp, up.tcp);
    (up, srv)
}

fn udp_echo_many(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    let mut seen = vec![false; 10_000];
    for burst in 0..100u16 {
        for i in 0..100u16 {
            c.send(&query(burst * 100 + i, ECHO, 0)).expect("send");
        }
        for _ in 0..100 {
            let r = recv_udp(&c);
            assert_ne!(r[2] & 0x80, 0);
            seen[usize::from(id_of(&r))] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "every query answered");
}

fn udp_drop_and_timer_reply(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    c.send(&query(1, DROP, 0)).expect("send");
    c.send(&query(2, LATER, 5)).expect("send");
    c.send(&query(3, ECHO, 0)).expect("send");
    assert_reply(&recv_udp(&c), 3);
    let t0 = Instant::now();
    assert_reply(&recv_udp(&c), 2);
    assert!(t0.elapsed() < Duration::from_secs(1));
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(
        c.recv(&mut buf).is_err(),
        "dropped query must not be answered"
    );
}

fn tcp_pipelined_and_split(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let mut s = tcp_client(srv.tcp);
    let mut two = frame(&query(10, ECHO, 0));
    two.extend(frame(&query(11, ECHO, 0)));
    s.write_all(&two).expect("write");
    assert_reply(&read_tcp(&mut s), 10);
    assert_reply(&read_tcp(&mut s), 11);
    let one = frame(&query(12, ECHO, 0));
    for part in [&one[..1], &one[1..5], &one[5..]] {
        s.write_all(part).expect("write");
        thread::sleep(Duration::from_millis(20));
    }
    assert_reply(&read_tcp(&mut s), 12);
}

fn tcp_out_of_order(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(1, LATER, 20));
    send_tcp(&mut s, &query(2, LATER, 2));
    send_tcp(&mut s, &query(3, ECHO, 0));
    assert_reply(&read_tcp(&mut s), 3);
    assert_reply(&read_tcp(&mut s), 2);
    assert_reply(&read_tcp(&mut s), 1);
}

fn tcp_idle_timeout(mode: IoMode) {
    let up = upstreams();
    let limits = Limits {
        client_tcp_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = start(mode, limits, up.udp, up.tcp);
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(1, ECHO, 0));
    assert_reply(&read_tcp(&mut s), 1);
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).expect("EOF, not a timeout");
    assert_eq!(n, 0, "server closes the idle connection");
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(200) && idle < Duration::from_secs(2),
        "{idle:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while srv.events.lock().expect("lock").client_closed == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(srv.events.lock().expect("lock").client_closed, 1);
}

fn tcp_client_cap(mode: IoMode) {
    let up = upstreams();
    let limits = Limits {
        client_tcp_max: 2,
        ..Limits::default()
    };
    let srv = start(mode, limits, up.udp, up.tcp);
    let mut c1 = tcp_client(srv.tcp);
    send_tcp(&mut c1, &query(1, ECHO, 0));
    assert_reply(&read_tcp(&mut c1), 1);
    thread::sleep(Duration::from_millis(20));
    let mut c2 = tcp_client(srv.tcp);
    send_tcp(&mut c2, &query(2, ECHO, 0));
    assert_reply(&read_tcp(&mut c2), 2);
    // A third connection evicts the longest-idle one (c1).
    let mut c3 = tcp_client(srv.tcp);
    send_tcp(&mut c3, &query(3, ECHO, 0));
    assert_reply(&read_tcp(&mut c3), 3);
    let mut buf = [0u8; 4];
    match c1.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("c1 should be closed, got {other:?}"),
    }
    send_tcp(&mut c2, &query(4, ECHO, 0));
    assert_reply(&read_tcp(&mut c2), 4);
    assert_eq!(srv.stats.bounds.get(Bound::ClientTcpConnections), 1);
    assert_eq!(srv.stats.bounds.get(Bound::ClientTcpBacklog), 0);
}

/// A client that sends large queries and never reads the replies has its queries left
/// unread once 64 KiB of replies wait, and is closed once they have waited the idle time
/// (2 s here) with no byte read; that is counted; the others are served throughout.
fn tcp_client_that_never_reads(mode: IoMode) {
    let up = upstreams();
    let limits = Limits {
        client_tcp_idle: Duration::from_secs(2),
        ..Limits::default()
    };
    let srv = start(mode, limits, up.udp, up.tcp);
    let mut hog = tcp_client(srv.tcp);
    hog.set_write_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut big = query(1, ECHO, 0);
    big.resize(60_000, 0);
    let big = frame(&big);
    let started = Instant::now();
    let mut sent = 0usize;
    // 400 × 60 kB = 24 MB: more than the kernel's buffers on both sides plus the MiB.
    while sent < 400 && started.elapsed() < Duration::from_secs(20) {
        if hog.write_all(&big).is_err() {
            break;
        }
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    while srv.stats.bounds.get(Bound::ClientTcpBacklog) == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        srv.stats.bounds.get(Bound::ClientTcpBacklog),
        1,
        "closed after {sent} queries"
    );
    let mut other = tcp_client(srv.tcp);
    send_tcp(&mut other, &query(2, ECHO, 0));
    assert_reply(&read_tcp(&mut other), 2);
}

fn upstream_udp_round_trip(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    for id in 0..50u16 {
        c.send(&query(id, UP_UDP, 0)).expect("send");
    }
    let mut got: Vec<u16> = Vec::new();
    for _ in 0..50 {
        let mut buf = [0u8; 64];
        match c.recv(&mut buf) {
            Ok(_) => got.push(id_of(&buf)),
            Err(e) => panic!(
                "{e}: got {} replies; {:?}",
                got.len(),
                srv.events.lock().expect("lock")
            ),
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(77, UP_UDP, 0));
    assert_reply(&read_tcp(&mut s), 77);
}

fn upstream_tcp_round_trip(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    for id in 0..40u16 {
        c.send(&query(id, UP_TCP, 7 + (id % 2) as u8))
            .expect("send");
    }
    let mut got: Vec<u16> = (0..40).map(|_| id_of(&recv_udp(&c))).collect();
    got.sort_unstable();
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(500, UP_TCP, 7));
    send_tcp(&mut s, &query(501, UP_TCP, 9));
    let mut ids = [id_of(&read_tcp(&mut s)), id_of(&read_tcp(&mut s))];
    ids.sort_unstable();
    assert_eq!(ids, [500, 501]);
    assert!(srv.events.lock().expect("lock").link_closed.is_empty());
}

fn upstream_tcp_close_and_reconnect(mode: IoMode) {
    let (_up, srv) = default_server(mode);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    for id in 0..3u16 {
        c.send(&query(id, UP_TCP_CLOSE, 5)).expect("send");
        assert_reply(&recv_udp(&c), id);
    }
    assert!(srv.events.lock().expect("lock").link_closed.is_empty());
}

/// Each UDP link is a socket of its own, on a port the kernel picked, closed when the
/// handler closes the link: its port is free again.
fn upstream_udp_socket_per_link(mode: IoMode) {
    let upstream = UdpSocket::bind("127.0.0.1:0").expect("bind");
    upstream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let up = upstreams();
    let up_udp = upstream.local_addr().expect("addr");
    let srv = start(mode, Limits::default(), up_udp, up.tcp);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    let mut ports = Vec::new();
    let mut buf = [0u8; 512];
    for (id, conn) in [(1u16, 1u8), (2, 2)] {
        c.send(&query(id, UP_UDP_CONN, conn)).expect("send");
        let (n, from) = upstream.recv_from(&mut buf).expect("the query upstream");
        ports.push(from.port());
        let mut reply = buf[..n].to_vec();
        reply[2] |= 0x80;
        upstream.send_to(&reply, from).expect("reply");
        assert_reply(&recv_udp(&c), id);
    }
    assert_ne!(ports[0], ports[1], "one socket per link");
    // Both links were closed after their responses: their ports can be bound again.
    for port in ports {
        let free = (0..100).any(|_| {
            let bound = UdpSocket::bind(("0.0.0.0", port)).is_ok();
            if !bound {
                thread::sleep(Duration::from_millis(10));
            }
            bound
        });
        assert!(free, "port {port} still bound after its link closed");
    }
}

/// Sends `query(id, action, arg)` to a server whose upstreams are dead addresses: the client
/// gets a FAILED reply and exactly `link` is reported closed.
fn assert_upstream_refused(mode: IoMode, id: u16, action: u8, arg: u8, link: Link) {
    let (dead_udp, dead_tcp) = dead_addrs();
    let srv = start(mode, Limits::default(), dead_udp, dead_tcp);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    c.send(&query(id, action, arg)).expect("send");
    let r = recv_udp(&c);
    assert_reply(&r, id);
    assert_eq!(r[3], FAILED);
    let closed = srv.events.lock().expect("lock").link_closed.clone();
    assert_eq!(closed, vec![link]);
}

fn upstream_tcp_refused(mode: IoMode) {
    let link = Link {
        upstream: 1,
        protocol: Protocol::Tcp,
        conn: 3,
    };
    assert_upstream_refused(mode, 42, UP_TCP, 3, link);
}

fn upstream_udp_refused(mode: IoMode) {
    let link = Link {
        upstream: 0,
        protocol: Protocol::Udp,
        conn: 0,
    };
    assert_upstream_refused(mode, 43, UP_UDP, 0, link);
}

fn shutdown_returns(mode: IoMode) {
    let (_up, mut srv) = default_server(mode);
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(1, ECHO, 0));
    assert_reply(&read_tcp(&mut s), 1);
    let t0 = Instant::now();
    srv.shutdown.store(true, Ordering::Relaxed);
    let t = srv.thread.take().expect("thread");
    t.join().expect("no panic").expect("run_shard ok");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

/// A group of `n` shards, each on its own thread with its own sockets, joined by a mesh.
fn start_group(mode: IoMode, n: usize) -> Vec<Server> {
    let (up_udp, up_tcp) = dead_addrs();
    peer_mesh(n)
        .expect("peer mesh")
        .into_iter()
        .map(|peers| start_shard(mode, Limits::default(), up_udp, up_tcp, peers))
        .collect()
}

fn peer_in(srv: &Server) -> usize {
    srv.events.lock().expect("lock").peer_in
}

/// Asserts that `r` answers `id` after a round trip through shard `by`.
fn assert_peer_reply(r: &[u8], id: u16, by: usize) {
    assert_reply(r, id);
    assert_eq!(usize::from(r[5]), 1 + by, "answered by shard {by}");
}

/// 1000 queries to shard 0, in bursts of 100, each answered only after a round trip to
/// shard 1 (a miss there, an answer back).
fn peer_round_trips(mode: IoMode) {
    let group = start_group(mode, 2);
    let c = udp_client();
    c.connect(group[0].udp).expect("connect");
    let mut seen = vec![false; 1000];
    for burst in 0..10u16 {
        for i in 0..100u16 {
            c.send(&query(burst * 100 + i, PEER, 1)).expect("send");
        }
        for _ in 0..100 {
            let r = recv_udp(&c);
            assert_peer_reply(&r, id_of(&r), 1);
            seen[usize::from(id_of(&r))] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "every query answered");
    assert_eq!(peer_in(&group[1]), 1000, "misses seen by shard 1");
    assert_eq!(peer_in(&group[0]), 1000, "answers seen by shard 0");
    // Shard 1 asks shard 0 the same way, and TCP clients are served too.
    let c1 = udp_client();
    c1.connect(group[1].udp).expect("connect");
    c1.send(&query(5000, PEER, 0)).expect("send");
    assert_peer_reply(&recv_udp(&c1), 5000, 0);
    let mut s = tcp_client(group[0].tcp);
    send_tcp(&mut s, &query(6000, PEER, 1));
    assert_peer_reply(&read_tcp(&mut s), 6000, 1);
}

/// Both shards sleep between queries (nothing to do, no timer): a peer message must wake
/// the shard it is for at once, not when its wait happens to end.
fn peer_wakes_idle_shard(mode: IoMode) {
    let group = start_group(mode, 2);
    let c = udp_client();
    c.connect(group[0].udp).expect("connect");
    c.send(&query(1, PEER, 1)).expect("send");
    assert_peer_reply(&recv_udp(&c), 1, 1);
    let rounds = 10u16;
    let mut total = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for id in 0..rounds {
        // Longer than the drivers' longest wait: both shards are blocked in it.
        thread::sleep(Duration::from_millis(150));
        let t0 = Instant::now();
        c.send(&query(100 + id, PEER, 1)).expect("send");
        assert_peer_reply(&recv_udp(&c), 100 + id, 1);
        let rtt = t0.elapsed();
        total += rtt;
        worst = worst.max(rtt);
    }
    let mean = total / u32::from(rounds);
    // Without wake-ups each hop would wait for the end of a wait of up to 100 ms.
    assert!(
        mean < Duration::from_millis(25),
        "mean round trip {mean:?} (worst {worst:?})"
    );
    assert!(worst < Duration::from_secs(1), "worst round trip {worst:?}");
}

/// The process's control handle reaches every shard, idle ones included, promptly.
fn control_reaches_idle_shards(mode: IoMode) {
    let (up_udp, up_tcp) = dead_addrs();
    let mesh = peer_mesh(2).expect("peer mesh");
    let control = mesh[0].control();
    let group: Vec<Server> = mesh
        .into_iter()
        .map(|peers| start_shard(mode, Limits::default(), up_udp, up_tcp, peers))
        .collect();
    thread::sleep(Duration::from_millis(150));
    let config = Arc::new(empty_config());
    let t0 = Instant::now();
    assert_eq!(control.broadcast(&Control::Reconfigure(config)), 2);
    let reconfigured = |srv: &Server| srv.events.lock().expect("lock").reconfigured;
    while group.iter().any(|s| reconfigured(s) == 0) && t0.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(
        group.iter().all(|s| reconfigured(s) == 1),
        "every shard got it once"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(50),
        "took {:?}",
        t0.elapsed()
    );
}

/// One query makes shard 0 send [`FAN_OUT`] misses to shard 1 in one round (more than a
/// shard serves per wake-up), and shard 1 answers them all: every one must get through.
fn peer_fan_out_beyond_budget(mode: IoMode) {
    let group = start_group(mode, 2);
    let c = udp_client();
    c.connect(group[0].udp).expect("connect");
    for id in 0..3u16 {
        c.send(&query(id, PEER_FAN, 1)).expect("send");
        assert_peer_reply(&recv_udp(&c), id, 1);
    }
    assert_eq!(peer_in(&group[1]), 3 * FAN_OUT);
    assert_eq!(peer_in(&group[0]), 3 * FAN_OUT);
}

/// A message for a shard that has stopped (or does not exist) is dropped; the sender goes
/// on serving.
fn peer_to_stopped_shard(mode: IoMode) {
    let mut group = start_group(mode, 2);
    let c = udp_client();
    c.connect(group[0].udp).expect("connect");
    c.send(&query(1, PEER, 1)).expect("send");
    assert_peer_reply(&recv_udp(&c), 1, 1);
    let mut stopped = group.pop().expect("shard 1");
    stopped.shutdown.store(true, Ordering::Relaxed);
    let t = stopped.thread.take().expect("thread");
    t.join().expect("no panic").expect("run_shard ok");
    for id in 2..50u16 {
        c.send(&query(id, PEER, 1)).expect("send");
    }
    c.send(&query(50, PEER, 9)).expect("send");
    c.send(&query(51, ECHO, 0)).expect("send");
    assert_reply(&recv_udp(&c), 51);
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(c.recv(&mut buf).is_err(), "no answer from a stopped shard");
    let t = group[0].thread.as_ref().expect("thread");
    assert!(!t.is_finished(), "shard 0 still running");
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    c.send(&query(52, ECHO, 0)).expect("send");
    assert_reply(&recv_udp(&c), 52);
}

fn skip(mode: IoMode) -> bool {
    if mode != IoMode::Uring {
        return false;
    }
    match shardns_shard::uring_available() {
        Ok(()) => false,
        Err(why) => {
            println!("skipping io_uring test: {why}");
            true
        }
    }
}

macro_rules! suite {
    ($modname:ident, $mode:expr, $($name:ident),* $(,)?) => {
        mod $modname {
            $(
                #[test]
                fn $name() {
                    if super::skip($mode) {
                        return;
                    }
                    super::$name($mode);
                }
            )*
        }
    };
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        suite!(epoll, shardns_shard::IoMode::Epoll, $($name),*);
        suite!(uring, shardns_shard::IoMode::Uring, $($name),*);
    };
}

/// A drain: what the shard took before it is answered (a UDP query and a TCP query still
/// owed), what comes after is left on the sockets for whoever reads them next (the same
/// sockets, as a successor process holds them), the TCP connection is closed once its reply
/// is written, and the shard returns on its own.
fn drain_answers_what_it_took_and_leaves_the_rest(mode: IoMode) {
    let up = upstreams();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let successor_udp = udp.try_clone().expect("clone");
    let successor_tcp = tcp.try_clone().expect("clone");
    let drain = Arc::new(Drain::new(1));
    let peers = PeerLinks::single().expect("peer links");
    let mut srv = start_on(
        mode,
        Limits::default(),
        (up.udp, up.tcp),
        peers,
        (udp, tcp),
        Arc::clone(&drain),
    );
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    c.send(&query(1, LATER, 60)).expect("send");
    let mut s = tcp_client(srv.tcp);
    send_tcp(&mut s, &query(2, LATER, 40));
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drain.request();
    // The shard notices within its longest sleep (100 ms).
    thread::sleep(Duration::from_millis(250));
    assert_eq!(drain.stopped(), 1, "the shard stopped reading");
    c.send(&query(3, ECHO, 0)).expect("send");
    let late = TcpStream::connect(srv.tcp).expect("a connection after the drain");
    // The successor finds both where the shard left them.
    successor_udp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let (n, _) = successor_udp
        .recv_from(&mut buf)
        .expect("left on the socket");
    assert_eq!(id_of(&buf[..n]), 3);
    successor_tcp.set_nonblocking(false).expect("blocking");
    let (accepted, _) = successor_tcp.accept().expect("left in the backlog");
    drop((accepted, late));
    // What the shard took is answered, the TCP connection then closed.
    assert_reply(&recv_udp(&c), 1);
    assert_reply(&read_tcp(&mut s), 2);
    let mut rest = [0u8; 16];
    assert_eq!(s.read(&mut rest).expect("EOF"), 0, "closed after its reply");
    let thread = srv.thread.take().expect("running");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !thread.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert!(thread.is_finished(), "the shard returned on its own");
    thread.join().expect("no panic").expect("run_shard");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        srv.events.lock().expect("lock").forwarded,
        0,
        "nothing else was read"
    );
}

both!(
    drain_answers_what_it_took_and_leaves_the_rest,
    udp_echo_many,
    udp_drop_and_timer_reply,
    tcp_pipelined_and_split,
    tcp_out_of_order,
    tcp_idle_timeout,
    tcp_client_cap,
    tcp_client_that_never_reads,
    upstream_udp_round_trip,
    upstream_tcp_round_trip,
    upstream_tcp_close_and_reconnect,
    upstream_tcp_refused,
    upstream_udp_refused,
    upstream_udp_socket_per_link,
    shutdown_returns,
    peer_round_trips,
    peer_wakes_idle_shard,
    control_reaches_idle_shards,
    peer_fan_out_beyond_budget,
    peer_to_stopped_shard,
);

#[test]
fn peer_links_of_another_shard_are_refused() {
    let spec = ShardSpec {
        index: 0,
        io: IoMode::Epoll,
        sockets: ShardSockets::default(),
        shutdown: Arc::new(AtomicBool::new(true)),
        limits: Limits::default(),
        peers: peer_mesh(2).expect("mesh").remove(1),
        stats: None,
        drain: Arc::new(Drain::new(2)),
    };
    let (up_udp, up_tcp) = dead_addrs();
    let handler = TestHandler::new(0, up_udp, up_tcp, Arc::default());
    let e = run_shard(spec, handler).expect_err("mismatched peer links");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn auto_mode_serves() {
    let (_up, srv) = default_server(IoMode::Auto);
    let c = udp_client();
    c.connect(srv.udp).expect("connect");
    c.send(&query(9, ECHO, 0)).expect("send");
    assert_reply(&recv_udp(&c), 9);
}

fn logs_listening_lines(mode: IoMode) {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let (ua, ta) = (
        udp.local_addr().expect("addr"),
        tcp.local_addr().expect("addr"),
    );
    let stats = Arc::new(ShardStats::new(&empty_config(), 0));
    let spec = ShardSpec {
        index: 3,
        io: mode,
        sockets: ShardSockets {
            udp: vec![(0, udp)],
            tcp: vec![(0, tcp)],
        },
        shutdown: Arc::new(AtomicBool::new(true)),
        limits: Limits::default(),
        peers: peer_mesh(4).expect("mesh").remove(3),
        stats: Some(Arc::clone(&stats)),
        drain: Arc::new(Drain::new(4)),
    };
    let (up_udp, up_tcp) = dead_addrs();
    let handler = TestHandler::new(3, up_udp, up_tcp, Arc::default());
    let (result, lines) = common::logs::capture(|| run_shard(spec, handler));
    result.expect("run");
    let word = if mode == IoMode::Uring {
        "io_uring"
    } else {
        "epoll"
    };
    let lines: Vec<String> = lines.iter().map(|line| line.message.clone()).collect();
    for want in [
        format!("listening on udp {ua} (shard 3, {word})"),
        format!("listening on tcp {ta} (shard 3, {word})"),
    ] {
        assert!(lines.contains(&want), "{want:?} not in {lines:?}");
    }
    let published = if mode == IoMode::Uring {
        DRIVER_URING
    } else {
        DRIVER_EPOLL
    };
    assert_eq!(
        stats.driver.get(),
        published,
        "the driver in use is published"
    );
}

#[test]
fn epoll_logs_listening_lines() {
    logs_listening_lines(IoMode::Epoll);
}

#[test]
fn uring_logs_listening_lines() {
    if !skip(IoMode::Uring) {
        logs_listening_lines(IoMode::Uring);
    }
}
