//! A steady UDP load for tests of upgrades, restarts and faults: a few clients, each sending
//! one query at a time and checking its answer, paced (about 1,000 queries a second in all
//! by default), until stopped. Every query is counted as answered right, answered SERVFAIL,
//! answered otherwise (wrong), or lost (no answer within the client's timeout).
//!
//! [`Load::start`] asks for the hosts of Unbound's fixture (cached hits once warmed).
//! [`Load::with`] takes a [`Mix`]: clients asking for names that stay cached (hits) beside
//! clients asking for a fresh name each time (misses, answered NXDOMAIN by the upstream), and
//! keeps every query's outcome, so that a test can tell what happened during a fault and how
//! long the first right answer took after it ([`Record`]).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::{Unbound, build_query, zone};

/// The Corefile of the load tests (upgrades, restarts, the chaos soak): one block on
/// 127.0.0.1 (an ephemeral port) caching 300 s and forwarding to `unbound`.
pub fn corefile(unbound: &Unbound) -> String {
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 300\n    forward . {}\n}}\n",
        unbound.addr()
    )
}

/// Asks `server` for every host of Unbound's fixture once (3 s for each answer), so that
/// [`Load::start`]'s names are cached hits.
pub fn warm(server: SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    for host in 0..zone::HOSTS {
        socket
            .send_to(&build_query(&zone::host(host), RecordType::A, 1), server)
            .expect("send");
        let mut buf = [0u8; 1500];
        socket.recv(&mut buf).expect("warm-up answer");
    }
}

/// Clients sending one query at a time each ([`Load::start`]).
pub const CLIENTS: usize = 4;
/// The pause after each answer ([`Load::start`]).
const PACE: Duration = Duration::from_millis(4);
/// How long [`Load::start`]'s clients wait for an answer.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a load runs, stopped or not (a test that panicked before stopping it).
const MAX_RUN: Duration = Duration::from_secs(300);

/// What the clients saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub sent: u64,
    /// Answered right.
    pub answered: u64,
    /// Answered SERVFAIL.
    pub servfail: u64,
    /// Answered otherwise (another RCODE, or not the right records).
    pub wrong: u64,
    /// Not answered within the client's timeout.
    pub lost: u64,
    /// The slowest answer, in microseconds.
    pub slowest_us: u64,
}

/// What the load asks ([`Load::with`]).
#[derive(Debug, Clone)]
pub struct Mix {
    /// Names asked for type A, each with its one right address: cache hits once warmed.
    pub hits: Vec<(String, Ipv4Addr)>,
    /// Clients asking for `hits`, in turn.
    pub hit_clients: usize,
    /// A zone the upstream answers NXDOMAIN under: misses ask for a fresh name in it each
    /// time (`mCLIENT-N.ZONE`), so that none is ever a cache hit.
    pub miss_zone: String,
    /// Clients asking for fresh names (0: no misses).
    pub miss_clients: usize,
    /// Each miss client sends a query this often whatever is answered (an open loop: the
    /// misses go on at the same rate while the upstream is stuck); `None`: one at a time,
    /// as the hit clients.
    pub miss_interval: Option<Duration>,
    /// How long a client waits for an answer before it counts the query lost.
    pub timeout: Duration,
    /// Each client's pause after each answer.
    pub pace: Duration,
}

impl Mix {
    /// Unbound's fixture hosts, hits only: [`Load::start`]'s load.
    pub fn unbound_hosts() -> Mix {
        Mix {
            hits: (0..zone::HOSTS)
                .map(|n| (zone::host(n), zone::host_a(n)))
                .collect(),
            hit_clients: CLIENTS,
            miss_zone: zone::ZONE.to_string(),
            miss_clients: 0,
            miss_interval: None,
            timeout: TIMEOUT,
            pace: PACE,
        }
    }

    /// The names to warm the cache with (ask each once before the load starts).
    pub fn hit_names(&self) -> impl Iterator<Item = &str> {
        self.hits.iter().map(|(name, _)| name.as_str())
    }
}

/// Which kind of client sent a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hit,
    Miss,
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Right,
    ServFail,
    Wrong,
    Lost,
}

/// One query.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub kind: Kind,
    pub sent: Instant,
    /// Until its answer, or the timeout when lost.
    pub took: Duration,
    pub outcome: Outcome,
}

impl Event {
    /// When the answer came (or the client gave up).
    pub fn done(&self) -> Instant {
        self.sent + self.took
    }
}

/// Every query of a stopped [`Load::with`], in no particular order.
#[derive(Debug, Clone)]
pub struct Record {
    pub started: Instant,
    pub stopped: Instant,
    pub events: Vec<Event>,
}

