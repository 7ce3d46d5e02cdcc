//! The one test rig for the engine: N engines of one group (one for most tests) on a virtual
//! clock, with peer messages delivered between them, upstream queries and health probes
//! collected for the test to answer, and client replies collected in order. Time advances in
//! one way, [`Rig::wait`], which fires every timer that falls due on the way, in order. No
//! sockets, no sleeping.

#![allow(dead_code)]

pub mod logs;
pub mod scenario;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;
use shardns_shard::config::{
    CacheConfig, ForwardConfig, Limits, ListenerConfig, ServerConfig, UpstreamConfig,
};
use shardns_shard::{
    Client, Coalesce, Config, Engine, Group, Handler, Link, LinkError, MAX_MESSAGE, Outcome,
    Protocol, Transmit,
};

pub fn wire_name(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend(label.to_ascii_lowercase().bytes());
    }
    out.push(0);
    out
}

/// One root server block with `cache`, forwarding everything to one upstream over UDP.
pub fn config_with(cache: Option<CacheConfig>) -> Config {
    Config {
        listeners: vec![ListenerConfig {
            addr: "127.0.0.1:5353".parse().unwrap(),
            servers: vec![0],
        }],
        servers: vec![ServerConfig {
            zone: wire_name("."),
            zone_text: ".".to_string(),
            cache,
            forward: Some(ForwardConfig {
                from: wire_name("."),
                upstreams: vec![0],
                force_tcp: false,
                ..ForwardConfig::default()
            }),
            log_errors: false,
            log_queries: None,
            loop_probe: None,
            acl: None,
            ratelimit: None,
            fastpath: None,
        }],
        upstreams: vec![UpstreamConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1053)),
        }],
        limits: Limits::default(),
    }
}

/// One root block with `cache` (if any) forwarding to `upstreams` upstreams
/// (127.0.0.1:1053, :1054, ...) with `forward`'s options.
pub fn config_forward(
    cache: Option<CacheConfig>,
    upstreams: usize,
    forward: ForwardConfig,
) -> Config {
    let mut config = config_with(cache);
    config.upstreams = (0..upstreams)
        .map(|i| UpstreamConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1053 + i as u16)),
        })
        .collect();
    config.servers[0].forward = Some(ForwardConfig {
        upstreams: (0..upstreams).collect(),
        ..forward
    });
    config
}

/// Options of a client query.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
    pub authentic_data: bool,
    pub edns: bool,
}

pub fn query(id: u16, name: &str, rtype: RecordType, ask: Ask) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .set_checking_disabled(ask.checking_disabled)
        .set_authentic_data(ask.authentic_data)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if ask.edns || ask.dnssec_ok {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(ask.dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// What the upstream answers.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub rcode: Option<ResponseCode>,
    /// A records (address, TTL).
    pub answers: Vec<([u8; 4], u32)>,
    /// An SOA in authority with this TTL.
    pub soa: Option<u32>,
    pub truncated: bool,
    pub authentic_data: bool,
}

pub fn reply(to: &Message, up: &Upstream) -> Vec<u8> {
    let mut m = Message::new();
    let q = to.queries()[0].clone();
    m.set_id(to.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .set_truncated(up.truncated)
        .set_authentic_data(up.authentic_data)
        .set_response_code(up.rcode.unwrap_or(ResponseCode::NoError));
    for (a, ttl) in &up.answers {
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            *ttl,
            RData::A(A::new(a[0], a[1], a[2], a[3])),
        ));
    }
    if let Some(ttl) = up.soa {
        let zone = Name::from_ascii("example.").unwrap();
        let soa = SOA::new(
            zone.clone(),
            Name::from_ascii("hostmaster.example.").unwrap(),
            1,
            60,
            60,
            60,
            30,
        );
        m.add_name_server(Record::from_rdata(zone, ttl, RData::SOA(soa)));
    }
    m.add_query(q);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// TTLs of every answer and authority record.
pub fn ttls(m: &Message) -> Vec<u32> {
    m.answers()
        .iter()
        .chain(m.name_servers())
        .map(|r| r.ttl())
        .collect()
}

pub fn client(port: u16) -> Client {
    Client {
        listener: 0,
        protocol: Protocol::Udp,
        peer: SocketAddr::from(([127, 0, 0, 1], port)),
        conn: 0,
    }
}

/// An upstream query (or health probe) waiting for the test to answer it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub shard: usize,
    pub link: Link,
    pub addr: SocketAddr,
    /// The query as sent.
    pub payload: Vec<u8>,
}

impl Sent {
    /// The query, parsed by hickory.
    pub fn query(&self) -> Message {
        Message::from_vec(&self.payload).expect("the engine's upstream query parses")
    }
}

