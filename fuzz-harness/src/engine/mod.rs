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
//! [`seeds`] holds the seed inputs.

pub mod seeds;

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

/// One step of a run. [`Step::encode`] and [`decode`] are inverse, so seed inputs are written
/// as steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A well-formed query from client `client` (its byte names its address and, over TCP,
    /// its connection): ID `id`, name [`names`]`[name]`, type [`TYPES`]`[qtype]`; `flags`:
    /// bit 0 RD, 1 CD, 2 AD, 3 EDNS, 4 DO (with EDNS), 5-6 the EDNS size (0, 512, 1232,
    /// 65535), 7 class CH instead of IN.
    Query {
        tcp: bool,
        client: u8,
        id: u16,
        name: u8,
        qtype: u8,
        flags: u8,
    },
    /// Any bytes as a client query.
    Raw {
        tcp: bool,
        client: u8,
        bytes: Vec<u8>,
    },
    /// A reply to remembered upstream query `which` (modulo their number): RCODE, records and
    /// OPT from `shape`, TTL from `ttl`, then `damage`: bit 0 another ID, 1 the question's
    /// case changed (still the same question), 2 another type, 3 another name, 4 QR clear,
    /// 5 TC set, 6 delivered on another link, 7 `edits` applied ((position, byte); position
    /// 255 cuts the message to the byte's length).
    Answer {
        which: u8,
        shape: u8,
        ttl: u16,
        damage: u8,
        edits: Vec<(u8, u8)>,
    },
    /// Any bytes on the link of remembered upstream query `which` (or a made-up link when
    /// none is remembered).
    RawAnswer { which: u8, bytes: Vec<u8> },
    /// The link of remembered upstream query `which` fails (refused, reset, EOF, ...).
    LinkClosed { which: u8, error: u8 },
    /// Client `client`'s TCP connection closes.
    ClientClosed { client: u8 },
    /// Time passes: `millis` milliseconds, times 100 when `long`.
    Wait { millis: u16, long: bool },
    /// Time jumps to the earliest deadline of any shard.
    Deadline,
    /// A reload, alternating between the configuration and its variant (other upstreams,
    /// transport, cache sizes; the same listeners and server blocks).
    Reload,
    /// A hand-off of the caches: every shard exports, the chunks are damaged by `edits`
    /// (as in [`Step::Answer`]), and every shard imports them.
    Handoff { edits: Vec<(u8, u8)> },
    /// Any bytes imported as a hand-off chunk.
    Import { bytes: Vec<u8> },
}

const OPS: u8 = 14;

impl Step {
    /// Appends the step's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            let len = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&b[..len]);
        }
        fn edits(out: &mut Vec<u8>, e: &[(u8, u8)]) {
            out.push(e.len().min(255) as u8);
            for (p, v) in e.iter().take(255) {
                out.extend_from_slice(&[*p, *v]);
            }
        }
        match self {
            Step::Query {
                tcp,
                client,
                id,
                name,
                qtype,
                flags,
            } => {
                out.push(u8::from(*tcp));
                out.push(*client);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&[*name, *qtype, *flags]);
            }
            Step::Raw {
                tcp,
                client,
                bytes: b,
            } => {
                out.push(2 + u8::from(*tcp));
                out.push(*client);
                bytes(out, b);
            }
            Step::Answer {
                which,
                shape,
                ttl,
                damage,
                edits: e,
            } => {
                out.extend_from_slice(&[4, *which, *shape]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.push(*damage);
                edits(out, e);
            }
            Step::RawAnswer { which, bytes: b } => {
                out.extend_from_slice(&[5, *which]);
                bytes(out, b);
            }
            Step::LinkClosed { which, error } => out.extend_from_slice(&[6, *which, *error]),
            Step::ClientClosed { client } => out.extend_from_slice(&[7, *client]),
            Step::Wait { millis, long } => {
                out.push(if *long { 9 } else { 8 });
                out.extend_from_slice(&millis.to_be_bytes());
            }
            Step::Deadline => out.push(10),
            Step::Reload => out.push(11),
            Step::Handoff { edits: e } => {
                out.push(12);
                edits(out, e);
            }
            Step::Import { bytes: b } => {
                out.push(13);
                bytes(out, b);
            }
        }
    }
}

/// An input: the configuration (modulo [`CONFIGS`]), the group (bit 0: two shards; bit 1:
/// `--coalesce within`) and the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub config: u8,
    pub group: u8,
    pub steps: Vec<Step>,
}

impl Program {
    /// The input bytes of this program.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.config, self.group];
        for step in &self.steps {
            step.encode(&mut out);
        }
        out
    }
}

