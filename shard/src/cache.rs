//! The per-shard packet cache. An entry is the upstream's whole response in wire form (OPT
//! removed, question lowercased) plus the offsets of its TTL fields. A hit copies it, writes
//! the client's ID, flags and qname bytes (keeping the client's letter case), rewrites every
//! TTL to the remaining lifetime, and appends an OPT record for EDNS clients.

use std::collections::VecDeque;

use hashbrown::HashTable;
use shardns_wire::build::{EDNS_PAYLOAD, append_opt, client_udp_limit, truncate};
use shardns_wire::{HEADER_LEN, Header, Key, Message, rcode};

use crate::Protocol;
use crate::config::{CacheConfig, CacheSection};

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

/// A response ready to be rendered for any client asking the same question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Header, question (lowercased name) and records; no OPT record.
    bytes: Box<[u8]>,
    /// Offsets of the TTL fields to rewrite; empty when TTLs are relayed unchanged.
    ttl_offsets: Box<[u16]>,
    question_end: u16,
    /// Upper bits of the upstream's extended RCODE (0 in practice).
    ext_rcode: u8,
    /// Lifetime in seconds every TTL is set to (0 when TTLs are relayed unchanged).
    ttl: u32,
    /// When it was stored, in the engine's clock (nanoseconds since the engine started).
    stored_at: u64,
}

impl StoredResponse {
    /// Prepares an upstream response for relaying and caching. `ttl_offsets` are the TTL
    /// offsets reported while parsing `message`. With `policy`, decides whether and where the
    /// response is cached and clamps its TTL; the TTLs of a cacheable response are rewritten
    /// to that lifetime (on this first reply too).
    pub fn from_upstream(
        message: &Message<'_>,
        ttl_offsets: &[usize],
        policy: Option<&CacheConfig>,
        now: u64,
    ) -> (StoredResponse, Option<Kind>) {
        let raw = &message.buf[..message.records.end];
        let opt = message.edns.as_ref().map(|e| e.record.clone());
        let mut bytes = Vec::with_capacity(raw.len());
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
        bytes[name].make_ascii_lowercase();

        let kind = policy.and_then(|_| classify(message));
        let section = kind.and_then(|k| policy.map(|p| p.section(k)));
        let ttl = match section {
            Some(section) => clamp_ttl(message.records.min_ttl, section),
            None => 0,
        };
        let kind = if ttl == 0 { None } else { kind };
        if kind.is_none() {
            offsets.clear();
        }
        let stored = StoredResponse {
            bytes: bytes.into_boxed_slice(),
            ttl_offsets: offsets.into_boxed_slice(),
            question_end: message.question_end as u16,
            ext_rcode: message.edns.as_ref().map_or(0, |e| e.ext_rcode),
            ttl,
            stored_at: now,
        };
        (stored, kind)
    }

