//! The miss path: resolving a key through its owner shard or the upstreams, refreshes
//! (prefetch and serve-stale), and delivering the outcome to every client and shard waiting
//! for it, preferring a usable stale entry to a failure (RFC 8767).

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use shardns_wire::build::{reply_with_question, upstream_query};
use shardns_wire::{Header, Key, Question, rcode};

use super::{Engine, PEER_GRACE, rcode_name};
use crate::cache::{ClientView, Kind, StoredResponse};
use crate::names::to_text;
use crate::peer::{PeerMessage, PeerQuestion, PeerResult};
use crate::upstream::{NewPending, Pending, PendingId, Waiter};
use crate::{Link, Protocol, Transmit};

/// Who is waiting for a resolution.
#[derive(Debug)]
pub(super) enum Requester {
    /// A client of this shard.
    Client(Waiter),
    /// Another shard (this shard owns the key).
    Shard(u16),
    /// Nobody: a prefetch or stale refresh that only updates caches.
    Refresh,
}

/// How a resolution ended.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A response (from the upstream, or from the owner shard), and its cache kind.
    Response(StoredResponse, Option<Kind>),
    /// The owner served an entry from its cache because the upstream failed.
    Cached(StoredResponse),
    /// No answer: reply with this RCODE.
    Failed(u16, &'static str),
}

impl PeerQuestion {
    /// The question of a miss for `key` (any letter case) in block `server`.
    pub(super) fn of_key(server: usize, key: &Key<'_>, hash: u64, protocol: Protocol) -> Self {
        let mut qname: Box<[u8]> = key.qname.into();
        qname.make_ascii_lowercase();
        PeerQuestion {
            server: server as u16,
            hash,
            qname,
            qtype: key.qtype,
            qclass: key.qclass,
            flag_bits: key.flag_bits(),
            protocol,
        }
    }

    fn key(&self) -> Key<'_> {
        Key {
            qname: &self.qname,
            qtype: self.qtype,
            qclass: self.qclass,
            dnssec_ok: self.flag_bits & 1 != 0,
            checking_disabled: self.flag_bits & 2 != 0,
        }
    }

    fn of(pending: &Pending) -> PeerQuestion {
        PeerQuestion {
            server: pending.server as u16,
            hash: pending.key_hash,
            qname: pending.qname.clone(),
            qtype: pending.qtype,
            qclass: pending.qclass,
            flag_bits: pending.flag_bits,
            protocol: pending.protocol,
        }
    }
}