/// Reads the input; past its end every field reads as zero.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.u16());
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        self.data[start..end].to_vec()
    }

    fn edits(&mut self) -> Vec<(u8, u8)> {
        let n = self.u8();
        (0..n).map(|_| (self.u8(), self.u8())).collect()
    }
}

/// The program `data` encodes (at most [`MAX_STEPS`] steps).
pub fn decode(data: &[u8]) -> Program {
    let mut r = Reader { data, pos: 0 };
    let config = r.u8();
    let group = r.u8();
    let mut steps = Vec::new();
    while !r.done() && steps.len() < MAX_STEPS {
        let step = match r.u8() % OPS {
            op @ (0 | 1) => Step::Query {
                tcp: op == 1,
                client: r.u8(),
                id: r.u16(),
                name: r.u8(),
                qtype: r.u8(),
                flags: r.u8(),
            },
            op @ (2 | 3) => Step::Raw {
                tcp: op == 3,
                client: r.u8(),
                bytes: r.bytes(),
            },
            4 => Step::Answer {
                which: r.u8(),
                shape: r.u8(),
                ttl: r.u16(),
                damage: r.u8(),
                edits: r.edits(),
            },
            5 => Step::RawAnswer {
                which: r.u8(),
                bytes: r.bytes(),
            },
            6 => Step::LinkClosed {
                which: r.u8(),
                error: r.u8(),
            },
            7 => Step::ClientClosed { client: r.u8() },
            op @ (8 | 9) => Step::Wait {
                millis: r.u16(),
                long: op == 9,
            },
            10 => Step::Deadline,
            11 => Step::Reload,
            12 => Step::Handoff { edits: r.edits() },
            _ => Step::Import { bytes: r.bytes() },
        };
        steps.push(step);
    }
    Program {
        config,
        group,
        steps,
    }
}

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

fn upstream_addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1053 + i))
}

fn zone_wire(text: &str) -> Vec<u8> {
    name_wire(text).to_ascii_lowercase()
}

