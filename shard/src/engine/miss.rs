//! The miss path: resolving a key through its owner shard or the upstreams, refreshes
//! (prefetch and serve-stale), and delivering the outcome to every client and shard waiting
//! for it, preferring a usable stale entry to a failure (RFC 8767).

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use shardns_wire::build::{reply_with_question, upstream_query};
use shardns_wire::{Header, Key, Question, Rcode};

use super::log::LoggedQuery;
use super::{Coalesce, Engine, PEER_GRACE};
use crate::Protocol;
use crate::Transmit;
use crate::cache::{ClientView, Kind, StoredResponse};
use crate::failure::{AttemptFailure, FailureReason};
use crate::log_limit::Verdict;
use crate::names::{to_text, type_name};
use crate::peer::{Peer, PeerResult};
use crate::question::{LowerQuestion, PendingKey};
use crate::stats::{Bound, Exchange, Writer};
use crate::upstream::{Pending, PendingId, Requester, Waiter};

/// What the request metrics need of a resolution's end: when (engine clock), for which
/// server block and query type, and who wrote the replies.
#[derive(Debug, Clone, Copy)]
struct Answered {
    clock: u64,
    server: usize,
    qtype: u16,
    writer: Writer,
}

/// How a resolution ended.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A response (from the upstream, or from the owner shard), and its cache kind.
    Response(StoredResponse, Option<Kind>),
    /// The owner served an entry from its cache because the upstream failed.
    Cached(StoredResponse),
    /// No answer: reply with this RCODE, for this reason.
    Failed(Rcode, FailureReason),
}