/// A reply to a client, in the order the engine sent it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub shard: usize,
    pub client: Client,
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The reply, parsed by hickory.
    pub fn message(&self) -> Message {
        Message::from_vec(&self.bytes).expect("the engine's reply parses")
    }
}

/// Whether `payload` is a health probe (`. IN NS`), by shardns's own parser (so that any
/// bytes will do).
fn is_probe(payload: &[u8]) -> bool {
    shardns_wire::Message::parse(payload)
        .is_ok_and(|m| m.question.name == b"\0" && m.question.qtype == 2)
}

/// The engines of one group on a virtual clock (see the module documentation).
pub struct Rig {
    pub engines: Vec<Engine>,
    pub now: Instant,
    out: Vec<u8>,
    /// Upstream queries not yet answered, oldest first (health probes apart).
    pub upstream: VecDeque<Sent>,
    /// Every upstream query ever sent (health probes apart).
    pub upstream_total: usize,
    /// Health probes (`. IN NS`) not yet answered or lost, oldest first.
    pub probes: VecDeque<Sent>,
    /// Client replies not yet looked at, in order.
    pub replies: VecDeque<Reply>,
    /// Upstream links the engines closed.
    pub closed: Vec<Link>,
    /// Peer messages to this shard are lost (a shard that stopped).
    pub unreachable: Option<usize>,
    next_id: u16,
}

impl Rig {
    /// One engine.
    pub fn one(config: Config) -> Rig {
        Rig::new(1, config)
    }

    /// `shards` engines of one group; misses go to the key's owner shard.
    pub fn new(shards: usize, config: Config) -> Rig {
        Rig::with_mode(shards, config, Coalesce::Across)
    }

    pub fn with_mode(shards: usize, config: Config, coalesce: Coalesce) -> Rig {
        let config = Arc::new(config);
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
        Rig {
            engines,
            now: group.epoch + Duration::from_millis(1),
            out: vec![0; MAX_MESSAGE],
            upstream: VecDeque::new(),
            upstream_total: 0,
            probes: VecDeque::new(),
            replies: VecDeque::new(),
            unreachable: None,
            closed: Vec::new(),
            next_id: 1,
        }
    }

    /// A client query on `shard` with a fresh ID; an immediate reply is queued like a
    /// later one.
    pub fn ask_on(&mut self, shard: usize, name: &str, rtype: RecordType, ask: Ask) -> Outcome {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = query(id, name, rtype, ask);
        let client = client(10_000 + id);
        let outcome = self.send_on(shard, client, &bytes);
        if let Outcome::Reply(_) = outcome {
            let reply = self.replies.back().expect("queued").message();
            assert_eq!(reply.id(), id, "reply ID is the client's");
        }
        outcome
    }

    /// Query bytes from `client` on `shard`; an immediate reply is queued like a later one.
    pub fn send_on(&mut self, shard: usize, client: Client, bytes: &[u8]) -> Outcome {
        let outcome = self.engines[shard].handle_query(self.now, client, bytes, &mut self.out);
        if let Outcome::Reply(len) = outcome {
            self.replies.push_back(Reply {
                shard,
                client,
                bytes: self.out[..len].to_vec(),
            });
        }
        self.settle();
        outcome
    }

    /// Query bytes from `client` on shard 0: the immediate reply, if any, parsed (not
    /// queued).
    pub fn query(&mut self, client: Client, bytes: &[u8]) -> Option<Message> {
        match self.outcome(client, bytes) {
            Outcome::Reply(len) => {
                Some(Message::from_vec(&self.out[..len]).expect("engine reply parses"))
            }
            Outcome::Drop | Outcome::Pending => None,
        }
    }

    /// Query bytes from `client` on shard 0: what the engine did (an immediate reply stays
    /// in the output buffer, not queued).
    pub fn outcome(&mut self, client: Client, bytes: &[u8]) -> Outcome {
        let outcome = self.engines[0].handle_query(self.now, client, bytes, &mut self.out);
        self.settle();
        outcome
    }

