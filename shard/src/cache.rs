//! The per-shard packet cache, with CoreDNS `cache` semantics. An entry is the upstream's
//! whole response in wire form (OPT removed, question lowercased) plus the offsets of its TTL
//! fields, shared between shards by reference count. A hit copies it, writes the client's ID,
//! flags and qname bytes (keeping the client's letter case), rewrites every TTL to the
//! remaining lifetime, and appends an OPT record for EDNS clients.
//!
//! Beyond a lookup table: serve-stale (RFC 8767, `immediate` and `verify`), prefetch of
//! popular entries (at most one refresh in flight per entry), SERVFAIL caching that never
//! displaces a usable entry, and eviction that prefers dead, then expired, then cold entries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;
use shardns_wire::build::{EDNS_PAYLOAD, append_opt, client_udp_limit, truncate};
use shardns_wire::{HEADER_LEN, Header, Key, Message, rcode};

use crate::Protocol;
use crate::config::{CacheConfig, CacheSection};
use crate::names::in_zone;

/// Which half of the cache an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Positive answers.
    Success,
    /// NXDOMAIN and NODATA (with an SOA).
    Denial,
}

/// What a reply is rendered for: one client's query.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    pub id: u16,
    /// The query's flags word (RD, CD, AD are honoured).
    pub flags: u16,
    /// The client's qname bytes, in the client's case.
    pub qname: &'a [u8],
    /// `Some((udp payload size, DO))` when the query had an OPT record.
    pub edns: Option<(u16, bool)>,
    pub protocol: Protocol,
}

/// TTL of an answer served stale (RFC 8767 §5 recommends 30 s). CoreDNS sends 0, which makes
/// every stub ask again at once while the upstream is still down.
pub const STALE_TTL: u32 = 30;

/// A response ready to be rendered for any client asking the same question. Cloning shares
/// the bytes (one reference count), so shards can hold the same response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The message (header, question with lowercased name, records; no OPT record), then the
    /// offsets of its TTL fields, 2 bytes each (native endian).
    data: Arc<[u8]>,
    msg_len: u16,
    question_end: u16,
    /// Upper bits of the upstream's extended RCODE (0 in practice).
    ext_rcode: u8,
    /// `keepttl`: fresh hits relay the stored TTLs instead of the remaining lifetime.
    keep_ttl: bool,
    /// Lifetime in seconds (0 when the response is not cached).
    ttl: u32,
    /// When it was stored, in the engine clock (nanoseconds since the group's epoch).
    stored_at: u64,
}

impl StoredResponse {
    /// Prepares an upstream response for relaying and caching. `ttl_offsets` are the TTL
    /// offsets reported while parsing `message`. With `policy`, decides whether and where the
    /// response is cached and its lifetime; unless `keepttl`, the TTLs of a cacheable response
    /// are rendered as that lifetime (on this first reply too).
    pub fn from_upstream(
        message: &Message<'_>,
        ttl_offsets: &[usize],
        policy: Option<&CacheConfig>,
        now: u64,
    ) -> (StoredResponse, Option<Kind>) {
        let raw = &message.buf[..message.records.end];
        let opt = message.edns.as_ref().map(|e| e.record.clone());
        let mut bytes = Vec::with_capacity(raw.len() + 2 * ttl_offsets.len());
        let mut offsets: Vec<u16> = Vec::with_capacity(ttl_offsets.len());
        match &opt {
            Some(range) => {
                bytes.extend_from_slice(&raw[..range.start]);
                bytes.extend_from_slice(&raw[range.end..]);
                let removed = range.len();
                offsets.extend(ttl_offsets.iter().map(|&o| {
                    if o > range.start {
                        (o - removed) as u16
                    } else {
                        o as u16
                    }
                }));
                let arcount = message.header.arcount - 1;
                bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
            }
            None => {
                bytes.extend_from_slice(raw);
                offsets.extend(ttl_offsets.iter().map(|&o| o as u16));
            }
        }
        let name = HEADER_LEN..HEADER_LEN + message.question.name.len();
        bytes[name.clone()].make_ascii_lowercase();

        let decision = policy.and_then(|p| classify(message, &bytes[name], p));
        let (kind, ttl) = match decision {
            Some((kind, ttl)) if ttl > 0 => (Some(kind), ttl),
            _ => (None, 0),
        };
        let msg_len = bytes.len() as u16;
        if kind.is_some() {
            for offset in offsets {
                bytes.extend_from_slice(&offset.to_ne_bytes());
            }
        }
        let stored = StoredResponse {
            data: bytes.into(),
            msg_len,
            question_end: message.question_end as u16,
            ext_rcode: message.edns.as_ref().map_or(0, |e| e.ext_rcode),
            keep_ttl: policy.is_some_and(|p| p.keepttl),
            ttl,
            stored_at: now,
        };
        (stored, kind)
    }

