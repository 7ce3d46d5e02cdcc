//! The `ratelimit` directive: each client (an address prefix) may send `qps` queries a
//! second with bursts of `burst`; beyond, its queries are refused, truncated or dropped.
//!
//! Every shard keeps its own [`RateTable`] per server block (nothing shared on the query
//! path): a fixed array of buckets, 4 to a set, indexed by a seeded hash of the client's
//! prefix, that never grows whatever the number of clients. A bucket is one timestamp, the
//! generic cell rate algorithm's *theoretical arrival time*: a query is admitted when the
//! client's debt (that time, less now) stays within `burst` intervals once it is added. A
//! client not in its set takes the way with the least debt (a client with none has lost
//! nothing by being forgotten), so a limited client is remembered while clients with less
//! debt come and go: a flood of unique source addresses neither grows memory nor frees the
//! flooder from its limit.

use std::net::IpAddr;

use super::Cidr;
use super::cidr::mask;

/// Buckets per set.
const WAYS: usize = 4;

/// Nanoseconds per second.
const NANOS: u64 = 1_000_000_000;

/// A server block's `ratelimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Queries a second one client may send to one shard.
    pub qps: u32,
    /// Queries a client may send at once beyond its rate (the bucket's depth; at least 1).
    pub burst: u32,
    /// A client is an IPv4 address's first `ipv4_prefix` bits.
    pub ipv4_prefix: u8,
    /// A client is an IPv6 address's first `ipv6_prefix` bits.
    pub ipv6_prefix: u8,
    /// Clients never limited.
    pub whitelist: Vec<Cidr>,
    /// What a client over its rate gets.
    pub action: RateLimitAction,
    /// Buckets per shard (rounded up to a power of two, at least 4).
    pub table: usize,
}

impl RateLimitConfig {
    /// `ratelimit QPS` with the defaults: burst QPS, whole addresses (/32, /128), no
    /// whitelist, REFUSED, 4096 buckets.
    pub fn with_qps(qps: u32) -> RateLimitConfig {
        RateLimitConfig {
            qps,
            burst: qps,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            whitelist: Vec::new(),
            action: RateLimitAction::Refuse,
            table: 4096,
        }
    }
}

/// What a query over its client's rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitAction {
    /// REFUSED.
    #[default]
    Refuse,
    /// Over UDP an empty NOERROR reply with TC set, so that a real client asks again over
    /// TCP (response rate limiting's "slip"); TCP queries are not limited.
    Truncate,
    /// No reply.
    Drop,
}

impl RateLimitAction {
    /// The `action` label of each counter slot.
    pub const LABELS: [&'static str; 3] = ["refuse", "truncate", "drop"];

    /// The action's counter slot (an index into [`RateLimitAction::LABELS`]).
    pub fn slot(self) -> usize {
        self as usize
    }
}

/// One client's bucket: its prefix and its theoretical arrival time (nanoseconds on the
/// engine's clock; at or before now: no debt).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: [u64; 2],
    due: u64,
}

