//! The engine target: bytes → a configuration, a group of one or two shards, and a sequence of
//! [`Step`]s, driven through the engine's public API ([`Handler`], [`Control`]) exactly as a
//! driver does: after every input the transmits and peer messages are drained (peer messages
//! delivered to their shard, as the drivers' mesh does), time only moves forward, and
//! [`Handler::handle_timeout`] is called once a shard's [`Handler::poll_timeout`] is due.
//!
//! Upstream replies are built from the queries the engine really sent (the harness keeps the
//! last [`MAX_SENT`] of them, health probes included), right or wrong: another ID, another
//! question, QR clear, TC set, records of every kind, damaged bytes, on another link.
//!
//! Invariants, asserted after every step (a failure panics, which a fuzzer reports):
//!
//! - no panic inside the engine;
//! - every reply (immediate or later) has a header with QR set, the client's ID and opcode,
//!   fits the client's UDP limit (512, or its EDNS size), and parses with shardns's own parser
//!   (`Message::parse` when it carries a question, which is the client's question byte for
//!   byte; none, else no records);
//! - a later reply goes only to a client owed one (exactly one per query left pending), and
//!   every query left pending is answered by its deadline: at the end, after a minute of
//!   virtual time, nothing is owed and every shard is idle;
//! - a client query is dropped without a reply only when RFC 1035 says so (no header, or QR
//!   set), or by `acl`/`ratelimit` in the configuration that has them;
//! - every upstream query goes to the address of the upstream its link names in the current
//!   configuration, parses, is not a response and is at most 512 bytes;
//! - the pending table stays within `max_pending`;
//! - every UDP link (a socket to itself per attempt or probe) is kept idle for the next
//!   exchanges or closed by the engine when its exchange is over: at most one per pending
//!   query, per upstream's probe and per idle socket (at most 8 per upstream) is open (the
//!   engine's count agrees), and none but probes' and idle ones once every shard is idle;
//! - after `handle_timeout(now)` the next deadline is later than `now` (a driver would spin);
//! - peer messages settle (no endless ping-pong between shards).
//!
//! - `program`: the input language ([`Step`], [`Program`], [`decode`]);
//! - `configs`: the configurations ([`config`], [`variant`]);
//! - `messages`: queries and replies, right or damaged;
//! - [`seeds`]: the seed inputs.

mod configs;
mod messages;
mod program;
pub mod seeds;

use configs::name_wire;
pub use configs::{config, variant};
use messages::other_link;
pub use messages::{apply_edits, build_answer, build_query};
pub use program::{Program, Step, decode};

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use shardns_shard::config::{
    AclAction, AclConfig, AclPolicy, AclRule, AclZone, CacheConfig, CacheSection, ForwardConfig,
    Limits, ListenerConfig, Policy, Prefetch, RateLimitAction, RateLimitConfig, ServeStale,
    ServerConfig, UpstreamConfig,
};
use shardns_shard::{
    Client, Coalesce, Config, Control, Engine, Group, Handler, Link, LinkError, MAX_MESSAGE,
    Outcome, Protocol, Transmit,
};
use shardns_wire::{HEADER_LEN, Header, Message};

/// Upstream queries the harness remembers for building replies (oldest forgotten first).
pub const MAX_SENT: usize = 64;
/// Steps decoded from one input at most (the rest of the input is ignored).
pub const MAX_STEPS: usize = 512;
/// The configurations an input can choose (its first byte, modulo this).
pub const CONFIGS: u8 = 5;
/// `max_pending` of every configuration: small, so that the bound is reached.
pub const MAX_PENDING: usize = 8;
/// `max_waiters` of every configuration.
pub const MAX_WAITERS: usize = 12;