    fn message(&self) -> &[u8] {
        &self.data[..self.msg_len as usize]
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[self.msg_len as usize..]
            .chunks_exact(2)
            .map(|pair| u16::from_ne_bytes([pair[0], pair[1]]) as usize)
    }

    /// The lowercased question name.
    fn qname(&self) -> &[u8] {
        &self.data[HEADER_LEN..self.question_end as usize - 4]
    }

    /// The lifetime given to every TTL (0 when the response is not cached).
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// When the response was stored (engine clock, nanoseconds).
    pub fn stored_at(&self) -> u64 {
        self.stored_at
    }

    /// When it stops being fresh (engine clock, nanoseconds).
    pub fn expires_at(&self) -> u64 {
        self.stored_at
            .saturating_add(u64::from(self.ttl) * 1_000_000_000)
    }

    /// Seconds of life left at `now` (engine clock, nanoseconds); 0 once expired. Whole
    /// seconds elapsed are subtracted, so a fresh entry is served with TTL N..1, never 0.
    pub fn remaining(&self, now: u64) -> u32 {
        let elapsed = now.saturating_sub(self.stored_at) / 1_000_000_000;
        (self.ttl as u64).saturating_sub(elapsed) as u32
    }

    /// The response code (the upper extended bits included).
    pub fn rcode(&self) -> u16 {
        u16::from(self.data[3] & 0x0f) | u16::from(self.ext_rcode) << 4
    }

    /// Whether the upstream set TC.
    pub fn truncated(&self) -> bool {
        u16::from_be_bytes([self.data[2], self.data[3]]) & Header::TC != 0
    }

    /// Whether this is a real answer (not truncated, NOERROR or NXDOMAIN): what may replace or
    /// be preferred to a stale entry (RFC 8767; CoreDNS `verify`).
    pub fn is_answer(&self) -> bool {
        !self.truncated() && matches!(self.rcode(), 0 | 3)
    }

    /// The TTL a fresh reply carries at `now`: the remaining lifetime, or `None` to relay the
    /// stored TTLs (uncached responses and `keepttl`).
    pub fn fresh_ttl(&self, now: u64) -> Option<u32> {
        self.fresh_ttl_of(self.remaining(now))
    }

    /// [`StoredResponse::fresh_ttl`] given the remaining lifetime already computed.
    pub fn fresh_ttl_of(&self, remaining: u32) -> Option<u32> {
        (self.ttl > 0 && !self.keep_ttl).then_some(remaining)
    }

    /// The TTL a stale reply carries.
    pub fn stale_ttl(&self) -> Option<u32> {
        (self.ttl > 0).then_some(STALE_TTL)
    }

    /// Writes the reply for `client` into `out` (at least [`crate::MAX_MESSAGE`] bytes) with
    /// every TTL set to `ttl` (`None`: as stored) and returns its length. No allocation.
    pub fn render(
        &self,
        ttl: Option<u32>,
        client: &ClientView<'_>,
        authoritative: bool,
        out: &mut [u8],
    ) -> usize {
        let message = self.message();
        let mut len = message.len();
        out[..len].copy_from_slice(message);
        out[0..2].copy_from_slice(&client.id.to_be_bytes());
        let stored_flags = u16::from_be_bytes([message[2], message[3]]);
        let mut flags = stored_flags & !(Header::RD | Header::CD | Header::AD | Header::TC);
        flags |= client.flags & (Header::RD | Header::CD);
        let wants_ad =
            client.flags & Header::AD != 0 || client.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok);
        if wants_ad {
            flags |= stored_flags & Header::AD;
        }
        if authoritative {
            flags |= Header::AA;
        }
        flags |= stored_flags & Header::TC;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + client.qname.len()].copy_from_slice(client.qname);
        if let Some(ttl) = ttl {
            let ttl = ttl.to_be_bytes();
            for at in self.ttl_offsets() {
                out[at..at + 4].copy_from_slice(&ttl);
            }
        }
        let opt_len = if client.edns.is_some() {
            shardns_wire::build::OPT_LEN
        } else {
            0
        };
        if client.protocol == Protocol::Udp {
            let limit = client_udp_limit(client.edns.map(|(payload, _)| payload)) - opt_len;
            len = truncate(out, len, self.question_end as usize, limit);
        }
        if let Some((_, dnssec_ok)) = client.edns {
            len = append_opt(out, len, EDNS_PAYLOAD, self.ext_rcode, dnssec_ok);
        }
        len
    }
}

