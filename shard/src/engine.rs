//! The sans-IO engine of one shard: decides, for each client query, whether to drop it, answer
//! it (error reply or cache hit) or forward it; matches upstream replies; retries and times
//! out. It implements [`Handler`], so drivers only move bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardns_wire::build::{error_reply, header_only_reply, reply_with_question, upstream_query};
use shardns_wire::{Header, Key, Message, Question, name_eq_lowercase, opcode, rcode};

use crate::cache::{ClientView, PacketCache, StoredResponse};
use crate::config::Config;
use crate::names::{in_zone, to_text};
use crate::upstream::{Expired, InFlight, NewPending, PendingId, TcpPool, Waiter};
use crate::{Client, Handler, Link, MAX_MESSAGE, Outcome, Protocol, ShardStats, Transmit};

/// DNS class IN.
const CLASS_IN: u16 = 1;

/// One shard's protocol state: its slice of every server block's cache, its in-flight
/// upstream queries and its upstream TCP pool.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    shard: usize,
    /// Per server block (None when the block has no `cache`).
    caches: Vec<Option<PacketCache>>,
    /// Per listener: its server blocks, most specific zone first.
    routes: Vec<Vec<usize>>,
    /// Seed of the cache-key hash, random per engine.
    seed: u64,
    /// The engine's clock for the cache: nanoseconds since `epoch`, converted once per
    /// distinct `now` (drivers pass one `now` per batch).
    epoch: Instant,
    clock: (Instant, u64),
    inflight: InFlight,
    tcp: TcpPool,
    rng: StdRng,
    outbox: VecDeque<Transmit>,
    stats: ShardStats,
    /// Scratch space reused on the miss path.
    ttl_offsets: Vec<usize>,
    scratch: Vec<u8>,
}

impl Engine {
    /// An engine for shard `shard` of `shards`, seeded from the operating system.
    pub fn new(config: Arc<Config>, shard: usize, shards: usize) -> Engine {
        Engine::with_rng(config, shard, shards, StdRng::from_os_rng())
    }

    /// An engine with a given random generator (tests use a fixed seed).
    pub fn with_rng(config: Arc<Config>, shard: usize, shards: usize, mut rng: StdRng) -> Engine {
        let now_at_start = Instant::now();
        let caches = config
            .servers
            .iter()
            .map(|s| {
                s.cache
                    .clone()
                    .map(|policy| PacketCache::new(policy, shards))
            })
            .collect();
        let routes = config
            .listeners
            .iter()
            .map(|l| {
                let mut servers = l.servers.clone();
                servers.sort_by_key(|&s| std::cmp::Reverse(config.servers[s].zone.len()));
                servers
            })
            .collect();
        let limits = config.limits;
        Engine {
            tcp: TcpPool::new(
                config.upstreams.len(),
                limits.upstream_tcp_inflight,
                limits.upstream_tcp_conns,
                limits.upstream_tcp_idle,
            ),
            config,
            shard,
            caches,
            routes,
            seed: rng.random(),
            epoch: now_at_start,
            clock: (now_at_start, 0),
            inflight: InFlight::default(),
            rng,
            outbox: VecDeque::new(),
            stats: ShardStats::default(),
            ttl_offsets: Vec::new(),
            scratch: vec![0; MAX_MESSAGE],
        }
    }

    /// `now` on the cache's clock: nanoseconds since the engine started (0 for earlier
    /// instants). Memoised, so a batch of queries converts once.
    fn nanos(&mut self, now: Instant) -> u64 {
        if now != self.clock.0 {
            let nanos = now.saturating_duration_since(self.epoch).as_nanos();
            self.clock = (now, u64::try_from(nanos).unwrap_or(u64::MAX));
        }
        self.clock.1
    }

    /// This shard's counters.
    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// The shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Queries currently in flight upstream.
    pub fn pending(&self) -> usize {
        self.inflight.len()
    }

