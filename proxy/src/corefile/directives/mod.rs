//! The directives of a server block, read into [`BlockSettings`]: `bind`, `errors` and
//! `loop` here, the others one file each: `acl` (in [`acl`]), `cache` (in [`cache`]),
//! `forward` (in [`forward`]), `health` and `ready` (in [`health`]), `log` (in [`log`]),
//! `prometheus` (in [`prometheus`]), `ratelimit` (in [`ratelimit`]), `reload` (in
//! [`reload`]) and `fastpath` (in [`fastpath`]); [`options`] holds the rules of options blocks. Every error names the file and
//! line of the offending token.

mod acl;
mod cache;
mod fastpath;
mod forward;
mod health;
mod log;
mod options;
mod prometheus;
mod ratelimit;
mod reload;

use std::net::IpAddr;

use shardns_shard::FastpathConfig;
use shardns_shard::config::RateLimitConfig;

pub(super) use acl::AclSettings;
pub(super) use cache::CacheSettings;
pub(super) use fastpath::check as check_fastpath;
pub(crate) use fastpath::matches as interface_matches;
pub(super) use forward::ForwardSettings;
pub(crate) use health::{HealthSettings, ReadySettings};
pub(crate) use log::LogSettings;
pub(super) use prometheus::PrometheusSettings;
pub(crate) use reload::ReloadSettings;

use crate::corefile::ConfigError;
use crate::corefile::address;
use crate::corefile::parser::Directive;
use crate::corefile::tokenizer::Token;

/// Largest TTL (RFC 2181: 2^31 - 1 seconds).
const MAX_TTL: u64 = i32::MAX as u64;

/// Largest cache capacity accepted (entries).
const MAX_CAPACITY: u64 = 100_000_000;

/// CoreDNS plugins this build does not implement yet.
#[rustfmt::skip]
const NOT_YET: &[&str] = &[
    "any", "auto", "autopath", "bufsize", "cancel", "chaos", "debug", "dns64", "dnssec",
    "dnstap", "erratic", "etcd", "file", "geoip", "grpc", "header",
    "hosts", "import", "k8s_external", "kubernetes", "loadbalance", "local",
    "metadata", "minimal", "nsid", "pprof", "rewrite", "root",
    "secondary", "sign", "template", "timeouts", "tls", "trace", "transfer", "tsig", "view",
    "whoami",
];

/// What one server block asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BlockSettings {
    /// `bind` addresses, in order, without duplicates; empty means the wildcards.
    pub binds: Vec<IpAddr>,
    /// The `cache` directive.
    pub cache: Option<CacheSettings>,
    /// The `forward` directive.
    pub forward: Option<ForwardSettings>,
    /// The `errors` directive.
    pub log_errors: bool,
    /// The `prometheus` directive (a process-level endpoint, shared by the blocks naming the
    /// same address).
    pub prometheus: Option<PrometheusSettings>,
    /// The `reload` directive (process-level: the shortest interval of all blocks is used).
    pub reload: Option<ReloadSettings>,
    /// The `health` directive (a process-level endpoint, like `prometheus`).
    pub health: Option<HealthSettings>,
    /// The `ready` directive (a process-level endpoint).
    pub ready: Option<ReadySettings>,
    /// The `loop` directive: probe for a forwarding loop at start-up.
    pub loop_check: bool,
    /// The `log` directive.
    pub log: Option<LogSettings>,
    /// The `acl` directives, in order (a block may have several).
    pub acl: Vec<AclSettings>,
    /// The `ratelimit` directive.
    pub ratelimit: Option<RateLimitConfig>,
    /// The `fastpath` directive, and its line.
    pub fastpath: Option<FastpathConfig>,
    pub fastpath_line: usize,
}