/// Question names of [`Step::Query`] (by index, modulo the length). The last is the longest
/// name there is (255 octets in wire form).
pub fn names() -> Vec<String> {
    let label = "l".repeat(61);
    let longest = format!("{label}.{label}.{label}.{}.", "m".repeat(63));
    vec![
        "a.example.".into(),
        "A.Example.".into(),
        "b.example.".into(),
        "sub.example.".into(),
        "x.sub.example.".into(),
        "other.test.".into(),
        ".".into(),
        "1.0.0.127.in-addr.arpa.".into(),
        longest,
    ]
}

/// Query types of [`Step::Query`] (by index, modulo the length).
pub const TYPES: [u16; 14] = [1, 28, 2, 16, 6, 5, 13, 255, 12, 0, 65535, 41, 251, 252];

/// What one run did (summed by the bounded test, to show the inputs reach every path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub steps: usize,
    pub client_queries: usize,
    pub immediate_replies: usize,
    pub dropped: usize,
    pub pending: usize,
    pub upstream_queries: usize,
    pub upstream_replies: usize,
    pub later_replies: usize,
    pub links_closed_by_engine: usize,
    pub timeouts: usize,
    pub reloads: usize,
    pub imports: usize,
    /// The most queries pending on one shard at once.
    pub max_pending: usize,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, o: Report) {
        self.steps += o.steps;
        self.client_queries += o.client_queries;
        self.immediate_replies += o.immediate_replies;
        self.dropped += o.dropped;
        self.pending += o.pending;
        self.upstream_queries += o.upstream_queries;
        self.upstream_replies += o.upstream_replies;
        self.later_replies += o.later_replies;
        self.links_closed_by_engine += o.links_closed_by_engine;
        self.timeouts += o.timeouts;
        self.reloads += o.reloads;
        self.imports += o.imports;
        self.max_pending = self.max_pending.max(o.max_pending);
    }
}

/// Runs the engine on input `data` (see the module documentation); panics when an invariant
/// does not hold.
pub fn run(data: &[u8]) -> Report {
    let program = decode(data);
    let mut harness = Harness::new(program.config, program.group);
    for step in &program.steps {
        harness.step(step);
        harness.report.steps += 1;
    }
    harness.finish();
    harness.report
}

/// What a client query was, for checking its reply.
#[derive(Debug, Clone)]
struct Asked {
    id: u16,
    opcode: u8,
    /// The UDP size limit of its reply (None over TCP).
    limit: Option<usize>,
    /// Its question (name bytes as sent, type, class), when it parsed.
    question: Option<(Vec<u8>, u16, u16)>,
}

impl Asked {
    fn of(query: &[u8], protocol: Protocol) -> Option<Asked> {
        let header = Header::parse(query).ok()?;
        let parsed = Message::parse(query).ok();
        let payload = parsed
            .as_ref()
            .and_then(|m| m.edns.as_ref().map(|e| e.payload_size));
        Some(Asked {
            id: header.id,
            opcode: header.opcode(),
            limit: (protocol == Protocol::Udp)
                .then(|| payload.map_or(512, |p| usize::from(p.max(512)))),
            question: parsed.map(|m| {
                (
                    m.question.name.to_vec(),
                    m.question.qtype,
                    m.question.qclass,
                )
            }),
        })
    }

    /// Checks `reply` against what was asked (see the module documentation).
    fn check(&self, reply: &[u8], what: &str) {
        let header = Header::parse(reply)
            .unwrap_or_else(|e| panic!("{what}: reply without a header ({e:?}): {reply:02x?}"));
        assert!(header.qr(), "{what}: reply without QR: {reply:02x?}");
        assert_eq!(header.id, self.id, "{what}: reply ID is not the query's");
        assert_eq!(header.opcode(), self.opcode, "{what}: reply opcode");
        if let Some(limit) = self.limit {
            assert!(
                reply.len() <= limit,
                "{what}: UDP reply of {} bytes over the client's limit {limit}",
                reply.len()
            );
        }
        match header.qdcount {
            0 => assert_eq!(
                (header.ancount, header.nscount),
                (0, 0),
                "{what}: records without a question: {reply:02x?}"
            ),
            1 => {
                let message = Message::parse(reply).unwrap_or_else(|e| {
                    panic!("{what}: reply does not parse ({e:?}): {reply:02x?}")
                });
                if let Some((name, qtype, qclass)) = &self.question {
                    assert_eq!(
                        (
                            message.question.name,
                            message.question.qtype,
                            message.question.qclass
                        ),
                        (name.as_slice(), *qtype, *qclass),
                        "{what}: reply question is not the query's"
                    );
                }
            }
            n => panic!("{what}: reply with {n} questions"),
        }
    }
}

