//! The sans-IO engine of one shard: decides, for each client query, whether to drop it, answer
//! it (error reply, fresh or stale cache hit) or resolve it; resolves misses through the key's
//! owner shard (one upstream query per key for the whole process); matches upstream replies;
//! retries and times out. It implements [`Handler`], so drivers only move bytes.

mod miss;
mod probe;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardns_wire::build::{error_reply, header_only_reply};
use shardns_wire::{Header, Key, Message, name_eq_lowercase, opcode, rcode};

use crate::cache::{ClientView, Lookup, PacketCache, StoredResponse};
use crate::config::Config;
use crate::health::Health;
use crate::names::in_zone;
use crate::peer::{PeerMessage, PeerQuestion};
use crate::upstream::{Expired, InFlight, TcpPool, Waiter};
use crate::{Client, Handler, Link, MAX_MESSAGE, Outcome, Protocol, ShardStats, Transmit};

use miss::{Delivery, Requester};

/// DNS class IN.
const CLASS_IN: u16 = 1;

/// How much longer than the overall query timeout a shard waits for the key's owner before
/// answering SERVFAIL itself (the owner answers within the timeout unless it is gone).
const PEER_GRACE: Duration = Duration::from_secs(1);

/// In `verify` serve-stale mode, how long a client waits for the upstream before it gets the
/// stale answer (RFC 8767 §5 "stale-answer-client-timeout", recommended 1.8 s); the upstream
/// query goes on and refreshes the cache. CoreDNS makes the client wait for the whole upstream
/// timeout.
const STALE_CLIENT_TIMEOUT: Duration = Duration::from_millis(1800);

/// What the cache did with a client query.
enum CacheAnswer {
    /// A reply of this length is in the output buffer.
    Reply(usize),
    /// Nothing usable: resolve it.
    Miss,
    /// Only a stale entry, in `verify` mode: resolve it, and serve the stale entry if the
    /// upstream fails or is slow.
    StaleVerify,
}

/// Who resolves a cache miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coalesce {
    /// The key's owner shard, for misses on every shard: one upstream query per key.
    #[default]
    Across,
    /// Each shard for its own misses (one upstream query per key per shard).
    Within,
}

/// What the shards of one process share: their number, the cache-key hash seed (which also
/// picks a key's owner) and the clock epoch (so entry timestamps mean the same everywhere).
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub shards: usize,
    pub seed: u64,
    pub epoch: Instant,
    pub coalesce: Coalesce,
}

impl Group {
    /// A group of `shards` with a random seed and the epoch now.
    pub fn new(shards: usize, coalesce: Coalesce) -> Group {
        Group::with_seed(shards, coalesce, rand::rng().random())
    }

    /// A group with a given seed (tests).
    pub fn with_seed(shards: usize, coalesce: Coalesce, seed: u64) -> Group {
        Group {
            shards: shards.max(1),
            seed,
            epoch: Instant::now(),
            coalesce,
        }
    }

    /// The shard that resolves misses for a key of hash `hash`.
    pub fn owner(&self, hash: u64) -> usize {
        (((hash >> 32) * self.shards as u64) >> 32) as usize
    }
}

/// One shard's protocol state: its slice of every server block's cache, its in-flight
/// upstream queries and its upstream TCP pool.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    group: Group,
    shard: usize,
    /// Per server block (None when the block has no `cache`).
    caches: Vec<Option<PacketCache>>,
    /// Per listener: its server blocks, most specific zone first.
    routes: Vec<Vec<usize>>,
    /// The clock for the cache: nanoseconds since the group's epoch, converted once per
    /// distinct `now` (drivers pass one `now` per batch).
    clock: (Instant, u64),
    inflight: InFlight,
    tcp: TcpPool,
    health: Health,
    /// Per upstream: whether its UDP socket has been used (for the connection-cache metric).
    udp_used: Vec<bool>,
    rng: StdRng,
    outbox: VecDeque<Transmit>,
    stats: Arc<ShardStats>,
    /// Scratch space reused on the miss path.
    ttl_offsets: Vec<usize>,
    scratch: Vec<u8>,
    /// `verify` resolutions whose clients get the stale entry at the deadline.
    verify_timers: VecDeque<(Instant, PeerQuestion)>,
}

