//! The configuration a shard runs on: an immutable value, shared by `Arc` and replaced whole
//! on reload. Names are stored in lowercase uncompressed wire form.

use std::net::SocketAddr;
use std::time::Duration;

use shardns_wire::Rcode;

pub use crate::policy::{
    ACL_ZONES, AclAction, AclConfig, AclPolicy, AclRule, AclZone, Cidr, RateLimitAction,
    RateLimitConfig,
};

/// Everything a shard needs to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listening addresses; a [`crate::Client::listener`] indexes this.
    pub listeners: Vec<ListenerConfig>,
    /// Server blocks (`ZONE[:PORT] { ... }`).
    pub servers: Vec<ServerConfig>,
    /// Every upstream named by any `forward`; a [`crate::Link::upstream`] indexes this.
    pub upstreams: Vec<UpstreamConfig>,
    pub limits: Limits,
}

/// Why a configuration cannot replace the running one without a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartNeeded {
    #[error("the listening addresses changed (a restart is needed)")]
    Listeners,
    #[error("the server blocks changed (a restart is needed)")]
    Servers,
    #[error("the fastpath directives changed (a restart is needed)")]
    Fastpath,
}

impl RestartNeeded {
    /// What changed, for messages: `the listening addresses`, `the server blocks`.
    pub fn what(&self) -> &'static str {
        match self {
            RestartNeeded::Listeners => "the listening addresses",
            RestartNeeded::Servers => "the server blocks",
            RestartNeeded::Fastpath => "the fastpath directives",
        }
    }
}

impl Config {
    /// The server block a query for `qname` (uncompressed wire form) to listener `listener`
    /// goes to: the one with the most specific zone containing it, as the shards route.
    pub fn block_for(&self, listener: usize, qname: &[u8]) -> Option<usize> {
        self.listeners
            .get(listener)?
            .servers
            .iter()
            .copied()
            .filter(|&s| crate::names::in_zone(qname, &self.servers[s].zone))
            .max_by_key(|&s| self.servers[s].zone.len())
    }

    /// Whether running shards can switch from this configuration to `next` (a reload), or
    /// why a restart is needed. The listening addresses must stay the same (the sockets are
    /// bound once). Server blocks keep their index, so that the indices the drivers, the
    /// counters and the other shards hold keep their meaning: every block of this
    /// configuration must be at the same index in `next` with the same zone, and new blocks
    /// come after them ([`Config::aligned_to`] makes a freshly built configuration so).
    /// The `fastpath` directives must stay as they are (the program is attached once).
    /// Everything else (which blocks each address serves, caches, upstreams, options) may
    /// change. The one rule, applied by the process before it broadcasts a reload and by every
    /// shard when it receives one.
    pub fn check_reload(&self, next: &Config) -> Result<(), RestartNeeded> {
        let addresses = |config: &Config| -> Vec<std::net::SocketAddr> {
            config
                .listeners
                .iter()
                .map(|listener| listener.addr)
                .collect()
        };
        if addresses(self) != addresses(next) {
            return Err(RestartNeeded::Listeners);
        }
        let kept = self.servers.len() <= next.servers.len()
            && self
                .servers
                .iter()
                .zip(&next.servers)
                .all(|(a, b)| a.zone == b.zone);
        if !kept {
            return Err(RestartNeeded::Servers);
        }
        // The program is attached and its addresses served once, at start-up.
        let same_fastpath = next.servers.iter().enumerate().all(|(at, block)| {
            block.fastpath.as_ref() == self.servers.get(at).and_then(|s| s.fastpath.as_ref())
        });
        if !same_fastpath {
            return Err(RestartNeeded::Fastpath);
        }
        Ok(())
    }
}

/// One listening address (UDP and TCP) and the server blocks bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Indices into [`Config::servers`]; a query goes to the block with the most specific zone
    /// that contains its name.
    pub servers: Vec<usize>,
}

