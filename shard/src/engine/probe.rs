//! Health probes: `. IN NS` (or the configured name) to each upstream that failed an exchange,
//! every `health_check` interval until one gets a reply (see [`crate::health`]).

use std::time::Instant;

use rand::Rng;
use shardns_wire::Header;
use shardns_wire::Question;
use shardns_wire::build::upstream_query;

use super::Engine;
use crate::{Link, Protocol, Transmit};

/// DNS type NS.
const TYPE_NS: u16 = 2;

impl Engine {
    /// Sends the probes due at `now` and counts the ones that went unanswered.
    pub(super) fn run_probes(&mut self, now: Instant) {
        for upstream in self.health.expire(now, None) {
            self.probe_failed(now, upstream);
        }
        for probe in self.health.due(now) {
            self.send_probe(now, probe.upstream);
        }
    }

    /// A probe of `upstream` failed (no reply in time, or its connection closed).
    pub(super) fn probe_failed(&mut self, now: Instant, upstream: u16) {
        if let Some(stats) = self.stats.upstreams.get(upstream as usize) {
            stats.healthcheck_failures.inc();
        }
        let _ = now;
    }

    fn send_probe(&mut self, now: Instant, upstream: u16) {
        let Some(spec) = self.health.spec(upstream).cloned() else {
            return;
        };
        let Some(target) = self.config.upstreams.get(upstream as usize) else {
            return;
        };
        let addr = target.addr;
        let link = match spec.tcp {
            true => self.tcp.acquire(now, upstream).0,
            false => Link {
                upstream,
                protocol: Protocol::Udp,
                conn: 0,
            },
        };
        let mut id = self.rng.random::<u16>();
        for _ in 0..16 {
            if !self.inflight.wire_id_in_use(link, id) {
                break;
            }
            id = self.rng.random::<u16>();
        }
        let question = Question {
            name: &spec.name,
            qtype: TYPE_NS,
            qclass: 1,
        };
        let flags = if spec.recursion { Header::RD } else { 0 };
        let len = upstream_query(id, flags, &question, false, &mut self.scratch);
        self.health.probe_sent(now, upstream, link, id);
        self.outbox.push_back(Transmit::Query {
            link,
            addr,
            payload: self.scratch[..len].to_vec(),
        });
    }

    /// Whether a message on `link` with ID `id` answers a probe; if so the upstream is healthy
    /// again (any parseable reply will do, as in CoreDNS).
    pub(super) fn probe_reply(&mut self, now: Instant, link: Link, id: u16) -> bool {
        let Some(upstream) = self.health.probe_answered(link, id) else {
            return false;
        };
        if link.protocol == Protocol::Tcp {
            self.tcp.release(now, link);
        }
        self.upstream_gauges(upstream);
        true
    }
}
