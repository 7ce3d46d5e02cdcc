//! From Corefile text to the engine's [`Config`]: one server per block key, listeners grouped
//! by bind address and port, upstreams deduplicated, and each block's `cache` zones clipped to
//! the key's zone ([`cache_for_zone`]). Process-level settings (the `prometheus` endpoints,
//! `reload`) go beside it in [`ProcessConfig`], out of the shards' configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use shardns_shard::config::{
    ACL_ZONES, AclConfig, AclRule, AclZone, CacheConfig, ForwardConfig, Limits, ListenerConfig,
    ServerConfig, UpstreamConfig,
};
use shardns_shard::{Config, LoopProbe};

use super::address::{self, Zone};
use super::directives::{self, AclSettings, CacheSettings, ReloadSettings};
use super::{ConfigError, ProcessConfig, parser};

/// The shards' configuration described by Corefile `text` ([`build_process`] without the
/// process-level settings).
#[cfg(test)]
pub(crate) fn build(file: &str, text: &str) -> Result<Config, ConfigError> {
    build_process(file, text).map(|process| process.config)
}

/// Builds the configuration described by Corefile `text`; `file` names it in errors.
pub(crate) fn build_process(file: &str, text: &str) -> Result<ProcessConfig, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let mut config = Config {
        listeners: Vec::new(),
        servers: Vec::new(),
        upstreams: Vec::new(),
        limits: Limits::default(),
    };
    // The key line of each server, for duplicate messages.
    let mut server_lines: Vec<usize> = Vec::new();
    // Every HTTP endpoint (prometheus, health, ready) with the line that first named it;
    // the addresses of each kind.
    let mut endpoints: Vec<(SocketAddr, usize, &'static str)> = Vec::new();
    let (mut metrics, mut health, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    let mut lameduck: Option<Duration> = None;
    let mut reload: Option<ReloadSettings> = None;
    for block in parser::parse(file, text)? {
        let mut keys = Vec::with_capacity(block.keys.len());
        for key in &block.keys {
            keys.push(address::parse_key(&key.text).map_err(|m| at(key.line, m))?);
        }
        let settings = directives::block_settings(file, &block.directives)?;
        if let Some(asked) = settings.reload {
            reload = Some(reload.map_or(asked, |r: ReloadSettings| {
                if asked.interval < r.interval {
                    asked
                } else {
                    r
                }
            }));
        }
        let asked = [
            settings.prometheus.map(|p| (p.addr, p.line, "prometheus")),
            settings.health.map(|h| (h.addr, h.line, "health")),
            settings.ready.map(|r| (r.addr, r.line, "ready")),
        ];
        for (addr, line, kind) in asked.into_iter().flatten() {
            add_endpoint(&mut endpoints, addr, line, kind).map_err(|m| at(line, m))?;
            let list = match kind {
                "prometheus" => &mut metrics,
                "health" => &mut health,
                _ => &mut ready,
            };
            if !list.contains(&addr) {
                list.push(addr);
            }
        }
        if let Some(asked) = settings.health.and_then(|h| h.lameduck) {
            lameduck = Some(lameduck.map_or(asked, |longest| longest.max(asked)));
        }
        let forward = settings.forward.as_ref().map(|forward| ForwardConfig {
            from: forward.from.wire.clone(),
            upstreams: forward
                .to
                .iter()
                .map(|addr| upstream_index(&mut config.upstreams, *addr))
                .collect(),
            ..forward.options.clone()
        });
        if settings.fastpath.is_some() {
            directives::check_fastpath(&settings).map_err(|m| at(settings.fastpath_line, m))?;
        }
        let binds = if settings.binds.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            settings.binds.clone()
        };
        for ((zone, port), key) in keys.into_iter().zip(&block.keys) {
            let server = config.servers.len();
            for ip in &binds {
                let addr = SocketAddr::new(*ip, port);
                let listener = listener_index(&mut config.listeners, addr);
                let servers = &mut config.listeners[listener].servers;
                if let Some(&other) = servers
                    .iter()
                    .find(|&&other| config.servers[other].zone == zone.wire)
                {
                    return Err(at(
                        key.line,
                        format!(
                            "zone {:?} is already served on {addr} (server block key at line {})",
                            zone.text, server_lines[other]
                        ),
                    ));
                }
                servers.push(server);
            }
            let loop_probe = settings
                .loop_check
                .then(|| LoopProbe::new(&zone.wire, rand::random::<u64>));
            let acl = acl_for_zone(&settings.acl, &zone).map_err(|(l, m)| at(l, m))?;
            config.servers.push(ServerConfig {
                cache: settings
                    .cache
                    .as_ref()
                    .and_then(|cache| cache_for_zone(cache, &zone)),
                zone: zone.wire,
                zone_text: zone.text,
                forward: forward.clone(),
                log_errors: settings.log_errors,
                log_queries: settings.log.as_ref().map(|log| log.zones.clone()),
                loop_probe,
                acl,
                ratelimit: settings.ratelimit.clone(),
                fastpath: settings.fastpath.clone(),
            });
            server_lines.push(key.line);
        }
    }
    if config.listeners.len() > usize::from(u16::MAX) {
        return Err(ConfigError::File {
            file: file.to_string(),
            message: format!("too many listening addresses ({})", config.listeners.len()),
        });
    }
    Ok(ProcessConfig {
        config,
        metrics,
        reload,
        health,
        ready,
        lameduck,
    })
}