/// A server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The block's zone, lowercase wire form (`b"\0"` for the root).
    pub zone: Vec<u8>,
    /// The zone in presentation form, for logs and metric labels (e.g. `cluster.local.`).
    pub zone_text: String,
    pub cache: Option<CacheConfig>,
    pub forward: Option<ForwardConfig>,
    /// The `errors` directive: log failed queries.
    pub log_errors: bool,
    /// The `log` directive: a line per query for names under these zones (lowercase wire
    /// form; empty: every name of the block).
    pub log_queries: Option<Vec<Vec<u8>>>,
    /// The `loop` directive: the block's loop check.
    pub loop_probe: Option<crate::LoopProbe>,
    /// The `acl` directives (checked before the cache).
    pub acl: Option<AclConfig>,
    /// The `ratelimit` directive (checked before `acl`).
    pub ratelimit: Option<RateLimitConfig>,
    /// The `fastpath` directive: hot cache entries are published to the in-kernel fast path
    /// ([`crate::fastpath`]).
    pub fastpath: Option<FastpathConfig>,
}

/// The `fastpath` directive: where the in-kernel fast path answers this block's hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastpathConfig {
    /// Interface names or patterns (`*` any run of characters, `?` one): the program is
    /// attached to the ingress of every interface that matches, as they appear.
    pub interfaces: Vec<String>,
    /// `force`: attach where other eBPF programs (a CNI's) are attached too.
    pub force: bool,
}

/// The `cache` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Names the cache applies to (lowercase wire form); other names bypass it. Never empty:
    /// without ZONES it holds the server block's zone.
    pub zones: Vec<Vec<u8>>,
    pub success: CacheSection,
    pub denial: CacheSection,
    /// `prefetch`: refresh popular entries before they expire.
    pub prefetch: Option<Prefetch>,
    /// `serve_stale`: answer from expired entries (RFC 8767).
    pub serve_stale: Option<ServeStale>,
    /// `servfail DURATION`: how long SERVFAIL and NOTIMP replies are cached, in seconds (0: not
    /// cached; CoreDNS default 5, at most 300).
    pub servfail_ttl: u32,
    /// `disable success ZONES...`: positive answers for names in these zones are not cached.
    pub disable_success: Vec<Vec<u8>>,
    /// `disable denial ZONES...`: negative answers for names in these zones are not cached.
    pub disable_denial: Vec<Vec<u8>>,
    /// `keepttl`: relay and serve the upstream's TTLs unchanged instead of the remaining
    /// lifetime (entries still expire on time).
    pub keepttl: bool,
}

/// Capacity (entries, for the whole process: each shard holds its share) and TTL clamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSection {
    pub capacity: usize,
    pub max_ttl: u32,
    pub min_ttl: u32,
}

/// `prefetch AMOUNT [[DURATION] [PERCENTAGE%]]`: an entry hit at least `amount` times within
/// `window` is refreshed once its remaining TTL is at most `percentage` % of its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    pub amount: u32,
    pub window: Duration,
    pub percentage: u8,
}

/// `serve_stale [DURATION] [immediate|verify]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeStale {
    /// How long after expiry an entry may still be served.
    pub max_stale: Duration,
    /// `verify`: ask the upstream first and serve stale only when it fails; `immediate`
    /// (false): answer stale at once and refresh in the background.
    pub verify: bool,
}

impl CacheConfig {
    /// CoreDNS's defaults with `cache [TTL]` for the root zone: capacity 9984 each, max TTL
    /// 3600 s / 1800 s unless `ttl` is given (then both), minimum TTL 5 s, SERVFAIL cached
    /// 5 s, no prefetch, no serve_stale.
    pub fn with_ttl(ttl: Option<u32>) -> CacheConfig {
        CacheConfig {
            zones: vec![vec![0]],
            success: CacheSection {
                capacity: 9984,
                max_ttl: ttl.unwrap_or(3600),
                min_ttl: 5,
            },
            denial: CacheSection {
                capacity: 9984,
                max_ttl: ttl.unwrap_or(1800),
                min_ttl: 5,
            },
            prefetch: None,
            serve_stale: None,
            servfail_ttl: 5,
            disable_success: Vec::new(),
            disable_denial: Vec::new(),
            keepttl: false,
        }
    }
}