impl Record {
    /// The totals over the queries that `keep` keeps.
    pub fn seen_where(&self, keep: impl Fn(&Event) -> bool) -> Seen {
        let mut seen = Seen::default();
        for event in self.events.iter().filter(|e| keep(e)) {
            seen.sent += 1;
            match event.outcome {
                Outcome::Right => seen.answered += 1,
                Outcome::ServFail => seen.servfail += 1,
                Outcome::Wrong => seen.wrong += 1,
                Outcome::Lost => seen.lost += 1,
            }
            if event.outcome != Outcome::Lost {
                seen.slowest_us = seen.slowest_us.max(event.took.as_micros() as u64);
            }
        }
        seen
    }

    /// The totals over every query.
    pub fn seen(&self) -> Seen {
        self.seen_where(|_| true)
    }

    /// Queries sent per second, over the whole run.
    pub fn rate(&self) -> f64 {
        let seconds = (self.stopped - self.started).as_secs_f64().max(1e-3);
        self.events.len() as f64 / seconds
    }

    /// How long after `since` the first right answer came to a query sent at or after
    /// `since`: of the misses if the load had any, else of any query.
    pub fn recovery(&self, since: Instant) -> Option<Duration> {
        let misses = self.events.iter().any(|e| e.kind == Kind::Miss);
        self.events
            .iter()
            .filter(|e| e.outcome == Outcome::Right && e.sent >= since)
            .filter(|e| !misses || e.kind == Kind::Miss)
            .map(|e| e.done() - since)
            .min()
    }

    /// The queries of `kind` that did not end `expected`, with those sent before `from` or at
    /// or after `to` kept out: a short description of each (at most 10), for assertions.
    pub fn unexpected(
        &self,
        kind: Kind,
        from: Instant,
        to: Instant,
        expected: &[Outcome],
    ) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.kind == kind && e.sent >= from && e.sent < to)
            .filter(|e| !expected.contains(&e.outcome))
            .take(10)
            .map(|e| {
                format!(
                    "{:?} sent {} ms into the run: {:?} after {} ms",
                    e.kind,
                    (e.sent - self.started).as_millis(),
                    e.outcome,
                    e.took.as_millis()
                )
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    servfail: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    slowest: AtomicU64,
    /// The latest send time (ns after the start) of a miss answered right.
    right_miss_sent: AtomicU64,
}

impl Tally {
    fn seen(&self) -> Seen {
        Seen {
            sent: self.sent.load(Ordering::SeqCst),
            answered: self.answered.load(Ordering::SeqCst),
            servfail: self.servfail.load(Ordering::SeqCst),
            wrong: self.wrong.load(Ordering::SeqCst),
            lost: self.lost.load(Ordering::SeqCst),
            slowest_us: self.slowest.load(Ordering::SeqCst),
        }
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    events: Arc<Mutex<Vec<Event>>>,
    clients: Vec<JoinHandle<()>>,
}

/// What one client needs.
struct Client {
    server: SocketAddr,
    index: usize,
    kind: Kind,
    mix: Arc<Mix>,
    started: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Load {
    /// Starts [`CLIENTS`] clients asking for Unbound's fixture hosts against `server`
    /// (loopback only), about 1,000 queries a second in all.
    pub fn start(server: SocketAddr) -> Load {
        Load::with(server, Mix::unbound_hosts())
    }

    /// Starts the clients of `mix` against `server` (loopback only).
    pub fn with(server: SocketAddr, mix: Mix) -> Load {
        assert!(server.ip().is_loopback(), "test traffic stays on loopback");
        assert!(
            mix.hit_clients == 0 || !mix.hits.is_empty(),
            "hit clients need names"
        );
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let events = Arc::new(Mutex::new(Vec::new()));
        let mix = Arc::new(mix);
        let kinds = std::iter::repeat_n(Kind::Hit, mix.hit_clients)
            .chain(std::iter::repeat_n(Kind::Miss, mix.miss_clients));
        let clients = kinds
            .enumerate()
            .map(|(index, kind)| {
                let client = Client {
                    server,
                    index,
                    kind,
                    mix: Arc::clone(&mix),
                    started,
                    stop: Arc::clone(&stop),
                    tally: Arc::clone(&tally),
                    events: Arc::clone(&events),
                };
                thread::spawn(move || client.run())
            })
            .collect();
        Load {
            started,
            stop,
            tally,
            events,
            clients,
        }
    }

    /// What the clients have seen so far.
    pub fn seen(&self) -> Seen {
        self.tally.seen()
    }

    /// Whether a miss sent at or after `since` has been answered right.
    pub fn right_miss_since(&self, since: Instant) -> bool {
        let at = since.saturating_duration_since(self.started).as_nanos() as u64;
        let latest = self.tally.right_miss_sent.load(Ordering::SeqCst);
        latest > 0 && latest >= at
    }

    /// Stops the clients (each waits for its queries under way) and says what they saw.
    pub fn stop(self) -> Seen {
        self.finish().seen()
    }

    /// Stops the clients (each waits for its queries under way): every query's outcome.
    pub fn finish(self) -> Record {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.join().expect("load client");
        }
        let events =
            std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner));
        Record {
            started: self.started,
            stopped: Instant::now(),
            events,
        }
    }
}