impl Engine {
    /// Joins or starts the resolution of `key` for `requester`: on this shard when it owns
    /// the key (or when asked by a shard), else through the owner. With `newer_than`, only a
    /// response stored after that instant will do. `Ok`: the resolution's handle;
    /// `Err(rcode)`: not resolved, the requester gets that RCODE (REFUSED over
    /// `max_concurrent` or the pending cap, SERVFAIL when every upstream is down under
    /// `failfast_all_unhealthy_upstreams`).
    pub(super) fn resolve(
        &mut self,
        now: Instant,
        requester: Requester,
        key: PendingKey,
        newer_than: Option<u64>,
    ) -> Result<PendingId, Rcode> {
        let limits = self.config.limits;
        if let Some(id) = self.inflight.find(&key) {
            match requester {
                Requester::Client(_) if self.inflight.waiters() >= limits.max_waiters => {
                    self.reached(now, Bound::WaitingClients, limits.max_waiters);
                    return Err(Rcode::REFUSED);
                }
                Requester::Client(waiter) => self.inflight.push_waiter(id, waiter),
                Requester::Shard(shard) => {
                    if let Some(pending) = self.inflight.get_mut(id)
                        && !pending.shards.contains(&shard)
                    {
                        pending.shards.push(shard);
                    }
                }
                Requester::Refresh => return Ok(id),
            }
            self.stats.coalesced.inc();
            return Ok(id);
        }
        let has_waiter = matches!(requester, Requester::Client(_));
        if self.inflight.len() >= limits.max_pending {
            self.reached(now, Bound::PendingQueries, limits.max_pending);
            return Err(Rcode::REFUSED);
        }
        if has_waiter && self.inflight.waiters() >= limits.max_waiters {
            self.reached(now, Bound::WaitingClients, limits.max_waiters);
            return Err(Rcode::REFUSED);
        }
        let owner = match (&requester, self.group.coalesce) {
            (Requester::Shard(_), _) | (_, Coalesce::Within) => self.shard,
            _ => self.group.owner(key.hash()),
        };
        if owner != self.shard {
            let pending = Pending::new(now, key.clone(), requester, Some(owner as u16));
            let deadline = now + limits.query_timeout + PEER_GRACE;
            let id = self.inflight.insert(deadline, pending, &mut self.timers);
            let from = self.shard as u16;
            self.send_peer(
                owner,
                Peer::Miss {
                    from,
                    key,
                    newer_than,
                },
            );
            return Ok(id);
        }
        let config = Arc::clone(&self.config);
        let server = key.server();
        let Some(forward) = config.servers.get(server).and_then(|s| s.forward.as_ref()) else {
            return Err(Rcode::REFUSED);
        };
        if forward.upstreams.is_empty() {
            return Err(Rcode::REFUSED);
        }
        if let Some(max) = forward.max_concurrent {
            // Each shard takes its share of the block's limit.
            if self.inflight.upstream_pending(server) >= max.div_ceil(self.group.shards) {
                self.stats.max_concurrent_rejects.inc();
                return Err(Rcode::REFUSED);
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
                    return Err(Rcode::SERVFAIL);
                }
                let pick = self.rng.random_range(0..forward.upstreams.len());
                (vec![forward.upstreams[pick] as u16], 1)
            }
        };
        // The first client's RD, CD and AD bits go upstream; shards and refreshes ask for
        // recursion with the key's CD bit.
        let flags = match &requester {
            Requester::Client(waiter) => waiter.flags,
            _ if key.question.flags().checking_disabled() => Header::RD | Header::CD,
            _ => Header::RD,
        };
        let question = key.question.wire();
        let dnssec_ok = key.question.flags().dnssec_ok();
        let len = upstream_query(0, flags, &question, dnssec_ok, &mut self.scratch);
        let mut pending = Pending::new(now, key, requester, None);
        pending.query = self.scratch[..len].to_vec();
        pending.upstreams = upstreams;
        pending.max_attempts = max_attempts;
        let deadline = now + limits.query_timeout;
        let id = self.inflight.insert(deadline, pending, &mut self.timers);
        self.send_attempt(now, id);
        Ok(id)
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
        let key = PendingKey {
            server: server as u16,
            question: LowerQuestion::of_key(key, hash),
            protocol,
        };
        let _ = self.resolve(now, Requester::Refresh, key, Some(stored_at));
    }

    /// Another shard misses a key this shard owns: answer from the cache when it can,
    /// else resolve it on its behalf.
    pub(super) fn peer_miss(
        &mut self,
        now: Instant,
        from: u16,
        key: PendingKey,
        newer_than: Option<u64>,
    ) {
        let server = key.server();
        let clock = self.nanos(now);
        if self.caches_name(server, key.question.qname())
            && let Some(cache) = self.caches[server].as_mut()
        {
            let immediate = cache.policy().serve_stale.is_some_and(|s| !s.verify);
            let found = cache
                .peek(clock, &key.question)
                .map(|(response, kind, fresh)| (response.clone(), kind, fresh));
            match found {
                Some((response, kind, true))
                    if newer_than.is_none_or(|t| response.stored_at() > t) =>
                {
                    let result = PeerResult::Response(response, Some(kind));
                    self.send_peer(from as usize, Peer::Answer { key, result });
                    return;
                }
                Some((response, _, false)) if newer_than.is_none() && immediate => {
                    let refresh = cache.begin_refresh(clock, &key.question);
                    let stored_at = response.stored_at();
                    let result = PeerResult::Stale(response);
                    let answer = Peer::Answer {
                        key: key.clone(),
                        result,
                    };
                    self.send_peer(from as usize, answer);
                    if refresh {
                        let _ = self.resolve(now, Requester::Refresh, key, Some(stored_at));
                    }
                    return;
                }
                _ => {}
            }
        }
        let refused = self
            .upstream_protocol(server, key.question.qname(), key.protocol)
            .is_none();
        let outcome = match refused {
            true => Err(Rcode::REFUSED),
            false => self.resolve(now, Requester::Shard(from), key.clone(), newer_than),
        };
        if let Err(code) = outcome {
            let reason = FailureReason::Text("refused by the key's owner shard");
            let result = PeerResult::Failed(code, reason);
            self.send_peer(from as usize, Peer::Answer { key, result });
        }
    }

    /// The owner answered a miss this shard handed it.
    pub(super) fn peer_answer(&mut self, now: Instant, key: PendingKey, result: PeerResult) {
        let delivery = match result {
            PeerResult::Response(response, kind) => Delivery::Response(response, kind),
            PeerResult::Stale(response) => Delivery::Cached(response),
            PeerResult::Failed(code, reason) => Delivery::Failed(code, reason),
        };
        let pending = self
            .inflight
            .find(&key)
            .filter(|&id| self.inflight.get(id).is_some_and(|p| p.owner.is_some()))
            .and_then(|id| self.inflight.remove(id, &mut self.timers));
        match pending {
            Some(pending) => self.deliver(now, pending, delivery),
            // The wait timed out already: the response may still be cached.
            None => {
                if let Delivery::Response(response, Some(kind)) = delivery {
                    self.store(now, &key, kind, response);
                }
            }
        }
    }

    /// Inserts a response into this shard's cache for `key`.
    fn store(&mut self, now: Instant, key: &PendingKey, kind: Kind, response: StoredResponse) {
        let clock = self.nanos(now);
        self.store_at(clock, key.server(), &key.question, kind, response);
    }

    /// Inserts a response into the cache of block `server` under `question` at `clock` and
    /// counts it; `false` if it was not stored (no cache, or a better entry kept).
    pub(super) fn store_at(
        &mut self,
        clock: u64,
        server: usize,
        question: &LowerQuestion,
        kind: Kind,
        response: StoredResponse,
    ) -> bool {
        let Some(Some(cache)) = self.caches.get_mut(server) else {
            return false;
        };
        let report = cache.insert(clock, question, kind, response);
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
        report.inserted
    }

    /// A usable cached entry for `key` (fresh, or stale within `serve_stale`).
    fn cached(&mut self, now: Instant, key: &PendingKey) -> Option<StoredResponse> {
        let clock = self.nanos(now);
        let cache = self.caches.get(key.server())?.as_ref()?;
        let (response, _, _) = cache.peek(clock, &key.question)?;
        Some(response.clone())
    }

    /// Hands the outcome of `pending` to its waiters: caches a response, answers the
    /// waiting shards and clients. A failure, or an upstream reply that is not an answer
    /// (SERVFAIL, REFUSED, truncated), yields to a usable cached entry (RFC 8767).
    pub(super) fn deliver(&mut self, now: Instant, pending: Pending, delivery: Delivery) {
        let key = &pending.key;
        let delivery = match delivery {
            Delivery::Response(response, kind) if !response.is_answer() => {
                match self.cached(now, key) {
                    Some(cached) => Delivery::Cached(cached),
                    None => Delivery::Response(response, kind),
                }
            }
            Delivery::Failed(code, reason) => match self.cached(now, key) {
                Some(cached) => Delivery::Cached(cached),
                None => Delivery::Failed(code, reason),
            },
            other => other,
        };
        if let Delivery::Response(response, Some(kind)) = &delivery {
            self.store(now, key, *kind, response.clone());
        }
        for &shard in &pending.shards {
            let result = match &delivery {
                Delivery::Response(response, kind) => PeerResult::Response(response.clone(), *kind),
                Delivery::Cached(response) => PeerResult::Stale(response.clone()),
                Delivery::Failed(code, reason) => PeerResult::Failed(*code, *reason),
            };
            let key = pending.key.clone();
            self.send_peer(shard as usize, Peer::Answer { key, result });
        }
        let clock = self.nanos(now);
        let (response, ttl, authoritative, writer) = match &delivery {
            Delivery::Failed(code, reason) => {
                self.answer_failure(now, clock, &pending, *code, *reason);
                return;
            }
            Delivery::Response(response, _) => {
                (response, response.fresh_ttl(clock), false, Writer::Forward)
            }
            Delivery::Cached(response) if response.remaining(clock) > 0 => {
                (response, response.fresh_ttl(clock), true, Writer::Cache)
            }
            Delivery::Cached(response) => {
                let served = pending.waiters.len() as u64;
                self.stats.servers[pending.key.server()]
                    .served_stale
                    .add(served);
                (response, response.stale_ttl(), true, Writer::Cache)
            }
        };
        let answered = Answered {
            clock,
            server: pending.key.server(),
            qtype: pending.key.question.qtype(),
            writer,
        };
        self.reply_all(&pending.waiters, response, ttl, authoritative, answered);
    }

    /// Renders `response` (TTLs set to `ttl`) for every waiter, queues the replies and counts
    /// them.
    fn reply_all(
        &mut self,
        waiters: &[Waiter],
        response: &StoredResponse,
        ttl: Option<u32>,
        authoritative: bool,
        answered: Answered,
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
            self.count_reply(waiter, &answered, len, response.rcode());
            self.log_reply(waiter, &answered, len);
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
    }

    /// Logs the reply of `len` bytes (in the scratch buffer) to `waiter`, under `log`.
    fn log_reply(&self, waiter: &Waiter, answered: &Answered, len: usize) {
        if self.logs(answered.server, &waiter.qname) {
            let query = LoggedQuery {
                client: &waiter.client,
                id: waiter.id,
                qtype: answered.qtype,
                qname: &waiter.qname,
                query_len: usize::from(waiter.query_len),
                edns: waiter.edns,
                micros: answered.clock.saturating_sub(waiter.arrived) / 1_000,
            };
            self.log_query(&query, &self.scratch[..len]);
        }
    }

    /// Counts the reply of `len` bytes with `rcode` to `waiter` in the request metrics.
    fn count_reply(&self, waiter: &Waiter, answered: &Answered, len: usize, rcode: Rcode) {
        let listener = usize::from(waiter.client.listener);
        let Some(stats) = self
            .slots
            .slot(listener, answered.server)
            .and_then(|slot| self.stats.requests.get(slot))
        else {
            return;
        };
        stats.record(&Exchange {
            protocol: waiter.client.protocol,
            ipv6: waiter.client.peer.is_ipv6(),
            qtype: answered.qtype,
            dnssec_ok: waiter.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok),
            query_len: usize::from(waiter.query_len),
            reply_len: len,
            rcode,
            writer: answered.writer,
            micros: answered.clock.saturating_sub(waiter.arrived) / 1_000,
        });
    }

    /// A `verify` resolution still waiting at its client deadline: its clients get the
    /// stale entry now; the upstream query goes on and refreshes the cache.
    pub(super) fn stale_client_timeout(&mut self, now: Instant, id: PendingId) {
        let Some(pending) = self.inflight.get(id) else {
            return;
        };
        let key = pending.key.clone();
        let Some(response) = self.cached(now, &key) else {
            return;
        };
        let waiters = self.inflight.take_waiters(id);
        let clock = self.nanos(now);
        let (ttl, stale) = match response.remaining(clock) {
            0 => (response.stale_ttl(), true),
            _ => (response.fresh_ttl(clock), false),
        };
        if stale {
            let served = waiters.len() as u64;
            self.stats.servers[key.server()].served_stale.add(served);
        }
        let answered = Answered {
            clock,
            server: key.server(),
            qtype: key.question.qtype(),
            writer: Writer::Cache,
        };
        self.reply_all(&waiters, &response, ttl, true, answered);
    }

    /// Answers every waiting client of `pending` with `rcode`, logging it under `errors` as
    /// CoreDNS does (`plugin/errors: 2 example.com. A: read udp 10.96.0.10:53: i/o timeout`),
    /// at most so many lines a second.
    fn answer_failure(
        &mut self,
        now: Instant,
        clock: u64,
        pending: &Pending,
        rcode: Rcode,
        reason: FailureReason,
    ) {
        let question = &pending.key.question;
        if self.config.servers[pending.key.server()].log_errors
            && !pending.waiters.is_empty()
            && let Verdict::Write { suppressed } = self.error_log.check(now)
        {
            if suppressed > 0 {
                tracing::error!(
                    target: "plugin/errors",
                    "{suppressed} more failed queries not logged (at most {} a second)",
                    super::ERROR_LINES_PER_SECOND
                );
            }
            tracing::error!(
                target: "plugin/errors",
                "{} {} {}: {}",
                rcode.value(),
                to_text(question.qname()),
                type_name(question.qtype()),
                reason.describe(&self.config.upstreams)
            );
        }
        let answered = Answered {
            clock,
            server: pending.key.server(),
            qtype: question.qtype(),
            writer: Writer::Forward,
        };
        for waiter in &pending.waiters {
            let asked = Question {
                name: &waiter.qname,
                qtype: question.qtype(),
                qclass: question.qclass(),
            };
            let edns = waiter.edns.map(|(_, dnssec_ok)| dnssec_ok);
            let len = reply_with_question(
                waiter.id,
                waiter.flags,
                &asked,
                rcode,
                edns,
                &mut self.scratch,
            );
            self.stats.count_error_reply(rcode);
            self.count_reply(waiter, &answered, len, rcode);
            self.log_reply(waiter, &answered, len);
            self.outbox.push_back(Transmit::Reply {
                client: waiter.client,
                payload: self.scratch[..len].to_vec(),
            });
        }
    }

    /// Fails pending query `id` with `rcode` (a usable cached entry is served instead).
    pub(super) fn fail(
        &mut self,
        now: Instant,
        id: PendingId,
        rcode: Rcode,
        reason: FailureReason,
    ) {
        if let Some(pending) = self.inflight.remove(id, &mut self.timers) {
            self.deliver(now, pending, Delivery::Failed(rcode, reason));
        }
    }

    /// The overall deadline of `id` passed: SERVFAIL (or a usable cached entry).
    pub(super) fn overall_timed_out(&mut self, now: Instant, id: PendingId) {
        let reason = match self.inflight.get(id) {
            Some(pending) if pending.owner.is_some() => {
                FailureReason::Text("no answer from the key's owner shard")
            }
            Some(pending) => match (pending.last_failure, pending.current) {
                (Some(failure), _) => FailureReason::Attempt(failure),
                // Still waiting on an attempt: it timed out too.
                (None, Some((link, _))) => FailureReason::Attempt(AttemptFailure {
                    upstream: link.upstream,
                    protocol: link.protocol,
                    error: None,
                }),
                (None, None) => FailureReason::Text("upstream timeout"),
            },
            None => return,
        };
        self.end_attempt(now, id);
        self.fail(now, id, Rcode::SERVFAIL, reason);
    }
}
