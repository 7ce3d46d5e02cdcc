//! A client query, from bytes to a decision: drop it, answer it with an error, let the block's
//! `ratelimit` and `acl` answer it, answer it from the cache (fresh, or stale in `immediate`
//! mode), or resolve it. This is the hot path: a cache hit is one parse, one key hash, one
//! table probe and one copy into the driver's buffer, patched in place; nothing allocates.

use std::time::{Duration, Instant};

use shardns_wire::build::{error_reply, header_only_reply};
use shardns_wire::{Header, Key, Message, Rcode, opcode};

use super::log::LoggedQuery;
use super::{Engine, nanos};
use crate::cache::{ClientView, Lookup};
use crate::fastpath::{HotEntry, Publication, combination};
use crate::names::in_zone;
use crate::question::{LowerQuestion, PendingKey};
use crate::stats::{Exchange, Writer};
use crate::timer::Timer;
use crate::upstream::{Requester, Waiter};
use crate::{Client, HINFO, Outcome, Protocol};

/// DNS class IN.
const CLASS_IN: u16 = 1;

/// In `verify` serve-stale mode, how long a client waits for the upstream before it gets the
/// stale answer (RFC 8767 §5 "stale-answer-client-timeout", recommended 1.8 s); the upstream
/// query goes on and refreshes the cache. CoreDNS makes the client wait for the whole upstream
/// timeout.
const STALE_CLIENT_TIMEOUT: Duration = Duration::from_millis(1800);

/// What the cache did with a client query.
enum CacheAnswer {
    /// A reply of this length, with this RCODE, is in the output buffer.
    Reply(usize, Rcode),
    /// Nothing usable: resolve it.
    Miss,
    /// Only a stale entry, in `verify` mode: resolve it, and serve the stale entry if the
    /// upstream fails or is slow.
    StaleVerify,
}

