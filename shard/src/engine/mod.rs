//! The sans-IO engine of one shard: decides, for each client query, whether to drop it, answer
//! it (error reply, fresh or stale cache hit) or resolve it; resolves misses through the key's
//! owner shard (one upstream query per key for the whole process); matches upstream replies;
//! retries and times out. It implements [`Handler`], so drivers only move bytes.
//!
//! - [`query`]: a client query, from bytes to a reply or a miss (the hot path).
//! - [`miss`]: resolving a miss, through the owner shard or the upstreams, and
//!   delivering the outcome to every client and shard waiting for it.
//! - [`attempt`]: one upstream attempt, and what comes back on a link.
//! - [`policy`]: a block's `ratelimit` and `acl`, before the cache.
//! - [`probe`]: health probes of upstreams that failed.
//! - [`reload`]: switching to a new configuration, keeping the cache.

mod attempt;
mod handoff;
mod log;
mod miss;
mod policy;
mod probe;
mod query;
mod reload;

pub use handoff::ImportReport;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardns_wire::Key;

use crate::cache::PacketCache;
use crate::config::Config;
use crate::fastpath::{KernelHit, Publisher};
use crate::health::Health;
use crate::log_limit::LogLimit;
use crate::peer::{Peer, PeerMessage};
use crate::policy::RateTable;
use crate::stats::{Bound, BoundLog, RequestSlots};
use crate::timer::{Timer, TimerTable};
use crate::upstream::{InFlight, TcpPool};
use crate::{
    Client, Control, Handler, Link, LinkError, MAX_MESSAGE, Outcome, Protocol, ShardStats, Transmit,
};

/// Lines the `errors` log writes per second and shard at most; the rest are counted.
const ERROR_LINES_PER_SECOND: u32 = 10;

/// How much longer than the overall query timeout a shard waits for the key's owner before
/// answering SERVFAIL itself (the owner answers within the timeout unless it is gone).
const PEER_GRACE: Duration = Duration::from_secs(1);

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
    /// Where the request metrics of each (listener, server block) pair are counted.
    slots: RequestSlots,
    /// The clock for the cache: nanoseconds since the group's epoch, converted once per
    /// distinct `now` (drivers pass one `now` per batch).
    clock: (Instant, u64),
    /// Every deadline: attempts, overall, stale-verify, probes, idle connections.
    timers: TimerTable,
    inflight: InFlight,
    tcp: TcpPool,
    health: Health,
    rng: StdRng,
    /// Network output, drained by [`Handler::poll_transmit`].
    outbox: VecDeque<Transmit>,
    /// Messages for other shards, drained by [`Handler::poll_peer`].
    peer_outbox: VecDeque<(usize, PeerMessage)>,
    stats: Arc<ShardStats>,
    /// Scratch space reused on the miss path.
    ttl_offsets: Vec<usize>,
    scratch: Vec<u8>,
    /// The rate limit of the `errors` log.
    error_log: LogLimit,
    /// The rate limit of the lines about bounds reached.
    bound_log: BoundLog,
    /// Some server block has `log`: only then is a block's `log` looked at per query.
    logging: bool,
    /// Per server block: its `ratelimit` buckets (None without `ratelimit`).
    rates: Vec<Option<RateTable>>,
    /// The seed of this shard's `ratelimit` tables.
    rate_seed: u64,
    /// Some server block has `acl` or `ratelimit`: only then are they looked at per query.
    policing: bool,
    /// Where hot entries of `fastpath` blocks are published ([`crate::fastpath`]).
    publisher: Option<Publisher>,
}

impl Engine {
    /// The engine of shard `shard` of `group`, seeded from the operating system.
    pub fn new(config: Arc<Config>, group: Group, shard: usize) -> Engine {
        Engine::with_rng(config, group, shard, StdRng::from_os_rng())
    }

