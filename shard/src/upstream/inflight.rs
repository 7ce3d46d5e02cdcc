//! The in-flight table of one shard: every resolution under way, indexed by its
//! [`PendingKey`] (for coalescing) and by link + wire ID (for matching upstream replies),
//! with its attempt and overall deadlines in the engine's [`TimerTable`], and the upstream UDP
//! sockets its attempts (and the health probes) use ([`UdpSockets`]): an attempt's socket is
//! released whenever the attempt ends, however it ends. No I/O and no clock: callers pass
//! `now`.

use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashTable};

use super::udp::UdpSockets;
use crate::failure::AttemptFailure;
use crate::question::PendingKey;
use crate::timer::{Timer, TimerTable};
use crate::{Client, Link, Protocol};

/// A pending query's handle: its slot in the table and the slot's generation, so a handle
/// (in a timer, say) never reaches a later query that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PendingId {
    slot: u32,
    generation: u32,
}

impl PendingId {
    /// A handle for unit tests of structures that only carry it.
    #[cfg(test)]
    pub(crate) fn for_tests(slot: u32) -> PendingId {
        PendingId {
            slot,
            generation: 0,
        }
    }
}

/// A client waiting for an upstream answer, with what its reply must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub(crate) client: Client,
    pub(crate) id: u16,
    pub(crate) flags: u16,
    /// The client's qname bytes, in its case.
    pub(crate) qname: Box<[u8]>,
    /// `Some((UDP payload size, DO))` when the query had an OPT record.
    pub(crate) edns: Option<(u16, bool)>,
    /// The query's length in bytes (for the request metrics).
    pub(crate) query_len: u16,
    /// When the query arrived (engine clock, nanoseconds), for the request metrics.
    pub(crate) arrived: u64,
}

/// Who a resolution is for, besides the clients that join it later.
#[derive(Debug)]
pub(crate) enum Requester {
    /// A client of this shard.
    Client(Waiter),
    /// Another shard (this shard owns the key).
    Shard(u16),
    /// Nobody: a prefetch or stale refresh that only updates caches.
    Refresh,
}

/// A resolution under way, shared by every client and shard that asked the same question.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) key: PendingKey,
    /// The query as sent upstream; its ID is rewritten for each attempt. Empty while the
    /// key's owner shard resolves it.
    pub(crate) query: Vec<u8>,
    /// Clients of this shard waiting for the answer (none for a refresh).
    pub(crate) waiters: Vec<Waiter>,
    /// Other shards waiting for the answer (this shard owns the key).
    pub(crate) shards: Vec<u16>,
    /// `Some(owner)`: the key belongs to another shard, which was asked; no upstream
    /// attempts are made here.
    pub(crate) owner: Option<u16>,
    /// Upstream indices to try, in order.
    pub(crate) upstreams: Vec<u16>,
    /// Attempts made so far.
    pub(crate) attempts: usize,
    /// Most attempts (CoreDNS: 2 × the number of upstreams; 1 when every upstream is down
    /// and one is tried anyway).
    pub(crate) max_attempts: usize,
    /// The attempt in progress: link and wire ID.
    pub(crate) current: Option<(Link, u16)>,
    /// When the current attempt went out.
    pub(crate) attempt_started: Instant,
    /// A truncated reply over UDP moved the attempts to TCP (`prefer_udp`). The key keeps
    /// its transport, so the clients and shards waiting on it still find it.
    pub(crate) over_tcp: bool,
    /// How the last attempt failed, for the `errors` log.
    pub(crate) last_failure: Option<AttemptFailure>,
}

impl Pending {
    /// A resolution of `key` for `requester`, going to `upstreams` with `query` (none of
    /// either while the owner shard `owner` resolves it).
    pub(crate) fn new(
        now: Instant,
        key: PendingKey,
        requester: Requester,
        owner: Option<u16>,
    ) -> Pending {
        let (waiters, shards) = match requester {
            Requester::Client(waiter) => (vec![waiter], Vec::new()),
            Requester::Shard(shard) => (Vec::new(), vec![shard]),
            Requester::Refresh => (Vec::new(), Vec::new()),
        };
        Pending {
            key,
            query: Vec::new(),
            waiters,
            shards,
            owner,
            upstreams: Vec::new(),
            attempts: 0,
            max_attempts: usize::MAX,
            current: None,
            attempt_started: now,
            over_tcp: false,
            last_failure: None,
        }
    }

