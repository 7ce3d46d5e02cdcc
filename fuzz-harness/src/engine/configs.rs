//! The five configurations an input chooses from ([`config`]) and the reload variant of each
//! ([`variant`]).

use super::*;

pub(super) fn upstream_addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1053 + i))
}

pub(super) fn zone_wire(text: &str) -> Vec<u8> {
    name_wire(text).to_ascii_lowercase()
}

pub(super) fn name_wire(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

pub(super) fn block(
    zone: &str,
    cache: Option<CacheConfig>,
    forward: Option<ForwardConfig>,
) -> ServerConfig {
    ServerConfig {
        zone: zone_wire(zone),
        zone_text: zone.to_string(),
        cache,
        forward,
        log_errors: false,
        log_queries: None,
        loop_probe: None,
        acl: None,
        ratelimit: None,
        fastpath: None,
    }
}

pub(super) fn forward(from: &str, upstreams: &[usize]) -> ForwardConfig {
    ForwardConfig {
        from: zone_wire(from),
        upstreams: upstreams.to_vec(),
        ..ForwardConfig::default()
    }
}

pub(super) fn cache(zone: &str, ttl: u32) -> CacheConfig {
    CacheConfig {
        zones: vec![zone_wire(zone)],
        ..CacheConfig::with_ttl(Some(ttl))
    }
}

/// Configuration `index` (modulo [`CONFIGS`]): the shapes of the engine's paths.
pub fn config(index: u8) -> Config {
    let limits = Limits {
        max_pending: MAX_PENDING,
        max_waiters: MAX_WAITERS,
        upstream_tcp_conns: 3,
        ..Limits::default()
    };
    let upstreams = |n: u16| {
        (0..n)
            .map(|i| UpstreamConfig {
                addr: upstream_addr(i),
            })
            .collect()
    };
    let listeners = |blocks: usize| {
        vec![ListenerConfig {
            addr: "127.0.0.1:53".parse().expect("address"),
            servers: (0..blocks).collect(),
        }]
    };
    match index % CONFIGS {
        // A cache forwarding to one upstream over the client's transport.
        0 => Config {
            listeners: listeners(1),
            servers: vec![block(".", Some(cache(".", 30)), Some(forward(".", &[0])))],
            upstreams: upstreams(1),
            limits,
        },
        // Two upstreams in turn over UDP (TCP after a truncated reply), serve-stale
        // `verify`, prefetch.
        1 => {
            let mut c = cache(".", 3600);
            c.serve_stale = Some(ServeStale {
                max_stale: Duration::from_secs(600),
                verify: true,
            });
            c.prefetch = Some(Prefetch {
                amount: 1,
                window: Duration::from_secs(60),
                percentage: 50,
            });
            let mut f = forward(".", &[0, 1]);
            f.prefer_udp = true;
            f.policy = Policy::RoundRobin;
            Config {
                listeners: listeners(1),
                servers: vec![block(".", Some(c), Some(f))],
                upstreams: upstreams(2),
                limits,
            }
        }
        // TCP only; a two-entry cache (eviction), serve-stale `immediate`, keepttl, `next
        // SERVFAIL`, `max_concurrent`, health checks every 100 ms that mark an upstream down
        // after one failure.
        2 => {
            let mut c = cache(".", 60);
            c.success = CacheSection {
                capacity: 2,
                max_ttl: 60,
                min_ttl: 0,
            };
            c.denial = CacheSection {
                capacity: 2,
                max_ttl: 60,
                min_ttl: 0,
            };
            c.serve_stale = Some(ServeStale {
                max_stale: Duration::from_secs(60),
                verify: false,
            });
            c.keepttl = true;
            let mut f = forward(".", &[0, 1, 2]);
            f.force_tcp = true;
            f.policy = Policy::Sequential;
            f.next = vec![shardns_wire::Rcode::SERVFAIL];
            f.max_concurrent = Some(3);
            f.max_fails = 1;
            f.health_check = Duration::from_millis(100);
            Config {
                listeners: listeners(1),
                servers: vec![block(".", Some(c), Some(f))],
                upstreams: upstreams(3),
                limits,
            }
        }
        // Two blocks: `example.` with its cache and an `except`, the root without a cache,
        // failing fast when every upstream is down.
        3 => {
            let mut f = forward("example.", &[0]);
            f.except = vec![zone_wire("sub.example.")];
            let mut root = forward(".", &[1, 2]);
            root.failfast = true;
            root.max_fails = 1;
            let mut example = block("example.", Some(cache("example.", 300)), Some(f));
            example.log_errors = true;
            Config {
                listeners: listeners(2),
                servers: vec![example, block(".", None, Some(root))],
                upstreams: upstreams(3),
                limits,
            }
        }
        // `ratelimit` (2 queries at once, 5 a second, TC=1 beyond) and `acl` (ANY blocked,
        // `other.test.` filtered, HINFO dropped) before a cache.
        _ => {
            let mut b = block(".", Some(cache(".", 30)), Some(forward(".", &[0])));
            b.ratelimit = Some(RateLimitConfig {
                burst: 2,
                table: 16,
                action: RateLimitAction::Truncate,
                ..RateLimitConfig::with_qps(5)
            });
            let policy = |action, qtypes: Option<Vec<u16>>| AclPolicy {
                action,
                qtypes,
                sources: None,
            };
            b.acl = Some(AclConfig {
                zones: vec![
                    AclZone {
                        wire: zone_wire("."),
                        text: ".".into(),
                    },
                    AclZone {
                        wire: zone_wire("other.test."),
                        text: "other.test.".into(),
                    },
                ],
                rules: vec![
                    AclRule {
                        zones: vec![1],
                        policies: vec![policy(AclAction::Filter, None)],
                    },
                    AclRule {
                        zones: vec![0],
                        policies: vec![
                            policy(AclAction::Block, Some(vec![255])),
                            policy(AclAction::Drop, Some(vec![13])),
                            policy(AclAction::Allow, None),
                        ],
                    },
                ],
            });
            Config {
                listeners: listeners(1),
                servers: vec![b],
                upstreams: upstreams(1),
                limits,
            }
        }
    }
}

/// The reload variant of `config`: the same listeners and server blocks, one upstream fewer
/// or one more, the transport options flipped, smaller caches.
pub fn variant(config: &Config) -> Config {
    let mut next = config.clone();
    let n = if config.upstreams.len() > 1 { 1 } else { 2 };
    next.upstreams = (0..n as u16)
        .map(|i| UpstreamConfig {
            addr: upstream_addr(i + 1),
        })
        .collect();
    for server in &mut next.servers {
        if let Some(f) = &mut server.forward {
            f.upstreams = (0..n).rev().collect();
            f.force_tcp = !f.force_tcp && !f.prefer_udp;
            f.prefer_udp = !f.force_tcp;
        }
        if let Some(c) = &mut server.cache {
            c.success.capacity = c.success.capacity.div_ceil(2);
            c.denial.capacity = 1;
        }
    }
    next
}