    /// The cache of server block `server` (None without `cache`).
    pub fn cache(&self, server: usize) -> Option<&PacketCache> {
        self.caches.get(server)?.as_ref()
    }

    fn error(&mut self, rcode: u16, len: usize) -> Outcome {
        self.stats.error_replies[rcode.min(16) as usize] += 1;
        Outcome::Reply(len)
    }

    /// The server block for `qname` on `listener`: the most specific zone containing it.
    fn route(&self, listener: u16, qname: &[u8]) -> Option<usize> {
        let servers = self.routes.get(listener as usize)?;
        servers
            .iter()
            .copied()
            .find(|&s| in_zone(qname, &self.config.servers[s].zone))
    }

    fn forward(
        &mut self,
        now: Instant,
        client: Client,
        server: usize,
        message: &Message<'_>,
        hash: u64,
        out: &mut [u8],
    ) -> Outcome {
        let key = &Key::of(message);
        let config = Arc::clone(&self.config);
        let Some(forward) = config.servers[server]
            .forward
            .as_ref()
            .filter(|f| in_zone(key.qname, &f.from))
        else {
            let len = error_reply(message, rcode::REFUSED as u16, out);
            return self.error(rcode::REFUSED as u16, len);
        };
        self.stats.cache_misses += 1;
        let waiter = Waiter {
            client,
            id: message.header.id,
            flags: message.header.flags,
            qname: message.question.name.into(),
            edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
        };
        let flag_bits = key.flag_bits();
        let q = &message.question;
        // The upstream transport is part of what is shared: a TCP client must not be handed
        // the truncated reply of a query that went upstream over UDP.
        let protocol = if forward.force_tcp {
            Protocol::Tcp
        } else {
            client.protocol
        };
        let question = (q.name, q.qtype, q.qclass, flag_bits);
        if let Some(id) = self.inflight.find(server, hash, question, protocol)
            && let Some(pending) = self.inflight.get_mut(id)
        {
            pending.waiters.push(waiter);
            self.stats.coalesced += 1;
            return Outcome::Pending;
        }
        if self.inflight.len() >= config.limits.max_pending || forward.upstreams.is_empty() {
            let len = error_reply(message, rcode::REFUSED as u16, out);
            return self.error(rcode::REFUSED as u16, len);
        }
        let len = upstream_query(0, message.header.flags, q, key.dnssec_ok, out);
        let start = self.rng.random_range(0..forward.upstreams.len());
        let upstreams = (0..forward.upstreams.len())
            .map(|i| forward.upstreams[(start + i) % forward.upstreams.len()] as u16)
            .collect();
        let mut qname: Box<[u8]> = q.name.into();
        qname.make_ascii_lowercase();
        let id = self.inflight.insert(
            now,
            config.limits.query_timeout,
            NewPending {
                server,
                key_hash: hash,
                qname,
                qtype: q.qtype,
                qclass: q.qclass,
                flag_bits,
                query: out[..len].to_vec(),
                waiter,
                protocol,
                upstreams,
            },
        );
        self.send_attempt(now, id);
        Outcome::Pending
    }

    /// Sends the next attempt of `id`, or fails it with SERVFAIL when attempts are used up.
    fn send_attempt(&mut self, now: Instant, id: PendingId) {
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.get(id) else {
            return;
        };
        let Some(upstream) = pending.next_upstream() else {
            self.fail(id, rcode::SERVFAIL as u16, "all upstream attempts failed");
            return;
        };
        let link = match pending.protocol {
            Protocol::Udp => Link {
                upstream,
                protocol: Protocol::Udp,
                conn: 0,
            },
            Protocol::Tcp => self.tcp.acquire(now, upstream),
        };
        let mut wire_id = self.rng.random::<u16>();
        for _ in 0..16 {
            if !self.inflight.wire_id_in_use(link, wire_id) {
                break;
            }
            wire_id = self.rng.random::<u16>();
        }
        let timeout = self.config.limits.attempt_timeout;
        self.inflight.start_attempt(now, timeout, id, link, wire_id);
        let Some(pending) = self.inflight.get(id) else {
            return;
        };
        let mut payload = pending.query.clone();
        payload[0..2].copy_from_slice(&wire_id.to_be_bytes());
        let addr = self.config.upstreams[upstream as usize].addr;
        self.stats.upstream_queries += 1;
        self.outbox.push_back(Transmit::Query {
            link,
            addr,
            payload,
        });
    }