    /// The transport of the next attempt.
    pub(crate) fn transport(&self) -> Protocol {
        if self.over_tcp {
            Protocol::Tcp
        } else {
            self.key.protocol
        }
    }

    /// The upstream for the next attempt, or `None` when attempts are used up
    /// (2 × the number of upstreams, as CoreDNS).
    pub(crate) fn next_upstream(&self) -> Option<u16> {
        (self.attempts < self.max_attempts.min(2 * self.upstreams.len()))
            .then(|| self.upstreams[self.attempts % self.upstreams.len()])
    }
}

/// One slot of the table.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    pending: Option<Pending>,
}

/// The in-flight table of one shard.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_key: HashTable<PendingId>,
    by_wire: HashMap<(Link, u16), PendingId>,
    count: usize,
    /// Queries going upstream (not waiting on another shard), per server block.
    per_server: Vec<usize>,
    /// Attempts in flight, per upstream.
    per_upstream: Vec<usize>,
    /// Clients waiting, over every pending query.
    waiters: usize,
    /// The upstream UDP sockets of attempts and probes.
    udp: UdpSockets,
}

/// Adds `delta` to `counts[index]`, growing the vector as needed.
fn bump(counts: &mut Vec<usize>, index: usize, delta: isize) {
    if counts.len() <= index {
        counts.resize(index + 1, 0);
    }
    counts[index] = counts[index].saturating_add_signed(delta);
}

impl InFlight {
    /// Number of pending queries.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Queries of server block `server` going upstream from this shard.
    pub(crate) fn upstream_pending(&self, server: usize) -> usize {
        self.per_server.get(server).copied().unwrap_or(0)
    }

