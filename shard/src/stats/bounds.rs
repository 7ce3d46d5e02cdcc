//! The shard's bounds — client TCP connections, a client's unread replies, pending queries,
//! waiting clients — each with a counter of the times it was reached
//! (`shardns_limit_reached_total{limit}`) and a log line when it is reached: the first time
//! at once, then at most one line per bound every [`LOG_EVERY`], saying how many more times
//! it was reached meanwhile. Sans clock: callers pass `now`.

use std::time::{Duration, Instant};

use tracing::warn;

use super::Counter;

/// The shortest time between two log lines about one bound.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A bound of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `client_tcp_max` connections were open when another came: the longest-idle one was
    /// closed, or, every one being busy, the new one.
    ClientTcpConnections,
    /// A client TCP connection let its replies pile up unread: it was closed, its replies
    /// having waited the idle time with no byte read (its queries are left unread once
    /// 64 KiB of replies wait), or more than a MiB of them waiting.
    ClientTcpBacklog,
    /// `max_pending` queries were in flight upstream: a new miss was refused.
    PendingQueries,
    /// `max_waiters` clients were waiting for upstream answers: one more was refused.
    WaitingClients,
}

impl Bound {
    /// Every bound, in the order of [`BoundStats::reached`].
    pub const ALL: [Bound; 4] = [
        Bound::ClientTcpConnections,
        Bound::ClientTcpBacklog,
        Bound::PendingQueries,
        Bound::WaitingClients,
    ];

    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            Bound::ClientTcpConnections => "client_tcp_connections",
            Bound::ClientTcpBacklog => "client_tcp_backlog",
            Bound::PendingQueries => "pending_queries",
            Bound::WaitingClients => "waiting_clients",
        }
    }

    /// What happens when it is reached, for the log line.
    fn consequence(self) -> &'static str {
        match self {
            Bound::ClientTcpConnections => {
                "client TCP connections at the cap: the longest-idle (or the new) one is closed"
            }
            Bound::ClientTcpBacklog => {
                "a client TCP connection left its replies unread: it is closed"
            }
            Bound::PendingQueries => "pending upstream queries at the cap: new misses get REFUSED",
            Bound::WaitingClients => {
                "clients waiting for upstream answers at the cap: more get REFUSED"
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How often each bound of one shard was reached.
#[derive(Debug, Default)]
pub struct BoundStats {
    /// Indexed like [`Bound::ALL`].
    pub reached: [Counter; 4],
}

impl BoundStats {
    /// The times `bound` was reached.
    pub fn get(&self, bound: Bound) -> u64 {
        self.reached[bound.index()].get()
    }
}

/// The log rule of a bound (the shard's, and the HTTP server's connection cap): a line the
/// first time it is reached, then at most one every [`LOG_EVERY`], saying how many more
/// times it was reached since the last line. Sans clock: callers pass `now`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReachedLog {
    /// When the last line was written.
    last: Option<Instant>,
    /// Times reached since, without a line.
    unlogged: u64,
}

impl ReachedLog {
    /// The bound was reached at `now`: `Some(n)` when a line is to be written now (`n` more
    /// times reached since the last one), `None` when it is only counted.
    pub fn reached(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The rate limit of the log lines of one shard's bounds.
#[derive(Debug)]
pub(crate) struct BoundLog {
    shard: usize,
    /// Per bound, indexed like [`Bound::ALL`].
    logs: [ReachedLog; 4],
}

impl BoundLog {
    pub(crate) fn new(shard: usize) -> BoundLog {
        BoundLog {
            shard,
            logs: [ReachedLog::default(); 4],
        }
    }

    /// `bound` was reached at `now` (`limit` is its value): counted in `stats`, and logged
    /// unless a line about it was written less than [`LOG_EVERY`] ago. Returns whether a
    /// line was written.
    pub(crate) fn reached(
        &mut self,
        now: Instant,
        stats: &BoundStats,
        bound: Bound,
        limit: usize,
    ) -> bool {
        let i = bound.index();
        stats.reached[i].inc();
        let Some(more) = self.logs[i].reached(now) else {
            return false;
        };
        warn!(
            shard = self.shard,
            limit = bound.label(),
            "{} ({limit}); reached {more} more times since the last line",
            bound.consequence()
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_time_is_logged_then_one_line_per_interval_with_the_count() {
        let stats = BoundStats::default();
        let mut log = BoundLog::new(0);
        let t0 = Instant::now();
        assert!(log.reached(t0, &stats, Bound::PendingQueries, 8));
        for k in 1..=5 {
            assert!(!log.reached(
                t0 + Duration::from_secs(k),
                &stats,
                Bound::PendingQueries,
                8
            ));
        }
        // Another bound has its own interval.
        assert!(log.reached(t0, &stats, Bound::WaitingClients, 8));
        assert_eq!(log.logs[Bound::PendingQueries.index()].unlogged, 5);
        assert!(log.reached(t0 + LOG_EVERY, &stats, Bound::PendingQueries, 8));
        assert_eq!(log.logs[Bound::PendingQueries.index()].unlogged, 0);
        assert_eq!(stats.get(Bound::PendingQueries), 7, "every time is counted");
        assert_eq!(stats.get(Bound::WaitingClients), 1);
        assert_eq!(stats.get(Bound::ClientTcpBacklog), 0);
    }

    #[test]
    fn labels_are_distinct_and_indexed_in_order() {
        for (i, bound) in Bound::ALL.iter().enumerate() {
            assert_eq!(bound.index(), i);
        }
        let mut labels: Vec<_> = Bound::ALL.iter().map(|b| b.label()).collect();
        labels.dedup();
        assert_eq!(labels.len(), Bound::ALL.len());
    }
}
