//! Faults of clients: connections that open and then say nothing, send half a query, send
//! one byte a second (slowloris), or send queries and never read the answers, on DNS over
//! TCP and on every HTTP endpoint (metrics, health, ready). Other clients must be served
//! meanwhile, and each attacker closed by the server at its deadline.
//!
//! A client that vanished without a FIN looks to the server exactly like one that stays
//! silent with its socket open, which is what the silent attackers do (dropping a loopback
//! connection's packets would need rules on the shared host's own interface).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{HTTP_TIMEOUT, http};
use shardns_e2e::unbound::free_port;
use shardns_e2e::upstream::zone;
use shardns_e2e::{Shardns, TcpClient, TestUpstream, build_query, new_id};
use socket2::{Domain, Protocol, Socket, Type};

use crate::common;

/// The server's idle timeout of a client TCP connection (`Limits::client_tcp_idle`).
const DNS_IDLE: Duration = Duration::from_secs(10);
/// How much the peak RSS may exceed the RSS before the attack on DNS over TCP (40 clients
/// that never read cost 40 MiB when each could leave 1 MiB of replies unread).
const NEVER_READERS_RSS_KIB: u64 = 24 * 1024;
/// The HTTP server's time for a first byte and for each request head.
const HTTP_HEAD: Duration = Duration::from_secs(2);
/// The HTTP server's connection lifetime, and the grace of the response under way.
const HTTP_LIFETIME: Duration = Duration::from_secs(10);
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How late after its deadline the server may close an attacker (its sweeps, a loaded CI).
const SLACK: Duration = Duration::from_millis(2500);
/// The same for the HTTP server, which keeps its deadlines for hundreds of connections on one
/// thread, while the attackers' own thread notices closes at its turns on a loaded machine
/// (7.46 s seen once for the 2 s head time); the request head's deadline stays before the
/// 10 s connection lifetime, which would close them without it.
const HTTP_HEAD_SLACK: Duration = Duration::from_millis(7500);

/// How an attacker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Connects and sends nothing.
    Silent,
    /// Sends the first bytes of a request, then nothing.
    Half,
    /// Sends a request one byte a second.
    Slowloris,
    /// Sends requests as fast as the connection takes them and never reads.
    NeverReads,
}

/// One attacking connection: when the server closed it, if it did.
#[derive(Debug)]
struct Attacker {
    attack: Attack,
    stream: TcpStream,
    /// The bytes it dribbles or repeats.
    request: Vec<u8>,
    sent: usize,
    opened: Instant,
    closed: Option<Duration>,
}

impl Attacker {
    fn open(addr: SocketAddr, attack: Attack, request: Vec<u8>) -> Attacker {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        if attack == Attack::NeverReads {
            // A small window, so that what it does not read piles up at the server soon.
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(3))
            .expect("connect");
        let stream = TcpStream::from(socket);
        stream.set_nonblocking(true).unwrap();
        // It repeats a batch of 100 requests, each write as big as the kernel takes.
        let request = match attack {
            Attack::NeverReads => request.repeat(100),
            _ => request,
        };
        let mut attacker = Attacker {
            attack,
            stream,
            request,
            sent: 0,
            opened: Instant::now(),
            closed: None,
        };
        if attack == Attack::Half {
            let half = attacker.request.len() / 2;
            attacker.write(half);
        }
        attacker
    }