    /// An engine with a given random generator (tests use a fixed seed).
    pub fn with_rng(config: Arc<Config>, group: Group, shard: usize, mut rng: StdRng) -> Engine {
        let rate_seed = rng.random();
        let hold = config.limits.query_timeout + PEER_GRACE;
        let caches = config
            .servers
            .iter()
            .map(|s| {
                s.cache
                    .clone()
                    .map(|policy| PacketCache::new(policy, &s.zone, group.shards, hold))
            })
            .collect();
        let routes = routes(&config);
        let stats = Arc::new(ShardStats::new(&config, config.upstreams.len()));
        let logging = config.servers.iter().any(|s| s.log_queries.is_some());
        Engine {
            rates: policy::rate_tables(&config, rate_seed, None),
            rate_seed,
            policing: policy::policing(&config),
            slots: RequestSlots::of(&config, stats.servers.len()),
            tcp: tcp_pool(&config),
            health: Health::new(&config),
            config,
            group,
            shard,
            caches,
            routes,
            clock: (group.epoch, 0),
            timers: TimerTable::default(),
            inflight: InFlight::default(),
            rng,
            outbox: VecDeque::new(),
            peer_outbox: VecDeque::new(),
            stats,
            ttl_offsets: Vec::new(),
            scratch: vec![0; MAX_MESSAGE],
            error_log: LogLimit::new(ERROR_LINES_PER_SECOND),
            bound_log: BoundLog::new(shard),
            logging,
            publisher: None,
        }
    }

    /// Publishes the hot entries of the blocks with `fastpath` to `publisher` (the
    /// process's fast-path thread reads the other end).
    pub fn with_publisher(mut self, publisher: Publisher) -> Engine {
        self.publisher = Some(publisher);
        self.withdraw_evictions();
        self
    }

    /// Counts hits the in-kernel fast path answered for this shard's entries, as socket hits
    /// count: towards `prefetch` (a refresh starts when one is due) and eviction.
    pub fn kernel_hits(&mut self, now: Instant, hits: &[KernelHit]) {
        let clock = self.nanos(now);
        for hit in hits {
            let key = Key {
                qname: &hit.qname,
                qtype: hit.qtype,
                qclass: 1,
                dnssec_ok: hit.dnssec_ok,
                checking_disabled: hit.checking_disabled,
            };
            let hash = key.hash_seeded(self.group.seed);
            let Some(Some(cache)) = self.caches.get_mut(hit.server) else {
                continue;
            };
            let count = hit.hits;
            if let Some(stored_at) = cache.note_hits(clock, &key, hash, count) {
                self.stats.servers[hit.server].prefetch.inc();
                self.refresh(now, hit.server, &key, hash, stored_at);
            }
        }
    }

    /// Has every `fastpath` block's cache tell the publisher of its evictions.
    fn withdraw_evictions(&mut self) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        for (server, cache) in self.caches.iter_mut().enumerate() {
            if let Some(cache) = cache
                && self.config.servers[server].fastpath.is_some()
            {
                cache.withdraw_to(publisher.clone(), (self.shard, server), self.group.epoch);
            }
        }
    }

    /// `bound` (of value `limit`) was reached: counted, and logged at a bounded rate.
    fn reached(&mut self, now: Instant, bound: Bound, limit: usize) {
        self.bound_log
            .reached(now, &self.stats.bounds, bound, limit);
    }

    /// Counts into `stats` (made by the process, so a metrics scraper holds it too) instead
    /// of the engine's own counters. Ignored unless it fits the configuration
    /// ([`ShardStats::fits`]: more upstream slots are room for upstreams a reload adds).
    pub fn with_stats(mut self, stats: Arc<ShardStats>) -> Engine {
        if stats.fits(&self.config) {
            self.slots = RequestSlots::of(&self.config, stats.servers.len());
            self.stats = stats;
        }
        self
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

    /// Upstream UDP sockets open (one per attempt or probe waiting on UDP, and the idle ones
    /// kept for the next; at most 1,024; see [`Transmit::Close`]).
    pub fn upstream_udp_sockets(&self) -> usize {
        self.inflight.open_udp()
    }

    /// Of those, the idle ones: no exchange on them, kept for the next exchanges with their
    /// upstream (at most 8 per upstream).
    pub fn idle_upstream_udp_sockets(&self) -> usize {
        self.inflight.idle_udp()
    }

    /// The cache of server block `server` (None without `cache`).
    pub fn cache(&self, server: usize) -> Option<&PacketCache> {
        self.caches.get(server)?.as_ref()
    }

    /// `now` on the cache's clock: nanoseconds since the group's epoch (0 for earlier
    /// instants). Memoised, so a batch of queries converts once.
    fn nanos(&mut self, now: Instant) -> u64 {
        nanos(&mut self.clock, self.group.epoch, now)
    }

    fn send_peer(&mut self, shard: usize, message: Peer) {
        self.stats.peer_sent.inc();
        self.peer_outbox.push_back((shard, message.into()));
    }
}