impl Engine {
    /// Decides what to do with a client query; an immediate reply goes into `out`.
    #[inline]
    pub(super) fn query(
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
        // The queries no block takes are counted in the listener's `dropped` slot.
        let dropped = self.slots.dropped(usize::from(client.listener));
        if header.opcode() != opcode::QUERY {
            let len = match &parsed {
                Ok(message) => error_reply(message, Rcode::NOTIMP, out),
                Err(_) => header_only_reply(query, Rcode::NOTIMP, out).unwrap_or(0),
            };
            let exchange = self.exchange(&client, parsed.as_ref().ok(), query.len());
            return self.error(dropped, exchange, Rcode::NOTIMP, len);
        }
        let message = match parsed {
            Ok(message) => message,
            Err(_) => {
                let len = header_only_reply(query, Rcode::FORMERR, out).unwrap_or(0);
                let exchange = self.exchange(&client, None, query.len());
                return self.error(dropped, exchange, Rcode::FORMERR, len);
            }
        };
        if message.edns.as_ref().is_some_and(|e| e.version != 0) {
            let len = error_reply(&message, Rcode::BADVERS, out);
            let exchange = self.exchange(&client, Some(&message), query.len());
            return self.error(dropped, exchange, Rcode::BADVERS, len);
        }
        let route = (message.question.qclass == CLASS_IN)
            .then(|| self.route(client.listener, message.question.name))
            .flatten();
        let exchange = self.exchange(&client, Some(&message), query.len());
        let Some((server, slot)) = route else {
            let len = error_reply(&message, Rcode::REFUSED, out);
            return self.error(dropped, exchange, Rcode::REFUSED, len);
        };
        if message.question.qtype == HINFO {
            // Before the policies, which must not hide a loop.
            self.check_loop(server, &client, message.question.name);
        }
        if self.polices()
            && let Some(outcome) = self.police(now, &client, &message, (server, slot), out)
        {
            return outcome;
        }
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
            CacheAnswer::Reply(len, rcode) => {
                let exchange = Exchange {
                    reply_len: len,
                    rcode,
                    writer: Writer::Cache,
                    ..exchange
                };
                self.stats.requests[slot].record(&exchange);
                if self.logs(server, message.question.name) {
                    self.log_query(&logged(&client, &message, 0), &out[..len]);
                }
                return Outcome::Reply(len);
            }
            CacheAnswer::Miss => false,
            CacheAnswer::StaleVerify => true,
        };
        self.forward(
            now,
            client,
            (server, slot),
            &message,
            hash,
            stale_verify,
            out,
        )
    }

    /// What the request metrics need of a query from `client` (the reply's part is filled
    /// in when it is known).
    #[inline]
    pub(super) fn exchange(
        &self,
        client: &Client,
        message: Option<&Message<'_>>,
        query_len: usize,
    ) -> Exchange {
        Exchange {
            protocol: client.protocol,
            ipv6: client.peer.is_ipv6(),
            qtype: message.map_or(0, |m| m.question.qtype),
            dnssec_ok: message.is_some_and(|m| m.dnssec_ok()),
            query_len,
            reply_len: 0,
            rcode: Rcode::NOERROR,
            writer: Writer::Server,
            micros: 0,
        }
    }

    /// Counts an error reply of `len` bytes already in the output buffer, written by
    /// `exchange.writer` (the server itself unless it says otherwise), in request slot `slot`.
    pub(super) fn error(
        &mut self,
        slot: Option<usize>,
        exchange: Exchange,
        rcode: Rcode,
        len: usize,
    ) -> Outcome {
        self.stats.count_error_reply(rcode);
        let exchange = Exchange {
            reply_len: len,
            rcode,
            ..exchange
        };
        if let Some(stats) = slot.and_then(|slot| self.stats.requests.get(slot)) {
            stats.record(&exchange);
        }
        Outcome::Reply(len)
    }

    /// The server block for `qname` on `listener` (the most specific zone containing it),
    /// and the request slot of that pair.
    #[inline]
    fn route(&self, listener: u16, qname: &[u8]) -> Option<(usize, usize)> {
        let servers = self.routes.get(listener as usize)?;
        let server = servers
            .iter()
            .copied()
            .find(|&s| in_zone(qname, &self.config.servers[s].zone))?;
        Some((server, self.slots.slot(usize::from(listener), server)?))
    }

    /// Whether server block `server` caches `qname` (its `cache` exists and its ZONES cover
    /// the name).
    pub(super) fn caches_name(&self, server: usize, qname: &[u8]) -> bool {
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
        let publish_bit = (view.protocol == Protocol::Udp
            && self.publisher.is_some()
            && self.config.servers[server].fastpath.is_some())
        .then(|| combination(view.edns.is_some(), view.flags & Header::AD != 0));
        let (len, rcode, refresh) = match cache.lookup(clock, key, hash, publish_bit) {
            Lookup::Fresh {
                response,
                kind,
                prefetch,
                remaining,
                publish,
            } => {
                let len = response.render(response.fresh_ttl_of(remaining), view, true, out);
                stats.hits[kind as usize].inc();
                if prefetch {
                    stats.prefetch.inc();
                }
                if publish && let (Some(publisher), Some(bit)) = (&self.publisher, publish_bit) {
                    // A clone shares the bytes: no allocation.
                    let hot = HotEntry::new(
                        (self.shard, server),
                        kind,
                        key.flags(),
                        bit,
                        response.clone(),
                        self.group.epoch,
                    );
                    if publisher.offer(Publication::Insert(hot)) {
                        self.stats.fastpath_published.inc();
                    } else {
                        self.stats.fastpath_dropped.inc();
                    }
                }
                (
                    len,
                    response.rcode(),
                    prefetch.then(|| response.stored_at()),
                )
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
                (len, response.rcode(), refresh.then(|| response.stored_at()))
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
        CacheAnswer::Reply(len, rcode)
    }

    /// A miss from a client: join or start its resolution; REFUSED when over limits or
    /// outside the block's `forward`. With `stale_verify`, the client gets the stale entry at
    /// [`STALE_CLIENT_TIMEOUT`] if no answer came by then.
    #[allow(clippy::too_many_arguments)] // the hot path's locals, passed without a struct
    fn forward(
        &mut self,
        now: Instant,
        client: Client,
        (server, slot): (usize, usize),
        message: &Message<'_>,
        hash: u64,
        stale_verify: bool,
        out: &mut [u8],
    ) -> Outcome {
        let key = Key::of(message);
        let q = &message.question;
        let exchange = self.exchange(&client, Some(message), message.buf.len());
        let Some(protocol) = self.upstream_protocol(server, q.name, client.protocol) else {
            let len = error_reply(message, Rcode::REFUSED, out);
            if self.logs(server, q.name) {
                self.log_query(&logged(&client, message, 0), &out[..len]);
            }
            return self.error(Some(slot), exchange, Rcode::REFUSED, len);
        };
        self.stats.cache_misses.inc();
        let waiter = Waiter {
            client,
            id: message.header.id,
            flags: message.header.flags,
            qname: q.name.into(),
            edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
            query_len: message.buf.len() as u16,
            arrived: nanos(&mut self.clock, self.group.epoch, now),
        };
        let key = PendingKey {
            server: server as u16,
            question: LowerQuestion::of_key(&key, hash),
            protocol,
        };
        match self.resolve(now, Requester::Client(waiter), key, None) {
            Ok(id) => {
                if stale_verify && !self.timers.contains(Timer::StaleVerify(id)) {
                    self.timers
                        .set(Timer::StaleVerify(id), now + STALE_CLIENT_TIMEOUT);
                }
                Outcome::Pending
            }
            Err(code) => {
                let len = error_reply(message, code, out);
                if self.logs(server, q.name) {
                    self.log_query(&logged(&client, message, 0), &out[..len]);
                }
                let exchange = Exchange {
                    writer: Writer::Forward,
                    ..exchange
                };
                self.error(Some(slot), exchange, code, len)
            }
        }
    }

    /// The `loop` check: a HINFO query for `qname` arrived from `client` in block `server`.
    /// The probe's second arrival is a loop: say so as CoreDNS does; the process stops.
    fn check_loop(&self, server: usize, client: &Client, qname: &[u8]) {
        let block = &self.config.servers[server];
        let Some(probe) = &block.loop_probe else {
            return;
        };
        if probe.arrived(qname) {
            let address = self
                .config
                .listeners
                .iter()
                .find(|listener| listener.servers.contains(&server))
                .map_or_else(String::new, |listener| listener.addr.to_string());
            tracing::error!(
                target: "plugin/loop",
                "Loop ({} -> {address}) detected for zone {:?}, see \
                 https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {}\"",
                client.peer,
                block.zone_text,
                crate::names::to_text(probe.qname()),
            );
        }
    }

    /// The transport to the upstreams of server block `server` for `qname`, or `None` when
    /// the block does not forward that name. The transport is part of what waiters share: a
    /// TCP client must not be handed the truncated reply of a query that went over UDP.
    pub(super) fn upstream_protocol(
        &self,
        server: usize,
        qname: &[u8],
        client: Protocol,
    ) -> Option<Protocol> {
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

/// The log line's view of `message` from `client`, answered after `micros`.
pub(super) fn logged<'a>(
    client: &'a Client,
    message: &'a Message<'_>,
    micros: u64,
) -> LoggedQuery<'a> {
    LoggedQuery {
        client,
        id: message.header.id,
        qtype: message.question.qtype,
        qname: message.question.name,
        query_len: message.buf.len(),
        edns: message.edns.as_ref().map(|e| (e.payload_size, e.dnssec_ok)),
        micros,
    }
}
