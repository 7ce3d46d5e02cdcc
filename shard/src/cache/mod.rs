//! The per-shard packet cache, with CoreDNS `cache` semantics. An entry is the upstream's
//! whole response in wire form (OPT removed, question lowercased) plus the offsets of its TTL
//! fields, shared between shards by reference count. A hit copies it, writes the client's ID,
//! flags and qname bytes (keeping the client's letter case), rewrites every TTL to the
//! remaining lifetime, and appends an OPT record for EDNS clients.
//!
//! Beyond a lookup table: serve-stale (RFC 8767, `immediate` and `verify`), prefetch of
//! popular entries (at most one refresh in flight per entry), SERVFAIL caching that never
//! displaces a usable entry, and eviction that prefers dead, then expired, then cold entries.

mod stored;
pub(crate) mod transfer;

use std::collections::VecDeque;
use std::time::Duration;

use hashbrown::HashTable;
use shardns_wire::{Key, KeyFlags};

use crate::config::CacheConfig;
use crate::fastpath::{HotEntry, PUBLISH_AFTER, Publication, Publisher};
use crate::names::in_zone;
use crate::question::LowerQuestion;

pub(crate) use stored::{ClientView, StoredResponse};

/// Which half of the cache an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Positive answers.
    Success,
    /// NXDOMAIN and NODATA (with an SOA).
    Denial,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    qtype: u16,
    qclass: u16,
    flags: KeyFlags,
    kind: Kind,
    /// Hit since the eviction scan last passed it (second chance).
    used: bool,
    /// Hits in the current prefetch window, and when that window began.
    hits: u32,
    window_start: u64,
    /// No refresh (prefetch or stale) is started before this instant: at most one in flight.
    refresh_after: u64,
    serial: u64,
    /// UDP hits in a `fastpath` block (saturating), and the query-bit combinations published
    /// to the fast path ([`crate::fastpath`]).
    seen: u16,
    published: u8,
    response: StoredResponse,
}

impl Entry {
    /// Whether this entry is the one for `key` (whose hash is `hash`).
    fn is(&self, hash: u64, key: &Key<'_>) -> bool {
        self.hash == hash
            && key.matches_lowercase(self.response.qname(), self.qtype, self.qclass, self.flags)
    }
}

/// What a client lookup found.
#[derive(Debug)]
pub(crate) enum Lookup<'a> {
    /// A fresh entry. `prefetch`: it is popular and near its end; refresh it now (the entry
    /// is marked, so this is reported once per refresh).
    Fresh {
        response: &'a StoredResponse,
        kind: Kind,
        prefetch: bool,
        /// Seconds of life left (what [`StoredResponse::remaining`] says now).
        remaining: u32,
        /// Publish it to the fast path now, for the combination asked about (marked as
        /// published, so this is reported once).
        publish: bool,
    },
    /// An expired entry still within `serve_stale`. `refresh` as for prefetch (`immediate`
    /// mode only; in `verify` mode the caller asks upstream first).
    Stale {
        response: &'a StoredResponse,
        kind: Kind,
        refresh: bool,
        /// `verify` mode: ask the upstream before serving it.
        verify: bool,
    },
    /// Nothing usable.
    Miss,
}

/// Result of [`PacketCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InsertReport {
    /// Whether the response was stored (a failure never replaces a usable entry, nor an older
    /// response a newer one).
    pub(crate) inserted: bool,
    /// Entries evicted to make room, by [`Kind`].
    pub(crate) evicted: [u64; 2],
}

/// Live pairs examined per eviction; the coldest is evicted, the others get a second chance.
const EVICTION_SCAN: usize = 8;

/// One shard's slice of one server block's cache.
#[derive(Debug)]
pub struct PacketCache {
    policy: CacheConfig,
    /// The policy's zones cover the whole server block (no per-query zone check).
    everywhere: bool,
    /// How long a started refresh blocks the next one for the same entry (nanoseconds).
    refresh_hold: u64,
    table: HashTable<Entry>,
    /// Eviction queue per kind: (hash, serial); stale pairs are skipped.
    order: [VecDeque<(u64, u64)>; 2],
    len: [usize; 2],
    capacity: [usize; 2],
    next_serial: u64,
    /// Where evictions of published entries are told: the fast path's channel, this shard
    /// and server block, the group's epoch.
    withdraw: Option<(Publisher, (usize, usize), std::time::Instant)>,
}