/// An upstream query the engine sent.
#[derive(Debug, Clone)]
struct Sent {
    shard: usize,
    link: Link,
    payload: Vec<u8>,
}

struct Harness {
    engines: Vec<Engine>,
    config: Arc<Config>,
    other: Arc<Config>,
    /// Whether `ratelimit`/`acl` may drop a query.
    policing: bool,
    now: Instant,
    out: Vec<u8>,
    sent: VecDeque<Sent>,
    /// UDP links the engines opened and have not closed (shard, link), and whether the
    /// last query on each was a health probe.
    udp_open: HashMap<(usize, Link), bool>,
    /// Replies owed, per client: what each pending query asked.
    owed: HashMap<Client, Vec<Asked>>,
    names: Vec<String>,
    report: Report,
}

impl Harness {
    fn new(config: u8, group: u8) -> Harness {
        let base = self::config(config);
        let other = Arc::new(variant(&base));
        let policing = base
            .servers
            .iter()
            .any(|s| s.acl.is_some() || s.ratelimit.is_some());
        let config = Arc::new(base);
        let shards = 1 + usize::from(group & 1);
        let coalesce = match group & 2 {
            0 => Coalesce::Across,
            _ => Coalesce::Within,
        };
        let group = Group::with_seed(shards, coalesce, 0x5eed);
        let engines = (0..shards)
            .map(|i| {
                Engine::with_rng(
                    Arc::clone(&config),
                    group,
                    i,
                    StdRng::seed_from_u64(i as u64),
                )
            })
            .collect();
        Harness {
            engines,
            config,
            other,
            policing,
            now: group.epoch + Duration::from_millis(1),
            out: vec![0; MAX_MESSAGE],
            sent: VecDeque::new(),
            udp_open: HashMap::new(),
            owed: HashMap::new(),
            names: names(),
            report: Report::default(),
        }
    }

