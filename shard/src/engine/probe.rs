//! Health probes: `. IN NS` (or the configured name) to each upstream that failed an exchange,
//! every `health_check` interval until one gets a reply (see [`crate::health`]).

use std::time::Instant;

use rand::Rng;
use shardns_wire::build::upstream_query;
use shardns_wire::{Header, Question, rtype};

use super::Engine;
use crate::{Link, Protocol, Transmit};

impl Engine {
    /// The probe of `upstream` is due: send it.
    pub(super) fn send_probe(&mut self, now: Instant, upstream: u16) {
        let Some(spec) = self.health.spec(upstream).cloned() else {
            return;
        };
        let Some(target) = self.config.upstreams.get(upstream as usize) else {
            return;
        };
        let addr = target.addr;
        if let Some(old) = self.health.probe_link(upstream) {
            // Not expected (a probe is sent when none is in flight); its socket closes.
            self.inflight.release_udp(old);
        }
        let link = match spec.tcp {
            true => self.tcp.acquire(upstream, &mut self.timers).0,
            false => self.inflight.acquire_udp(upstream, self.rng.random()).0,
        };
        let id = self.free_wire_id(link);
        let question = Question {
            name: &spec.name,
            qtype: rtype::NS,
            qclass: 1,
        };
        let flags = if spec.recursion { Header::RD } else { 0 };
        let len = upstream_query(id, flags, &question, false, &mut self.scratch);
        self.health
            .probe_sent(now, upstream, (link, id), &mut self.timers);
        self.outbox.push_back(Transmit::Query {
            link,
            addr,
            payload: self.scratch[..len].to_vec(),
        });
    }

    /// The probe of `upstream` got no reply by its deadline. A TCP probe's connection is
    /// retired and given back, as an attempt's.
    pub(super) fn probe_failed(&mut self, now: Instant, upstream: u16) {
        if let Some(link) = self.health.probe_link(upstream) {
            match link.protocol {
                Protocol::Tcp => {
                    self.retire_tcp(link);
                    self.release_tcp(now, link);
                }
                Protocol::Udp => {
                    self.inflight.burn_udp(link);
                    self.inflight.release_udp(link);
                }
            }
        }
        let went_down = self.health.probe_failed(now, upstream, &mut self.timers);
        self.count_probe_failure(upstream, went_down);
    }

    /// Counts a failed probe of `upstream` (`coredns_proxy_healthcheck_failures_total`), and
    /// says so once when it took the upstream down.
    pub(super) fn count_probe_failure(&self, upstream: u16, went_down: bool) {
        if let Some(stats) = self.stats.upstreams.get(upstream as usize) {
            stats.healthcheck_failures.inc();
        }
        if went_down && let Some(target) = self.config.upstreams.get(usize::from(upstream)) {
            tracing::warn!(
                shard = self.shard,
                "upstream {} is down: {} health checks failed in a row",
                target.addr,
                self.health.fails(upstream)
            );
        }
    }

    /// Whether a message on `link` with ID `id` answers a probe; if so the upstream is healthy
    /// again (any parseable reply will do, as in CoreDNS).
    pub(super) fn probe_reply(&mut self, now: Instant, link: Link, id: u16) -> bool {
        let Some((upstream, was_down)) = self.health.probe_answered(link, id, &mut self.timers)
        else {
            return false;
        };
        if was_down && let Some(target) = self.config.upstreams.get(usize::from(upstream)) {
            tracing::info!(shard = self.shard, "upstream {} is up again", target.addr);
        }
        match link.protocol {
            Protocol::Tcp => self.release_tcp(now, link),
            Protocol::Udp => self.inflight.release_udp(link),
        }
        self.upstream_gauges(upstream);
        true
    }
}