    /// Writes the next `n` bytes of the request (for [`Attack::NeverReads`]: the whole
    /// request, `n` times over); notes the close on an error.
    fn write(&mut self, n: usize) {
        for _ in 0..n {
            let len = self.request.len();
            let at = self.sent % len;
            let end = match self.attack {
                Attack::NeverReads => len,
                _ => (at + n).min(len),
            };
            match (&self.stream).write(&self.request[at..end]) {
                Ok(written) => self.sent += written,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.closed.get_or_insert(self.opened.elapsed());
                    return;
                }
            }
            if self.attack != Attack::NeverReads {
                return;
            }
        }
    }

    /// One turn: the attack's next step, then whether the server closed the connection (a
    /// read of 0 or an error; never-readers only notice on writing).
    fn turn(&mut self) {
        if self.closed.is_some() {
            return;
        }
        match self.attack {
            Attack::Slowloris if self.sent < self.request.len() => self.write(1),
            Attack::NeverReads => self.write(1000),
            _ => {}
        }
        if self.attack == Attack::NeverReads || self.closed.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        match (&self.stream).read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => {
                self.closed.get_or_insert(self.opened.elapsed());
            }
            // An HTTP error answer (a 408 or 400) before the close: keep reading next turn.
            Ok(_) => {}
        }
    }
}

/// A thread running attackers until every one was closed or `stop`; returns them.
struct Attackers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Attacker>>>,
}

impl Attackers {
    /// Opens `attacks` (each kind, and how many) to `addr`, asking `request`, and plays them
    /// a turn every 250 ms (slowloris: a byte every fourth turn) for at most `limit`.
    fn start(
        addr: SocketAddr,
        attacks: &[(Attack, usize)],
        request: Vec<u8>,
        limit: Duration,
    ) -> Attackers {
        let mut attackers = Vec::new();
        for &(attack, count) in attacks {
            for _ in 0..count {
                attackers.push(Attacker::open(addr, attack, request.clone()));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut turn = 0u64;
            while !flag.load(Ordering::SeqCst)
                && started.elapsed() < limit
                && attackers.iter().any(|a| a.closed.is_none())
            {
                for attacker in &mut attackers {
                    if attacker.attack != Attack::Slowloris || turn.is_multiple_of(4) {
                        attacker.turn();
                    } else if attacker.closed.is_none() {
                        // Between its bytes a slowloris still notices a close.
                        let sent = attacker.sent;
                        attacker.sent = attacker.request.len();
                        attacker.turn();
                        attacker.sent = sent;
                    }
                }
                turn += 1;
                thread::sleep(Duration::from_millis(250));
            }
            attackers
        });
        Attackers {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the thread has finished (every attacker closed, or the limit).
    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn stop(mut self) -> Vec<Attacker> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("attackers")
    }
}

/// Asserts that every attacker of `attack` was closed by the server after at least `least`
/// and at most `deadline`; prints the spread.
fn assert_closed(
    name: &str,
    attackers: &[Attacker],
    attack: Attack,
    least: Duration,
    deadline: Duration,
) {
    let times: Vec<Option<Duration>> = attackers
        .iter()
        .filter(|a| a.attack == attack)
        .map(|a| a.closed)
        .collect();
    assert!(!times.is_empty());
    let open = times.iter().filter(|t| t.is_none()).count();
    assert_eq!(
        open, 0,
        "{name}: {open} {attack:?} connections never closed"
    );
    let closed: Vec<Duration> = times.into_iter().flatten().collect();
    let (first, last) = (*closed.iter().min().unwrap(), *closed.iter().max().unwrap());
    eprintln!(
        "fault={name}: {} {attack:?} connections closed by the server after {} to {} ms",
        closed.len(),
        first.as_millis(),
        last.as_millis()
    );
    assert!(
        first >= least,
        "{name}: {attack:?} closed after {first:?}, before {least:?}"
    );
    assert!(
        last <= deadline,
        "{name}: {attack:?} closed after {last:?}, deadline {deadline:?}"
    );
}

/// A framed DNS query for a cached name.
fn framed_query() -> Vec<u8> {
    let query = build_query(&zone::host(1), RecordType::A, new_id());
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend(query);
    framed
}

/// 40 each of silent, half-query, slowloris and never-reading connections on DNS over TCP
/// while the load runs, plus a TCP client asking on a new connection every 100 ms:
/// the load and the TCP client are all answered; the silent, half and slowloris
/// connections are closed at the idle timeout (10 s), those that never read the idle
/// timeout after their replies stopped moving (the kernel's buffers full), within 20 s, and
/// what they leave unread costs little memory.
#[test]
fn clients_half_open_and_slowloris_on_dns_tcp() {
    const NAME: &str = "clients_half_open_and_slowloris_on_dns_tcp";
    let upstream = TestUpstream::start().expect("test upstream");
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {}\n    errors\n}}\n",
        upstream.addr()
    );
    let mut shardns = Shardns::start(&corefile, &["--shards", "2"]).expect("shardns");
    let tcp = shardns.tcp_addr();
    let attacks = [
        (Attack::Silent, 40),
        (Attack::Half, 40),
        (Attack::Slowloris, 40),
        (Attack::NeverReads, 40),
    ];
    // A never-reader stalls once the kernel's buffers between it and the server are full,
    // which takes a few seconds more on a loaded machine.
    let limit = DNS_IDLE * 2 + SLACK * 2;
    let attackers = Mutex::new(None);
    let tcp_client = Mutex::new(None);
    let mix = common::mix(
        (0..16).map(|n| (zone::host(n), zone::host_a(n))).collect(),
        zone::ZONE,
    );
    let run = common::run_until(
        NAME,
        &shardns,
        mix,
        || {
            *attackers.lock().unwrap() =
                Some(Attackers::start(tcp, &attacks, framed_query(), limit));
            *tcp_client.lock().unwrap() = Some(TcpProbe::start(tcp));
        },
        limit,
        || {
            attackers
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(Attackers::finished)
        },
        || {},
    );
    let attackers = attackers.into_inner().unwrap().unwrap().stop();
    let (asked, failed) = tcp_client.into_inner().unwrap().unwrap().stop();
    eprintln!("fault={NAME}: TCP client during the attack: {asked} asked, {failed:?} failed");
    run.assert_common(&mut shardns);
    assert!(asked > 20, "{asked}");
    assert!(failed.is_empty(), "{NAME}: TCP queries failed: {failed:?}");
    let hits = run.during(shardns_e2e::load::Kind::Hit, Duration::ZERO);
    assert_eq!(hits.answered, hits.sent, "{hits:?}");
    let misses = run.during(shardns_e2e::load::Kind::Miss, Duration::ZERO);
    assert_eq!(misses.answered, misses.sent, "{misses:?}");
    let early = DNS_IDLE - Duration::from_millis(500);
    for attack in [Attack::Silent, Attack::Half, Attack::Slowloris] {
        assert_closed(NAME, &attackers, attack, early, DNS_IDLE + SLACK);
    }
    assert_closed(
        NAME,
        &attackers,
        Attack::NeverReads,
        Duration::ZERO,
        DNS_IDLE * 2 + SLACK,
    );
    // Their replies wait in a bounded buffer each (64 KiB and a read's worth), not 1 MiB.
    assert!(
        run.rss_peak <= run.rss_before + NEVER_READERS_RSS_KIB,
        "{NAME}: peak RSS {} KiB, {} KiB before",
        run.rss_peak,
        run.rss_before
    );
    shardns.stop();
}