/// A query sent and not yet answered.
struct Asked {
    id: u16,
    sent: Instant,
    /// The right address (a hit), or `None` (a miss: NXDOMAIN is right).
    right: Option<Ipv4Addr>,
    /// The name asked for (the answer's question must be it).
    name: String,
}

impl Client {
    /// Until `stop`: one query at a time, each waited for, then the pace (hits, and misses
    /// without `miss_interval`); or a miss every `miss_interval` whatever is answered. Then
    /// the queries under way are waited for (≤ the timeout).
    fn run(self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(self.server).expect("connect");
        let interval = match self.kind {
            Kind::Hit => None,
            Kind::Miss => self.mix.miss_interval,
        };
        let timeout = self.mix.timeout;
        let mut events = Vec::new();
        let mut asked: Vec<Asked> = Vec::new();
        let mut n = self.index as u32;
        let mut next_send = Instant::now();
        let mut buf = [0u8; 1500];
        loop {
            let stopping = self.stop.load(Ordering::SeqCst) || self.started.elapsed() >= MAX_RUN;
            if stopping && asked.is_empty() {
                break;
            }
            let now = Instant::now();
            let may_send = interval.is_some() || asked.is_empty();
            if !stopping && may_send && now >= next_send {
                n = n.wrapping_add(1);
                let id = (n as u16).wrapping_mul(7) ^ (self.index as u16) << 11;
                let (name, right) = match self.kind {
                    Kind::Hit => {
                        let (name, a) = &self.mix.hits[n as usize % self.mix.hits.len()];
                        (name.clone(), Some(*a))
                    }
                    Kind::Miss => (format!("m{}-{n}.{}", self.index, self.mix.miss_zone), None),
                };
                socket
                    .send(&build_query(&name, RecordType::A, id))
                    .expect("send");
                self.tally.sent.fetch_add(1, Ordering::SeqCst);
                asked.push(Asked {
                    id,
                    sent: Instant::now(),
                    right,
                    name,
                });
                if let Some(interval) = interval {
                    next_send += interval;
                }
                continue;
            }
            // Wait for an answer until the next send or the oldest query's timeout.
            let oldest = asked.iter().map(|a| a.sent + timeout).min();
            let mut until = oldest.unwrap_or(now + Duration::from_millis(50));
            if !stopping && may_send {
                until = until.min(next_send);
            }
            let wait = until
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            socket.set_read_timeout(Some(wait)).expect("timeout");
            if let Ok(len) = socket.recv(&mut buf)
                && let Ok(reply) = Message::from_vec(&buf[..len])
                && let Some(at) = asked.iter().position(|a| a.id == reply.id())
            {
                let query = asked.swap_remove(at);
                let outcome = judge(&reply, &query);
                events.push(self.count(&query, query.sent.elapsed(), outcome));
                if interval.is_none() {
                    next_send = Instant::now() + self.mix.pace;
                }
            }
            // Expired queries are lost (the next send of a one-at-a-time client at once).
            let now = Instant::now();
            while let Some(at) = asked.iter().position(|a| now >= a.sent + timeout) {
                let query = asked.swap_remove(at);
                events.push(self.count(&query, timeout, Outcome::Lost));
            }
        }
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(events);
    }

    /// Counts one query's outcome.
    fn count(&self, query: &Asked, took: Duration, outcome: Outcome) -> Event {
        let counter = match outcome {
            Outcome::Right => &self.tally.answered,
            Outcome::ServFail => &self.tally.servfail,
            Outcome::Wrong => &self.tally.wrong,
            Outcome::Lost => &self.tally.lost,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if outcome != Outcome::Lost {
            self.tally
                .slowest
                .fetch_max(took.as_micros() as u64, Ordering::SeqCst);
        }
        if outcome == Outcome::Right && self.kind == Kind::Miss {
            let at = (query.sent - self.started).as_nanos().max(1) as u64;
            self.tally.right_miss_sent.fetch_max(at, Ordering::SeqCst);
        }
        Event {
            kind: self.kind,
            sent: query.sent,
            took,
            outcome,
        }
    }
}

/// How an answer to `query` is counted: one for another question is wrong, whatever it says.
fn judge(reply: &Message, query: &Asked) -> Outcome {
    let question = reply.queries().first().map(|q| q.name().to_ascii());
    if !question.is_some_and(|name| name.eq_ignore_ascii_case(&query.name)) {
        return Outcome::Wrong;
    }
    match (query.right, reply.response_code()) {
        (Some(a), ResponseCode::NoError) => {
            let has = reply
                .answers()
                .iter()
                .any(|r| r.data() == &RData::A(a.into()));
            if has { Outcome::Right } else { Outcome::Wrong }
        }
        (None, ResponseCode::NXDomain) => Outcome::Right,
        (_, ResponseCode::ServFail) => Outcome::ServFail,
        _ => Outcome::Wrong,
    }
}
