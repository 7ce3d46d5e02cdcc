//! CoreDNS's request metrics (`coredns_dns_*`), counted per shard: for every reply sent, one
//! request by protocol, address family and query type, one response by RCODE and by the part
//! that wrote it, the time it took, and the sizes of the query and the reply. They are kept
//! per *request slot*: one per (listening address, server block the address serves) and one
//! per address for the queries no block takes (CoreDNS's zone `dropped`), so a scrape can
//! label them with CoreDNS's `server` (the address the query came in on) and `zone`.

use shardns_wire::Rcode;

use super::{Counter, DurationHistogram};
use crate::Protocol;
use crate::config::Config;

/// Query types CoreDNS labels by name (`monitorType` in plugin/metrics/vars); any other is
/// `other`, the last slot.
pub const QUERY_TYPES: [(u16, &str); 19] = [
    (28, "AAAA"),
    (1, "A"),
    (5, "CNAME"),
    (48, "DNSKEY"),
    (43, "DS"),
    (15, "MX"),
    (50, "NSEC3"),
    (47, "NSEC"),
    (2, "NS"),
    (12, "PTR"),
    (46, "RRSIG"),
    (6, "SOA"),
    (33, "SRV"),
    (16, "TXT"),
    (65, "HTTPS"),
    (64, "SVCB"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
];

/// Slots of [`RequestStats::requests`]' type dimension: the named types, then `other`.
pub const TYPE_SLOTS: usize = QUERY_TYPES.len() + 1;

/// The type slot of `qtype`.
#[inline]
pub(crate) fn type_slot(qtype: u16) -> usize {
    match qtype {
        28 => 0,
        1 => 1,
        5 => 2,
        48 => 3,
        43 => 4,
        15 => 5,
        50 => 6,
        47 => 7,
        2 => 8,
        12 => 9,
        46 => 10,
        6 => 11,
        33 => 12,
        16 => 13,
        65 => 14,
        64 => 15,
        251 => 16,
        252 => 17,
        255 => 18,
        _ => QUERY_TYPES.len(),
    }
}

/// Who wrote a response (`coredns_dns_responses_total{plugin}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Writer {
    /// The server itself: malformed queries, unknown opcodes, no block for the name.
    Server = 0,
    /// The cache: a hit, fresh or stale.
    Cache = 1,
    /// Forwarding: an upstream's answer, or its failure (timeout, limits).
    Forward = 2,
    /// `acl`: a blocked or filtered query.
    Acl = 3,
    /// `ratelimit`: a query over its client's rate.
    Ratelimit = 4,
}

impl Writer {
    /// Every writer, in slot order, with CoreDNS's label value (the plugin's name).
    pub const LABELS: [&'static str; 5] = ["", "cache", "forward", "acl", "ratelimit"];
}

/// Upper bounds (bytes) of CoreDNS's request and response size histograms; a last bucket
/// takes the rest (+Inf).
pub const SIZE_BUCKETS: [u32; 14] = [
    0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000,
];

/// A histogram of message sizes in bytes.
#[derive(Debug, Default)]
pub struct SizeHistogram {
    /// Messages per bucket (not cumulative); the last slot is above 64,000 bytes.
    pub buckets: [Counter; 15],
    /// Sum of the sizes.
    pub sum: Counter,
}

impl SizeHistogram {
    /// Records one message of `size` bytes.
    #[inline]
    pub fn observe(&self, size: usize) {
        let size = size as u32;
        let slot = SIZE_BUCKETS
            .iter()
            .position(|&le| size <= le)
            .unwrap_or(SIZE_BUCKETS.len());
        self.buckets[slot].inc();
        self.sum.add(u64::from(size));
    }

    /// Messages recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(Counter::get).sum()
    }
}

/// The request metrics of one request slot in one shard.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// `coredns_dns_requests_total`, by protocol (0 udp, 1 tcp), family (0 IPv4, 1 IPv6) and
    /// type slot (`type_slot`).
    pub requests: [[[Counter; TYPE_SLOTS]; 2]; 2],
    /// `coredns_dns_do_requests_total`: requests with the DO bit.
    pub do_requests: Counter,
    /// `coredns_dns_responses_total`, by writer ([`Writer`]) and RCODE slot (RCODE `n` up to
    /// 15, BADVERS and above in 16).
    pub responses: [[Counter; 17]; Writer::LABELS.len()],
    /// `coredns_dns_request_duration_seconds`.
    pub duration: DurationHistogram,
    /// `coredns_dns_request_size_bytes`, by protocol.
    pub request_size: [SizeHistogram; 2],
    /// `coredns_dns_response_size_bytes`, by protocol.
    pub response_size: [SizeHistogram; 2],
}