/// One shard's buckets for one server block (see the module).
#[derive(Debug)]
pub(crate) struct RateTable {
    buckets: Box<[Bucket]>,
    /// Sets - 1 (a power of two less one).
    set_mask: usize,
    seed: u64,
    /// Nanoseconds one query costs.
    interval: u64,
    /// The largest debt admitted: `burst` intervals.
    depth: u64,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl RateTable {
    /// The table of `config`, hashing under `seed`.
    pub(crate) fn new(config: &RateLimitConfig, seed: u64) -> RateTable {
        let sets = config.table.div_ceil(WAYS).max(1).next_power_of_two();
        let interval = NANOS / u64::from(config.qps.max(1));
        RateTable {
            buckets: vec![Bucket::default(); sets * WAYS].into_boxed_slice(),
            set_mask: sets - 1,
            seed,
            interval,
            depth: interval * u64::from(config.burst.max(1)),
            ipv4_prefix: config.ipv4_prefix,
            ipv6_prefix: config.ipv6_prefix,
        }
    }

    /// How many buckets there are (fixed when the table is made).
    pub(crate) fn capacity(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a query from `source` at `now` (nanoseconds on the engine's clock) is within
    /// its client's rate; an admitted query is charged to the client.
    #[inline]
    pub(crate) fn admit(&mut self, source: IpAddr, now: u64) -> bool {
        let key = self.key(source);
        let set = (self.hash(key) as usize & self.set_mask) * WAYS;
        let Some(ways) = self.buckets.get_mut(set..set + WAYS) else {
            return true;
        };
        let way = match ways.iter().position(|bucket| bucket.key == key) {
            Some(way) => way,
            None => {
                let way = (0..WAYS).min_by_key(|&way| ways[way].due).unwrap_or(0);
                ways[way] = Bucket { key, due: 0 };
                way
            }
        };
        let bucket = &mut ways[way];
        let next = bucket.due.max(now).saturating_add(self.interval);
        if next - now > self.depth {
            return false;
        }
        bucket.due = next;
        true
    }

    /// The client `source` belongs to: its prefix, IPv4 (and IPv4-mapped IPv6) as
    /// `::ffff:a.b.c.d`.
    fn key(&self, source: IpAddr) -> [u64; 2] {
        let bits = match source.to_canonical() {
            IpAddr::V4(v4) => {
                let prefix = mask(IpAddr::V4(v4), self.ipv4_prefix);
                let v4 = match prefix {
                    Some(IpAddr::V4(v4)) => u32::from(v4),
                    _ => u32::from(v4),
                };
                0xffff_u128 << 32 | u128::from(v4)
            }
            IpAddr::V6(v6) => match mask(IpAddr::V6(v6), self.ipv6_prefix) {
                Some(IpAddr::V6(v6)) => u128::from(v6),
                _ => u128::from(v6),
            },
        };
        [(bits >> 64) as u64, bits as u64]
    }

    /// A seeded hash of `key` (a folded 64×64→128-bit multiply), so that no client can pick
    /// addresses that share a set.
    fn hash(&self, key: [u64; 2]) -> u64 {
        let fold = |a: u64, b: u64| {
            let product = u128::from(a) * u128::from(b);
            (product >> 64) as u64 ^ product as u64
        };
        let first = fold(key[0] ^ self.seed, 0x243f_6a88_85a3_08d3);
        fold(key[1] ^ first, self.seed | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = NANOS;

    fn table(qps: u32, burst: u32) -> RateTable {
        RateTable::new(
            &RateLimitConfig {
                burst,
                ..RateLimitConfig::with_qps(qps)
            },
            0x5eed,
        )
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut rates = table(10, 3);
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let start = 5 * SECOND;
        let admitted = (0..10).filter(|_| rates.admit(client, start)).count();
        assert_eq!(admitted, 3, "the burst");
        assert!(
            !rates.admit(client, start + SECOND / 20),
            "half an interval later"
        );
        assert!(
            rates.admit(client, start + SECOND / 10),
            "one interval later"
        );
        assert!(!rates.admit(client, start + SECOND / 10));
        // Idle for a long time: a full bucket again, no more.
        let later = start + 60 * SECOND;
        assert_eq!((0..10).filter(|_| rates.admit(client, later)).count(), 3);
        // Another client has its own bucket.
        assert!(rates.admit("10.0.0.2".parse().unwrap(), later));
    }

    #[test]
    fn prefixes_share_a_bucket_and_families_stay_apart() {
        let mut rates = RateTable::new(
            &RateLimitConfig {
                ipv4_prefix: 24,
                ipv6_prefix: 56,
                burst: 1,
                ..RateLimitConfig::with_qps(1)
            },
            7,
        );
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(rates.admit(ip("192.0.2.1"), SECOND));
        assert!(!rates.admit(ip("192.0.2.200"), SECOND), "same /24");
        assert!(!rates.admit(ip("::ffff:192.0.2.9"), SECOND), "IPv4-mapped");
        assert!(rates.admit(ip("192.0.3.1"), SECOND));
        assert!(rates.admit(ip("2001:db8:0:1::1"), SECOND));
        assert!(!rates.admit(ip("2001:db8:0:ff::2"), SECOND), "same /56");
        assert!(rates.admit(ip("2001:db8:0:100::1"), SECOND));
    }

    #[test]
    fn the_table_is_fixed_and_keeps_a_limited_client_among_many_new_ones() {
        let mut rates = RateTable::new(
            &RateLimitConfig {
                table: 1000,
                ..RateLimitConfig::with_qps(10)
            },
            1,
        );
        assert_eq!(rates.capacity(), 1024);
        let flooder: IpAddr = "10.9.9.9".parse().unwrap();
        let mut now = SECOND;
        let mut admitted = 0;
        for n in 0..100_000u32 {
            now += 10_000; // 100k pairs of queries in one second
            let unique = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            assert!(rates.admit(unique, now), "a new client has a full bucket");
            admitted += usize::from(rates.admit(flooder, now));
        }
        assert_eq!(rates.capacity(), 1024);
        // 10 at once, then 10 a second: about 20 in the second, never much more.
        assert!(
            (19..=21).contains(&admitted),
            "flooder admitted {admitted} times"
        );
    }
}