    fn client(&self, tcp: bool, byte: u8) -> (usize, Client) {
        let shards = self.engines.len();
        if tcp {
            let conn = u32::from(byte % 8) + 1;
            let client = Client {
                listener: 0,
                protocol: Protocol::Tcp,
                peer: SocketAddr::from(([127, 0, 0, 1], 30_000 + conn as u16)),
                conn,
            };
            (conn as usize % shards, client)
        } else {
            let port = 20_000 + u16::from(byte);
            let peer = match byte & 0x80 {
                0 => SocketAddr::from(([127, 0, 0, 1], port)),
                _ => SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            };
            let client = Client {
                listener: 0,
                protocol: Protocol::Udp,
                peer,
                conn: 0,
            };
            (usize::from(byte) % shards, client)
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Query {
                tcp,
                client,
                id,
                name,
                qtype,
                flags,
            } => {
                let name = &self.names[usize::from(*name) % self.names.len()];
                let qtype = TYPES[usize::from(*qtype) % TYPES.len()];
                let bytes = build_query(*id, name, qtype, *flags);
                self.query(*tcp, *client, &bytes);
            }
            Step::Raw { tcp, client, bytes } => self.query(*tcp, *client, bytes),
            Step::Answer {
                which,
                shape,
                ttl,
                damage,
                edits,
            } => {
                let Some(index) = self.pick(*which) else {
                    return;
                };
                let sent = self.sent[index].clone();
                let mut bytes = build_answer(&sent.payload, *shape, *ttl, *damage);
                if damage & 0x80 != 0 {
                    apply_edits(&mut bytes, edits);
                }
                let mut link = sent.link;
                if damage & 0x40 != 0 {
                    link = other_link(link, *ttl);
                }
                if *damage & 0xfd == 0 {
                    // A right answer (a case change is still the question): the query is done.
                    self.sent.remove(index);
                }
                self.respond(sent.shard, link, &bytes);
            }
            Step::RawAnswer { which, bytes } => {
                let (shard, link) = match self.pick(*which) {
                    Some(index) => (self.sent[index].shard, self.sent[index].link),
                    None => (
                        usize::from(*which) % self.engines.len(),
                        Link {
                            upstream: u16::from(*which % 4),
                            protocol: if which & 0x80 != 0 {
                                Protocol::Tcp
                            } else {
                                Protocol::Udp
                            },
                            conn: u32::from((which >> 3) & 3),
                        },
                    ),
                };
                self.respond(shard, link, bytes);
            }
            Step::LinkClosed { which, error } => {
                let Some(index) = self.pick(*which) else {
                    return;
                };
                let Sent { shard, link, .. } = self.sent[index].clone();
                let kinds = [
                    ErrorKind::ConnectionRefused,
                    ErrorKind::ConnectionReset,
                    ErrorKind::UnexpectedEof,
                    ErrorKind::BrokenPipe,
                    ErrorKind::TimedOut,
                    ErrorKind::Other,
                ];
                let kind = kinds[usize::from(*error) % kinds.len()];
                let error = match error / 64 {
                    0 => LinkError::dial(kind),
                    1 => LinkError::read(kind),
                    _ => LinkError::write(kind),
                };
                // The driver forgets a failed link: nothing more arrives on it.
                self.sent.retain(|s| !(s.shard == shard && s.link == link));
                self.engines[shard].handle_link_closed(self.now, link, error);
                self.settle();
            }
            Step::ClientClosed { client } => {
                let (shard, client) = self.client(true, *client);
                self.owed.remove(&client);
                self.engines[shard].handle_client_closed(self.now, client);
                self.settle();
            }
            Step::Wait { millis, long } => {
                let millis = u64::from(*millis) * if *long { 100 } else { 1 };
                self.now += Duration::from_millis(millis);
                self.fire();
            }
            Step::Deadline => {
                if let Some(at) = self.engines.iter().filter_map(|e| e.poll_timeout()).min() {
                    self.now = self.now.max(at);
                }
                self.fire();
            }
            Step::Reload => {
                std::mem::swap(&mut self.config, &mut self.other);
                for engine in &mut self.engines {
                    engine.handle_control(self.now, Control::Reconfigure(Arc::clone(&self.config)));
                }
                self.report.reloads += 1;
                self.settle();
            }
            Step::Handoff { edits } => {
                let mut chunks = Vec::new();
                for engine in &mut self.engines {
                    chunks.extend(engine.export_cache(self.now));
                }
                for mut chunk in chunks {
                    apply_edits(&mut chunk, edits);
                    self.import(&chunk);
                }
            }
            Step::Import { bytes } => self.import(bytes),
        }
        let upstreams = self.config.upstreams.len().max(self.other.upstreams.len());
        for (shard, engine) in self.engines.iter().enumerate() {
            let pending = engine.pending();
            assert!(
                pending <= MAX_PENDING,
                "{pending} queries pending, over max_pending {MAX_PENDING}"
            );
            self.report.max_pending = self.report.max_pending.max(pending);
            let open = self.udp_open.keys().filter(|(s, _)| *s == shard).count();
            assert_eq!(
                open,
                engine.upstream_udp_sockets(),
                "shard {shard}: UDP links open as the driver sees them and as the engine counts"
            );
            let idle = engine.idle_upstream_udp_sockets();
            assert!(
                idle <= 8 * upstreams.max(1),
                "shard {shard}: {idle} idle UDP links for {upstreams} upstreams"
            );
            assert!(
                open <= pending + upstreams + idle,
                "shard {shard}: {open} UDP links open for {pending} pending queries and {idle} idle"
            );
        }
    }

