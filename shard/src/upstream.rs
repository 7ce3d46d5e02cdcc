//! Bookkeeping for queries sent upstream: the in-flight table (indexed by cache key for
//! coalescing and by link + wire ID for matching replies), the attempt and overall deadlines,
//! and the per-upstream pool of TCP connections. No I/O and no clock: callers pass `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashTable};
use shardns_wire::name_eq_lowercase;

use crate::{Client, Link, Protocol};

/// Index of a pending query in the in-flight table.
pub type PendingId = usize;

/// A client waiting for an upstream answer, with what its reply must echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub client: Client,
    pub id: u16,
    pub flags: u16,
    /// The client's qname bytes, in its case.
    pub qname: Box<[u8]>,
    pub edns: Option<(u16, bool)>,
}

/// A query in flight upstream, shared by every client that asked the same question.
#[derive(Debug)]
pub struct Pending {
    serial: u64,
    /// Server block the query was routed to.
    pub server: usize,
    pub key_hash: u64,
    /// Lowercased question name, qtype, qclass and key flag bits (DO, CD).
    pub qname: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    pub flag_bits: u8,
    /// The query as sent upstream; its ID is rewritten for each attempt.
    pub query: Vec<u8>,
    /// Clients of this shard waiting for the answer (none for a refresh).
    pub waiters: Vec<Waiter>,
    /// Other shards waiting for the answer (this shard owns the key).
    pub shards: Vec<u16>,
    /// `Some(owner)`: the key belongs to another shard, which was asked; no upstream attempts
    /// are made here.
    pub owner: Option<u16>,
    pub protocol: Protocol,
    /// Upstream indices to try, in order (rotated per query).
    pub upstreams: Vec<u16>,
    /// Attempts made so far.
    pub attempts: usize,
    /// The attempt in progress: link and wire ID.
    pub current: Option<(Link, u16)>,
    pub deadline: Instant,
    pub started: Instant,
    /// When the current attempt went out.
    pub attempt_started: Instant,
    /// Most attempts (CoreDNS: 2 × the number of upstreams; 1 when every upstream is down
    /// and one is tried anyway).
    pub max_attempts: usize,
}

impl Pending {
    /// The upstream for the next attempt, or `None` when attempts are used up
    /// (2 × the number of upstreams, as CoreDNS).
    pub fn next_upstream(&self) -> Option<u16> {
        (self.attempts < self.max_attempts.min(2 * self.upstreams.len()))
            .then(|| self.upstreams[self.attempts % self.upstreams.len()])
    }
}

/// Everything needed to create a [`Pending`].
#[derive(Debug)]
pub struct NewPending {
    pub server: usize,
    pub key_hash: u64,
    pub qname: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    pub flag_bits: u8,
    pub query: Vec<u8>,
    pub waiter: Option<Waiter>,
    pub shard: Option<u16>,
    pub owner: Option<u16>,
    pub protocol: Protocol,
    pub upstreams: Vec<u16>,
}

/// The in-flight table of one shard.
#[derive(Debug)]
pub struct InFlight {
    slots: Vec<Option<Pending>>,
    free: Vec<PendingId>,
    by_key: HashTable<PendingId>,
    by_wire: HashMap<(Link, u16), PendingId>,
    attempt_timers: VecDeque<(Instant, PendingId, u64, usize)>,
    overall_timers: VecDeque<(Instant, PendingId, u64)>,
    next_serial: u64,
    count: usize,
    /// Queries going upstream (not waiting on another shard), per server block.
    per_server: Vec<usize>,
    /// Attempts in flight, per upstream.
    per_upstream: Vec<usize>,
    /// Clients waiting, over every pending query.
    waiters: usize,
}

/// Adds `delta` to `counts[index]`, growing the vector as needed.
fn bump(counts: &mut Vec<usize>, index: usize, delta: isize) {
    if counts.len() <= index {
        counts.resize(index + 1, 0);
    }
    counts[index] = counts[index].saturating_add_signed(delta);
}

/// A deadline that passed, from [`InFlight::pop_expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The current attempt got no answer in time: try the next upstream.
    Attempt(PendingId),
    /// The whole query ran out of time: fail it.
    Overall(PendingId),
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashTable::new(),
            by_wire: HashMap::new(),
            attempt_timers: VecDeque::new(),
            overall_timers: VecDeque::new(),
            next_serial: 0,
            count: 0,
            per_server: Vec::new(),
            per_upstream: Vec::new(),
            waiters: 0,
        }
    }
}

impl InFlight {
    /// Number of pending queries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Queries of server block `server` going upstream from this shard.
    pub fn upstream_pending(&self, server: usize) -> usize {
        self.per_server.get(server).copied().unwrap_or(0)
    }