impl Engine {
    /// The engine of shard `shard` of `group`, seeded from the operating system.
    pub fn new(config: Arc<Config>, group: Group, shard: usize) -> Engine {
        Engine::with_rng(config, group, shard, StdRng::from_os_rng())
    }

    /// An engine with a given random generator (tests use a fixed seed).
    pub fn with_rng(config: Arc<Config>, group: Group, shard: usize, rng: StdRng) -> Engine {
        let limits = config.limits;
        let hold = limits.query_timeout + PEER_GRACE;
        let caches = config
            .servers
            .iter()
            .map(|s| {
                s.cache
                    .clone()
                    .map(|policy| PacketCache::new(policy, &s.zone, group.shards, hold))
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
        let stats = Arc::new(ShardStats::new(
            config.servers.len(),
            config.upstreams.len(),
        ));
        Engine {
            tcp: tcp_pool(&config),
            health: Health::new(&config),
            udp_used: vec![false; config.upstreams.len()],
            config,
            group,
            shard,
            caches,
            routes,
            clock: (group.epoch, 0),
            inflight: InFlight::default(),
            rng,
            outbox: VecDeque::new(),
            stats,
            ttl_offsets: Vec::new(),
            scratch: vec![0; MAX_MESSAGE],
            verify_timers: VecDeque::new(),
        }
    }

    /// Counts into `stats` (made by the process, so a metrics scraper holds it too) instead
    /// of the engine's own counters. Ignored unless it has one slot per server block and a
    /// slot for every upstream (more is room for upstreams a reload adds).
    pub fn with_stats(mut self, stats: Arc<ShardStats>) -> Engine {
        if stats.servers.len() == self.config.servers.len()
            && stats.upstreams.len() >= self.config.upstreams.len()
        {
            self.stats = stats;
        }
        self
    }

    /// `now` on the cache's clock: nanoseconds since the group's epoch (0 for earlier
    /// instants). Memoised, so a batch of queries converts once.
    fn nanos(&mut self, now: Instant) -> u64 {
        nanos(&mut self.clock, self.group.epoch, now)
    }

    /// This shard's counters (shared with a metrics scraper).
    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// The shard's index.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Queries currently in flight (upstream, or waiting for their owner shard).
    pub fn pending(&self) -> usize {
        self.inflight.len()
    }

    /// The cache of server block `server` (None without `cache`).
    pub fn cache(&self, server: usize) -> Option<&PacketCache> {
        self.caches.get(server)?.as_ref()
    }

    fn error(&mut self, rcode: u16, len: usize) -> Outcome {
        self.stats.error_replies[rcode.min(16) as usize].inc();
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

    /// Whether server block `server` caches `qname` (its `cache` exists and its ZONES cover
    /// the name).
    fn caches_name(&self, server: usize, qname: &[u8]) -> bool {
        matches!(self.caches.get(server), Some(Some(cache)) if cache.covers(qname))
    }

    /// Answers from the cache when it can: a fresh entry, or a stale one in `immediate`
    /// serve-stale mode (starting a prefetch or refresh when due).
    fn answer_from_cache(
        &mut self,
        now: Instant,
        server: usize,
        key: &Key<'_>,
        hash: u64,
        view: &ClientView<'_>,
        out: &mut [u8],
    ) -> CacheAnswer {
        let Some(cache) = self.caches[server].as_mut() else {
            return CacheAnswer::Miss;
        };
        if !cache.covers(key.qname) {
            return CacheAnswer::Miss;
        }
        let clock = nanos(&mut self.clock, self.group.epoch, now);
        let stats = &self.stats.servers[server];
        let (len, refresh) = match cache.lookup(clock, key, hash) {
            Lookup::Fresh {
                response,
                kind,
                prefetch,
                remaining,
            } => {
                let len = response.render(response.fresh_ttl_of(remaining), view, true, out);
                stats.hits[kind as usize].inc();
                if prefetch {
                    stats.prefetch.inc();
                }
                (len, prefetch.then(|| response.stored_at()))
            }
            Lookup::Stale {
                response,
                kind,
                refresh,
                verify: false,
            } => {
                let len = response.render(response.stale_ttl(), view, true, out);
                stats.hits[kind as usize].inc();
                stats.served_stale.inc();
                (len, refresh.then(|| response.stored_at()))
            }
            Lookup::Stale { .. } => {
                stats.misses.inc();
                return CacheAnswer::StaleVerify;
            }
            Lookup::Miss => {
                stats.misses.inc();
                return CacheAnswer::Miss;
            }
        };
        if let Some(stored_at) = refresh {
            self.refresh(now, server, key, hash, stored_at);
        }
        CacheAnswer::Reply(len)
    }

    /// A miss from a client: join or start its resolution; REFUSED when over limits or
    /// outside the block's `forward`. With `stale_verify`, the client gets the stale entry at
    /// [`STALE_CLIENT_TIMEOUT`] if no answer came by then.
    #[allow(clippy::too_many_arguments)] // the hot path's locals, passed without a struct
    fn forward(
        &mut self,
        now: Instant,
        client: Client,
        server: usize,
        message: &Message<'_>,
        hash: u64,
        stale_verify: bool,
        out: &mut [u8],
    ) -> Outcome {
        let key = Key::of(message);
        let q = &message.question;
        let Some(protocol) = self.upstream_protocol(server, q.name, client.protocol) else {
            let len = error_reply(message, rcode::REFUSED as u16, out);
            return self.error(rcode::REFUSED as u16, len);
        };
        self.stats.cache_misses.inc();
        let waiter = Waiter {
            client,
            id: message.header.id,
            flags: message.header.flags,
            qname: q.name.into(),
            edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
        };
        let question = PeerQuestion::of_key(server, &key, hash, protocol);
        let timer = stale_verify.then(|| question.clone());
        match self.resolve(now, Requester::Client(waiter), question, None) {
            Ok(()) => {
                if let Some(question) = timer {
                    self.verify_timers
                        .push_back((now + STALE_CLIENT_TIMEOUT, question));
                }
                Outcome::Pending
            }
            Err(code) => {
                let len = error_reply(message, code, out);
                self.error(code, len)
            }
        }
    }

    /// The transport to the upstreams of server block `server` for `qname`, or `None` when
    /// the block does not forward that name. The transport is part of what waiters share: a
    /// TCP client must not be handed the truncated reply of a query that went over UDP.
    fn upstream_protocol(&self, server: usize, qname: &[u8], client: Protocol) -> Option<Protocol> {
        let forward = self.config.servers.get(server)?.forward.as_ref()?;
        if !in_zone(qname, &forward.from)
            || forward.upstreams.is_empty()
            || forward.except.iter().any(|zone| in_zone(qname, zone))
        {
            return None;
        }
        Some(if forward.force_tcp {
            Protocol::Tcp
        } else if forward.prefer_udp {
            Protocol::Udp
        } else {
            client
        })
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
        self.stats.queries.inc();
        // One parse on the hot path; the header alone is read only when the rest is malformed.
        let parsed = Message::parse(query);
        let header = match &parsed {
            Ok(message) => message.header,
            Err(_) => match Header::parse(query) {
                Ok(header) => header,
                Err(_) => {
                    self.stats.dropped.inc();
                    return Outcome::Drop;
                }
            },
        };
        if header.qr() {
            // A response sent to us: never answer it (RFC 1035 §7.3; avoids reply loops).
            self.stats.dropped.inc();
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
        let hash = key.hash_seeded(self.group.seed);
        let view = ClientView {
            id: header.id,
            flags: header.flags,
            qname: message.question.name,
            edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
            protocol: client.protocol,
        };
        let stale_verify = match self.answer_from_cache(now, server, &key, hash, &view, out) {
            CacheAnswer::Reply(len) => return Outcome::Reply(len),
            CacheAnswer::Miss => false,
            CacheAnswer::StaleVerify => true,
        };
        self.forward(now, client, server, &message, hash, stale_verify, out)
    }

    fn handle_response(&mut self, now: Instant, link: Link, response: &[u8]) {
        let Ok(header) = Header::parse(response) else {
            self.stats.upstream_rejected.inc();
            return;
        };
        let Some(id) = self.inflight.by_wire(link, header.id) else {
            if !(header.qr() && self.probe_reply(now, link, header.id)) {
                self.stats.upstream_rejected.inc();
            }
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
            self.stats.upstream_rejected.inc();
            if let Some(pending) = self.inflight.get(id) {
                self.stats.servers[pending.server].drops.inc();
            }
            self.ttl_offsets = offsets;
            return;
        };
        self.stats.upstream_replies.inc();
        let rcode = message.header.rcode() as usize & 15;
        if let Some(pending) = self.inflight.get(id)
            && let Some(stats) = self.stats.upstreams.get(link.upstream as usize)
        {
            let took = now.saturating_duration_since(pending.attempt_started);
            stats.durations[rcode].observe(took.as_micros() as u64);
        }
        let forward = self.config.servers[self.inflight.get(id).map_or(0, |p| p.server)]
            .forward
            .as_ref();
        let prefer_udp = forward.is_some_and(|f| f.prefer_udp);
        let next = forward.is_some_and(|f| f.next.contains(&(rcode as u16)));
        if message.header.tc() && link.protocol == Protocol::Udp && prefer_udp {
            // `prefer_udp`: a truncated reply is asked again over TCP (one more attempt).
            if let Some(pending) = self.inflight.get_mut(id) {
                pending.protocol = Protocol::Tcp;
                pending.attempts = pending.attempts.saturating_sub(1);
            }
            self.ttl_offsets = offsets;
            self.send_attempt(now, id);
            return;
        }
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.remove(id) else {
            self.ttl_offsets = offsets;
            return;
        };
        if next {
            // `next RCODE`: the reply goes to the next plugin; there is none, so SERVFAIL (as
            // CoreDNS), or a usable cached entry.
            self.ttl_offsets = offsets;
            self.deliver(
                now,
                pending,
                Delivery::Failed(rcode::SERVFAIL as u16, "next: no further plugin"),
            );
            self.inflight.tidy();
            return;
        }
        let clock = self.nanos(now);
        let policy = self
            .caches_name(pending.server, &pending.qname)
            .then(|| self.caches[pending.server].as_ref().map(|c| c.policy()))
            .flatten();
        let (stored, kind) = StoredResponse::from_upstream(message, &offsets, policy, clock);
        self.ttl_offsets = offsets;
        self.deliver(now, pending, Delivery::Response(stored, kind));
        self.inflight.tidy();
    }

    fn handle_link_closed(&mut self, now: Instant, link: Link) {
        if link.protocol == Protocol::Tcp {
            self.tcp.forget(link);
        }
        for upstream in self.health.expire(now, Some(link)) {
            self.probe_failed(now, upstream);
        }
        if !self.inflight.on_link(link).is_empty() {
            self.health.exchange_failed(now, link.upstream);
        }
        self.upstream_gauges(link.upstream);
        for id in self.inflight.on_link(link) {
            self.stats.upstream_link_failures.inc();
            // The connection is gone: do not hand it back to the pool.
            self.inflight.finish_attempt(id);
            self.send_attempt(now, id);
        }
        self.inflight.tidy();
    }

    fn handle_peer(&mut self, now: Instant, message: PeerMessage) {
        self.stats.peer_received.inc();
        match message {
            PeerMessage::Miss {
                from,
                question,
                newer_than,
            } => self.peer_miss(now, from, question, newer_than),
            PeerMessage::Answer { question, result } => self.peer_answer(now, question, result),
            PeerMessage::Reconfigure(config) => match self.reconfigure(now, config) {
                Ok(()) => tracing::info!(shard = self.shard, "configuration reloaded"),
                Err(why) => tracing::error!(shard = self.shard, "reload refused: {why}"),
            },
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
                    self.stats.upstream_timeouts.inc();
                    let upstream = self
                        .inflight
                        .get(id)
                        .and_then(|p| p.current)
                        .map(|(link, _)| link.upstream);
                    if let Some(upstream) = upstream {
                        self.health.exchange_failed(now, upstream);
                    }
                    self.send_attempt(now, id);
                }
                Expired::Overall(id) => {
                    self.end_attempt(now, id);
                    let reason = match self.inflight.get(id).and_then(|p| p.owner) {
                        Some(_) => "no answer from the key's owner shard",
                        None => "upstream timeout",
                    };
                    self.fail(now, id, rcode::SERVFAIL as u16, reason);
                }
            }
        }
        for link in self.tcp.expire_idle(now) {
            self.outbox.push_back(Transmit::Close { link });
        }
        self.stale_client_timeouts(now);
        self.run_probes(now);
        self.inflight.tidy();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.inflight.next_deadline(),
            self.tcp.next_deadline(),
            self.verify_timers.front().map(|t| t.0),
            self.health.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }
}

/// The upstream TCP pool for `config`: each upstream's idle time is the `expire` of the first
/// `forward` naming it.
fn tcp_pool(config: &Config) -> TcpPool {
    let idle = (0..config.upstreams.len())
        .map(|u| {
            config
                .servers
                .iter()
                .filter_map(|s| s.forward.as_ref())
                .find(|f| f.upstreams.contains(&u))
                .map_or(config.limits.upstream_tcp_idle, |f| f.expire)
        })
        .collect();
    TcpPool::new(
        idle,
        config.limits.upstream_tcp_inflight,
        config.limits.upstream_tcp_conns,
    )
}

/// `now` in nanoseconds since `epoch`, memoised in `clock` (a field borrowed apart from the
/// engine's caches on the hit path).
#[inline]
fn nanos(clock: &mut (Instant, u64), epoch: Instant, now: Instant) -> u64 {
    if now != clock.0 {
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        *clock = (now, u64::try_from(nanos).unwrap_or(u64::MAX));
    }
    clock.1
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

/// Why a new configuration cannot be taken without a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error("the listening addresses changed (a restart is needed)")]
    Listeners,
    #[error("the server blocks changed (a restart is needed)")]
    Servers,
}

impl Engine {
    /// Switches to `config` (a reload) keeping every cache: entries stay, with the new
    /// policy (a smaller capacity evicts at once). Queries in flight go on; when the upstream
    /// list changed, their attempts restart on the new upstreams and old connections close.
    /// The listeners and the server blocks (zones, in order) must be unchanged, so that
    /// indices shared with the driver and with other shards keep their meaning.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        config: Arc<Config>,
    ) -> Result<(), ReconfigureError> {
        let old = Arc::clone(&self.config);
        if old.listeners != config.listeners {
            return Err(ReconfigureError::Listeners);
        }
        let same_blocks = old.servers.len() == config.servers.len()
            && old
                .servers
                .iter()
                .zip(&config.servers)
                .all(|(a, b)| a.zone == b.zone);
        if !same_blocks {
            return Err(ReconfigureError::Servers);
        }
        let clock = self.nanos(now);
        let hold = config.limits.query_timeout + PEER_GRACE;
        for (server, block) in config.servers.iter().enumerate() {
            let slot = &mut self.caches[server];
            match (slot.as_mut(), block.cache.clone()) {
                (Some(cache), Some(policy)) => {
                    let report = cache.set_policy(clock, policy, &block.zone, self.group.shards);
                    let stats = &self.stats.servers[server];
                    for kind in 0..2 {
                        stats.evictions[kind].add(report.evicted[kind]);
                    }
                }
                (None, Some(policy)) => {
                    *slot = Some(PacketCache::new(
                        policy,
                        &block.zone,
                        self.group.shards,
                        hold,
                    ));
                }
                (_, None) => *slot = None,
            }
        }
        self.config = Arc::clone(&config);
        self.health = Health::new(&config);
        if old.upstreams != config.upstreams {
            for link in self.tcp.reset(config.upstreams.len()) {
                self.outbox.push_back(Transmit::Close { link });
            }
            self.tcp = tcp_pool(&config).continuing(&self.tcp);
            self.udp_used = vec![false; config.upstreams.len()];
            for id in self.inflight.ids() {
                self.inflight.finish_attempt(id);
                let Some(pending) = self.inflight.get_mut(id) else {
                    continue;
                };
                if pending.owner.is_some() {
                    continue;
                }
                let forward = config.servers[pending.server].forward.as_ref();
                pending.upstreams = forward.map_or_else(Vec::new, |f| {
                    f.upstreams.iter().map(|&u| u as u16).collect()
                });
                pending.attempts = 0;
                self.send_attempt(now, id);
            }
        }
        Ok(())
    }
}