impl PacketCache {
    /// A cache for the server block of zone `block_zone` holding this shard's share
    /// (`1/shards`, at least 1) of each section's capacity. `refresh_hold` is how long a
    /// refresh may take before another may start (the overall query timeout is right).
    pub(crate) fn new(
        policy: CacheConfig,
        block_zone: &[u8],
        shards: usize,
        refresh_hold: Duration,
    ) -> PacketCache {
        let share = |c: usize| c.div_ceil(shards.max(1)).max(1);
        let capacity = [
            share(policy.success.capacity),
            share(policy.denial.capacity),
        ];
        PacketCache {
            everywhere: policy.zones.iter().any(|z| in_zone(block_zone, z)),
            policy,
            refresh_hold: u64::try_from(refresh_hold.as_nanos()).unwrap_or(u64::MAX),
            table: HashTable::with_capacity(capacity[0] + capacity[1]),
            order: [VecDeque::new(), VecDeque::new()],
            len: [0, 0],
            capacity,
            next_serial: 0,
            withdraw: None,
        }
    }

    /// Tells `publisher` when a published entry is evicted (a `fastpath` block's cache in
    /// shard `shard`, server block `server`).
    pub(crate) fn withdraw_to(
        &mut self,
        publisher: Publisher,
        (shard, server): (usize, usize),
        epoch: std::time::Instant,
    ) {
        self.withdraw = Some((publisher, (shard, server), epoch));
    }

    /// Forgets what was published (the fast path withdrew it all): entries publish again
    /// once hit.
    pub(crate) fn forget_published(&mut self) {
        for entry in &mut self.table {
            entry.published = 0;
            entry.seen = 0;
        }
    }

    /// The policy the cache runs on.
    pub(crate) fn policy(&self) -> &CacheConfig {
        &self.policy
    }

    /// Whether names like `qname` (inside the block) are cached: the policy's zones cover it.
    #[inline]
    pub(crate) fn covers(&self, qname: &[u8]) -> bool {
        self.everywhere || self.policy.zones.iter().any(|z| in_zone(qname, z))
    }

    /// Switches to a new policy (a configuration reload), keeping the entries: they keep
    /// the lifetime they were stored with. A smaller capacity evicts at once, coldest first.
    pub(crate) fn set_policy(
        &mut self,
        now: u64,
        policy: CacheConfig,
        block_zone: &[u8],
        shards: usize,
    ) -> InsertReport {
        let share = |c: usize| c.div_ceil(shards.max(1)).max(1);
        self.capacity = [
            share(policy.success.capacity),
            share(policy.denial.capacity),
        ];
        self.everywhere = policy.zones.iter().any(|z| in_zone(block_zone, z));
        self.policy = policy;
        let mut report = InsertReport::default();
        for slot in 0..2 {
            self.shrink(slot, now, &mut report);
        }
        report
    }

    /// Evicts entries of kind `slot` until it fits its capacity.
    fn shrink(&mut self, slot: usize, now: u64, report: &mut InsertReport) {
        while self.len[slot] > self.capacity[slot] {
            let Some((victim_hash, victim_serial)) = self.pick_victim(slot, now) else {
                break;
            };
            if let Ok(found) = self
                .table
                .find_entry(victim_hash, |e| e.serial == victim_serial)
            {
                let (entry, _) = found.remove();
                self.len[slot] -= 1;
                report.evicted[slot] += 1;
                if entry.published != 0
                    && let Some((publisher, at, epoch)) = &self.withdraw
                {
                    let hot = HotEntry::new(
                        *at,
                        entry.kind,
                        entry.flags,
                        entry.published,
                        entry.response,
                        *epoch,
                    );
                    publisher.offer(Publication::Remove(hot));
                }
            }
        }
        if self.order[slot].len() > 2 * self.capacity[slot] + 64 {
            self.compact_order(slot);
        }
    }

    /// Number of entries (fresh or expired) held.
    pub fn len(&self) -> usize {
        self.len[0] + self.len[1]
    }