impl Handler for Engine {
    type Peer = PeerMessage;

    fn handle_query(
        &mut self,
        now: Instant,
        client: Client,
        query: &[u8],
        out: &mut [u8],
    ) -> Outcome {
        self.query(now, client, query, out)
    }

    fn handle_response(&mut self, now: Instant, link: Link, response: &[u8]) {
        self.response(now, link, response);
    }

    fn handle_link_closed(&mut self, now: Instant, link: Link, error: LinkError) {
        self.link_closed(now, link, error);
    }

    fn handle_control(&mut self, now: Instant, control: Control) {
        match control {
            Control::Reconfigure(config) => match self.reconfigure(now, config) {
                Ok(()) => tracing::info!(shard = self.shard, "configuration reloaded"),
                Err(why) => tracing::error!(shard = self.shard, "reload refused: {why}"),
            },
            Control::ExportCache(sink) => {
                for chunk in self.export_cache(now) {
                    if sink.send(chunk).is_err() {
                        return;
                    }
                }
                let _ = sink.send(Vec::new());
            }
            Control::ImportCache(chunk) => {
                let report = self.import_cache(now, &chunk);
                tracing::debug!(shard = self.shard, ?report, "cache chunk imported");
            }
            Control::KernelHits(hits) => self.kernel_hits(now, &hits),
        }
    }

    fn handle_peer(&mut self, now: Instant, message: PeerMessage) {
        self.stats.peer_received.inc();
        match *message.0 {
            Peer::Miss {
                from,
                key,
                newer_than,
            } => self.peer_miss(now, from, key, newer_than),
            Peer::Answer { key, result } => self.peer_answer(now, key, result),
        }
    }

    fn handle_client_closed(&mut self, _now: Instant, client: Client) {
        if client.protocol == Protocol::Tcp {
            self.inflight.retain_waiters(|w| w.client != client);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Attempt(id) => self.attempt_timed_out(now, id),
                Timer::Overall(id) => self.overall_timed_out(now, id),
                Timer::StaleVerify(id) => self.stale_client_timeout(now, id),
                Timer::ProbeDue(upstream) => self.send_probe(now, upstream),
                Timer::ProbeReply(upstream) => self.probe_failed(now, upstream),
                Timer::Idle { upstream, conn } => {
                    if let Some(link) = self.tcp.idle_expired(upstream, conn) {
                        self.outbox.push_back(Transmit::Close { link });
                        self.upstream_gauges(upstream);
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front().or_else(|| {
            let link = self.inflight.pop_closed_udp()?;
            Some(Transmit::Close { link })
        })
    }

    fn poll_peer(&mut self) -> Option<(usize, PeerMessage)> {
        self.peer_outbox.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.inflight.len() == 0
            && self.outbox.is_empty()
            && self.peer_outbox.is_empty()
            && !self.inflight.closing_udp()
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

/// Per listener, the blocks it serves, most specific zone first (a query goes to the first
/// whose zone holds its name).
fn routes(config: &Config) -> Vec<Vec<usize>> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let mut servers = listener.servers.clone();
            servers.sort_by_key(|&s| std::cmp::Reverse(config.servers[s].zone.len()));
            servers
        })
        .collect()
}
