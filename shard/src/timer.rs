//! Every deadline the engine keeps, as one closed enum in one table (after quinn-proto's
//! `Timer` / `TimerTable`): an upstream attempt, a query's overall deadline, a `verify`
//! serve-stale client deadline, a health probe due or unanswered, an idle upstream
//! connection. Each timer is keyed by what it is for, so setting it again moves it and
//! clearing it removes it; the table keeps itself tidy, so [`TimerTable::next_deadline`] is
//! always a live deadline and no caller has to clean up after cancelled timers.
//!
//! Deadlines of any length mix in one table (a queue per kind would have to assume one
//! length per kind, which a query waiting on its owner shard, or upstreams with different
//! `expire`s, break). No clock is read: callers pass instants.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Instant;

use hashbrown::HashMap;

use crate::upstream::PendingId;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The current attempt of a pending query got no reply in time: try the next upstream.
    Attempt(PendingId),
    /// A pending query ran out of time: its clients get SERVFAIL (or a usable stale entry).
    /// A query waiting on its owner shard gets the owner's deadline plus a grace.
    Overall(PendingId),
    /// In `verify` serve-stale mode, the clients of a pending query get the stale entry
    /// (RFC 8767's client timeout); the query goes on.
    StaleVerify(PendingId),
    /// The next health probe of upstream `.0` is due.
    ProbeDue(u16),
    /// The health probe in flight to upstream `.0` got no reply in time.
    ProbeReply(u16),
    /// An idle upstream TCP connection is closed.
    Idle { upstream: u16, conn: u32 },
}

/// Deadlines keyed by what they are for: at most one per key.
#[derive(Debug)]
pub(crate) struct TimerTable<K = Timer> {
    /// The sequence number of each key's live heap entry (which holds its deadline).
    deadlines: HashMap<K, u64>,
    /// Earliest first. Entries whose key was cleared or set again are dead; they are
    /// dropped when they reach the top (so the top is always live) or when dead entries
    /// outnumber live ones (so memory stays proportional to the live timers).
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    next_sequence: u64,
}

impl<K: Copy + Eq + Hash + Ord> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            deadlines: HashMap::new(),
            heap: BinaryHeap::new(),
            next_sequence: 0,
        }
    }
}

/// Dead heap entries tolerated beyond the live ones before the heap is rebuilt.
const SLACK: usize = 64;