    /// Entries of one kind.
    pub(crate) fn len_of(&self, kind: Kind) -> usize {
        self.len[kind as usize]
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `entry`, expired, may still be served stale at `now`.
    fn stale_usable(&self, response: &StoredResponse, now: u64) -> bool {
        self.policy.serve_stale.is_some_and(|stale| {
            let limit = u64::try_from(stale.max_stale.as_nanos()).unwrap_or(u64::MAX);
            now < response.expires_at().saturating_add(limit)
        })
    }

    /// A client's lookup: counts the hit for prefetch and eviction and decides whether a
    /// refresh is due. With `publish` (the combination bit of a UDP query in a `fastpath`
    /// block), also whether to publish the entry. No allocation, no lock.
    pub(crate) fn lookup(
        &mut self,
        now: u64,
        key: &Key<'_>,
        hash: u64,
        publish: Option<u8>,
    ) -> Lookup<'_> {
        let Some(entry) = self.table.find_mut(hash, |e| e.is(hash, key)) else {
            return Lookup::Miss;
        };
        let remaining = entry.response.remaining(now);
        if remaining > 0 {
            let prefetch = count_hits(&self.policy, self.refresh_hold, entry, now, remaining, 1);
            let publish = publish.is_some_and(|bit| {
                entry.seen = entry.seen.saturating_add(1);
                let due = entry.seen >= PUBLISH_AFTER && entry.published & bit == 0;
                if due {
                    entry.published |= bit;
                }
                due
            });
            return Lookup::Fresh {
                response: &entry.response,
                kind: entry.kind,
                prefetch,
                remaining,
                publish,
            };
        }
        let Some(stale) = self.policy.serve_stale else {
            return Lookup::Miss;
        };
        let limit = u64::try_from(stale.max_stale.as_nanos()).unwrap_or(u64::MAX);
        if now >= entry.response.expires_at().saturating_add(limit) {
            return Lookup::Miss;
        }
        let refresh = !stale.verify && now >= entry.refresh_after;
        if refresh {
            entry.refresh_after = now.saturating_add(self.refresh_hold);
        }
        Lookup::Stale {
            response: &entry.response,
            kind: entry.kind,
            refresh,
            verify: stale.verify,
        }
    }

    /// Counts `hits` answered elsewhere (by the in-kernel fast path) for the fresh entry of
    /// `key`, as client lookups count theirs (prefetch, eviction); `Some(stored_at)` when a
    /// prefetch is due now.
    pub(crate) fn note_hits(
        &mut self,
        now: u64,
        key: &Key<'_>,
        hash: u64,
        hits: u32,
    ) -> Option<u64> {
        let entry = self.table.find_mut(hash, |e| e.is(hash, key))?;
        let remaining = entry.response.remaining(now);
        if remaining == 0 || hits == 0 {
            return None;
        }
        count_hits(&self.policy, self.refresh_hold, entry, now, remaining, hits)
            .then(|| entry.response.stored_at())
    }

    /// The entry for `question` if it is fresh or usable stale, without counting anything:
    /// `(response, kind, fresh)`.
    pub(crate) fn peek(
        &self,
        now: u64,
        question: &LowerQuestion,
    ) -> Option<(&StoredResponse, Kind, bool)> {
        let (key, hash) = (question.key(), question.hash());
        let entry = self.table.find(hash, |e| e.is(hash, &key))?;
        if entry.response.remaining(now) > 0 {
            return Some((&entry.response, entry.kind, true));
        }
        self.stale_usable(&entry.response, now)
            .then_some((&entry.response, entry.kind, false))
    }

