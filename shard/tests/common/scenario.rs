//! What scenario tests share: the replies they expect ([`Want`], [`check`]), the upstream
//! answers they give, and the cache configurations they run.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use shardns_shard::config::{CacheConfig, Prefetch, ServeStale};

use super::{Upstream, ttls};

/// What a client reply must show (`None`: not checked).
#[derive(Debug, Clone, Default)]
pub struct Want {
    pub rcode: Option<ResponseCode>,
    /// Every answer and authority TTL.
    pub ttl: Option<u32>,
    /// Number of answer records.
    pub answers: Option<usize>,
    pub aa: Option<bool>,
    pub ad: Option<bool>,
    /// The question name exactly as the client wrote it.
    pub name: Option<&'static str>,
    /// The first A record's address.
    pub addr: Option<[u8; 4]>,
}

/// An A answer with this TTL from the upstream (address 192.0.2.1).
pub fn a(ttl: u32) -> Upstream {
    a_at([192, 0, 2, 1], ttl)
}

pub fn a_at(addr: [u8; 4], ttl: u32) -> Upstream {
    Upstream {
        answers: vec![(addr, ttl)],
        ..Upstream::default()
    }
}

pub fn rcode(code: ResponseCode, soa: Option<u32>) -> Upstream {
    Upstream {
        rcode: Some(code),
        soa,
        ..Upstream::default()
    }
}

/// The first reply to a miss (relayed, AA clear) with this TTL.
pub fn relayed(ttl: u32) -> Want {
    Want {
        rcode: Some(ResponseCode::NoError),
        ttl: Some(ttl),
        aa: Some(false),
        ..Want::default()
    }
}

/// A reply from the cache (AA set) with this TTL.
pub fn hit(ttl: u32) -> Want {
    Want {
        rcode: Some(ResponseCode::NoError),
        ttl: Some(ttl),
        aa: Some(true),
        ..Want::default()
    }
}

pub fn code(code: ResponseCode) -> Want {
    Want {
        rcode: Some(code),
        ..Want::default()
    }
}

pub fn check(step: usize, reply: &Message, want: &Want) {
    let at = format!("step {step}: {reply:?}");
    if let Some(rcode) = want.rcode {
        assert_eq!(reply.response_code(), rcode, "rcode, {at}");
    }
    if let Some(ttl) = want.ttl {
        let got = ttls(reply);
        assert!(!got.is_empty(), "records expected, {at}");
        assert!(got.iter().all(|&t| t == ttl), "TTLs {got:?} != {ttl}, {at}");
    }
    if let Some(n) = want.answers {
        assert_eq!(reply.answers().len(), n, "answers, {at}");
    }
    if let Some(aa) = want.aa {
        assert_eq!(reply.authoritative(), aa, "AA, {at}");
    }
    if let Some(ad) = want.ad {
        assert_eq!(reply.authentic_data(), ad, "AD, {at}");
    }
    if let Some(name) = want.name {
        assert_eq!(reply.queries()[0].name().to_ascii(), name, "question, {at}");
    }
    if let Some(addr) = want.addr {
        match reply.answers().first().map(|r| r.data()) {
            Some(RData::A(a)) => assert_eq!(a.0.octets(), addr, "address, {at}"),
            other => panic!("expected an A record, got {other:?}, {at}"),
        }
    }
}

pub fn cache(ttl: Option<u32>) -> CacheConfig {
    CacheConfig::with_ttl(ttl)
}

pub fn stale(max_secs: u64, verify: bool) -> CacheConfig {
    CacheConfig {
        serve_stale: Some(ServeStale {
            max_stale: Duration::from_secs(max_secs),
            verify,
        }),
        ..cache(None)
    }
}

pub fn prefetch(amount: u32, percentage: u8) -> CacheConfig {
    CacheConfig {
        prefetch: Some(Prefetch {
            amount,
            window: Duration::from_secs(60),
            percentage,
        }),
        ..cache(None)
    }
}