/// Reads the directives of a server block.
pub(super) fn block_settings(
    file: &str,
    directives: &[Directive],
) -> Result<BlockSettings, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let mut settings = BlockSettings::default();
    for directive in directives {
        let name = directive.name.as_str();
        let line = directive.line;
        let once = |present: bool| {
            if present {
                Err(at(
                    line,
                    format!("directive {name:?} appears twice in this server block"),
                ))
            } else {
                Ok(())
            }
        };
        match name {
            "bind" => {
                no_block(directive).map_err(|message| at(line, message))?;
                if directive.args.is_empty() {
                    return Err(at(line, "bind needs at least one address".to_string()));
                }
                for token in &directive.args {
                    let ip = address::parse_bind(&token.text).map_err(|m| at(token.line, m))?;
                    if !settings.binds.contains(&ip) {
                        settings.binds.push(ip);
                    }
                }
            }
            "cache" => {
                once(settings.cache.is_some())?;
                settings.cache = Some(cache::parse(file, directive)?);
            }
            "forward" => {
                once(settings.forward.is_some())?;
                settings.forward = Some(forward::parse(file, directive)?);
            }
            "errors" => {
                if let Some(token) = directive.args.first() {
                    return Err(at(
                        token.line,
                        format!(
                            "errors takes no arguments, got {token:?}",
                            token = token.text
                        ),
                    ));
                }
                if directive.block.is_some() {
                    return Err(at(line, "errors options are not supported yet".to_string()));
                }
                settings.log_errors = true;
            }
            "reload" => {
                once(settings.reload.is_some())?;
                settings.reload = Some(reload::parse(file, directive)?);
            }
            "prometheus" => {
                once(settings.prometheus.is_some())?;
                settings.prometheus = Some(prometheus::parse(directive).map_err(|m| at(line, m))?);
            }
            "health" => {
                once(settings.health.is_some())?;
                let health = health::parse_health(directive).map_err(|(l, m)| at(l, m))?;
                settings.health = Some(health);
            }
            "ready" => {
                once(settings.ready.is_some())?;
                settings.ready = Some(health::parse_ready(directive).map_err(|(l, m)| at(l, m))?);
            }
            "loop" => {
                once(settings.loop_check)?;
                no_block(directive).map_err(|message| at(line, message))?;
                if let Some(token) = directive.args.first() {
                    return Err(at(
                        token.line,
                        format!("loop takes no arguments, got {:?}", token.text),
                    ));
                }
                settings.loop_check = true;
            }
            "log" => {
                once(settings.log.is_some())?;
                settings.log = Some(log::parse(directive).map_err(|(l, m)| at(l, m))?);
            }
            "acl" => settings
                .acl
                .push(acl::parse(directive).map_err(|(l, m)| at(l, m))?),
            "ratelimit" => {
                once(settings.ratelimit.is_some())?;
                let ratelimit = ratelimit::parse(directive).map_err(|(l, m)| at(l, m))?;
                settings.ratelimit = Some(ratelimit);
            }
            "fastpath" => {
                once(settings.fastpath.is_some())?;
                settings.fastpath = Some(fastpath::parse(directive).map_err(|(l, m)| at(l, m))?);
                settings.fastpath_line = line;
            }
            _ if NOT_YET.contains(&name) => {
                return Err(at(line, format!("directive {name:?} is not supported yet")));
            }
            _ => return Err(at(line, format!("unknown directive {name:?}"))),
        }
    }
    Ok(settings)
}

/// Refuses an options block on a directive that takes none.
fn no_block(directive: &Directive) -> Result<(), String> {
    match directive.block {
        Some(_) => Err(format!("{} takes no options block", directive.name)),
        None => Ok(()),
    }
}