/// The `forward` directive, with CoreDNS's options (defaults in [`ForwardConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Only names at or below this zone are forwarded (lowercase wire form).
    pub from: Vec<u8>,
    /// `except NAMES...`: names at or below these zones are not forwarded (lowercase wire).
    pub except: Vec<Vec<u8>>,
    /// Indices into [`Config::upstreams`], in configured order.
    pub upstreams: Vec<usize>,
    /// `force_tcp`: always use TCP to the upstreams.
    pub force_tcp: bool,
    /// `prefer_udp`: always use UDP, and retry over TCP when a reply is truncated. Without
    /// either, the client's protocol is used.
    pub prefer_udp: bool,
    /// `expire`: idle upstream connections are closed after this (CoreDNS: 10 s).
    pub expire: Duration,
    /// `max_fails`: an upstream is down after more than this many consecutive failures
    /// (CoreDNS: 2; 0 = never down).
    pub max_fails: u32,
    /// `policy`: the order in which healthy upstreams are tried.
    pub policy: Policy,
    /// `health_check DURATION`: how often a down upstream is probed (CoreDNS: 0.5 s).
    pub health_check: Duration,
    /// `health_check ... no_rec`: probes without RD.
    pub health_no_rec: bool,
    /// `health_check ... domain FQDN`: the probe's name (lowercase wire; CoreDNS: `.`).
    pub health_domain: Vec<u8>,
    /// `max_concurrent`: most queries in flight for this block (per process: each shard
    /// takes its share); beyond, REFUSED. `None`: no limit but the shard's pending cap.
    pub max_concurrent: Option<usize>,
    /// `next RCODE...`: upstream replies with these RCODEs are not relayed; with no further
    /// plugin the client gets SERVFAIL (as CoreDNS).
    pub next: Vec<Rcode>,
    /// `failfast_all_unhealthy_upstreams`: when every upstream is down, SERVFAIL at once
    /// (otherwise one is tried anyway, as CoreDNS does).
    pub failfast: bool,
}

impl Default for ForwardConfig {
    /// `forward . ` with CoreDNS's defaults and no upstreams.
    fn default() -> ForwardConfig {
        ForwardConfig {
            from: vec![0],
            except: Vec::new(),
            upstreams: Vec::new(),
            force_tcp: false,
            prefer_udp: false,
            expire: Duration::from_secs(10),
            max_fails: 2,
            policy: Policy::Random,
            health_check: Duration::from_millis(500),
            health_no_rec: false,
            health_domain: vec![0],
            max_concurrent: None,
            next: Vec::new(),
            failfast: false,
        }
    }
}

/// `policy random|round_robin|sequential`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// A random order for each query (CoreDNS's default).
    #[default]
    Random,
    /// The next upstream first, query after query.
    RoundRobin,
    /// The configured order.
    Sequential,
}

/// One upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub addr: SocketAddr,
}

/// Timeouts and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Read timeout of one upstream attempt (CoreDNS: 2 s).
    pub attempt_timeout: Duration,
    /// Overall deadline of a forwarded query, then SERVFAIL (CoreDNS: 5 s).
    pub query_timeout: Duration,
    /// Idle timeout of a client TCP connection (CoreDNS: 10 s).
    pub client_tcp_idle: Duration,
    /// Most client TCP connections one shard keeps open.
    pub client_tcp_max: usize,
    /// Most queries in flight on one upstream TCP connection.
    pub upstream_tcp_inflight: usize,
    /// Most TCP connections one shard opens to one upstream.
    pub upstream_tcp_conns: usize,
    /// Idle upstream TCP connections are closed after this (CoreDNS `expire`: 10 s).
    pub upstream_tcp_idle: Duration,
    /// Most queries one shard keeps in flight upstream; beyond, REFUSED.
    pub max_pending: usize,
    /// Most clients one shard keeps waiting for upstream answers (over all pending queries);
    /// beyond, REFUSED. With `max_pending` it bounds the memory of the miss path whatever
    /// the query mix (docs/ARCHITECTURE.md).
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            attempt_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(5),
            client_tcp_idle: Duration::from_secs(10),
            client_tcp_max: 1024,
            upstream_tcp_inflight: 2,
            upstream_tcp_conns: 16,
            upstream_tcp_idle: Duration::from_secs(10),
            max_pending: 8192,
            max_waiters: 16384,
        }
    }
}
