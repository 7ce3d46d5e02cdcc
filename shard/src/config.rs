//! The configuration a shard runs on: an immutable value, shared by `Arc` and replaced whole
//! on reload. Names are stored in lowercase uncompressed wire form.

use std::net::SocketAddr;
use std::time::Duration;

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

/// The `forward` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Only names at or below this zone are forwarded (lowercase wire form).
    pub from: Vec<u8>,
    /// Indices into [`Config::upstreams`], in configured order.
    pub upstreams: Vec<usize>,
    /// Always use TCP to the upstreams; otherwise follow the client's protocol.
    pub force_tcp: bool,
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
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            attempt_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(5),
            client_tcp_idle: Duration::from_secs(10),
            client_tcp_max: 1024,
            upstream_tcp_inflight: 8,
            upstream_tcp_conns: 16,
            upstream_tcp_idle: Duration::from_secs(10),
            max_pending: 16384,
        }
    }
}