    /// Attempts in flight to `upstream`.
    pub fn attempts_on(&self, upstream: u16) -> usize {
        self.per_upstream
            .get(upstream as usize)
            .copied()
            .unwrap_or(0)
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pending query for this key — `(qname, qtype, qclass, key flag bits)` — in this
    /// server block going upstream over `protocol`, if one is in flight.
    pub fn find(
        &self,
        server: usize,
        hash: u64,
        (qname, qtype, qclass, flag_bits): (&[u8], u16, u16, u8),
        protocol: Protocol,
    ) -> Option<PendingId> {
        let slots = &self.slots;
        self.by_key
            .find(hash, |&id| {
                slots[id].as_ref().is_some_and(|p| {
                    p.server == server
                        && p.protocol == protocol
                        && p.key_hash == hash
                        && p.qtype == qtype
                        && p.qclass == qclass
                        && p.flag_bits == flag_bits
                        && name_eq_lowercase(qname, &p.qname)
                })
            })
            .copied()
    }

    /// Registers a new pending query with an overall deadline of `now + timeout`.
    pub fn insert(&mut self, now: Instant, timeout: Duration, new: NewPending) -> PendingId {
        let serial = self.next_serial;
        self.next_serial += 1;
        let pending = Pending {
            serial,
            server: new.server,
            key_hash: new.key_hash,
            qname: new.qname,
            qtype: new.qtype,
            qclass: new.qclass,
            flag_bits: new.flag_bits,
            query: new.query,
            waiters: new.waiter.into_iter().collect(),
            shards: new.shard.into_iter().collect(),
            owner: new.owner,
            protocol: new.protocol,
            upstreams: new.upstreams,
            attempts: 0,
            current: None,
            deadline: now + timeout,
            started: now,
            attempt_started: now,
            max_attempts: usize::MAX,
        };
        if pending.owner.is_none() {
            bump(&mut self.per_server, pending.server, 1);
        }
        self.waiters += pending.waiters.len();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(pending);
                id
            }
            None => {
                self.slots.push(Some(pending));
                self.slots.len() - 1
            }
        };
        let hash = new.key_hash;
        let slots = &self.slots;
        self.by_key
            .insert_unique(hash, id, |&i| slots[i].as_ref().map_or(0, |p| p.key_hash));
        self.overall_timers.push_back((now + timeout, id, serial));
        self.count += 1;
        id
    }

    /// Every pending query's ID.
    pub fn ids(&self) -> Vec<PendingId> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect()
    }

    /// The pending query `id`.
    pub fn get(&self, id: PendingId) -> Option<&Pending> {
        self.slots.get(id)?.as_ref()
    }

    /// The pending query `id`, mutably.
    pub fn get_mut(&mut self, id: PendingId) -> Option<&mut Pending> {
        self.slots.get_mut(id)?.as_mut()
    }

    /// Whether a wire ID is in use on a link.
    pub fn wire_id_in_use(&self, link: Link, id: u16) -> bool {
        self.by_wire.contains_key(&(link, id))
    }

    /// Records that attempt number `pending.attempts` went out on `link` with wire ID `id`,
    /// with a read deadline of `now + timeout`.
    pub fn start_attempt(
        &mut self,
        now: Instant,
        timeout: Duration,
        pending_id: PendingId,
        link: Link,
        id: u16,
    ) {
        self.finish_attempt(pending_id);
        let Some(pending) = self.slots[pending_id].as_mut() else {
            return;
        };
        pending.attempts += 1;
        pending.current = Some((link, id));
        pending.attempt_started = now;
        bump(&mut self.per_upstream, link.upstream as usize, 1);
        self.by_wire.insert((link, id), pending_id);
        self.attempt_timers.push_back((
            now + timeout,
            pending_id,
            pending.serial,
            pending.attempts,
        ));
    }

    /// Forgets the current attempt of `pending_id` (its reply, if it comes, is ignored).
    /// Returns the link it was on.
    pub fn finish_attempt(&mut self, pending_id: PendingId) -> Option<Link> {
        let pending = self.slots.get_mut(pending_id)?.as_mut()?;
        let (link, id) = pending.current.take()?;
        bump(&mut self.per_upstream, link.upstream as usize, -1);
        self.by_wire.remove(&(link, id));
        Some(link)
    }

    /// The pending query waiting for wire ID `id` on `link`.
    pub fn by_wire(&self, link: Link, id: u16) -> Option<PendingId> {
        self.by_wire.get(&(link, id)).copied()
    }

    /// Every pending query whose current attempt is on `link`.
    pub fn on_link(&self, link: Link) -> Vec<PendingId> {
        self.by_wire
            .iter()
            .filter(|((l, _), _)| *l == link)
            .map(|(_, &id)| id)
            .collect()
    }

    /// Keeps only the waiters for which `keep` holds (e.g. drops a closed TCP client's).
    pub fn retain_waiters(&mut self, mut keep: impl FnMut(&Waiter) -> bool) {
        for pending in self.slots.iter_mut().flatten() {
            let before = pending.waiters.len();
            pending.waiters.retain(&mut keep);
            self.waiters -= before - pending.waiters.len();
        }
    }

    /// Clients waiting, over every pending query.
    pub fn waiters(&self) -> usize {
        self.waiters
    }

    /// Adds a waiting client to pending query `id`.
    pub fn push_waiter(&mut self, id: PendingId, waiter: Waiter) {
        if let Some(pending) = self.slots.get_mut(id).and_then(Option::as_mut) {
            pending.waiters.push(waiter);
            self.waiters += 1;
        }
    }

    /// Takes the waiting clients of pending query `id` (it stays in flight).
    pub fn take_waiters(&mut self, id: PendingId) -> Vec<Waiter> {
        let Some(pending) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return Vec::new();
        };
        let waiters = std::mem::take(&mut pending.waiters);
        self.waiters -= waiters.len();
        waiters
    }

    /// Removes a pending query (answered or failed) and returns it.
    pub fn remove(&mut self, pending_id: PendingId) -> Option<Pending> {
        self.finish_attempt(pending_id);
        let pending = self.slots.get_mut(pending_id)?.take()?;
        if let Ok(entry) = self
            .by_key
            .find_entry(pending.key_hash, |&i| i == pending_id)
        {
            entry.remove();
        }
        self.free.push(pending_id);
        self.count -= 1;
        self.waiters -= pending.waiters.len();
        if pending.owner.is_none() {
            bump(&mut self.per_server, pending.server, -1);
        }
        Some(pending)
    }

    /// The earliest deadline (after [`InFlight::tidy`], a live one).
    pub fn next_deadline(&self) -> Option<Instant> {
        let attempt = self.attempt_timers.front().map(|t| t.0);
        let overall = self.overall_timers.front().map(|t| t.0);
        match (attempt, overall) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        }
    }

    /// Pops one deadline that has passed at `now`, overall deadlines first.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Expired> {
        self.tidy();
        if let Some(&(at, id, _)) = self.overall_timers.front()
            && at <= now
        {
            self.overall_timers.pop_front();
            return Some(Expired::Overall(id));
        }
        if let Some(&(at, id, _, _)) = self.attempt_timers.front()
            && at <= now
        {
            self.attempt_timers.pop_front();
            return Some(Expired::Attempt(id));
        }
        None
    }

    /// Drops the timers of answered or superseded attempts from the queue fronts, so that
    /// [`InFlight::next_deadline`] reports a live deadline.
    pub fn tidy(&mut self) {
        let slots = &self.slots;
        let live =
            |id: PendingId, serial: u64| slots[id].as_ref().is_some_and(|p| p.serial == serial);
        while let Some(&(_, id, serial, attempt)) = self.attempt_timers.front() {
            let current = slots[id].as_ref().is_some_and(|p| {
                p.serial == serial && p.attempts == attempt && p.current.is_some()
            });
            if current {
                break;
            }
            self.attempt_timers.pop_front();
        }
        while let Some(&(_, id, serial)) = self.overall_timers.front() {
            if live(id, serial) {
                break;
            }
            self.overall_timers.pop_front();
        }
    }
}