    /// Marks the entry for `question` as being refreshed unless a refresh is already under
    /// way; returns whether the caller should start one.
    pub(crate) fn begin_refresh(&mut self, now: u64, question: &LowerQuestion) -> bool {
        let hold = self.refresh_hold;
        let (key, hash) = (question.key(), question.hash());
        match self.table.find_mut(hash, |e| e.is(hash, &key)) {
            Some(entry) if now >= entry.refresh_after => {
                entry.refresh_after = now.saturating_add(hold);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Adds this cache's fresh entries whose hash passes `keep` to `chunks`, as a hand-off
    /// carries them ([`transfer`]), labelled with the server block's `zone`.
    pub(crate) fn export(
        &self,
        now: u64,
        zone: &[u8],
        keep: impl Fn(u64) -> bool,
        chunks: &mut transfer::Chunks,
    ) {
        for entry in &self.table {
            if !keep(entry.hash) {
                continue;
            }
            if let Some(carried) = entry.response.exported(now, zone, entry.kind, entry.flags) {
                chunks.push(&carried);
            }
        }
    }

    /// Stores `response` (classified as `kind`) under `question`, replacing an older entry,
    /// and evicts beyond capacity. A failure (SERVFAIL, NOTIMP) never replaces a fresh or
    /// usable stale entry, and a response never replaces one stored later.
    pub(crate) fn insert(
        &mut self,
        now: u64,
        question: &LowerQuestion,
        kind: Kind,
        response: StoredResponse,
    ) -> InsertReport {
        let mut report = InsertReport::default();
        let (key, hash) = (&question.key(), question.hash());
        let slot = kind as usize;
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(existing) = self.table.find(hash, |e| e.is(hash, key)) {
            let usable =
                existing.response.remaining(now) > 0 || self.stale_usable(&existing.response, now);
            if (usable && !response.is_answer())
                || existing.response.stored_at() > response.stored_at()
            {
                return report;
            }
        }
        let entry = Entry {
            hash,
            qtype: key.qtype,
            qclass: key.qclass,
            flags: question.flags(),
            kind,
            used: false,
            hits: 0,
            window_start: now,
            refresh_after: 0,
            serial,
            seen: 0,
            published: 0,
            response,
        };
        match self.table.find_mut(hash, |e| e.is(hash, key)) {
            Some(existing) => {
                let old = existing.kind as usize;
                self.len[old] -= 1;
                let published = existing.published;
                *existing = Entry {
                    // Popularity survives a refresh, so prefetch keeps the entry warm.
                    used: existing.used,
                    hits: existing.hits,
                    window_start: existing.window_start,
                    seen: existing.seen,
                    published,
                    ..entry
                };
                // What was published goes out again with the new answer at once, so that the
                // fast path's copy lives as long as the cache's (a prefetch).
                if published != 0
                    && let Some((publisher, at, epoch)) = &self.withdraw
                {
                    let hot = HotEntry::new(
                        *at,
                        existing.kind,
                        existing.flags,
                        published,
                        existing.response.clone(),
                        *epoch,
                    );
                    if !publisher.offer(Publication::Insert(hot)) {
                        existing.published = 0;
                    }
                }
            }
            None => {
                self.table.insert_unique(hash, entry, |e| e.hash);
            }
        }
        report.inserted = true;
        self.len[slot] += 1;
        self.order[slot].push_back((hash, serial));
        self.shrink(slot, now, &mut report);
        report
    }

    /// Chooses an entry of kind `slot` to evict: among the next [`EVICTION_SCAN`] live entries
    /// of its queue, the first that can no longer be served, else the first expired one, else
    /// the first not hit since the scan last passed it, else the oldest (a CLOCK with a
    /// preference for dead and expired entries).
    fn pick_victim(&mut self, slot: usize, now: u64) -> Option<(u64, u64)> {
        let mut scanned = [(0u64, 0u64, 0u8); EVICTION_SCAN];
        let mut count = 0;
        let mut best: Option<usize> = None;
        while count < EVICTION_SCAN {
            let Some((hash, serial)) = self.order[slot].pop_front() else {
                break;
            };
            let Some(entry) = self.table.find(hash, |e| e.serial == serial) else {
                continue; // replaced or evicted earlier
            };
            let score = if entry.response.remaining(now) > 0 {
                if entry.used { 3 } else { 2 }
            } else if self.stale_usable(&entry.response, now) {
                1
            } else {
                0
            };
            scanned[count] = (hash, serial, score);
            if best.is_none_or(|b| score < scanned[b].2) {
                best = Some(count);
            }
            count += 1;
            if score == 0 {
                break;
            }
        }
        let best = best?;
        // Entries the scan passed before the victim lose their mark and go to the back (the
        // CLOCK hand moved over them); those after it return to the front, untouched.
        for &(hash, serial, _) in &scanned[..best] {
            if let Some(entry) = self.table.find_mut(hash, |e| e.serial == serial) {
                entry.used = false;
            }
            self.order[slot].push_back((hash, serial));
        }
        for &(hash, serial, _) in scanned[best + 1..count].iter().rev() {
            self.order[slot].push_front((hash, serial));
        }
        Some((scanned[best].0, scanned[best].1))
    }

    /// Drops stale (replaced or evicted) pairs from an eviction queue.
    fn compact_order(&mut self, slot: usize) {
        let table = &self.table;
        self.order[slot]
            .retain(|&(hash, serial)| table.find(hash, |e| e.serial == serial).is_some());
    }
}

/// Counts `hits` on a fresh `entry` with `remaining` seconds left: marks it used (eviction)
/// and, under `policy`'s prefetch, counts them in the window and says whether a refresh is due
/// (then held off for `refresh_hold`).
fn count_hits(
    policy: &CacheConfig,
    refresh_hold: u64,
    entry: &mut Entry,
    now: u64,
    remaining: u32,
    hits: u32,
) -> bool {
    entry.used = true;
    let Some(p) = &policy.prefetch else {
        return false;
    };
    let window = u64::try_from(p.window.as_nanos()).unwrap_or(u64::MAX);
    if now.saturating_sub(entry.window_start) > window || entry.hits == 0 {
        entry.window_start = now;
        entry.hits = hits;
    } else {
        entry.hits = entry.hits.saturating_add(hits);
    }
    let threshold = (u64::from(p.percentage) * u64::from(entry.response.ttl())).div_ceil(100);
    if entry.hits >= p.amount && u64::from(remaining) <= threshold && now >= entry.refresh_after {
        entry.refresh_after = now.saturating_add(refresh_hold);
        return true;
    }
    false
}

#[cfg(test)]
mod tests;