impl Engine {
    /// Joins or starts the resolution of `question` for `requester`: on this shard when it
    /// owns the key (or when asked by a shard), else through the owner. With `newer_than`,
    /// only a response stored after that instant will do. `Err(rcode)`: not resolved, the
    /// requester gets that RCODE (REFUSED over `max_concurrent` or the pending cap, SERVFAIL
    /// when every upstream is down under `failfast_all_unhealthy_upstreams`).
    pub(super) fn resolve(
        &mut self,
        now: Instant,
        requester: Requester,
        question: PeerQuestion,
        newer_than: Option<u64>,
    ) -> Result<(), u16> {
        let limits = self.config.limits;
        if let Some(id) = self.find(&question) {
            match requester {
                Requester::Client(_) if self.inflight.waiters() >= limits.max_waiters => {
                    return Err(rcode::REFUSED as u16);
                }
                Requester::Client(waiter) => self.inflight.push_waiter(id, waiter),
                Requester::Shard(shard) => {
                    if let Some(pending) = self.inflight.get_mut(id)
                        && !pending.shards.contains(&shard)
                    {
                        pending.shards.push(shard);
                    }
                }
                Requester::Refresh => return Ok(()),
            }
            self.stats.coalesced.inc();
            return Ok(());
        }
        let refused = rcode::REFUSED as u16;
        let has_waiter = matches!(requester, Requester::Client(_));
        if self.inflight.len() >= limits.max_pending
            || (has_waiter && self.inflight.waiters() >= limits.max_waiters)
        {
            return Err(refused);
        }
        let owner = match (&requester, self.group.coalesce) {
            (Requester::Shard(_), _) | (_, super::Coalesce::Within) => self.shard,
            _ => self.group.owner(question.hash),
        };
        let (waiter, shard) = match requester {
            Requester::Client(waiter) => (Some(waiter), None),
            Requester::Shard(shard) => (None, Some(shard)),
            Requester::Refresh => (None, None),
        };
        let server = question.server as usize;
        let mut new = NewPending {
            server,
            key_hash: question.hash,
            qname: question.qname.clone(),
            qtype: question.qtype,
            qclass: question.qclass,
            flag_bits: question.flag_bits,
            query: Vec::new(),
            waiter,
            shard,
            owner: None,
            protocol: question.protocol,
            upstreams: Vec::new(),
        };
        if owner != self.shard {
            new.owner = Some(owner as u16);
            self.inflight
                .insert(now, limits.query_timeout + PEER_GRACE, new);
            self.send_peer(
                owner,
                PeerMessage::Miss {
                    from: self.shard as u16,
                    question,
                    newer_than,
                },
            );
            return Ok(());
        }
        let config = Arc::clone(&self.config);
        let Some(forward) = config.servers.get(server).and_then(|s| s.forward.as_ref()) else {
            return Err(refused);
        };
        if forward.upstreams.is_empty() {
            return Err(refused);
        }
        if let Some(max) = forward.max_concurrent {
            // Each shard takes its share of the block's limit.
            if self.inflight.upstream_pending(server) >= max.div_ceil(self.group.shards) {
                self.stats.max_concurrent_rejects.inc();
                return Err(refused);
            }
        }
        let rng = &mut self.rng;
        let order = self
            .health
            .order(server, &forward.upstreams, forward.policy, |n| {
                rng.random_range(0..n)
            });
        let (upstreams, max_attempts) = match order {
            Some(order) => (order, usize::MAX),
            None => {
                // Every upstream is down: the health checks may be wrong (CoreDNS counts
                // this as "healthcheck broken"). Fail at once, or try one at random, once.
                self.stats.healthcheck_broken.inc();
                if forward.failfast {
                    return Err(rcode::SERVFAIL as u16);
                }
                let pick = self.rng.random_range(0..forward.upstreams.len());
                (vec![forward.upstreams[pick] as u16], 1)
            }
        };
        // The first client's RD, CD and AD bits go upstream; shards and refreshes ask for
        // recursion with the key's CD bit.
        let flags = new.waiter.as_ref().map_or_else(
            || {
                Header::RD
                    | if question.flag_bits & 2 != 0 {
                        Header::CD
                    } else {
                        0
                    }
            },
            |w| w.flags,
        );
        let q = Question {
            name: &question.qname,
            qtype: question.qtype,
            qclass: question.qclass,
        };
        let len = upstream_query(0, flags, &q, question.flag_bits & 1 != 0, &mut self.scratch);
        new.query = self.scratch[..len].to_vec();
        new.upstreams = upstreams;
        let id = self.inflight.insert(now, limits.query_timeout, new);
        if let Some(pending) = self.inflight.get_mut(id) {
            pending.max_attempts = max_attempts;
        }
        self.send_attempt(now, id);
        Ok(())
    }

    /// Starts a refresh of the entry for `key` stored at `stored_at` (prefetch, or a stale
    /// entry served in `immediate` mode).
    pub(super) fn refresh(
        &mut self,
        now: Instant,
        server: usize,
        key: &Key<'_>,
        hash: u64,
        stored_at: u64,
    ) {
        let Some(protocol) = self.upstream_protocol(server, key.qname, Protocol::Udp) else {
            return;
        };
        let question = PeerQuestion::of_key(server, key, hash, protocol);
        let _ = self.resolve(now, Requester::Refresh, question, Some(stored_at));
    }

    /// Another shard misses a key this shard owns: answer from the cache when it can,
    /// else resolve it on its behalf.
    pub(super) fn peer_miss(
        &mut self,
        now: Instant,
        from: u16,
        question: PeerQuestion,
        newer_than: Option<u64>,
    ) {
        let server = question.server as usize;
        let clock = self.nanos(now);
        if self.caches_name(server, &question.qname)
            && let Some(cache) = self.caches[server].as_mut()
        {
            let key = question.key();
            let immediate = cache.policy().serve_stale.is_some_and(|s| !s.verify);
            let found = cache
                .peek(clock, &key, question.hash)
                .map(|(response, kind, fresh)| (response.clone(), kind, fresh));
            match found {
                Some((response, kind, true))
                    if newer_than.is_none_or(|t| response.stored_at() > t) =>
                {
                    let result = PeerResult::Response(response, Some(kind));
                    self.send_peer(from as usize, PeerMessage::Answer { question, result });
                    return;
                }
                Some((response, _, false)) if newer_than.is_none() && immediate => {
                    let refresh = cache.begin_refresh(clock, &key, question.hash);
                    let stored_at = response.stored_at();
                    let result = PeerResult::Stale(response);
                    let answer = PeerMessage::Answer {
                        question: question.clone(),
                        result,
                    };
                    self.send_peer(from as usize, answer);
                    if refresh {
                        let _ = self.resolve(now, Requester::Refresh, question, Some(stored_at));
                    }
                    return;
                }
                _ => {}
            }
        }
        let refused = self
            .upstream_protocol(server, &question.qname, question.protocol)
            .is_none();
        let outcome = match refused {
            true => Err(rcode::REFUSED as u16),
            false => self.resolve(now, Requester::Shard(from), question.clone(), newer_than),
        };
        if let Err(code) = outcome {
            let result = PeerResult::Failed(code);
            self.send_peer(from as usize, PeerMessage::Answer { question, result });
        }
    }

