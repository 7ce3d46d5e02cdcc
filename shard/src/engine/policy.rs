//! A block's `ratelimit` and `acl`, applied to a query after it is routed and before the
//! cache is consulted (CoreDNS runs `acl` before `cache`): a client over its rate is refused,
//! truncated or dropped; then the `acl` rules allow, block, filter or drop it. Without either
//! in any block, a query pays one load and branch ([`Engine::polices`]).

use std::net::IpAddr;
use std::time::Instant;

use shardns_wire::build::{ede, ede_reply, error_reply};
use shardns_wire::{Header, Message, Rcode};

use super::query::logged;
use super::{Engine, nanos};
use crate::config::{AclAction, Config, RateLimitAction};
use crate::policy::{RateTable, Verdict};
use crate::stats::{Exchange, Writer};
use crate::{Client, Outcome, Protocol};

/// What a block's policies decided for a query.
enum Decision {
    /// It goes on to the cache.
    Pass,
    /// Over its client's rate.
    Limited(RateLimitAction),
    /// Blocked, filtered or dropped by an `acl` rule applying through zone slot `zone`.
    Denied { action: AclAction, zone: usize },
}

impl Engine {
    /// Whether some block has `acl` or `ratelimit`: one load and branch on the hit path when
    /// none has.
    #[inline(always)]
    pub(super) fn polices(&self) -> bool {
        self.policing
    }

    /// Applies the `ratelimit` and `acl` of block `server` to `message` from `client`
    /// (request slot `slot`): the outcome when one of them answers or drops it (a reply is in
    /// `out`), `None` when it goes on. Cold and out of line: its call site in the hit path
    /// alone made the compiler stop inlining the cache lookup there (+38 instructions a hit
    /// for blocks without policies, measured with callgrind); marked cold, it costs nothing
    /// measurable (docs/BENCHMARKS.md).
    #[cold]
    #[inline(never)]
    pub(super) fn police(
        &mut self,
        now: Instant,
        client: &Client,
        message: &Message<'_>,
        (server, slot): (usize, usize),
        out: &mut [u8],
    ) -> Option<Outcome> {
        let source = client.peer.ip();
        let decision = self.decide(now, client, message, server, source);
        let stats = self.stats.policies.get(slot);
        let (len, rcode, writer) = match decision {
            Decision::Pass => {
                if self.config.servers[server].acl.is_some()
                    && let Some(stats) = stats
                {
                    stats.acl_allowed.inc();
                }
                return None;
            }
            Decision::Limited(action) => {
                if let Some(stats) = stats {
                    stats.ratelimited[action.slot()].inc();
                }
                let len = match action {
                    RateLimitAction::Drop => return Some(Outcome::Drop),
                    RateLimitAction::Refuse => error_reply(message, Rcode::REFUSED, out),
                    RateLimitAction::Truncate => {
                        let len = error_reply(message, Rcode::NOERROR, out);
                        let flags = u16::from_be_bytes([out[2], out[3]]) | Header::TC;
                        out[2..4].copy_from_slice(&flags.to_be_bytes());
                        len
                    }
                };
                let rcode = match action {
                    RateLimitAction::Truncate => Rcode::NOERROR,
                    _ => Rcode::REFUSED,
                };
                (len, rcode, Writer::Ratelimit)
            }
            Decision::Denied { action, zone } => {
                if let (Some(stats), Some(slot)) = (stats, action.denial_slot())
                    && let Some(counters) = stats.acl_denied.get(zone)
                {
                    counters[slot].inc();
                }
                let (rcode, info) = match action {
                    AclAction::Filter => (Rcode::NOERROR, ede::FILTERED),
                    AclAction::Block => (Rcode::REFUSED, ede::BLOCKED),
                    AclAction::Drop | AclAction::Allow => return Some(Outcome::Drop),
                };
                let len = ede_reply(message, rcode, info, out);
                if self.logs(server, message.question.name) {
                    self.log_query(&logged(client, message, 0), &out[..len]);
                }
                (len, rcode, Writer::Acl)
            }
        };
        let exchange = Exchange {
            writer,
            ..self.exchange(client, Some(message), message.buf.len())
        };
        if rcode == Rcode::NOERROR {
            if let Some(requests) = self.stats.requests.get(slot) {
                requests.record(&Exchange {
                    reply_len: len,
                    rcode,
                    ..exchange
                });
            }
            return Some(Outcome::Reply(len));
        }
        Some(self.error(Some(slot), exchange, rcode, len))
    }

    /// The block's `ratelimit`, then its `acl`.
    fn decide(
        &mut self,
        now: Instant,
        client: &Client,
        message: &Message<'_>,
        server: usize,
        source: IpAddr,
    ) -> Decision {
        let block = &self.config.servers[server];
        if let Some(limit) = &block.ratelimit
            && !(limit.action == RateLimitAction::Truncate && client.protocol == Protocol::Tcp)
            && !limit.whitelist.iter().any(|net| net.contains(source))
            && let Some(Some(table)) = self.rates.get_mut(server)
        {
            let clock = nanos(&mut self.clock, self.group.epoch, now);
            if !table.admit(source, clock) {
                return Decision::Limited(limit.action);
            }
        }
        if let Some(acl) = &block.acl {
            let question = &message.question;
            if let Verdict::Denied { action, zone } =
                acl.decide(question.name, question.qtype, source)
            {
                return Decision::Denied { action, zone };
            }
        }
        Decision::Pass
    }

    /// The buckets of block `server`'s `ratelimit` in this shard (fixed when the table is
    /// made; `None` without `ratelimit`).
    pub fn rate_limit_buckets(&self, server: usize) -> Option<usize> {
        self.rates.get(server)?.as_ref().map(RateTable::capacity)
    }
}

/// Whether some block of `config` has `acl` or `ratelimit`.
pub(super) fn policing(config: &Config) -> bool {
    config
        .servers
        .iter()
        .any(|block| block.acl.is_some() || block.ratelimit.is_some())
}

/// Each block's `ratelimit` table, hashing under `seed`. On a reload (`running` the tables
/// of `old`), a block whose `ratelimit` is unchanged keeps its table and its clients' debts.
pub(super) fn rate_tables(
    config: &Config,
    seed: u64,
    old: Option<(&Config, &mut Vec<Option<RateTable>>)>,
) -> Vec<Option<RateTable>> {
    let mut running: Vec<Option<RateTable>> = Vec::new();
    let mut old_config = None;
    if let Some((config, tables)) = old {
        running = std::mem::take(tables);
        old_config = Some(config);
    }
    config
        .servers
        .iter()
        .enumerate()
        .map(|(server, block)| {
            let limit = block.ratelimit.as_ref()?;
            let unchanged = old_config
                .and_then(|old| old.servers.get(server))
                .is_some_and(|old| old.ratelimit.as_ref() == Some(limit));
            match running.get_mut(server).and_then(Option::take) {
                Some(table) if unchanged => Some(table),
                _ => Some(RateTable::new(limit, seed)),
            }
        })
        .collect()
}