/// Where a response belongs and for how long (seconds), following CoreDNS's
/// `response.Typify`: positive answers and referrals in the success cache; NXDOMAIN and NODATA
/// with an SOA in the denial cache for their clamped TTL; SERVFAIL and NOTIMP in the denial
/// cache for `servfail`. `None`: not cached (REFUSED, FORMERR, NOTAUTH and other RCODEs,
/// NXDOMAIN without SOA or with answers, truncated replies, extended RCODEs, and whatever
/// `disable` names). `qname` is the lowercased question name.
fn classify(message: &Message<'_>, qname: &[u8], policy: &CacheConfig) -> Option<(Kind, u32)> {
    let header = &message.header;
    if header.tc() || message.edns.as_ref().is_some_and(|e| e.ext_rcode != 0) {
        return None;
    }
    let min_ttl = message.records.min_ttl;
    let (kind, ttl) = match header.rcode() {
        rcode::NOERROR if header.ancount == 0 && message.records.soa_in_authority => {
            (Kind::Denial, clamp_ttl(min_ttl, policy.denial))
        }
        rcode::NOERROR => (Kind::Success, clamp_ttl(min_ttl, policy.success)),
        rcode::NXDOMAIN if header.ancount == 0 && message.records.soa_in_authority => {
            (Kind::Denial, clamp_ttl(min_ttl, policy.denial))
        }
        rcode::SERVFAIL | rcode::NOTIMP => (Kind::Denial, policy.servfail_ttl),
        _ => return None,
    };
    let disabled = match kind {
        Kind::Success => &policy.disable_success,
        Kind::Denial => &policy.disable_denial,
    };
    if disabled.iter().any(|zone| in_zone(qname, zone)) {
        return None;
    }
    Some((kind, ttl))
}

/// CoreDNS's clamp: the minimum RR TTL (MINTTL when there are no RRs), raised to MINTTL, then
/// capped at MAXTTL (the cap wins when MINTTL > MAXTTL).
fn clamp_ttl(min_ttl: Option<u32>, section: CacheSection) -> u32 {
    min_ttl
        .unwrap_or(section.min_ttl)
        .max(section.min_ttl)
        .min(section.max_ttl)
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    qtype: u16,
    qclass: u16,
    flag_bits: u8,
    kind: Kind,
    /// Hit since the eviction scan last passed it (second chance).
    used: bool,
    /// Hits in the current prefetch window, and when that window began.
    hits: u32,
    window_start: u64,
    /// No refresh (prefetch or stale) is started before this instant: at most one in flight.
    refresh_after: u64,
    serial: u64,
    response: StoredResponse,
}

impl Entry {
    /// Whether this entry is the one for `key` (whose hash is `hash`).
    fn is(&self, hash: u64, key: &Key<'_>) -> bool {
        self.hash == hash
            && key.matches_lowercase(
                self.response.qname(),
                self.qtype,
                self.qclass,
                self.flag_bits,
            )
    }
}