    /// The owner answered a miss this shard handed it.
    pub(super) fn peer_answer(&mut self, now: Instant, question: PeerQuestion, result: PeerResult) {
        let delivery = match result {
            PeerResult::Response(response, kind) => Delivery::Response(response, kind),
            PeerResult::Stale(response) => Delivery::Cached(response),
            PeerResult::Failed(code) => Delivery::Failed(code, "the key's owner shard failed"),
        };
        let found = self.find(&question);
        let pending = found
            .filter(|&id| self.inflight.get(id).is_some_and(|p| p.owner.is_some()))
            .and_then(|id| self.inflight.remove(id));
        match pending {
            Some(pending) => self.deliver(now, pending, delivery),
            // The wait timed out already: the response may still be cached.
            None => {
                if let Delivery::Response(response, Some(kind)) = delivery {
                    self.store(now, &question, kind, response);
                }
            }
        }
    }

    /// The pending resolution of `question`, if any.
    fn find(&self, question: &PeerQuestion) -> Option<PendingId> {
        let q = question;
        let key = (&q.qname[..], q.qtype, q.qclass, q.flag_bits);
        self.inflight
            .find(q.server as usize, q.hash, key, q.protocol)
    }

    /// Inserts a response into this shard's cache for `question`.
    fn store(
        &mut self,
        now: Instant,
        question: &PeerQuestion,
        kind: Kind,
        response: StoredResponse,
    ) {
        let clock = self.nanos(now);
        let server = question.server as usize;
        let Some(Some(cache)) = self.caches.get_mut(server) else {
            return;
        };
        let report = cache.insert(clock, &question.key(), question.hash, kind, response);
        let stats = &self.stats.servers[server];
        if report.inserted {
            self.stats.cache_inserts.inc();
        }
        for kind in [Kind::Success, Kind::Denial] {
            let slot = kind as usize;
            stats.evictions[slot].add(report.evicted[slot]);
            self.stats.cache_evictions.add(report.evicted[slot]);
            stats.entries[slot].set(cache.len_of(kind) as u64);
        }
    }

    /// Hands the outcome of `pending` to its waiters: caches a response, answers the
    /// waiting shards and clients. A failure, or an upstream reply that is not an answer
    /// (SERVFAIL, REFUSED, truncated), yields to a usable cached entry (RFC 8767).
    pub(super) fn deliver(&mut self, now: Instant, pending: Pending, delivery: Delivery) {
        let question = PeerQuestion::of(&pending);
        let clock = self.nanos(now);
        let fallback = |engine: &Engine| {
            let cache = engine.caches.get(question.server as usize)?.as_ref()?;
            let (response, _, _) = cache.peek(clock, &question.key(), question.hash)?;
            Some(response.clone())
        };
        let delivery = match delivery {
            Delivery::Response(response, kind) if !response.is_answer() => match fallback(self) {
                Some(cached) => Delivery::Cached(cached),
                None => Delivery::Response(response, kind),
            },
            Delivery::Failed(code, reason) => match fallback(self) {
                Some(cached) => Delivery::Cached(cached),
                None => Delivery::Failed(code, reason),
            },
            other => other,
        };
        if let Delivery::Response(response, Some(kind)) = &delivery {
            self.store(now, &question, *kind, response.clone());
        }
        for &shard in &pending.shards {
            let result = match &delivery {
                Delivery::Response(response, kind) => PeerResult::Response(response.clone(), *kind),
                Delivery::Cached(response) => PeerResult::Stale(response.clone()),
                Delivery::Failed(code, _) => PeerResult::Failed(*code),
            };
            let question = question.clone();
            self.send_peer(shard as usize, PeerMessage::Answer { question, result });
        }
        let (response, ttl, authoritative) = match &delivery {
            Delivery::Failed(code, reason) => {
                self.answer_failure(&pending, *code, reason);
                return;
            }
            Delivery::Response(response, _) => (response, response.fresh_ttl(clock), false),
            Delivery::Cached(response) if response.remaining(clock) > 0 => {
                (response, response.fresh_ttl(clock), true)
            }
            Delivery::Cached(response) => {
                let served = pending.waiters.len() as u64;
                self.stats.servers[pending.server].served_stale.add(served);
                (response, response.stale_ttl(), true)
            }
        };
        self.reply_all(&pending.waiters, response, ttl, authoritative);
    }