/// A whole number in `min..=max`.
fn number(token: &Token, what: &str, min: u64, max: u64) -> Result<u64, String> {
    match token.text.parse::<i64>() {
        Ok(value) if value >= min as i64 && value as u64 <= max => Ok(value as u64),
        _ => Err(format!(
            "bad {what} {:?} (expected a whole number from {min} to {max})",
            token.text
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use shardns_shard::config::{CacheConfig, CacheSection, Prefetch, ServeStale};

    use super::*;
    use crate::corefile::parser;

    pub(super) fn settings(body: &str) -> Result<BlockSettings, String> {
        let blocks = parser::parse("Corefile", &format!(".:53 {{\n{body}\n}}"))
            .map_err(|e| e.to_string())?;
        block_settings("Corefile", &blocks[0].directives).map_err(|e| e.to_string())
    }

    pub(super) fn error(body: &str) -> String {
        settings(body).unwrap_err()
    }

    #[test]
    fn stock_cluster_block() {
        let body = "errors\ncache {\n success 9984 30\n denial 9984 5\n}\n\
                    bind 169.254.20.10 10.96.0.10\nforward . 10.0.0.10 {\n force_tcp\n}";
        let got = settings(body).unwrap();
        assert!(got.log_errors);
        assert_eq!(
            got.binds,
            [
                "169.254.20.10".parse::<IpAddr>().unwrap(),
                "10.96.0.10".parse().unwrap()
            ]
        );
        let cache = got.cache.unwrap().options;
        assert_eq!(
            cache.success,
            CacheSection {
                capacity: 9984,
                max_ttl: 30,
                min_ttl: 5
            }
        );
        assert_eq!(
            cache.denial,
            CacheSection {
                capacity: 9984,
                max_ttl: 5,
                min_ttl: 5
            }
        );
        let forward = got.forward.unwrap();
        assert_eq!(forward.from.text, ".");
        assert_eq!(forward.to, ["10.0.0.10:53".parse::<SocketAddr>().unwrap()]);
        assert!(forward.options.force_tcp);
    }

    #[test]
    fn cache_forms() {
        let defaults = CacheConfig {
            zones: Vec::new(),
            ..CacheConfig::with_ttl(None)
        };
        let cache = settings("cache").unwrap().cache.unwrap();
        assert_eq!(cache.options, defaults);
        assert!(cache.zones.is_empty());
        let cache = settings("cache 30 . Cluster.Local").unwrap().cache.unwrap();
        assert_eq!(cache.options.success.max_ttl, 30);
        assert_eq!(cache.options.denial.max_ttl, 30);
        let zones: Vec<&str> = cache.zones.iter().map(|zone| zone.text.as_str()).collect();
        assert_eq!(zones, [".", "cluster.local."]);
        let body = "cache 3 {\n success 10 20 0\n prefetch 2 30s 20%\n serve_stale 10m verify\n \
                    servfail 0\n disable denial svc.cluster.local\n disable success\n keepttl\n}";
        let cache = settings(body).unwrap().cache.unwrap();
        let options = cache.options;
        assert_eq!(
            options.success,
            CacheSection {
                capacity: 10,
                max_ttl: 20,
                min_ttl: 0
            }
        );
        assert_eq!(
            options.denial,
            CacheSection {
                capacity: 9984,
                max_ttl: 3,
                min_ttl: 3
            }
        );
        assert_eq!(
            options.prefetch,
            Some(Prefetch {
                amount: 2,
                window: Duration::from_secs(30),
                percentage: 20
            })
        );
        assert_eq!(
            options.serve_stale,
            Some(ServeStale {
                max_stale: Duration::from_secs(600),
                verify: true
            })
        );
        assert_eq!(options.servfail_ttl, 0);
        assert!(options.keepttl);
        assert_eq!(cache.disable_denial[0].text, "svc.cluster.local.");
        assert_eq!(cache.disable_success[0].text, ".");
    }

    #[test]
    fn forward_forms() {
        let forward = settings("forward . 1.1.1.1 dns://8.8.8.8:54 [::1]:5353 1.1.1.1")
            .unwrap()
            .forward
            .unwrap();
        let to: Vec<String> = forward.to.iter().map(ToString::to_string).collect();
        assert_eq!(to, ["1.1.1.1:53", "8.8.8.8:54", "[::1]:5353"]);
        assert!(!forward.options.force_tcp);
        let zone = settings("forward Cluster.Local 10.0.0.1")
            .unwrap()
            .forward
            .unwrap()
            .from;
        assert_eq!(zone.wire, b"\x07cluster\x05local\x00");
    }

    #[test]
    fn bad_directives() {
        assert_eq!(
            error("errors\nfoo bar"),
            "Corefile:3: unknown directive \"foo\""
        );
        assert_eq!(
            error("pprof localhost:6053"),
            "Corefile:2: directive \"pprof\" is not supported yet"
        );
        assert_eq!(
            error("errors x"),
            "Corefile:2: errors takes no arguments, got \"x\""
        );
        assert_eq!(error("bind"), "Corefile:2: bind needs at least one address");
        assert_eq!(
            error("bind 127.0.0.1\nbind eth0"),
            "Corefile:3: bad bind address \"eth0\" (expected an IPv4 or IPv6 address)"
        );
        assert_eq!(
            error("cache\ncache"),
            "Corefile:3: directive \"cache\" appears twice in this server block"
        );
    }

    #[test]
    fn bad_cache() {
        assert_eq!(
            error("cache 0"),
            "Corefile:2: bad cache TTL \"0\" (expected a whole number from 1 to 2147483647)"
        );
        assert!(error("cache 30s").starts_with("Corefile:2: bad cache TTL \"30s\""));
        assert!(error("cache -5").starts_with("Corefile:2: bad cache TTL \"-5\""));
        assert_eq!(
            error("cache {\n prefetch 10\n prefetch 10\n}"),
            "Corefile:4: cache option \"prefetch\" appears twice (first at line 3)"
        );
        assert_eq!(
            error("cache {\n serve_stale 1h sometimes\n}"),
            "Corefile:3: bad serve_stale mode \"sometimes\" (expected immediate or verify)"
        );
        assert!(error("cache {\n servfail 10m\n}").contains("over 5 minutes is not permitted"));
        assert!(
            error("cache {\n bogus\n}").starts_with("Corefile:3: unknown cache option \"bogus\"")
        );
        assert_eq!(
            error("cache {\n success\n}"),
            "Corefile:3: cache option \"success\" takes CAPACITY [TTL] [MINTTL]"
        );
        assert!(error("cache {\n denial 0\n}").starts_with("Corefile:3: bad cache capacity \"0\""));
        assert!(error("cache {\n denial 10 x\n}").starts_with("Corefile:3: bad cache TTL \"x\""));
        assert!(error("cache 30 a..b").starts_with("Corefile:2: zone \"a..b\""));
    }

    #[test]
    fn bad_forward() {
        assert_eq!(
            error("forward ."),
            "Corefile:2: forward needs FROM and at least one TO"
        );
        let sixteen: Vec<String> = (1..=16).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(
            error(&format!("forward . {}", sixteen.join(" "))),
            "Corefile:2: forward allows at most 15 upstreams, got 16"
        );
        assert_eq!(
            error("forward . tls://1.1.1.1"),
            "Corefile:2: upstream \"tls://1.1.1.1\": tls:// is not supported yet (only dns://)"
        );
        assert!(error("forward . 1.2.3.999").starts_with("Corefile:2: bad upstream \"1.2.3.999\""));
        assert_eq!(
            error("forward . 1.1.1.1 {\n tls_servername dns.google\n}"),
            "Corefile:3: forward option \"tls_servername\" is not supported yet"
        );
        assert!(
            error("forward . 1.1.1.1 {\n foo\n}")
                .starts_with("Corefile:3: unknown forward option \"foo\" (expected except,")
        );
        assert_eq!(
            error("errors\nforward . 1.1.1.1 {\n policy first\n}"),
            "Corefile:4: bad forward policy \"first\" (expected random, round_robin or \
             sequential)"
        );
        assert!(
            error("forward . /nonexistent/resolv.conf")
                .starts_with("Corefile:2: cannot read resolv.conf")
        );
        assert!(error("forward . 1.1.1.1\nforward . 1.1.1.1").contains("appears twice"));
    }
}