/// What a client lookup found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A fresh entry. `prefetch`: it is popular and near its end; refresh it now (the entry
    /// is marked, so this is reported once per refresh).
    Fresh {
        response: &'a StoredResponse,
        kind: Kind,
        prefetch: bool,
        /// Seconds of life left (what [`StoredResponse::remaining`] says now).
        remaining: u32,
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
pub struct InsertReport {
    /// Whether the response was stored (a failure never replaces a usable entry, nor an older
    /// response a newer one).
    pub inserted: bool,
    /// Entries evicted to make room, by [`Kind`].
    pub evicted: [u64; 2],
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
}

impl PacketCache {
    /// A cache for the server block of zone `block_zone` holding this shard's share
    /// (`1/shards`, at least 1) of each section's capacity. `refresh_hold` is how long a
    /// refresh may take before another may start (the overall query timeout is right).
    pub fn new(
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
        }
    }

    /// The policy the cache runs on.
    pub fn policy(&self) -> &CacheConfig {
        &self.policy
    }

    /// Whether names like `qname` (inside the block) are cached: the policy's zones cover it.
    #[inline]
    pub fn covers(&self, qname: &[u8]) -> bool {
        self.everywhere || self.policy.zones.iter().any(|z| in_zone(qname, z))
    }

    /// Switches to a new policy (a configuration reload), keeping the entries: they keep
    /// the lifetime they were stored with. A smaller capacity evicts at once, coldest first.
    pub fn set_policy(
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
                found.remove();
                self.len[slot] -= 1;
                report.evicted[slot] += 1;
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
    pub fn len_of(&self, kind: Kind) -> usize {
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
    /// refresh is due. No allocation, no lock.
    pub fn lookup(&mut self, now: u64, key: &Key<'_>, hash: u64) -> Lookup<'_> {
        let Some(entry) = self.table.find_mut(hash, |e| e.is(hash, key)) else {
            return Lookup::Miss;
        };
        let remaining = entry.response.remaining(now);
        if remaining > 0 {
            entry.used = true;
            let mut prefetch = false;
            if let Some(p) = &self.policy.prefetch {
                let window = u64::try_from(p.window.as_nanos()).unwrap_or(u64::MAX);
                if now.saturating_sub(entry.window_start) > window || entry.hits == 0 {
                    entry.window_start = now;
                    entry.hits = 1;
                } else {
                    entry.hits = entry.hits.saturating_add(1);
                }
                let threshold =
                    (u64::from(p.percentage) * u64::from(entry.response.ttl)).div_ceil(100);
                if entry.hits >= p.amount
                    && u64::from(remaining) <= threshold
                    && now >= entry.refresh_after
                {
                    entry.refresh_after = now.saturating_add(self.refresh_hold);
                    prefetch = true;
                }
            }
            return Lookup::Fresh {
                response: &entry.response,
                kind: entry.kind,
                prefetch,
                remaining,
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

    /// The entry for `key` if it is fresh or usable stale, without counting anything:
    /// `(response, kind, fresh)`.
    pub fn peek(
        &self,
        now: u64,
        key: &Key<'_>,
        hash: u64,
    ) -> Option<(&StoredResponse, Kind, bool)> {
        let entry = self.table.find(hash, |e| e.is(hash, key))?;
        if entry.response.remaining(now) > 0 {
            return Some((&entry.response, entry.kind, true));
        }
        self.stale_usable(&entry.response, now)
            .then_some((&entry.response, entry.kind, false))
    }

    /// Marks the entry for `key` as being refreshed unless a refresh is already under way;
    /// returns whether the caller should start one.
    pub fn begin_refresh(&mut self, now: u64, key: &Key<'_>, hash: u64) -> bool {
        let hold = self.refresh_hold;
        match self.table.find_mut(hash, |e| e.is(hash, key)) {
            Some(entry) if now >= entry.refresh_after => {
                entry.refresh_after = now.saturating_add(hold);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Stores `response` (classified as `kind`) under `key`, replacing an older entry, and
    /// evicts beyond capacity. A failure (SERVFAIL, NOTIMP) never replaces a fresh or usable
    /// stale entry, and a response never replaces one stored later.
    pub fn insert(
        &mut self,
        now: u64,
        key: &Key<'_>,
        hash: u64,
        kind: Kind,
        response: StoredResponse,
    ) -> InsertReport {
        let mut report = InsertReport::default();
        let flag_bits = key.flag_bits();
        let slot = kind as usize;
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(existing) = self.table.find(hash, |e| e.is(hash, key)) {
            let usable =
                existing.response.remaining(now) > 0 || self.stale_usable(&existing.response, now);
            if (usable && !response.is_answer()) || existing.response.stored_at > response.stored_at
            {
                return report;
            }
        }
        let entry = Entry {
            hash,
            qtype: key.qtype,
            qclass: key.qclass,
            flag_bits,
            kind,
            used: false,
            hits: 0,
            window_start: now,
            refresh_after: 0,
            serial,
            response,
        };
        match self.table.find_mut(hash, |e| e.is(hash, key)) {
            Some(existing) => {
                let old = existing.kind as usize;
                self.len[old] -= 1;
                *existing = Entry {
                    // Popularity survives a refresh, so prefetch keeps the entry warm.
                    used: existing.used,
                    hits: existing.hits,
                    window_start: existing.window_start,
                    ..entry
                };
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