impl<K: Copy + Eq + Hash + Ord> TimerTable<K> {
    /// Sets `key`'s deadline to `at`, replacing any it had.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.deadlines.insert(key, sequence);
        self.heap.push(Reverse((at, sequence, key)));
        self.tidy();
    }

    /// Removes `key`'s deadline, if it has one.
    pub(crate) fn clear(&mut self, key: K) {
        if self.deadlines.remove(&key).is_some() {
            self.tidy();
        }
    }

    /// Whether `key` has a deadline.
    pub(crate) fn contains(&self, key: K) -> bool {
        self.deadlines.contains_key(&key)
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The key of the earliest deadline at or before `now`, removed from the table. Call
    /// until `None` to fire every due timer, earliest first (ties in the order set).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &Reverse((at, _, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.deadlines.remove(&key);
        self.tidy();
        Some(key)
    }

    /// Live timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// Drops dead entries from the top of the heap, and rebuilds it when dead entries
    /// outnumber live ones.
    fn tidy(&mut self) {
        while let Some(&Reverse((_, sequence, key))) = self.heap.peek() {
            if self.deadlines.get(&key) == Some(&sequence) {
                break;
            }
            self.heap.pop();
        }
        if self.heap.len() > 2 * self.deadlines.len() + SLACK {
            let deadlines = &self.deadlines;
            let live: Vec<_> = std::mem::take(&mut self.heap)
                .into_iter()
                .filter(|Reverse((_, sequence, key))| deadlines.get(key) == Some(sequence))
                .collect();
            self.heap = BinaryHeap::from(live);
        }
    }

    /// Heap entries, dead ones included (tests of the tidying).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::upstream::PendingId;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pending(slot: u32) -> PendingId {
        PendingId::for_tests(slot)
    }

    /// Pops everything due at `now`.
    fn due(table: &mut TimerTable, now: Instant) -> Vec<Timer> {
        std::iter::from_fn(|| table.pop_due(now)).collect()
    }

    #[test]
    fn each_kind_fires_at_its_deadline_and_not_before() {
        let t0 = Instant::now();
        let kinds = [
            Timer::Attempt(pending(1)),
            Timer::Overall(pending(1)),
            Timer::StaleVerify(pending(1)),
            Timer::ProbeDue(3),
            Timer::ProbeReply(3),
            Timer::Idle {
                upstream: 3,
                conn: 9,
            },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let mut table = TimerTable::default();
            let at = t0 + ms(100 * (i as u64 + 1));
            table.set(kind, at);
            assert!(table.contains(kind));
            assert_eq!(table.next_deadline(), Some(at), "{kind:?}");
            assert_eq!(table.pop_due(at - ms(1)), None, "{kind:?} early");
            assert_eq!(table.pop_due(at), Some(kind));
            assert_eq!((table.len(), table.next_deadline()), (0, None));
        }
    }

    #[test]
    fn mixed_deadlines_fire_in_time_order_whatever_the_order_set() {
        // One table holds an owner's 5 s deadline set after a waiting shard's 6 s one, and
        // idle connections with different `expire`s: each fires at its own time.
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::Overall(pending(1)), t0 + ms(6_000));
        table.set(Timer::Overall(pending(2)), t0 + ms(5_000));
        table.set(
            Timer::Idle {
                upstream: 0,
                conn: 1,
            },
            t0 + ms(30_000),
        );
        table.set(
            Timer::Idle {
                upstream: 1,
                conn: 2,
            },
            t0 + ms(2_000),
        );
        table.set(Timer::Attempt(pending(2)), t0 + ms(2_000));
        assert_eq!(table.next_deadline(), Some(t0 + ms(2_000)));
        assert!(due(&mut table, t0 + ms(1_999)).is_empty());
        assert_eq!(
            due(&mut table, t0 + ms(2_000)),
            vec![
                Timer::Idle {
                    upstream: 1,
                    conn: 2
                },
                Timer::Attempt(pending(2))
            ],
            "equal deadlines fire in the order they were set"
        );
        assert_eq!(
            due(&mut table, t0 + ms(6_000)),
            vec![Timer::Overall(pending(2)), Timer::Overall(pending(1))]
        );
        assert_eq!(table.next_deadline(), Some(t0 + ms(30_000)));
    }

    #[test]
    fn setting_again_moves_and_clearing_removes() {
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        let probe = Timer::ProbeDue(0);
        table.set(probe, t0 + ms(100));
        table.set(probe, t0 + ms(500));
        assert_eq!(table.len(), 1);
        assert_eq!(table.next_deadline(), Some(t0 + ms(500)), "moved later");
        table.set(probe, t0 + ms(50));
        assert_eq!(due(&mut table, t0 + ms(1_000)), vec![probe], "fires once");
        table.set(Timer::Attempt(pending(4)), t0 + ms(10));
        table.set(Timer::Overall(pending(4)), t0 + ms(20));
        table.clear(Timer::Attempt(pending(4)));
        table.clear(Timer::Attempt(pending(4)));
        assert_eq!(
            table.next_deadline(),
            Some(t0 + ms(20)),
            "a cleared timer is never reported"
        );
        assert_eq!(
            due(&mut table, t0 + ms(20)),
            vec![Timer::Overall(pending(4))]
        );
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn cleared_timers_do_not_pile_up() {
        // A busy shard: every attempt is answered (cleared) long before its deadline, and
        // the deadlines of the cleared ones are later than the one live timer's.
        let t0 = Instant::now();
        let mut table = TimerTable::default();
        table.set(Timer::ProbeDue(0), t0 + ms(1));
        for slot in 0..100_000 {
            let attempt = Timer::Attempt(pending(slot));
            table.set(attempt, t0 + ms(2_000) + ms(u64::from(slot)));
            table.clear(attempt);
        }
        assert_eq!(table.len(), 1);
        assert!(
            table.heap_len() <= 2 + SLACK,
            "{} entries",
            table.heap_len()
        );
        assert_eq!(
            due(&mut table, t0 + ms(10_000_000)),
            vec![Timer::ProbeDue(0)]
        );
    }
}