/// A TCP client asking for a cached name on a new connection every 100 ms.
struct TcpProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl TcpProbe {
    fn start(addr: SocketAddr) -> TcpProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut asked, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) && asked < 1000 {
                asked += 1;
                let answer = TcpClient::connect(addr)
                    .and_then(|mut client| client.query(&zone::host(2), RecordType::A));
                match answer {
                    Ok(reply) if reply.answers().len() == 1 => {}
                    Ok(reply) => failed.push(format!("{reply}")),
                    Err(e) => failed.push(format!("{e:#}")),
                }
                thread::sleep(Duration::from_millis(100));
            }
            (asked, failed)
        });
        TcpProbe { stop, thread }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("TCP client")
    }
}

/// `GET path` with `Connection: close`: the status code.
fn get(addr: SocketAddr, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n");
    http(addr, request.as_bytes())
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// 25 of each attacker on each of the metrics, health and ready endpoints while the DNS
/// load runs, and a scrape of each every 200 ms: every scrape answered 200; the silent,
/// half and slowloris connections closed within the request-head time (2 s), those that
/// never read within the connection lifetime and its grace.
#[test]
fn clients_half_open_and_slowloris_on_http_endpoints() {
    const NAME: &str = "clients_half_open_and_slowloris_on_http_endpoints";
    let upstream = TestUpstream::start().expect("test upstream");
    let port = || SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let (metrics, health, ready) = (port(), port(), port());
    let corefile = format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {}\n    errors\n    \
         prometheus {metrics}\n    health {health}\n    ready {ready}\n}}\n",
        upstream.addr()
    );
    let mut shardns = Shardns::start(&corefile, &["--shards", "2"]).expect("shardns");
    let endpoints = [
        (metrics, "/metrics"),
        (health, "/health"),
        (ready, "/ready"),
    ];
    let ready_at = shardns_e2e::wait_for(Duration::from_secs(10), || {
        (get(ready, "/ready") == 200).then_some(())
    });
    assert!(ready_at.is_some(), "not ready:\n{}", shardns.log_text());
    let attacks = [
        (Attack::Silent, 25),
        (Attack::Half, 25),
        (Attack::Slowloris, 25),
        (Attack::NeverReads, 25),
    ];
    let limit = HTTP_LIFETIME + HTTP_CLOSE_GRACE + HTTP_HEAD_SLACK + SLACK;
    let attackers = Mutex::new(Vec::new());
    let scrapes = Mutex::new(None);
    let mix = common::mix(
        (0..16).map(|n| (zone::host(n), zone::host_a(n))).collect(),
        zone::ZONE,
    );
    let run = common::run_until(
        NAME,
        &shardns,
        mix,
        || {
            for (addr, path) in endpoints {
                let request = format!("GET {path} HTTP/1.1\r\nHost: e2e\r\n\r\n").into_bytes();
                attackers
                    .lock()
                    .unwrap()
                    .push(Attackers::start(addr, &attacks, request, limit));
            }
            *scrapes.lock().unwrap() = Some(Scraper::start(endpoints.to_vec()));
        },
        limit,
        || attackers.lock().unwrap().iter().all(Attackers::finished),
        || {},
    );
    let attackers: Vec<Attacker> = attackers
        .into_inner()
        .unwrap()
        .into_iter()
        .flat_map(Attackers::stop)
        .collect();
    let (asked, failed) = scrapes.into_inner().unwrap().unwrap().stop();
    eprintln!("fault={NAME}: requests during the attack: {asked} asked, {failed:?} failed");
    run.assert_common(&mut shardns);
    assert!(asked > 30, "{asked}");
    assert!(failed.is_empty(), "{NAME}: requests failed: {failed:?}");
    for attack in [Attack::Silent, Attack::Half, Attack::Slowloris] {
        assert_closed(
            NAME,
            &attackers,
            attack,
            Duration::ZERO,
            HTTP_HEAD + HTTP_HEAD_SLACK,
        );
    }
    assert_closed(
        NAME,
        &attackers,
        Attack::NeverReads,
        Duration::ZERO,
        HTTP_LIFETIME + HTTP_CLOSE_GRACE + HTTP_HEAD_SLACK,
    );
    shardns.stop();
}

/// A client asking each endpoint in turn every 200 ms (each request on a new connection).
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl Scraper {
    fn start(endpoints: Vec<(SocketAddr, &'static str)>) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut asked, mut failed) = (0u64, Vec::new());
            while !flag.load(Ordering::SeqCst) && asked < 1000 {
                let (addr, path) = endpoints[asked as usize % endpoints.len()];
                asked += 1;
                let started = Instant::now();
                let status = get(addr, path);
                if status != 200 || started.elapsed() > HTTP_TIMEOUT {
                    failed.push(format!("{path}: {status} after {:?}", started.elapsed()));
                }
                thread::sleep(Duration::from_millis(200));
            }
            (asked, failed)
        });
        Scraper { stop, thread }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("scraper")
    }
}
