//! Leaving the listening sockets to another process (a hand-off) without losing a query: the
//! process asks every shard of its group to stop reading ([`Drain::request`]); each shard then
//! stops reading its listening sockets and its client TCP connections, says so, and keeps
//! running until every shard of the group has stopped reading (so no shard can still hand it
//! a miss) and it owes nothing more: no query in flight, no reply left to write. Then it
//! returns, as if its shutdown flag had been set. What the kernel has queued on the sockets
//! meanwhile is read by the process that took them over.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The drain of one shard group, shared by its shards and the process.
#[derive(Debug)]
pub struct Drain {
    requested: AtomicBool,
    stopped: AtomicUsize,
    shards: usize,
}

impl Drain {
    /// The drain of a group of `shards` shards, not requested.
    pub fn new(shards: usize) -> Drain {
        Drain {
            requested: AtomicBool::new(false),
            stopped: AtomicUsize::new(0),
            shards,
        }
    }

    /// Asks every shard to stop reading (they notice within their loop's longest sleep, or at
    /// once when woken, e.g. by a [`crate::ShardControl::broadcast`]).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether the drain was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// How many shards have stopped reading.
    pub fn stopped(&self) -> usize {
        self.stopped.load(Ordering::SeqCst)
    }

    /// A shard has stopped reading.
    pub(crate) fn stopped_reading(&self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }

    /// Every shard of the group has stopped reading: nothing new can reach any of them.
    pub(crate) fn all_stopped(&self) -> bool {
        self.stopped() >= self.shards
    }
}

/// A driver's view of the drain: whether it has stopped reading yet, and whether it may
/// leave.
#[derive(Debug)]
pub(crate) struct DrainState<'a> {
    drain: &'a Drain,
    stopped: bool,
}

impl<'a> DrainState<'a> {
    pub(crate) fn new(drain: &'a Drain) -> DrainState<'a> {
        DrainState {
            drain,
            stopped: false,
        }
    }

    /// `true` once, when the drain is requested and this shard has not yet stopped reading:
    /// the caller stops reading, then calls [`DrainState::stopped_reading`].
    pub(crate) fn must_stop_reading(&self) -> bool {
        !self.stopped && self.drain.is_requested()
    }

    /// This shard has stopped reading.
    pub(crate) fn stopped_reading(&mut self) {
        self.stopped = true;
        self.drain.stopped_reading();
    }

    /// Whether the shard may leave: it stopped reading, so did every other, and `idle` (it
    /// owes nothing).
    pub(crate) fn may_leave(&self, idle: bool) -> bool {
        self.stopped && idle && self.drain.all_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_leaves_only_when_every_shard_stopped_and_it_is_idle() {
        let drain = Drain::new(2);
        let mut first = DrainState::new(&drain);
        let mut second = DrainState::new(&drain);
        assert!(!first.must_stop_reading(), "not requested");
        drain.request();
        assert!(first.must_stop_reading());
        first.stopped_reading();
        assert!(!first.must_stop_reading(), "once");
        assert!(!first.may_leave(true), "the other still reads");
        second.stopped_reading();
        assert!(!first.may_leave(false), "owes a reply");
        assert!(first.may_leave(true));
        assert_eq!(drain.stopped(), 2);
    }
}
