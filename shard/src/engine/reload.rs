//! Switching a running shard to a new configuration (a reload) without losing its cache.

use std::sync::Arc;
use std::time::Instant;

use super::{Engine, PEER_GRACE, tcp_pool};
use crate::Transmit;
use crate::cache::PacketCache;
use crate::config::{Config, RestartNeeded};
use crate::health::Health;
use crate::stats::RequestSlots;
use crate::timer::Timer;

impl Engine {
    /// Switches to `config` (a reload) keeping every cache: entries stay, with the new
    /// policy (a smaller capacity evicts at once). Queries in flight go on; when the upstream
    /// list changed, their attempts restart on the new upstreams and old connections close.
    /// What may change is decided by [`Config::check_reload`], as for the process.
    pub fn reconfigure(&mut self, now: Instant, config: Arc<Config>) -> Result<(), RestartNeeded> {
        let old = Arc::clone(&self.config);
        old.check_reload(&config)?;
        if config.servers.len() > self.stats.servers.len() {
            // No counters for the new blocks.
            return Err(RestartNeeded::Servers);
        }
        let clock = self.nanos(now);
        let hold = config.limits.query_timeout + PEER_GRACE;
        // Blocks keep their index; new ones come after (check_reload).
        self.caches.resize_with(config.servers.len(), || None);
        self.routes = super::routes(&config);
        self.logging = config.servers.iter().any(|s| s.log_queries.is_some());
        self.policing = super::policy::policing(&config);
        self.rates =
            super::policy::rate_tables(&config, self.rate_seed, Some((&old, &mut self.rates)));
        self.slots = RequestSlots::of(&config, self.stats.servers.len());
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
        if let Some(publisher) = &self.publisher {
            // What was published under the old policy is withdrawn; hot entries publish
            // again as they are hit.
            publisher.offer(crate::fastpath::Publication::Reset { shard: self.shard });
            for cache in self.caches.iter_mut().flatten() {
                cache.forget_published();
            }
            self.withdraw_evictions();
        }
        // The probes in flight are forgotten: their UDP sockets close.
        for link in self.health.probe_links() {
            self.inflight.release_udp(link);
        }
        self.health = Health::new(&config);
        for upstream in 0..old.upstreams.len() {
            // The old probes are void: their upstreams may have other indices now.
            let upstream = upstream as u16;
            self.timers.clear(Timer::ProbeDue(upstream));
            self.timers.clear(Timer::ProbeReply(upstream));
        }
        if old.upstreams != config.upstreams {
            for link in self.tcp.reset(&mut self.timers) {
                self.outbox.push_back(Transmit::Close { link });
            }
            self.tcp = tcp_pool(&config).continuing(&self.tcp);
            // Upstream indices may name other addresses now: no new attempt shares an old
            // UDP socket (each closes when its attempts are over).
            self.inflight.retire_udp();
            for id in self.inflight.ids() {
                self.inflight.finish_attempt(id, &mut self.timers);
                let Some(pending) = self.inflight.get_mut(id) else {
                    continue;
                };
                if pending.owner.is_some() {
                    continue;
                }
                let forward = config.servers[pending.key.server()].forward.as_ref();
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
