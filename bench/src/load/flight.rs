//! Queries in flight on one socket or connection: DNS IDs, send times, timeouts.
//!
//! The table has a power-of-two number of slots; a query's ID is its slot index in the low
//! bits and the slot's generation in the high bits, so a reply to a query that already timed
//! out (or an ID nobody is waiting for) does not match the slot's next query. Freed slots
//! are reused in FIFO order, which delays reuse as long as possible. Timeouts are found in
//! send order (the timeout is the same for every query), so expiry is O(1) per query.

use std::collections::VecDeque;

/// The largest table: the whole 16-bit ID space.
pub(crate) const MAX_SLOTS: usize = 1 << 16;

/// A query found by its reply's ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Landed {
    /// Index of the query in the query list (`--unique`: the name's number).
    pub query: u64,
    /// When it was sent (nanoseconds on the worker's clock).
    pub sent_ns: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    sent_ns: u64,
    query: u64,
    id: u16,
    busy: bool,
}

/// The in-flight table of one socket or connection.
#[derive(Debug)]
pub(crate) struct Flight {
    slots: Vec<Slot>,
    free: VecDeque<u16>,
    /// (ID, send time) in send order; entries whose slot moved on are skipped lazily.
    order: VecDeque<(u16, u64)>,
    bits: u32,
    busy: usize,
}

impl Flight {
    /// A table of at least `capacity` slots (rounded up to a power of two, at most 65536).
    pub(crate) fn new(capacity: usize) -> Self {
        let len = capacity.clamp(1, MAX_SLOTS).next_power_of_two();
        let bits = len.trailing_zeros();
        let slots = (0..len)
            .map(|index| Slot {
                id: index as u16,
                ..Slot::default()
            })
            .collect();
        let free = (0..len).map(|index| index as u16).collect();
        Flight {
            slots,
            free,
            order: VecDeque::new(),
            bits,
            busy: 0,
        }
    }

    /// Queries in flight.
    pub(crate) fn busy(&self) -> usize {
        self.busy
    }

    /// Slots free for new queries.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// Takes a slot for query `query` sent at `now`; returns its ID, or `None` when full.
    pub(crate) fn begin(&mut self, query: u64, now: u64) -> Option<u16> {
        let index = self.free.pop_front()?;
        let slot = &mut self.slots[usize::from(index)];
        let generations = (1u32 << (16 - self.bits)) - 1;
        let generation = ((u32::from(slot.id) >> self.bits) + 1) & generations;
        let id = (u32::from(index) | (generation << self.bits)) as u16;
        *slot = Slot {
            sent_ns: now,
            query,
            id,
            busy: true,
        };
        self.busy += 1;
        self.order.push_back((id, now));
        Some(id)
    }

    /// The query waiting for `id`, if any (its slot stays busy).
    pub(crate) fn query(&self, id: u16) -> Option<u64> {
        let slot = &self.slots[usize::from(id) & (self.slots.len() - 1)];
        (slot.busy && slot.id == id).then_some(slot.query)
    }

    /// The query waiting for `id`, if any; its slot is freed.
    pub(crate) fn land(&mut self, id: u16) -> Option<Landed> {
        let index = usize::from(id) & (self.slots.len() - 1);
        let slot = &mut self.slots[index];
        if !slot.busy || slot.id != id {
            return None;
        }
        slot.busy = false;
        self.busy -= 1;
        self.free.push_back(index as u16);
        Some(Landed {
            query: slot.query,
            sent_ns: slot.sent_ns,
        })
    }

    /// Frees every query sent at or before `now - timeout_ns`, calling `lost` with each one's
    /// send time.
    pub(crate) fn expire(&mut self, now: u64, timeout_ns: u64, mut lost: impl FnMut(u64)) {
        while let Some(&(id, sent_ns)) = self.order.front() {
            let slot = &self.slots[usize::from(id) & (self.slots.len() - 1)];
            if slot.busy && slot.id == id && slot.sent_ns == sent_ns {
                if now.saturating_sub(sent_ns) < timeout_ns {
                    break;
                }
                self.land(id);
                lost(sent_ns);
            }
            self.order.pop_front();
        }
    }

    /// The send time of the oldest entry in send order (a lower bound on the oldest query
    /// still in flight), for computing the next expiry.
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.order.front().map(|&(_, sent_ns)| sent_ns)
    }

    /// Frees every query in flight, calling `lost` with each one's send time.
    pub(crate) fn abandon(&mut self, lost: impl FnMut(u64)) {
        self.expire(u64::MAX, 0, lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_only_their_own_query() {
        let mut flight = Flight::new(3);
        assert_eq!(flight.free(), 4);
        let a = flight.begin(7, 100).unwrap();
        let b = flight.begin(8, 110).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            flight.land(b),
            Some(Landed {
                query: 8,
                sent_ns: 110
            })
        );
        assert_eq!(flight.land(b), None, "a second reply does not match");
        assert_eq!(flight.busy(), 1);
        let mut lost = Vec::new();
        flight.expire(1_099, 1000, |t| lost.push(t));
        assert!(lost.is_empty());
        flight.expire(1_100, 1000, |t| lost.push(t));
        assert_eq!(lost, [100]);
        assert_eq!(flight.land(a), None, "a late reply does not match");
        // Every slot cycles; the reused slot of `a` carries a new generation.
        let ids: Vec<u16> = (0..4).map(|q| flight.begin(q, 2000).unwrap()).collect();
        assert!(flight.begin(9, 2000).is_none(), "full");
        assert!(!ids.contains(&a) && !ids.contains(&b));
        let mut abandoned = 0;
        flight.abandon(|_| abandoned += 1);
        assert_eq!((abandoned, flight.busy(), flight.free()), (4, 0, 4));
    }

    #[test]
    fn full_id_space_has_no_generation_bits() {
        let mut flight = Flight::new(MAX_SLOTS);
        let first = flight.begin(0, 0).unwrap();
        assert_eq!(flight.land(first).map(|l| l.query), Some(0));
        for _ in 0..MAX_SLOTS - 1 {
            flight.begin(1, 1).unwrap();
        }
        assert_eq!(
            flight.begin(2, 2),
            Some(first),
            "reused only after every other slot"
        );
    }
}