    /// Forgets the current attempt of `id`, returning its TCP connection to the pool.
    fn end_attempt(&mut self, now: Instant, id: PendingId) {
        if let Some(link) = self.inflight.finish_attempt(id)
            && link.protocol == Protocol::Tcp
        {
            self.tcp.release(now, link);
        }
    }

    /// Answers every waiter of `id` with `rcode` (e.g. SERVFAIL after the overall deadline).
    fn fail(&mut self, id: PendingId, rcode: u16, reason: &str) {
        let Some(pending) = self.inflight.remove(id) else {
            return;
        };
        if self.config.servers[pending.server].log_errors {
            tracing::error!(
                shard = self.shard,
                "{} {} {}: {}",
                rcode_name(rcode),
                to_text(&pending.qname),
                pending.qtype,
                reason
            );
        }
        for waiter in &pending.waiters {
            let question = Question {
                name: &waiter.qname,
                qtype: pending.qtype,
                qclass: pending.qclass,
            };
            let edns = waiter.edns.map(|(_, dnssec_ok)| (dnssec_ok, rcode >> 4));
            let len = reply_with_question(
                waiter.id,
                waiter.flags,
                &question,
                rcode,
                edns,
                &mut self.scratch,
            );
            self.stats.error_replies[rcode.min(16) as usize] += 1;
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
    }
}

impl Handler for Engine {
    fn handle_query(
        &mut self,
        now: Instant,
        client: Client,
        query: &[u8],
        out: &mut [u8],
    ) -> Outcome {
        self.stats.queries += 1;
        // One parse on the hot path; the header alone is read only when the rest is malformed.
        let parsed = Message::parse(query);
        let header = match &parsed {
            Ok(message) => message.header,
            Err(_) => match Header::parse(query) {
                Ok(header) => header,
                Err(_) => {
                    self.stats.dropped += 1;
                    return Outcome::Drop;
                }
            },
        };
        if header.qr() {
            // A response sent to us: never answer it (RFC 1035 §7.3; avoids reply loops).
            self.stats.dropped += 1;
            return Outcome::Drop;
        }
        if header.opcode() != opcode::QUERY {
            let code = rcode::NOTIMP;
            let len = match &parsed {
                Ok(message) => error_reply(message, code as u16, out),
                Err(_) => header_only_reply(query, code, out).unwrap_or(0),
            };
            return self.error(code as u16, len);
        }
        let message = match parsed {
            Ok(message) => message,
            Err(_) => {
                let len = header_only_reply(query, rcode::FORMERR, out).unwrap_or(0);
                return self.error(rcode::FORMERR as u16, len);
            }
        };
        if message.edns.as_ref().is_some_and(|e| e.version != 0) {
            let len = error_reply(&message, rcode::BADVERS, out);
            return self.error(rcode::BADVERS, len);
        }
        let route = (message.question.qclass == CLASS_IN)
            .then(|| self.route(client.listener, message.question.name))
            .flatten();
        let Some(server) = route else {
            let len = error_reply(&message, rcode::REFUSED as u16, out);
            return self.error(rcode::REFUSED as u16, len);
        };
        let key = Key::of(&message);
        let hash = key.hash_seeded(self.seed);
        let clock = self.nanos(now);
        if let Some(cache) = &self.caches[server]
            && let Some(response) = cache.lookup(clock, &key, hash)
        {
            let view = ClientView {
                id: header.id,
                flags: header.flags,
                qname: message.question.name,
                edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
                protocol: client.protocol,
            };
            let len = response.render(clock, &view, true, out);
            self.stats.cache_hits += 1;
            return Outcome::Reply(len);
        }
        self.forward(now, client, server, &message, hash, out)
    }