fn name_wire(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn block(zone: &str, cache: Option<CacheConfig>, forward: Option<ForwardConfig>) -> ServerConfig {
    ServerConfig {
        zone: zone_wire(zone),
        zone_text: zone.to_string(),
        cache,
        forward,
        log_errors: false,
        log_queries: None,
        loop_probe: None,
        acl: None,
        ratelimit: None,
    }
}

fn forward(from: &str, upstreams: &[usize]) -> ForwardConfig {
    ForwardConfig {
        from: zone_wire(from),
        upstreams: upstreams.to_vec(),
        ..ForwardConfig::default()
    }
}

fn cache(zone: &str, ttl: u32) -> CacheConfig {
    CacheConfig {
        zones: vec![zone_wire(zone)],
        ..CacheConfig::with_ttl(Some(ttl))
    }
}

/// Configuration `index` (modulo [`CONFIGS`]): the shapes of the engine's paths.
pub fn config(index: u8) -> Config {
    let limits = Limits {
        max_pending: MAX_PENDING,
        max_waiters: MAX_WAITERS,
        upstream_tcp_conns: 3,
        ..Limits::default()
    };
    let upstreams = |n: u16| {
        (0..n)
            .map(|i| UpstreamConfig {
                addr: upstream_addr(i),
            })
            .collect()
    };
    let listeners = |blocks: usize| {
        vec![ListenerConfig {
            addr: "127.0.0.1:53".parse().expect("address"),
            servers: (0..blocks).collect(),
        }]
    };
    match index % CONFIGS {
        // A cache forwarding to one upstream over the client's transport.
        0 => Config {
            listeners: listeners(1),
            servers: vec![block(".", Some(cache(".", 30)), Some(forward(".", &[0])))],
            upstreams: upstreams(1),
            limits,
        },
        // Two upstreams in turn over UDP (TCP after a truncated reply), serve-stale
        // `verify`, prefetch.
        1 => {
            let mut c = cache(".", 3600);
            c.serve_stale = Some(ServeStale {
                max_stale: Duration::from_secs(600),
                verify: true,
            });
            c.prefetch = Some(Prefetch {
                amount: 1,
                window: Duration::from_secs(60),
                percentage: 50,
            });
            let mut f = forward(".", &[0, 1]);
            f.prefer_udp = true;
            f.policy = Policy::RoundRobin;
            Config {
                listeners: listeners(1),
                servers: vec![block(".", Some(c), Some(f))],
                upstreams: upstreams(2),
                limits,
            }
        }
        // TCP only; a two-entry cache (eviction), serve-stale `immediate`, keepttl, `next
        // SERVFAIL`, `max_concurrent`, health checks every 100 ms that mark an upstream down
        // after one failure.
        2 => {
            let mut c = cache(".", 60);
            c.success = CacheSection {
                capacity: 2,
                max_ttl: 60,
                min_ttl: 0,
            };
            c.denial = CacheSection {
                capacity: 2,
                max_ttl: 60,
                min_ttl: 0,
            };
            c.serve_stale = Some(ServeStale {
                max_stale: Duration::from_secs(60),
                verify: false,
            });
            c.keepttl = true;
            let mut f = forward(".", &[0, 1, 2]);
            f.force_tcp = true;
            f.policy = Policy::Sequential;
            f.next = vec![shardns_wire::Rcode::SERVFAIL];
            f.max_concurrent = Some(3);
            f.max_fails = 1;
            f.health_check = Duration::from_millis(100);
            Config {
                listeners: listeners(1),
                servers: vec![block(".", Some(c), Some(f))],
                upstreams: upstreams(3),
                limits,
            }
        }
        // Two blocks: `example.` with its cache and an `except`, the root without a cache,
        // failing fast when every upstream is down.
        3 => {
            let mut f = forward("example.", &[0]);
            f.except = vec![zone_wire("sub.example.")];
            let mut root = forward(".", &[1, 2]);
            root.failfast = true;
            root.max_fails = 1;
            let mut example = block("example.", Some(cache("example.", 300)), Some(f));
            example.log_errors = true;
            Config {
                listeners: listeners(2),
                servers: vec![example, block(".", None, Some(root))],
                upstreams: upstreams(3),
                limits,
            }
        }
        // `ratelimit` (2 queries at once, 5 a second, TC=1 beyond) and `acl` (ANY blocked,
        // `other.test.` filtered, HINFO dropped) before a cache.
        _ => {
            let mut b = block(".", Some(cache(".", 30)), Some(forward(".", &[0])));
            b.ratelimit = Some(RateLimitConfig {
                burst: 2,
                table: 16,
                action: RateLimitAction::Truncate,
                ..RateLimitConfig::with_qps(5)
            });
            let policy = |action, qtypes: Option<Vec<u16>>| AclPolicy {
                action,
                qtypes,
                sources: None,
            };
            b.acl = Some(AclConfig {
                zones: vec![
                    AclZone {
                        wire: zone_wire("."),
                        text: ".".into(),
                    },
                    AclZone {
                        wire: zone_wire("other.test."),
                        text: "other.test.".into(),
                    },
                ],
                rules: vec![
                    AclRule {
                        zones: vec![1],
                        policies: vec![policy(AclAction::Filter, None)],
                    },
                    AclRule {
                        zones: vec![0],
                        policies: vec![
                            policy(AclAction::Block, Some(vec![255])),
                            policy(AclAction::Drop, Some(vec![13])),
                            policy(AclAction::Allow, None),
                        ],
                    },
                ],
            });
            Config {
                listeners: listeners(1),
                servers: vec![b],
                upstreams: upstreams(1),
                limits,
            }
        }
    }
}

/// The reload variant of `config`: the same listeners and server blocks, one upstream fewer
/// or one more, the transport options flipped, smaller caches.
pub fn variant(config: &Config) -> Config {
    let mut next = config.clone();
    let n = if config.upstreams.len() > 1 { 1 } else { 2 };
    next.upstreams = (0..n as u16)
        .map(|i| UpstreamConfig {
            addr: upstream_addr(i + 1),
        })
        .collect();
    for server in &mut next.servers {
        if let Some(f) = &mut server.forward {
            f.upstreams = (0..n).rev().collect();
            f.force_tcp = !f.force_tcp && !f.prefer_udp;
            f.prefer_udp = !f.force_tcp;
        }
        if let Some(c) = &mut server.cache {
            c.success.capacity = c.success.capacity.div_ceil(2);
            c.denial.capacity = 1;
        }
    }
    next
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

/// A query for `name` (case kept) of type `qtype`, with `flags` as in [`Step::Query`].
pub fn build_query(id: u16, name: &str, qtype: u16, flags: u8) -> Vec<u8> {
    let mut header_flags = 0u16;
    if flags & 1 != 0 {
        header_flags |= Header::RD;
    }
    if flags & 2 != 0 {
        header_flags |= Header::CD;
    }
    if flags & 4 != 0 {
        header_flags |= Header::AD;
    }
    let edns = flags & 0x18 != 0;
    let mut out = Vec::with_capacity(300);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&header_flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(&name_wire(name));
    let class: u16 = if flags & 0x80 != 0 { 3 } else { 1 };
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    if edns {
        let size = [0u16, 512, 1232, 65535][usize::from((flags >> 5) & 3)];
        let do_bit: u16 = if flags & 0x10 != 0 { 0x8000 } else { 0 };
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&do_bit.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// A reply to upstream query `query` (see [`Step::Answer`]).
pub fn build_answer(query: &[u8], shape: u8, ttl: u16, damage: u8) -> Vec<u8> {
    let Ok(message) = Message::parse(query) else {
        let mut out = query.to_vec();
        if out.len() > 2 {
            out[2] |= 0x80;
        }
        return out;
    };
    let qtype = message.question.qtype;
    let mut out = query[..message.question_end].to_vec();
    let rcode = [0u16, 3, 2, 5][usize::from(shape & 3)];
    let mut flags = Header::QR | Header::RA | (message.header.flags & Header::RD) | rcode;
    if damage & 0x10 != 0 {
        flags &= !Header::QR;
    }
    if damage & 0x20 != 0 {
        flags |= 0x0200;
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    let ttl = u32::from(ttl) * if shape & 0x20 != 0 { 3600 } else { 1 };
    let answers = (shape >> 2) & 3;
    for i in 0..answers {
        let rtype = match (shape & 0x10 != 0, qtype) {
            (true, _) => 5,
            (false, 0 | 255 | 251 | 252 | 41) => 1,
            (false, t) => t,
        };
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        let rdata: Vec<u8> = match rtype {
            1 => vec![192, 0, 2, i],
            28 => {
                let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
                a.resize(15, 0);
                a.push(i);
                a
            }
            2 | 5 | 12 => b"\x01t\x07example\x00".to_vec(),
            16 => b"\x05hello".to_vec(),
            6 => soa_rdata(ttl),
            _ => vec![i; 3],
        };
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    let authority = u8::from(shape & 0x40 != 0);
    if authority == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        let rdata = soa_rdata(ttl);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    let opt = u8::from(shape & 0x80 != 0);
    if opt == 1 {
        let do_bit: u8 = if message.dnssec_ok() { 0x80 } else { 0 };
        out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, do_bit, 0, 0, 0]);
    }
    out[6..12].copy_from_slice(&[0, answers, 0, authority, 0, opt]);
    if damage & 1 != 0 {
        let id = u16::from_be_bytes([out[0], out[1]]) ^ (1 << (ttl % 16));
        out[0..2].copy_from_slice(&id.to_be_bytes());
    }
    let name_end = message.question_end - 4;
    if damage & 2 != 0
        && let Some(b) = out[HEADER_LEN..name_end]
            .iter_mut()
            .find(|b| b.is_ascii_alphabetic())
    {
        *b ^= 0x20;
    }
    if damage & 4 != 0 {
        let t = qtype.wrapping_add(1);
        out[name_end..name_end + 2].copy_from_slice(&t.to_be_bytes());
    }
    if damage & 8 != 0 {
        if name_end > HEADER_LEN + 1 {
            out[HEADER_LEN + 1] = b'#';
        } else {
            let class = u16::from_be_bytes([out[name_end + 2], out[name_end + 3]]) ^ 2;
            out[name_end + 2..name_end + 4].copy_from_slice(&class.to_be_bytes());
        }
    }
    out
}

fn soa_rdata(minimum: u32) -> Vec<u8> {
    let mut rdata = vec![0, 0];
    for v in [1, 60, 60, 60, minimum] {
        rdata.extend_from_slice(&u32::to_be_bytes(v));
    }
    rdata
}

/// Applies `edits` ((position, byte); position 255 cuts to the byte's length) to `bytes`.
pub fn apply_edits(bytes: &mut Vec<u8>, edits: &[(u8, u8)]) {
    for &(pos, value) in edits {
        if bytes.is_empty() {
            return;
        }
        if pos == 255 {
            bytes.truncate(usize::from(value));
        } else {
            let at = usize::from(pos) % bytes.len();
            bytes[at] = value;
        }
    }
}

/// Another link to the same upstream: the other transport, or another connection.
fn other_link(link: Link, salt: u16) -> Link {
    match salt % 3 {
        0 => Link {
            protocol: match link.protocol {
                Protocol::Udp => Protocol::Tcp,
                Protocol::Tcp => Protocol::Udp,
            },
            ..link
        },
        1 => Link {
            conn: link.conn.wrapping_add(1),
            ..link
        },
        _ => Link {
            upstream: link.upstream.wrapping_add(1),
            ..link
        },
    }
}