    /// Renders `response` (TTLs set to `ttl`) for every waiter and queues the replies.
    fn reply_all(
        &mut self,
        waiters: &[Waiter],
        response: &StoredResponse,
        ttl: Option<u32>,
        authoritative: bool,
    ) {
        for waiter in waiters {
            let view = ClientView {
                id: waiter.id,
                flags: waiter.flags,
                qname: &waiter.qname,
                edns: waiter.edns,
                protocol: waiter.client.protocol,
            };
            let len = response.render(ttl, &view, authoritative, &mut self.scratch);
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
    }

    /// `verify` resolutions still waiting at their client deadline: their clients get the
    /// stale entry now; the upstream query goes on and refreshes the cache.
    pub(super) fn stale_client_timeouts(&mut self, now: Instant) {
        while let Some((at, _)) = self.verify_timers.front() {
            if *at > now {
                break;
            }
            let Some((_, question)) = self.verify_timers.pop_front() else {
                break;
            };
            let Some(id) = self.find(&question) else {
                continue;
            };
            let clock = self.nanos(now);
            let Some(cache) = self.caches[question.server as usize].as_ref() else {
                continue;
            };
            let Some((response, _, _)) = cache.peek(clock, &question.key(), question.hash) else {
                continue;
            };
            let response = response.clone();
            let waiters = self.inflight.take_waiters(id);
            let (ttl, stale) = match response.remaining(clock) {
                0 => (response.stale_ttl(), true),
                _ => (response.fresh_ttl(clock), false),
            };
            if stale {
                let served = waiters.len() as u64;
                self.stats.servers[question.server as usize]
                    .served_stale
                    .add(served);
            }
            self.reply_all(&waiters, &response, ttl, true);
        }
    }

    /// Answers every waiting client of `pending` with `rcode`, logging it under `errors`.
    fn answer_failure(&mut self, pending: &Pending, rcode: u16, reason: &str) {
        if self.config.servers[pending.server].log_errors && !pending.waiters.is_empty() {
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
            self.stats.error_replies[rcode.min(16) as usize].inc();
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
    }

    /// Fails pending query `id` with `rcode` (a usable cached entry is served instead).
    pub(super) fn fail(&mut self, now: Instant, id: PendingId, rcode: u16, reason: &'static str) {
        if let Some(pending) = self.inflight.remove(id) {
            self.deliver(now, pending, Delivery::Failed(rcode, reason));
        }
    }

    fn send_peer(&mut self, shard: usize, message: PeerMessage) {
        self.stats.peer_sent.inc();
        self.outbox.push_back(Transmit::Peer {
            shard,
            message: Box::new(message),
        });
    }

    /// Sends the next attempt of `id`, or fails it with SERVFAIL when attempts are used up.
    pub(super) fn send_attempt(&mut self, now: Instant, id: PendingId) {
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.get(id) else {
            return;
        };
        let Some(upstream) = pending.next_upstream() else {
            self.fail(
                now,
                id,
                rcode::SERVFAIL as u16,
                "all upstream attempts failed",
            );
            return;
        };
        let (link, reused) = match pending.protocol {
            Protocol::Udp => {
                let used = self.udp_used.get_mut(upstream as usize);
                let reused = used.as_deref().copied().unwrap_or(true);
                if let Some(used) = used {
                    *used = true;
                }
                let link = Link {
                    upstream,
                    protocol: Protocol::Udp,
                    conn: 0,
                };
                (link, reused)
            }
            Protocol::Tcp => self.tcp.acquire(now, upstream),
        };
        if let Some(stats) = self.stats.upstreams.get(upstream as usize) {
            let proto = (link.protocol == Protocol::Tcp) as usize;
            match reused {
                true => stats.conn_cache_hits[proto].inc(),
                false => stats.conn_cache_misses[proto].inc(),
            }
        }
        let mut wire_id = self.rng.random::<u16>();
        for _ in 0..16 {
            if !self.inflight.wire_id_in_use(link, wire_id) && !self.health.is_probe(link, wire_id)
            {
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
        self.stats.upstream_queries.inc();
        self.upstream_gauges(upstream);
        self.outbox.push_back(Transmit::Query {
            link,
            addr,
            payload,
        });
    }

    /// Forgets the current attempt of `id`, returning its TCP connection to the pool.
    pub(super) fn end_attempt(&mut self, now: Instant, id: PendingId) {
        if let Some(link) = self.inflight.finish_attempt(id) {
            if link.protocol == Protocol::Tcp {
                self.tcp.release(now, link);
            }
            self.upstream_gauges(link.upstream);
        }
    }

    /// Publishes `upstream`'s open connections and attempts in flight.
    pub(super) fn upstream_gauges(&self, upstream: u16) {
        if let Some(stats) = self.stats.upstreams.get(upstream as usize) {
            stats.open_connections.set(self.tcp.open(upstream) as u64);
            stats
                .inflight
                .set(self.inflight.attempts_on(upstream) as u64);
        }
    }
}