    /// The lowercased question name.
    fn qname(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.question_end as usize - 4]
    }

    /// The lifetime given to every TTL (0 when the response is not cached).
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Seconds of life left at `now` (engine clock, nanoseconds); 0 once expired.
    pub fn remaining(&self, now: u64) -> u32 {
        let elapsed = now.saturating_sub(self.stored_at) / 1_000_000_000;
        (self.ttl as u64).saturating_sub(elapsed) as u32
    }

    /// Writes the reply for `client` into `out` (at least [`crate::MAX_MESSAGE`] bytes) and
    /// returns its length. No allocation.
    pub fn render(
        &self,
        now: u64,
        client: &ClientView<'_>,
        authoritative: bool,
        out: &mut [u8],
    ) -> usize {
        let mut len = self.bytes.len();
        out[..len].copy_from_slice(&self.bytes);
        out[0..2].copy_from_slice(&client.id.to_be_bytes());
        let mut flags = u16::from_be_bytes([out[2], out[3]])
            & !(Header::RD | Header::CD | Header::AD | Header::TC);
        flags |= client.flags & (Header::RD | Header::CD);
        let stored_ad = u16::from_be_bytes([self.bytes[2], self.bytes[3]]) & Header::AD;
        let wants_ad =
            client.flags & Header::AD != 0 || client.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok);
        if wants_ad {
            flags |= stored_ad;
        }
        if authoritative {
            flags |= Header::AA;
        }
        flags |= u16::from_be_bytes([self.bytes[2], self.bytes[3]]) & Header::TC;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + client.qname.len()].copy_from_slice(client.qname);
        if !self.ttl_offsets.is_empty() {
            let ttl = self.remaining(now).to_be_bytes();
            for &offset in self.ttl_offsets.iter() {
                let at = offset as usize;
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

/// Where a response belongs, following CoreDNS's `response.Typify` for the cases cached here.
/// `None`: not cached (SERVFAIL, REFUSED, FORMERR, NOTIMP, NXDOMAIN without SOA or with
/// answers, truncated replies, extended RCODEs).
fn classify(message: &Message<'_>) -> Option<Kind> {
    let header = &message.header;
    if header.tc() || message.edns.as_ref().is_some_and(|e| e.ext_rcode != 0) {
        return None;
    }
    match header.rcode() {
        rcode::NOERROR if header.ancount > 0 => Some(Kind::Success),
        rcode::NOERROR if message.records.soa_in_authority => Some(Kind::Denial),
        rcode::NOERROR => Some(Kind::Success),
        rcode::NXDOMAIN if header.ancount == 0 && message.records.soa_in_authority => {
            Some(Kind::Denial)
        }
        _ => None,
    }
}

/// CoreDNS's clamp: the minimum RR TTL (MINTTL when there are no RRs), raised to MINTTL, then
/// capped at MAXTTL (the cap wins when MINTTL > MAXTTL).
fn clamp_ttl(min_ttl: Option<u32>, section: CacheSection) -> u32 {
    min_ttl
        .unwrap_or(section.min_ttl)
        .max(section.min_ttl)
        .min(section.max_ttl)
}

impl CacheConfig {
    fn section(&self, kind: Kind) -> CacheSection {
        match kind {
            Kind::Success => self.success,
            Kind::Denial => self.denial,
        }
    }
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    qtype: u16,
    qclass: u16,
    flag_bits: u8,
    kind: Kind,
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

/// One shard's slice of one server block's cache.
#[derive(Debug)]
pub struct PacketCache {
    policy: CacheConfig,
    table: HashTable<Entry>,
    /// Insertion order per kind, for eviction: (hash, serial); stale pairs are skipped.
    order: [VecDeque<(u64, u64)>; 2],
    len: [usize; 2],
    capacity: [usize; 2],
    next_serial: u64,
}

/// Result of [`PacketCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertReport {
    pub evicted: usize,
}

impl PacketCache {
    /// A cache holding this shard's share (`1/shards`, at least 1) of each section's capacity.
    pub fn new(policy: CacheConfig, shards: usize) -> PacketCache {
        let share = |c: usize| c.div_ceil(shards.max(1)).max(1);
        let capacity = [
            share(policy.success.capacity),
            share(policy.denial.capacity),
        ];
        PacketCache {
            policy,
            table: HashTable::with_capacity(capacity[0] + capacity[1]),
            order: [VecDeque::new(), VecDeque::new()],
            len: [0, 0],
            capacity,
            next_serial: 0,
        }
    }

    /// The policy the cache was built with.
    pub fn policy(&self) -> &CacheConfig {
        &self.policy
    }

    /// Number of entries (fresh or expired) held.
    pub fn len(&self) -> usize {
        self.len[0] + self.len[1]
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fresh entry for `key` (whose hash is `hash`), if any. No allocation, no lock.
    pub fn lookup(&self, now: u64, key: &Key<'_>, hash: u64) -> Option<&StoredResponse> {
        let entry = self.table.find(hash, |e| e.is(hash, key))?;
        (entry.response.remaining(now) > 0).then_some(&entry.response)
    }

    /// Stores `response` (classified as `kind`) under `key`, replacing any older entry and
    /// evicting the oldest entries of the same kind beyond capacity.
    pub fn insert(
        &mut self,
        key: &Key<'_>,
        hash: u64,
        kind: Kind,
        response: StoredResponse,
    ) -> InsertReport {
        let flag_bits = key.flag_bits();
        let slot = kind as usize;
        let serial = self.next_serial;
        self.next_serial += 1;
        let entry = Entry {
            hash,
            qtype: key.qtype,
            qclass: key.qclass,
            flag_bits,
            kind,
            serial,
            response,
        };
        match self.table.find_mut(hash, |e| e.is(hash, key)) {
            Some(existing) => {
                let old = existing.kind as usize;
                self.len[old] -= 1;
                *existing = entry;
            }
            None => {
                self.table.insert_unique(hash, entry, |e| e.hash);
            }
        }
        self.len[slot] += 1;
        self.order[slot].push_back((hash, serial));
        let mut report = InsertReport::default();
        while self.len[slot] > self.capacity[slot] {
            let Some((victim_hash, victim_serial)) = self.order[slot].pop_front() else {
                break;
            };
            if let Ok(found) = self
                .table
                .find_entry(victim_hash, |e| e.serial == victim_serial)
            {
                found.remove();
                self.len[slot] -= 1;
                report.evicted += 1;
            }
        }
        if self.order[slot].len() > 2 * self.capacity[slot] + 64 {
            self.compact_order(slot);
        }
        report
    }

    /// Drops stale (replaced or evicted) pairs from an eviction queue.
    fn compact_order(&mut self, slot: usize) {
        let table = &self.table;
        self.order[slot]
            .retain(|&(hash, serial)| table.find(hash, |e| e.serial == serial).is_some());
    }
}