    fn pick(&self, which: u8) -> Option<usize> {
        (!self.sent.is_empty()).then(|| usize::from(which) % self.sent.len())
    }

    fn import(&mut self, chunk: &[u8]) {
        let chunk: Arc<[u8]> = chunk.into();
        for engine in &mut self.engines {
            engine.handle_control(self.now, Control::ImportCache(Arc::clone(&chunk)));
        }
        self.report.imports += 1;
        self.settle();
    }

    fn query(&mut self, tcp: bool, byte: u8, bytes: &[u8]) {
        let (shard, client) = self.client(tcp, byte);
        let asked = Asked::of(bytes, client.protocol);
        self.report.client_queries += 1;
        let outcome = self.engines[shard].handle_query(self.now, client, bytes, &mut self.out);
        match outcome {
            Outcome::Reply(len) => {
                self.report.immediate_replies += 1;
                assert!(len <= self.out.len(), "reply length {len} past the buffer");
                let asked = asked
                    .unwrap_or_else(|| panic!("a reply to a query without a header: {bytes:02x?}"));
                asked.check(&self.out[..len], "immediate reply");
            }
            Outcome::Drop => {
                self.report.dropped += 1;
                let allowed =
                    self.policing || Header::parse(bytes).map_or(true, |header| header.qr());
                assert!(allowed, "a query dropped without a reason: {bytes:02x?}");
            }
            Outcome::Pending => {
                self.report.pending += 1;
                let asked = asked.unwrap_or_else(|| {
                    panic!("a query without a header left pending: {bytes:02x?}")
                });
                assert!(
                    asked.question.is_some(),
                    "a query that does not parse left pending: {bytes:02x?}"
                );
                self.owed.entry(client).or_default().push(asked);
            }
        }
        self.settle();
    }

    fn respond(&mut self, shard: usize, link: Link, bytes: &[u8]) {
        self.report.upstream_replies += 1;
        self.engines[shard].handle_response(self.now, link, bytes);
        self.settle();
    }

    /// Calls `handle_timeout(now)` on every shard whose deadline is due, as a driver does
    /// after its wait, until none is.
    fn fire(&mut self) {
        for _ in 0..1_000 {
            let mut fired = false;
            for shard in 0..self.engines.len() {
                let engine = &mut self.engines[shard];
                if engine.poll_timeout().is_some_and(|t| t <= self.now) {
                    engine.handle_timeout(self.now);
                    self.report.timeouts += 1;
                    fired = true;
                    if let Some(next) = engine.poll_timeout() {
                        assert!(
                            next > self.now,
                            "after handle_timeout(now) the next deadline is not later than now"
                        );
                    }
                    self.settle();
                }
            }
            if !fired {
                return;
            }
        }
        panic!("deadlines keep falling due at one instant");
    }

    /// Drains every shard's transmits and peer messages, delivering the peer messages, until
    /// all are quiet.
    fn settle(&mut self) {
        for _ in 0..1_000 {
            let mut peers = Vec::new();
            for shard in 0..self.engines.len() {
                while let Some(t) = self.engines[shard].poll_transmit() {
                    self.transmit(shard, t);
                }
                while let Some((to, message)) = self.engines[shard].poll_peer() {
                    assert!(to < self.engines.len(), "peer message to shard {to}");
                    assert_ne!(to, shard, "peer message to itself");
                    peers.push((to, message));
                }
            }
            if peers.is_empty() {
                return;
            }
            for (to, message) in peers {
                self.engines[to].handle_peer(self.now, message);
            }
        }
        panic!("peer messages never settle");
    }