    /// Delivers every pending transmit and peer message until all engines are quiet.
    pub fn settle(&mut self) {
        for _ in 0..1_000 {
            let mut peers = Vec::new();
            for (shard, engine) in self.engines.iter_mut().enumerate() {
                while let Some(t) = engine.poll_transmit() {
                    match t {
                        Transmit::Query {
                            link,
                            addr,
                            payload,
                        } => {
                            let probe = is_probe(&payload);
                            let sent = Sent {
                                shard,
                                link,
                                addr,
                                payload,
                            };
                            if probe {
                                self.probes.push_back(sent);
                            } else {
                                self.upstream_total += 1;
                                self.upstream.push_back(sent);
                            }
                        }
                        Transmit::Reply { client, payload } => {
                            self.replies.push_back(Reply {
                                shard,
                                client,
                                bytes: payload,
                            });
                        }
                        Transmit::Close { link } => self.closed.push(link),
                    }
                }
                while let Some((to, message)) = engine.poll_peer() {
                    peers.push((to, message));
                }
            }
            if peers.is_empty() {
                return;
            }
            for (to, message) in peers {
                if self.unreachable != Some(to) {
                    self.engines[to].handle_peer(self.now, message);
                }
            }
        }
        panic!("peer messages did not settle");
    }

    /// The one upstream query sent since the last look, taken: its link, address and query.
    pub fn upstream_query(&mut self) -> (Link, SocketAddr, Message) {
        assert_eq!(
            self.upstream.len(),
            1,
            "expected one upstream query, got {:?}",
            self.upstream
        );
        let sent = self.upstream.pop_front().expect("one");
        (sent.link, sent.addr, sent.query())
    }

    /// `bytes` arrive on `link` of `shard`.
    pub fn respond_on(&mut self, shard: usize, link: Link, bytes: &[u8]) {
        self.engines[shard].handle_response(self.now, link, bytes);
        self.settle();
    }

    /// `bytes` arrive on `link` of shard 0.
    pub fn respond(&mut self, link: Link, bytes: &[u8]) {
        self.respond_on(0, link, bytes);
    }

    /// `link` of shard 0 closes: the connection was refused.
    pub fn close_link(&mut self, link: Link) {
        self.close_link_with(link, LinkError::dial(std::io::ErrorKind::ConnectionRefused));
    }

    /// `link` of shard 0 fails for the reason `error`.
    pub fn close_link_with(&mut self, link: Link, error: LinkError) {
        self.engines[0].handle_link_closed(self.now, link, error);
        self.settle();
    }

    /// Answers the oldest unanswered upstream query.
    pub fn answer(&mut self, up: &Upstream) {
        let sent = self
            .upstream
            .pop_front()
            .expect("an upstream query to answer");
        let bytes = reply(&sent.query(), up);
        self.respond_on(sent.shard, sent.link, &bytes);
    }

    /// Answers the oldest health probe (any reply means healthy).
    pub fn answer_probe(&mut self) {
        let sent = self.probes.pop_front().expect("a probe to answer");
        let bytes = reply(&sent.query(), &Upstream::default());
        self.respond_on(sent.shard, sent.link, &bytes);
    }

    /// The oldest unanswered upstream query's connection is refused or reset.
    pub fn refuse(&mut self) -> Sent {
        let sent = self
            .upstream
            .pop_front()
            .expect("an upstream query to refuse");
        let refused = LinkError::dial(std::io::ErrorKind::ConnectionRefused);
        self.engines[sent.shard].handle_link_closed(self.now, sent.link, refused);
        self.settle();
        sent
    }

    /// The oldest unanswered upstream query is lost.
    pub fn lose(&mut self) -> Sent {
        self.upstream
            .pop_front()
            .expect("an upstream query to lose")
    }

    /// Time passes by `by`: every timer that falls due on the way fires at its deadline, in
    /// order, on every engine.
    pub fn wait(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..100_000 {
            let next = self
                .engines
                .iter()
                .filter_map(|e| e.poll_timeout())
                .filter(|&t| t <= end)
                .min();
            let Some(at) = next else { break };
            self.now = at.max(self.now);
            for engine in &mut self.engines {
                if engine.poll_timeout().is_some_and(|t| t <= self.now) {
                    engine.handle_timeout(self.now);
                }
            }
            self.settle();
        }
        self.now = end;
    }

    /// The next client reply, parsed.
    pub fn next_reply(&mut self) -> Message {
        self.replies.pop_front().expect("a client reply").message()
    }

    /// Every client reply not yet looked at, parsed, with its client.
    pub fn take_replies(&mut self) -> Vec<(Client, Message)> {
        self.replies
            .drain(..)
            .map(|r| (r.client, r.message()))
            .collect()
    }

    pub fn upstream_sent(&self) -> usize {
        self.upstream_total
    }

    /// The shard that owns `name` (type A, no DO/CD) in this rig's group.
    pub fn owner_of(&self, name: &str) -> usize {
        let qname = wire_name(name);
        let key = shardns_wire::Key {
            qname: &qname,
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
            checking_disabled: false,
        };
        let group = Group::with_seed(self.engines.len(), Coalesce::Across, 0x5eed);
        group.owner(key.hash_seeded(0x5eed))
    }
}