    /// Attempts in flight to `upstream`.
    pub(crate) fn attempts_on(&self, upstream: u16) -> usize {
        self.per_upstream
            .get(upstream as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The resolution of `key`, if one is under way.
    pub(crate) fn find(&self, key: &PendingKey) -> Option<PendingId> {
        let slots = &self.slots;
        self.by_key
            .find(key.hash(), |id| {
                slots[id.slot as usize]
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.key == *key)
            })
            .copied()
    }

    /// Registers `pending`, which fails at `deadline` unless answered first.
    pub(crate) fn insert(
        &mut self,
        deadline: Instant,
        pending: Pending,
        timers: &mut TimerTable,
    ) -> PendingId {
        if pending.owner.is_none() {
            bump(&mut self.per_server, pending.key.server(), 1);
        }
        self.waiters += pending.waiters.len();
        let hash = pending.key.hash();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.pending = Some(pending);
        let id = PendingId {
            slot,
            generation: entry.generation,
        };
        let slots = &self.slots;
        self.by_key.insert_unique(hash, id, |id| {
            slots[id.slot as usize]
                .pending
                .as_ref()
                .map_or(0, |p| p.key.hash())
        });
        timers.set(Timer::Overall(id), deadline);
        self.count += 1;
        id
    }

    /// Every pending query's handle.
    pub(crate) fn ids(&self) -> Vec<PendingId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.pending.is_some())
            .map(|(index, slot)| PendingId {
                slot: index as u32,
                generation: slot.generation,
            })
            .collect()
    }

    /// The pending query `id`.
    pub(crate) fn get(&self, id: PendingId) -> Option<&Pending> {
        let slot = self.slots.get(id.slot as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.pending.as_ref())
            .flatten()
    }

    /// The pending query `id`, mutably.
    pub(crate) fn get_mut(&mut self, id: PendingId) -> Option<&mut Pending> {
        let slot = self.slots.get_mut(id.slot as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.pending.as_mut())
            .flatten()
    }

    /// Whether a wire ID is in use on a link.
    pub(crate) fn wire_id_in_use(&self, link: Link, id: u16) -> bool {
        self.by_wire.contains_key(&(link, id))
    }

    /// Records that the next attempt of `pending_id` went out on `link` with wire ID `id`,
    /// with a read deadline of `now + timeout`.
    pub(crate) fn start_attempt(
        &mut self,
        now: Instant,
        timeout: Duration,
        pending_id: PendingId,
        (link, id): (Link, u16),
        timers: &mut TimerTable,
    ) {
        self.finish_attempt(pending_id, timers);
        let Some(pending) = self.get_mut(pending_id) else {
            return;
        };
        pending.attempts += 1;
        pending.current = Some((link, id));
        pending.attempt_started = now;
        bump(&mut self.per_upstream, link.upstream as usize, 1);
        self.by_wire.insert((link, id), pending_id);
        timers.set(Timer::Attempt(pending_id), now + timeout);
    }

    /// Forgets the current attempt of `pending_id` (its reply, if it comes, is ignored).
    /// Returns the link it was on.
    pub(crate) fn finish_attempt(
        &mut self,
        pending_id: PendingId,
        timers: &mut TimerTable,
    ) -> Option<Link> {
        let (link, id) = self.get_mut(pending_id)?.current.take()?;
        bump(&mut self.per_upstream, link.upstream as usize, -1);
        self.by_wire.remove(&(link, id));
        timers.clear(Timer::Attempt(pending_id));
        self.udp.release(link);
        Some(link)
    }

    /// A UDP socket for one more exchange with `upstream` (an attempt, whose
    /// [`InFlight::start_attempt`] must follow, or a probe, which [`InFlight::release_udp`]
    /// must end); `pick` chooses among idle or shared ones. Returns its link and whether it was
    /// open already.
    pub(crate) fn acquire_udp(&mut self, upstream: u16, pick: u64) -> (Link, bool) {
        self.udp.acquire(upstream, pick)
    }

    /// A probe's exchange on UDP `link` is over (see [`InFlight::acquire_udp`]).
    pub(crate) fn release_udp(&mut self, link: Link) {
        self.udp.release(link);
    }

    /// UDP `link`'s socket is not used again (a datagram on it answered nothing, or its
    /// exchange timed out or failed): it closes once no exchange is on it.
    pub(crate) fn burn_udp(&mut self, link: Link) {
        self.udp.burn(link);
    }

    /// Idle UDP sockets, kept for the next exchanges.
    pub(crate) fn idle_udp(&self) -> usize {
        self.udp.idle()
    }

    /// No UDP socket open now takes new exchanges (the upstreams were renumbered).
    pub(crate) fn retire_udp(&mut self) {
        self.udp.retire_all();
    }

    /// The next UDP socket no exchange uses any more, for the driver to close.
    pub(crate) fn pop_closed_udp(&mut self) -> Option<Link> {
        self.udp.pop_closed()
    }

    /// Whether UDP sockets wait to be closed.
    pub(crate) fn closing_udp(&self) -> bool {
        self.udp.closing()
    }

    /// Upstream UDP sockets open.
    pub(crate) fn open_udp(&self) -> usize {
        self.udp.open()
    }

    /// The pending query waiting for wire ID `id` on `link`.
    pub(crate) fn by_wire(&self, link: Link, id: u16) -> Option<PendingId> {
        self.by_wire.get(&(link, id)).copied()
    }

    /// Every pending query whose current attempt is on `link`.
    pub(crate) fn on_link(&self, link: Link) -> Vec<PendingId> {
        self.by_wire
            .iter()
            .filter(|((l, _), _)| *l == link)
            .map(|(_, &id)| id)
            .collect()
    }

    /// Keeps only the waiters for which `keep` holds (e.g. drops a closed TCP client's).
    pub(crate) fn retain_waiters(&mut self, mut keep: impl FnMut(&Waiter) -> bool) {
        for pending in self.slots.iter_mut().filter_map(|s| s.pending.as_mut()) {
            let before = pending.waiters.len();
            pending.waiters.retain(&mut keep);
            self.waiters -= before - pending.waiters.len();
        }
    }

    /// Clients waiting, over every pending query.
    pub(crate) fn waiters(&self) -> usize {
        self.waiters
    }

    /// Adds a waiting client to pending query `id`.
    pub(crate) fn push_waiter(&mut self, id: PendingId, waiter: Waiter) {
        if let Some(pending) = self.get_mut(id) {
            pending.waiters.push(waiter);
            self.waiters += 1;
        }
    }

    /// Takes the waiting clients of pending query `id` (it stays in flight).
    pub(crate) fn take_waiters(&mut self, id: PendingId) -> Vec<Waiter> {
        let Some(pending) = self.get_mut(id) else {
            return Vec::new();
        };
        let waiters = std::mem::take(&mut pending.waiters);
        self.waiters -= waiters.len();
        waiters
    }

    /// Removes a pending query (answered or failed) with its timers, and returns it.
    pub(crate) fn remove(&mut self, id: PendingId, timers: &mut TimerTable) -> Option<Pending> {
        self.get(id)?;
        self.finish_attempt(id, timers);
        let slot = &mut self.slots[id.slot as usize];
        let pending = slot.pending.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        if let Ok(entry) = self.by_key.find_entry(pending.key.hash(), |&i| i == id) {
            entry.remove();
        }
        self.free.push(id.slot);
        self.count -= 1;
        self.waiters -= pending.waiters.len();
        if pending.owner.is_none() {
            bump(&mut self.per_server, pending.key.server(), -1);
        }
        timers.clear(Timer::Overall(id));
        timers.clear(Timer::StaleVerify(id));
        Some(pending)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use shardns_wire::{Key, KeyFlags};

    use super::*;
    use crate::question::LowerQuestion;

    /// The miss path's memory bound (docs/ARCHITECTURE.md) rests on these sizes.
    #[test]
    fn pending_and_waiter_sizes() {
        let pending = std::mem::size_of::<Pending>();
        let waiter = std::mem::size_of::<Waiter>();
        println!("Pending {pending} B, Waiter {waiter} B");
        assert!(pending <= 256, "Pending is {pending} bytes");
        assert!(waiter <= 80, "Waiter is {waiter} bytes");
    }

    fn key(name: &[u8]) -> PendingKey {
        let key = Key::from_parts(name, 1, 1, KeyFlags::default());
        PendingKey {
            server: 0,
            question: LowerQuestion::of_key(&key, key.hash_seeded(1)),
            protocol: Protocol::Udp,
        }
    }

    fn client() -> Client {
        Client {
            listener: 0,
            protocol: Protocol::Udp,
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            conn: 0,
        }
    }

    fn waiter() -> Waiter {
        Waiter {
            client: client(),
            id: 1,
            flags: 0,
            qname: Box::new([0]),
            edns: None,
            query_len: 17,
            arrived: 0,
        }
    }

    #[test]
    fn removal_clears_its_timers_and_a_reused_slot_is_a_new_id() {
        let now = Instant::now();
        let mut timers = TimerTable::default();
        let mut table = InFlight::default();
        let first = Pending::new(now, key(b"\x01a\x00"), Requester::Client(waiter()), None);
        let id = table.insert(now + Duration::from_secs(5), first, &mut timers);
        let link = Link {
            upstream: 0,
            protocol: Protocol::Udp,
            conn: 0,
        };
        table.start_attempt(now, Duration::from_secs(2), id, (link, 7), &mut timers);
        timers.set(Timer::StaleVerify(id), now + Duration::from_secs(1));
        assert_eq!(timers.len(), 3);
        assert_eq!(table.find(&key(b"\x01A\x00")), Some(id), "any case");
        assert_eq!(
            (table.by_wire(link, 7), table.attempts_on(0)),
            (Some(id), 1)
        );
        assert_eq!((table.waiters(), table.upstream_pending(0)), (1, 1));
        let removed = table.remove(id, &mut timers).expect("pending");
        assert_eq!(removed.waiters.len(), 1);
        assert_eq!(timers.len(), 0, "its timers went with it");
        assert_eq!(
            (table.len(), table.waiters(), table.attempts_on(0)),
            (0, 0, 0)
        );
        assert_eq!(table.by_wire(link, 7), None);
        let second = Pending::new(now, key(b"\x01b\x00"), Requester::Refresh, Some(1));
        let reused = table.insert(now + Duration::from_secs(6), second, &mut timers);
        assert_ne!(reused, id, "same slot, new generation");
        assert!(table.get(id).is_none(), "the old handle reaches nothing");
        assert!(table.remove(id, &mut timers).is_none());
        assert_eq!(table.upstream_pending(0), 0, "waiting on its owner");
        assert_eq!(table.ids(), vec![reused]);
    }
}