/// One upstream TCP connection as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpConn {
    id: u32,
    inflight: usize,
    last_used: Instant,
}

/// Per-upstream pools of TCP connections carrying several queries each.
#[derive(Debug)]
pub struct TcpPool {
    conns: Vec<Vec<TcpConn>>,
    next_id: u32,
    idle_timers: VecDeque<(Instant, u16, u32)>,
    max_inflight: usize,
    max_conns: usize,
    /// Idle time before a connection closes, per upstream (`forward ... { expire }`).
    idle: Vec<Duration>,
}

impl TcpPool {
    /// Pools for `idle.len()` upstreams, `idle[u]` being how long upstream `u`'s connections
    /// may stay idle.
    pub fn new(idle: Vec<Duration>, max_inflight: usize, max_conns: usize) -> TcpPool {
        TcpPool {
            conns: vec![Vec::new(); idle.len()],
            next_id: 1,
            idle_timers: VecDeque::new(),
            max_inflight: max_inflight.max(1),
            max_conns: max_conns.max(1),
            idle,
        }
    }

    /// Picks a connection to `upstream` for one more query: the least loaded one with fewer
    /// than `max_inflight` queries in flight, else a new one while under the cap, else the
    /// least loaded. With `max_inflight` 1, an upstream that answers a connection's queries
    /// one at a time, in order (CoreDNS), never makes a query wait behind another until the
    /// cap is reached. Returns the link, and whether it is an open connection (false: new).
    pub fn acquire(&mut self, now: Instant, upstream: u16) -> (Link, bool) {
        let conns = &mut self.conns[upstream as usize];
        let mut reused = true;
        let least_loaded = conns
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.inflight)
            .map(|(i, c)| (i, c.inflight));
        let index = match least_loaded {
            Some((i, load)) if load < self.max_inflight => i,
            _ if conns.len() < self.max_conns => {
                reused = false;
                conns.push(TcpConn {
                    id: self.next_id,
                    inflight: 0,
                    last_used: now,
                });
                self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                conns.len() - 1
            }
            Some((i, _)) => i,
            None => 0,
        };
        let conn = &mut conns[index];
        conn.inflight += 1;
        conn.last_used = now;
        let link = Link {
            upstream,
            protocol: Protocol::Tcp,
            conn: conn.id,
        };
        (link, reused)
    }

    /// A query on `link` is done (answered, timed out or moved).
    pub fn release(&mut self, now: Instant, link: Link) {
        let Some(conns) = self.conns.get_mut(link.upstream as usize) else {
            return;
        };
        if let Some(conn) = conns.iter_mut().find(|c| c.id == link.conn) {
            conn.inflight = conn.inflight.saturating_sub(1);
            conn.last_used = now;
            if conn.inflight == 0 {
                let idle = self.idle_of(link.upstream);
                self.idle_timers
                    .push_back((now + idle, link.upstream, link.conn));
            }
        }
    }

    /// The connection behind `link` is gone.
    pub fn forget(&mut self, link: Link) {
        if let Some(conns) = self.conns.get_mut(link.upstream as usize) {
            conns.retain(|c| c.id != link.conn);
        }
    }

    fn idle_of(&self, upstream: u16) -> Duration {
        self.idle
            .get(upstream as usize)
            .copied()
            .unwrap_or_default()
    }

    /// When the next idle connection may be due for closing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.idle_timers.front().map(|t| t.0)
    }

    /// Connections idle for the whole idle period at `now`: removed from the pool and
    /// returned, for the driver to close.
    pub fn expire_idle(&mut self, now: Instant) -> Vec<Link> {
        let mut closed = Vec::new();
        while let Some(&(at, upstream, id)) = self.idle_timers.front() {
            if at > now {
                break;
            }
            self.idle_timers.pop_front();
            let idle = self
                .idle
                .get(upstream as usize)
                .copied()
                .unwrap_or_default();
            let conns = &mut self.conns[upstream as usize];
            if let Some(i) = conns.iter().position(|c| c.id == id)
                && conns[i].inflight == 0
                && conns[i].last_used + idle <= now
            {
                conns.remove(i);
                closed.push(Link {
                    upstream,
                    protocol: Protocol::Tcp,
                    conn: id,
                });
            }
        }
        closed
    }

    /// This pool, numbering its connections after `previous`'s (so that IDs the driver still
    /// knows are never reused).
    pub fn continuing(mut self, previous: &TcpPool) -> TcpPool {
        self.next_id = previous.next_id;
        self
    }

    /// Forgets every connection (the upstream list changed) and returns their links, for
    /// the driver to close. Connection IDs keep counting, so new ones never reuse an old ID.
    pub fn reset(&mut self, upstreams: usize) -> Vec<Link> {
        let links = self
            .conns
            .iter()
            .enumerate()
            .flat_map(|(upstream, conns)| {
                conns.iter().map(move |c| Link {
                    upstream: upstream as u16,
                    protocol: Protocol::Tcp,
                    conn: c.id,
                })
            })
            .collect();
        self.conns = vec![Vec::new(); upstreams];
        self.idle_timers.clear();
        links
    }

    /// Open connections to `upstream` (as the engine counts them).
    pub fn open(&self, upstream: u16) -> usize {
        self.conns.get(upstream as usize).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The miss path's memory bound (docs/ARCHITECTURE.md) rests on these sizes.
    #[test]
    fn pending_and_waiter_sizes() {
        let pending = std::mem::size_of::<Pending>();
        let waiter = std::mem::size_of::<Waiter>();
        println!("Pending {pending} B, Waiter {waiter} B");
        assert!(pending <= 256, "Pending is {pending} bytes");
        assert!(waiter <= 80, "Waiter is {waiter} bytes");
    }
}