/// One reply, as the request metrics see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) protocol: Protocol,
    pub(crate) ipv6: bool,
    pub(crate) qtype: u16,
    pub(crate) dnssec_ok: bool,
    pub(crate) query_len: usize,
    pub(crate) reply_len: usize,
    pub(crate) rcode: Rcode,
    pub(crate) writer: Writer,
    /// From the query's arrival to its reply, in microseconds.
    pub(crate) micros: u64,
}

impl RequestStats {
    /// Counts one reply.
    #[inline]
    pub(crate) fn record(&self, exchange: &Exchange) {
        let protocol = (exchange.protocol == Protocol::Tcp) as usize;
        let family = exchange.ipv6 as usize;
        self.requests[protocol][family][type_slot(exchange.qtype)].inc();
        if exchange.dnssec_ok {
            self.do_requests.inc();
        }
        let rcode = usize::from(exchange.rcode.value().min(16));
        self.responses[exchange.writer as usize][rcode].inc();
        self.duration.observe(exchange.micros);
        self.request_size[protocol].observe(exchange.query_len);
        self.response_size[protocol].observe(exchange.reply_len);
    }
}

/// Where the request slots of a configuration are, in counters with room for `blocks` server
/// blocks: listener L's slot for block B is `L × (blocks + 1) + B`, its `dropped` slot
/// `L × (blocks + 1) + blocks`. A (listener, block) pair keeps its slot across reloads that
/// add or retire blocks (blocks keep their index: [`Config::aligned_to`]), so its counters
/// keep their labels; slots of blocks a listener does not serve stay at zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSlots {
    /// Per listener: the slot of each server block (`None` for a block it does not serve).
    by_server: Vec<Vec<Option<u16>>>,
    /// Per listener: its `dropped` slot.
    dropped: Vec<u16>,
    len: usize,
}

impl RequestSlots {
    /// The slots of `config` in counters with room for `blocks` server blocks (blocks past
    /// that room get none).
    pub fn of(config: &Config, blocks: usize) -> RequestSlots {
        let stride = blocks + 1;
        let mut by_server = Vec::with_capacity(config.listeners.len());
        let mut dropped = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let base = index * stride;
            let mut slots = vec![None; blocks];
            for &server in &listener.servers {
                if let Some(slot) = slots.get_mut(server) {
                    *slot = u16::try_from(base + server).ok();
                }
            }
            by_server.push(slots);
            dropped.push(u16::try_from(base + blocks).unwrap_or(u16::MAX));
        }
        RequestSlots {
            by_server,
            dropped,
            len: config.listeners.len() * stride,
        }
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none (no listener).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of queries for server block `server` that came in on `listener`.
    #[inline]
    pub fn slot(&self, listener: usize, server: usize) -> Option<usize> {
        Some(usize::from((*self.by_server.get(listener)?.get(server)?)?))
    }

    /// The slot of queries on `listener` that no block takes.
    #[inline]
    pub fn dropped(&self, listener: usize) -> Option<usize> {
        self.dropped.get(listener).map(|&slot| usize::from(slot))
    }

    /// Every slot with what it counts: `(slot, listener, Some(server))`, or `None` for the
    /// listener's `dropped` slot.
    pub fn labels(&self) -> Vec<(usize, usize, Option<usize>)> {
        let mut out = Vec::with_capacity(self.len);
        for (listener, slots) in self.by_server.iter().enumerate() {
            for (server, slot) in slots.iter().enumerate() {
                if let Some(slot) = slot {
                    out.push((usize::from(*slot), listener, Some(server)));
                }
            }
            out.push((usize::from(self.dropped[listener]), listener, None));
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_slots_follow_the_table() {
        for (slot, &(qtype, _)) in QUERY_TYPES.iter().enumerate() {
            assert_eq!(type_slot(qtype), slot);
        }
        assert_eq!(type_slot(99), TYPE_SLOTS - 1);
    }

    #[test]
    fn sizes_land_in_coredns_buckets() {
        let histogram = SizeHistogram::default();
        for size in [0, 1, 100, 511, 512, 70_000] {
            histogram.observe(size);
        }
        let counts: Vec<u64> = histogram.buckets.iter().map(Counter::get).collect();
        assert_eq!(counts[0], 1, "0 bytes");
        assert_eq!(counts[1], 2, "1 and 100 bytes");
        assert_eq!(counts[5], 1, "511");
        assert_eq!(counts[6], 1, "512");
        assert_eq!(counts[14], 1, "above 64,000");
        assert_eq!(histogram.sum.get(), 71_124);
    }
}
