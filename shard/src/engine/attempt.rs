//! One upstream attempt: choosing its link (a UDP socket of its own, or a pooled TCP
//! connection) and wire ID, and what comes back on a link: a reply (matched by ID and
//! question), a closed link, or nothing by the attempt's deadline. On UDP, a datagram that
//! answers nothing while an attempt waits on its socket is taken for a forgery: the attempt
//! goes on over TCP.

use std::time::Instant;

use rand::Rng;
use shardns_wire::{Header, Message, Rcode, check_patchable, name_eq_lowercase, opcode};

use super::Engine;
use super::miss::Delivery;
use crate::cache::StoredResponse;
use crate::failure::{AttemptFailure, FailureReason};
use crate::upstream::PendingId;
use crate::{Link, LinkError, Protocol, Transmit};

impl Engine {
    /// Sends the next attempt of `id`, or fails it with SERVFAIL when attempts are used up.
    pub(super) fn send_attempt(&mut self, now: Instant, id: PendingId) {
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.get(id) else {
            return;
        };
        let Some(upstream) = pending.next_upstream() else {
            let reason = pending.last_failure.map_or(
                FailureReason::Text("all upstream attempts failed"),
                FailureReason::Attempt,
            );
            self.fail(now, id, Rcode::SERVFAIL, reason);
            return;
        };
        let (link, reused) = match pending.transport() {
            // A socket to itself: an idle one (a random port, at most 16 exchanges), or a
            // fresh one; shared only when the shard has too many open.
            Protocol::Udp => self.inflight.acquire_udp(upstream, self.rng.random()),
            Protocol::Tcp => self.tcp.acquire(upstream, &mut self.timers),
        };
        if let Some(stats) = self.stats.upstreams.get(upstream as usize) {
            let proto = (link.protocol == Protocol::Tcp) as usize;
            match reused {
                true => stats.conn_cache_hits[proto].inc(),
                false => stats.conn_cache_misses[proto].inc(),
            }
        }
        let wire_id = self.free_wire_id(link);
        let timeout = self.config.limits.attempt_timeout;
        self.inflight
            .start_attempt(now, timeout, id, (link, wire_id), &mut self.timers);
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

    /// A random wire ID not in use on `link` by a query or a probe (16 tries; a collision
    /// after that only costs the matching its question check).
    pub(super) fn free_wire_id(&mut self, link: Link) -> u16 {
        let mut wire_id = self.rng.random::<u16>();
        for _ in 0..16 {
            if !self.inflight.wire_id_in_use(link, wire_id) && !self.health.is_probe(link, wire_id)
            {
                break;
            }
            wire_id = self.rng.random::<u16>();
        }
        wire_id
    }

    /// Forgets the current attempt of `id`, returning its TCP connection to the pool.
    pub(super) fn end_attempt(&mut self, now: Instant, id: PendingId) {
        if let Some(link) = self.inflight.finish_attempt(id, &mut self.timers) {
            if link.protocol == Protocol::Tcp {
                self.release_tcp(now, link);
            }
            self.upstream_gauges(link.upstream);
        }
    }

    /// An exchange on the TCP connection `link` is done; a retired connection left with
    /// nothing in flight is closed.
    pub(super) fn release_tcp(&mut self, now: Instant, link: Link) {
        if let Some(closing) = self.tcp.release(now, link, &mut self.timers) {
            self.outbox.push_back(Transmit::Close { link: closing });
        }
    }

    /// An exchange on the TCP connection `link` timed out: it takes no new query and closes
    /// once the queries on it are done ([`crate::upstream::pool`]).
    pub(super) fn retire_tcp(&mut self, link: Link) {
        if link.protocol != Protocol::Tcp {
            return;
        }
        if let Some(closing) = self.tcp.retire(link, &mut self.timers) {
            self.outbox.push_back(Transmit::Close { link: closing });
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

    /// The current attempt of `id` got no reply in time: count it against the upstream's
    /// health and try the next one.
    pub(super) fn attempt_timed_out(&mut self, now: Instant, id: PendingId) {
        self.stats.upstream_timeouts.inc();
        if let Some(pending) = self.inflight.get_mut(id)
            && let Some((link, _)) = pending.current
        {
            pending.last_failure = Some(AttemptFailure {
                upstream: link.upstream,
                protocol: link.protocol,
                error: None,
            });
            self.health
                .exchange_failed(now, link.upstream, &mut self.timers);
            self.retire_tcp(link);
            // A late reply must not meet the socket's next exchange.
            self.inflight.burn_udp(link);
        }
        self.send_attempt(now, id);
    }

    /// A message arrived on an upstream link: an answer to an attempt in flight (same ID and
    /// question), an answer to a health probe, or something to count and drop.
    pub(super) fn response(&mut self, now: Instant, link: Link, response: &[u8]) {
        let Ok(header) = Header::parse(response) else {
            self.stats.upstream_rejected.inc();
            self.suspect_forgery(now, link);
            return;
        };
        let Some(id) = self.inflight.by_wire(link, header.id) else {
            if !(header.qr() && self.probe_reply(now, link, header.id)) {
                self.stats.upstream_rejected.inc();
                self.suspect_forgery(now, link);
            }
            return;
        };
        let mut offsets = std::mem::take(&mut self.ttl_offsets);
        offsets.clear();
        // A reply whose names would change when its TTLs, header or OPT are rewritten is
        // garbage too: it could be neither relayed nor cached intact.
        let parsed = Message::parse_with(response, |o| offsets.push(o))
            .and_then(|message| check_patchable(&message, &offsets).map(|()| message));
        let accepted = match (&parsed, self.inflight.get(id)) {
            (Ok(message), Some(pending)) => {
                let (q, asked) = (&message.question, &pending.key.question);
                // A reply to our (standard) query: QR set and the query's opcode, which it is
                // served with from the cache.
                message.header.qr()
                    && message.header.opcode() == opcode::QUERY
                    && q.qtype == asked.qtype()
                    && q.qclass == asked.qclass()
                    && name_eq_lowercase(q.name, asked.qname())
            }
            _ => false,
        };
        let message = match parsed {
            Ok(message) if accepted => message,
            _ => {
                // Wrong question or garbage: over TCP, keep waiting for the real reply until
                // the deadline; over UDP, go on over TCP.
                self.stats.upstream_rejected.inc();
                if let Some(pending) = self.inflight.get(id) {
                    self.stats.servers[pending.key.server()].drops.inc();
                }
                self.ttl_offsets = offsets;
                self.suspect_forgery(now, link);
                return;
            }
        };
        self.stats.upstream_replies.inc();
        let rcode = message.header.rcode();
        let Some(pending) = self.inflight.get(id) else {
            self.ttl_offsets = offsets;
            return;
        };
        if let Some(stats) = self.stats.upstreams.get(link.upstream as usize) {
            let took = now.saturating_duration_since(pending.attempt_started);
            stats.durations[usize::from(rcode.value())].observe(took.as_micros() as u64);
        }
        let server = pending.key.server();
        let forward = self.config.servers[server].forward.as_ref();
        let prefer_udp = forward.is_some_and(|f| f.prefer_udp);
        let next = forward.is_some_and(|f| f.next.contains(&rcode));
        if message.header.tc() && link.protocol == Protocol::Udp && prefer_udp {
            // `prefer_udp`: a truncated reply is asked again over TCP (one more attempt).
            if let Some(pending) = self.inflight.get_mut(id) {
                pending.over_tcp = true;
                pending.attempts = pending.attempts.saturating_sub(1);
            }
            self.ttl_offsets = offsets;
            self.send_attempt(now, id);
            return;
        }
        self.end_attempt(now, id);
        let Some(pending) = self.inflight.remove(id, &mut self.timers) else {
            self.ttl_offsets = offsets;
            return;
        };
        if next {
            // `next RCODE`: the reply goes to the next plugin; there is none, so SERVFAIL (as
            // CoreDNS), or a usable cached entry.
            self.ttl_offsets = offsets;
            let reason = FailureReason::Text("next: no further plugin");
            let failed = Delivery::Failed(Rcode::SERVFAIL, reason);
            self.deliver(now, pending, failed);
            return;
        }
        let clock = self.nanos(now);
        let policy = self
            .caches_name(server, pending.key.question.qname())
            .then(|| self.caches[server].as_ref().map(|c| c.policy()))
            .flatten();
        let (stored, kind) = StoredResponse::from_upstream(&message, &offsets, policy, clock);
        self.ttl_offsets = offsets;
        self.deliver(now, pending, Delivery::Response(stored, kind));
    }

    /// A datagram on UDP `link` answered nothing (an unknown ID, the wrong question, not a
    /// reply, garbage). The socket is connected to the upstream and its own to the attempts
    /// on it, so it came from the upstream or from someone forging the upstream's address who
    /// found the port; a forger's next guess could be right. Every attempt on the link goes
    /// on over TCP (one more attempt, as after a truncated reply), where an off-path forger
    /// cannot reach, and the socket closes. Nothing happens on TCP links (their replies are
    /// the upstream's; a wrong one is skipped) or when no attempt waits on the link.
    fn suspect_forgery(&mut self, now: Instant, link: Link) {
        if link.protocol != Protocol::Udp {
            return;
        }
        // Never used again: closed now if idle, else once the attempts have moved on.
        self.inflight.burn_udp(link);
        for id in self.inflight.on_link(link) {
            let Some(pending) = self.inflight.get_mut(id) else {
                continue;
            };
            pending.over_tcp = true;
            pending.attempts = pending.attempts.saturating_sub(1);
            tracing::debug!(
                shard = self.shard,
                upstream = link.upstream,
                "unexpected datagram on an upstream UDP socket: going on over TCP"
            );
            self.stats.upstream_forgeries.inc();
            self.send_attempt(now, id);
        }
    }

    /// An upstream link failed or closed (`error`): its probe fails, and the attempts on it
    /// move on.
    pub(super) fn link_closed(&mut self, now: Instant, link: Link, error: LinkError) {
        if link.protocol == Protocol::Tcp {
            self.tcp.forget(link, &mut self.timers);
        }
        self.inflight.burn_udp(link);
        for (upstream, went_down) in self.health.link_closed(now, link, &mut self.timers) {
            self.inflight.release_udp(link);
            self.count_probe_failure(upstream, went_down);
        }
        let on_link = self.inflight.on_link(link);
        if !on_link.is_empty() {
            self.health
                .exchange_failed(now, link.upstream, &mut self.timers);
        }
        self.upstream_gauges(link.upstream);
        for id in on_link {
            self.stats.upstream_link_failures.inc();
            if let Some(pending) = self.inflight.get_mut(id) {
                pending.last_failure = Some(AttemptFailure {
                    upstream: link.upstream,
                    protocol: link.protocol,
                    error: Some(error),
                });
            }
            // The connection is gone: do not hand it back to the pool.
            self.inflight.finish_attempt(id, &mut self.timers);
            self.send_attempt(now, id);
        }
    }
}