/// Adds `addr` (named at `line` by a `kind` directive: prometheus, health or ready) to the
/// HTTP endpoints unless already there (directives naming one address share its endpoint, as
/// in CoreDNS). An address that would take a port another one holds (the same port with an
/// unspecified IP on either side) is an error.
fn add_endpoint(
    endpoints: &mut Vec<(SocketAddr, usize, &'static str)>,
    addr: SocketAddr,
    line: usize,
    kind: &'static str,
) -> Result<(), String> {
    for &(other, other_line, other_kind) in endpoints.iter() {
        if other == addr {
            return Ok(());
        }
        if other.port() == addr.port()
            && (other.ip().is_unspecified() || addr.ip().is_unspecified())
        {
            let shown = |addr: SocketAddr| match addr.ip().is_unspecified() {
                true => format!(":{}", addr.port()),
                false => addr.to_string(),
            };
            return Err(format!(
                "{kind} address {} clashes with the {other_kind} address {} at line \
                 {other_line} (the same port on every address); name one address in every block",
                shown(addr),
                shown(other)
            ));
        }
    }
    endpoints.push((addr, line, kind));
    Ok(())
}

/// The `cache` of a server block as it applies to the block zone `zone`, or none when the
/// cache covers no name of it.
///
/// The cache zones are `zone` itself when a `cache` ZONE is `zone` or an ancestor of it, plus
/// every `cache` ZONE strictly inside `zone` (just `zone` without ZONES). The `disable` zones
/// are clipped to those cache zones the same way: a disable zone that contains a cache zone
/// becomes that cache zone (so `disable success` without ZONES, stored as the root, yields all
/// of them), one inside a cache zone stays, the others are dropped since they could never
/// match. Lists keep their first-seen order, without duplicates.
fn cache_for_zone(cache: &CacheSettings, zone: &Zone) -> Option<CacheConfig> {
    let mut zones: Vec<&Zone> = Vec::new();
    if cache.zones.is_empty() {
        zones.push(zone);
    }
    for cache_zone in &cache.zones {
        if let Some(overlap) = cache_zone.overlap(zone)
            && !zones.contains(&overlap)
        {
            zones.push(overlap);
        }
    }
    if zones.is_empty() {
        return None;
    }
    let clip = |disabled: &[Zone]| {
        let mut clipped: Vec<Vec<u8>> = Vec::new();
        for disabled_zone in disabled {
            for cache_zone in &zones {
                if let Some(overlap) = disabled_zone.overlap(cache_zone)
                    && !clipped.contains(&overlap.wire)
                {
                    clipped.push(overlap.wire.clone());
                }
            }
        }
        clipped
    };
    Some(CacheConfig {
        disable_success: clip(&cache.disable_success),
        disable_denial: clip(&cache.disable_denial),
        zones: zones.iter().map(|zone| zone.wire.clone()).collect(),
        ..cache.options.clone()
    })
}

/// The `acl` directives of a server block as they apply to its zone `zone`: each directive's
/// ZONES (the block's zone when it names none), less those that share no name with `zone`;
/// a directive left with no zone is left out. Fails, at the directive that names one too
/// many, when the rules name more than [`ACL_ZONES`] distinct zones.
fn acl_for_zone(acls: &[AclSettings], zone: &Zone) -> Result<Option<AclConfig>, (usize, String)> {
    if acls.is_empty() {
        return Ok(None);
    }
    let mut config = AclConfig::default();
    for acl in acls {
        let zones: Vec<&Zone> = match acl.zones.is_empty() {
            true => vec![zone],
            false => acl
                .zones
                .iter()
                .filter(|z| z.overlap(zone).is_some())
                .collect(),
        };
        let mut indices = Vec::with_capacity(zones.len());
        for acl_zone in zones {
            let index = match config.zones.iter().position(|z| z.wire == acl_zone.wire) {
                Some(index) => index,
                None if config.zones.len() < ACL_ZONES => {
                    config.zones.push(AclZone {
                        wire: acl_zone.wire.clone(),
                        text: acl_zone.text.clone(),
                    });
                    config.zones.len() - 1
                }
                None => {
                    return Err((
                        acl.line,
                        format!(
                            "acl: the acl directives of a server block may name at most \
                             {ACL_ZONES} zones (each has its own counters); {:?} is one more",
                            acl_zone.text
                        ),
                    ));
                }
            };
            indices.push(index);
        }
        if !indices.is_empty() {
            config.rules.push(AclRule {
                zones: indices,
                policies: acl.policies.clone(),
            });
        }
    }
    Ok(Some(config))
}

fn upstream_index(upstreams: &mut Vec<UpstreamConfig>, addr: SocketAddr) -> usize {
    upstreams
        .iter()
        .position(|upstream| upstream.addr == addr)
        .unwrap_or_else(|| {
            upstreams.push(UpstreamConfig { addr });
            upstreams.len() - 1
        })
}

fn listener_index(listeners: &mut Vec<ListenerConfig>, addr: SocketAddr) -> usize {
    listeners
        .iter()
        .position(|listener| listener.addr == addr)
        .unwrap_or_else(|| {
            listeners.push(ListenerConfig {
                addr,
                servers: Vec::new(),
            });
            listeners.len() - 1
        })
}

#[cfg(test)]
mod tests;