    fn handle_response(&mut self, now: Instant, link: Link, response: &[u8]) {
        let Ok(header) = Header::parse(response) else {
            self.stats.upstream_rejected += 1;
            return;
        };
        let Some(id) = self.inflight.by_wire(link, header.id) else {
            self.stats.upstream_rejected += 1;
            return;
        };
        let mut offsets = std::mem::take(&mut self.ttl_offsets);
        offsets.clear();
        let parsed = Message::parse_with(response, |o| offsets.push(o));
        let accepted = match (&parsed, self.inflight.get(id)) {
            (Ok(message), Some(pending)) => {
                let q = &message.question;
                message.header.qr()
                    && q.qtype == pending.qtype
                    && q.qclass == pending.qclass
                    && name_eq_lowercase(q.name, &pending.qname)
            }
            _ => false,
        };
        let Ok(message) = parsed
            .as_ref()
            .map_err(|_| ())
            .and_then(|m| if accepted { Ok(m) } else { Err(()) })
        else {
            // Wrong question or garbage: keep waiting for the real reply until the deadline.
            self.stats.upstream_rejected += 1;
            self.ttl_offsets = offsets;
            return;
        };
        self.stats.upstream_replies += 1;
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.remove(id) else {
            return;
        };
        let clock = self.nanos(now);
        let cache = self.caches[pending.server].as_mut();
        let (stored, kind) = StoredResponse::from_upstream(
            message,
            &offsets,
            cache.as_ref().map(|c| c.policy()),
            clock,
        );
        if let (Some(cache), Some(kind)) = (cache, kind) {
            let key = Key {
                qname: &pending.qname,
                qtype: pending.qtype,
                qclass: pending.qclass,
                dnssec_ok: pending.flag_bits & 1 != 0,
                checking_disabled: pending.flag_bits & 2 != 0,
            };
            let report = cache.insert(&key, pending.key_hash, kind, stored.clone());
            self.stats.cache_inserts += 1;
            self.stats.cache_evictions += report.evicted as u64;
        }
        for waiter in &pending.waiters {
            let view = ClientView {
                id: waiter.id,
                flags: waiter.flags,
                qname: &waiter.qname,
                edns: waiter.edns,
                protocol: waiter.client.protocol,
            };
            let len = stored.render(clock, &view, false, &mut self.scratch);
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
        self.ttl_offsets = offsets;
        self.inflight.tidy();
    }

    fn handle_link_closed(&mut self, now: Instant, link: Link) {
        if link.protocol == Protocol::Tcp {
            self.tcp.forget(link);
        }
        for id in self.inflight.on_link(link) {
            self.stats.upstream_link_failures += 1;
            // The connection is gone: do not hand it back to the pool.
            self.inflight.finish_attempt(id);
            self.send_attempt(now, id);
        }
        self.inflight.tidy();
    }

    fn handle_client_closed(&mut self, _now: Instant, client: Client) {
        if client.protocol == Protocol::Tcp {
            self.inflight.retain_waiters(|w| w.client != client);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(expired) = self.inflight.pop_expired(now) {
            match expired {
                Expired::Attempt(id) => {
                    self.stats.upstream_timeouts += 1;
                    self.send_attempt(now, id);
                }
                Expired::Overall(id) => {
                    self.end_attempt(now, id);
                    self.fail(id, rcode::SERVFAIL as u16, "upstream timeout");
                }
            }
        }
        for link in self.tcp.expire_idle(now) {
            self.outbox.push_back(Transmit::Close { link });
        }
        self.inflight.tidy();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.inflight.next_deadline(), self.tcp.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }
}

fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => "RCODE",
    }
}
