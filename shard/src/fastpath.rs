//! Publishing hot cache entries to the in-kernel fast path (the `fastpath` directive; the
//! program and its maps are the `shardns-fastpath` crate, driven by the process).
//!
//! The shards own the cache as before. In a block with `fastpath`, an entry hit over UDP
//! [`PUBLISH_AFTER`] time(s) is published, once for each combination of the query bits that
//! change its reply beyond the shard's own key (an OPT record or not, AD or not; DO and CD
//! are in the key): a [`Publication::Insert`] on a bounded channel, carrying the entry by
//! reference count (no copy, no allocation on the hit path; a full channel drops it and
//! counts `fastpath_dropped`). The process's fast-path thread renders it with
//! [`HotEntry::render`] and writes the map. A shard withdraws what it published when it evicts
//! the entry ([`Publication::Remove`]) and when it is reconfigured ([`Publication::Reset`]);
//! the reader removes expired entries itself (the program never answers them). A published
//! entry replaced by a newer answer (a prefetch) is published again at once.
//!
//! The hits the program answers come back as [`KernelHit`]s
//! ([`crate::Control::KernelHits`]): they count towards `prefetch` and keep the entry from
//! looking cold to eviction, as socket hits do.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use shardns_wire::{Header, KeyFlags};

use crate::Protocol;
use crate::cache::{ClientView, Kind, StoredResponse};

/// UDP hits of an entry on a shard before it is published. One: a name asked twice (its miss,
/// then a hit) is hot. A higher threshold counts per shard, and pods' resolvers spread their
/// queries over the shards by source port, so with N shards a name would need about N times
/// as many queries before the kernel answers it; a publication costs the shard nothing on its
/// hit path (a channel send) and the fastpath thread a map write.
pub const PUBLISH_AFTER: u16 = 1;

/// What a shard tells the fast path.
#[derive(Debug)]
pub enum Publication {
    /// A hot entry, for the combinations in [`HotEntry::combinations`] (one).
    Insert(HotEntry),
    /// The shard evicted this entry: withdraw its combinations.
    Remove(HotEntry),
    /// The shard was reconfigured and forgot what it published: withdraw everything it
    /// published (it publishes again as entries are hit).
    Reset { shard: usize },
}

/// The query bits beside the question that choose a fast-path entry's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyBits {
    /// The query has an OPT record.
    pub edns: bool,
    /// Its DO bit.
    pub dnssec_ok: bool,
    /// The header's CD bit.
    pub checking_disabled: bool,
    /// The header's AD bit.
    pub authentic_data: bool,
}

/// The bit of `combinations` for a query with (`edns`, `ad`).
pub(crate) fn combination(edns: bool, authentic_data: bool) -> u8 {
    1 << (u8::from(edns) | (u8::from(authentic_data) << 1))
}

/// A cache entry of one shard, shared with the fast path.
#[derive(Debug, Clone)]
pub struct HotEntry {
    shard: usize,
    server: usize,
    kind: Kind,
    flags: KeyFlags,
    /// Bit `edns | ad << 1` for each combination meant.
    combinations: u8,
    response: StoredResponse,
    epoch: Instant,
}

impl HotEntry {
    pub(crate) fn new(
        (shard, server): (usize, usize),
        kind: Kind,
        flags: KeyFlags,
        combinations: u8,
        response: StoredResponse,
        epoch: Instant,
    ) -> HotEntry {
        HotEntry {
            shard,
            server,
            kind,
            flags,
            combinations,
            response,
            epoch,
        }
    }

    /// The shard that holds it.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Its server block (index into [`crate::Config::servers`]).
    pub fn server(&self) -> usize {
        self.server
    }

    /// A positive answer (`coredns_cache_hits_total{type="success"}`), or a denial.
    pub fn is_success(&self) -> bool {
        self.kind == Kind::Success
    }

    /// The question name, lowercase, uncompressed wire form.
    pub fn qname(&self) -> &[u8] {
        self.response.qname()
    }

    /// The question type.
    pub fn qtype(&self) -> u16 {
        self.response.qtype_qclass().0
    }

    /// The query bits of each combination meant.
    pub fn combinations(&self) -> impl Iterator<Item = ReplyBits> + '_ {
        (0..4u8)
            .filter(|bit| self.combinations & (1 << bit) != 0)
            .filter_map(|bit| {
                let edns = bit & 1 != 0;
                // DO only exists with an OPT record.
                (edns || !self.flags.dnssec_ok()).then_some(ReplyBits {
                    edns,
                    dnssec_ok: self.flags.dnssec_ok(),
                    checking_disabled: self.flags.checking_disabled(),
                    authentic_data: bit & 2 != 0,
                })
            })
    }

    /// Its lifetime in seconds.
    pub fn ttl(&self) -> u32 {
        self.response.ttl()
    }

    /// `keepttl`: the TTLs are sent as stored.
    pub fn keeps_ttls(&self) -> bool {
        self.response.fresh_ttl_of(1).is_none()
    }

    /// When it was stored.
    pub fn stored_at(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.response.stored_at())
    }

    /// When it expires.
    pub fn expires_at(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.response.expires_at())
    }

    /// The reply the socket path sends to a fresh hit by a query with `bits` (ID 0, RD
    /// clear, the question lowercase), with every TTL at the whole lifetime (the fast path
    /// writes what is left), an OPT record last for an EDNS query. Never truncated: the
    /// program leaves a query whose reply is over its UDP limit to the socket path.
    pub fn render(&self, bits: ReplyBits) -> Vec<u8> {
        let mut flags = 0;
        if bits.checking_disabled {
            flags |= Header::CD;
        }
        if bits.authentic_data {
            flags |= Header::AD;
        }
        let view = ClientView {
            id: 0,
            flags,
            qname: self.response.qname(),
            edns: bits.edns.then_some((u16::MAX, bits.dnssec_ok)),
            protocol: Protocol::Tcp,
        };
        let mut out = vec![0; crate::MAX_MESSAGE];
        let ttl = self.response.fresh_ttl_of(self.response.ttl());
        let len = self.response.render(ttl, &view, true, &mut out);
        out.truncate(len);
        out
    }
}

/// Hits the in-kernel fast path answered for one cache entry since the last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHit {
    /// The entry's server block.
    pub server: usize,
    /// Its question name, lowercase, uncompressed wire form.
    pub qname: Vec<u8>,
    pub qtype: u16,
    /// Its key's DO and CD bits.
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
    pub hits: u32,
}

/// A shard's end of the publication channel.
#[derive(Debug, Clone)]
pub struct Publisher {
    sender: SyncSender<Publication>,
}

impl Publisher {
    /// Sends without waiting: `false` when the channel is full or its reader gone.
    pub(crate) fn offer(&self, publication: Publication) -> bool {
        match self.sender.try_send(publication) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// A channel for `capacity` publications: the shards' [`Publisher`] (cloned into each
/// engine with [`crate::Engine::with_publisher`]) and the fast path's receiver.
pub fn publication_channel(capacity: usize) -> (Publisher, Receiver<Publication>) {
    let (sender, receiver) = sync_channel(capacity);
    (Publisher { sender }, receiver)
}