    fn transmit(&mut self, shard: usize, t: Transmit) {
        match t {
            Transmit::Reply { client, payload } => {
                self.report.later_replies += 1;
                let id = Header::parse(&payload)
                    .unwrap_or_else(|e| panic!("later reply without a header ({e:?})"))
                    .id;
                let owed = self.owed.get_mut(&client).unwrap_or_else(|| {
                    panic!("a reply to {client:?}, who is owed none: {payload:02x?}")
                });
                // A client may have several queries with one ID pending: the reply is for
                // the one with its question, if any.
                let question = Message::parse(&payload).ok().map(|m| {
                    (
                        m.question.name.to_vec(),
                        m.question.qtype,
                        m.question.qclass,
                    )
                });
                let index = owed
                    .iter()
                    .position(|a| a.id == id && question.is_some() && a.question == question)
                    .or_else(|| owed.iter().position(|a| a.id == id))
                    .unwrap_or_else(|| {
                        panic!("a reply to {client:?} with ID {id}, which it is not owed")
                    });
                let asked = owed.swap_remove(index);
                if owed.is_empty() {
                    self.owed.remove(&client);
                }
                asked.check(&payload, "later reply");
            }
            Transmit::Query {
                link,
                addr,
                payload,
            } => {
                self.report.upstream_queries += 1;
                let upstream = self
                    .config
                    .upstreams
                    .get(usize::from(link.upstream))
                    .unwrap_or_else(|| panic!("a query to upstream {} of none", link.upstream));
                assert_eq!(addr, upstream.addr, "a query to the wrong address");
                assert!(
                    payload.len() <= 512,
                    "an upstream query of {} bytes",
                    payload.len()
                );
                let message = Message::parse(&payload)
                    .unwrap_or_else(|e| panic!("upstream query does not parse ({e:?})"));
                assert!(!message.header.qr(), "an upstream query with QR set");
                if link.protocol == Protocol::Udp {
                    // Health probes ask `. NS` (every configuration here probes the root).
                    let probe = message.question.name == b"\0" && message.question.qtype == 2;
                    self.udp_open.insert((shard, link), probe);
                }
                self.sent.push_back(Sent {
                    shard,
                    link,
                    payload,
                });
                if self.sent.len() > MAX_SENT {
                    self.sent.pop_front();
                }
            }
            Transmit::Close { link } => {
                self.report.links_closed_by_engine += 1;
                self.sent.retain(|s| !(s.shard == shard && s.link == link));
                if link.protocol == Protocol::Udp {
                    assert!(
                        self.udp_open.remove(&(shard, link)).is_some(),
                        "shard {shard} closed UDP link {link:?}, which is not open"
                    );
                }
            }
        }
    }

    /// Up to a minute of virtual time, every deadline on the way fired at its instant, until
    /// every query is answered and nothing is pending (the rest of the minute is skipped).
    fn finish(&mut self) {
        let end = self.now + Duration::from_secs(60);
        for _ in 0..100_000 {
            if self.owed.is_empty() && self.engines.iter().all(|e| e.pending() == 0) {
                break;
            }
            let next = self
                .engines
                .iter()
                .filter_map(|e| e.poll_timeout())
                .filter(|&t| t <= end)
                .min();
            let Some(at) = next else { break };
            self.now = self.now.max(at);
            self.fire();
        }
        self.now = end;
        self.fire();
        assert!(
            self.owed.is_empty(),
            "queries left unanswered a minute later: {:?}",
            self.owed
        );
        for (shard, engine) in self.engines.iter().enumerate() {
            assert_eq!(engine.pending(), 0, "shard {shard}: queries still pending");
            assert!(engine.is_idle(), "shard {shard} is not idle");
        }
        // What is left open is a probe's, or idle, kept for the next exchanges.
        let idle: usize = self
            .engines
            .iter()
            .map(|engine| engine.idle_upstream_udp_sockets())
            .sum();
        let left: Vec<_> = self.udp_open.iter().filter(|(_, probe)| !**probe).collect();
        assert!(
            left.len() <= idle,
            "UDP links left open with nothing pending ({idle} idle): {left:?}"
        );
    }
}
