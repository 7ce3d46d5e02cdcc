//! The directives of a server block: `bind`, `cache`, `forward` and `errors`, read into
//! [`BlockSettings`]. Every error names the file and line of the offending token.

use std::net::{IpAddr, SocketAddr};

use shardns_shard::config::{CacheConfig, CacheSection};

use crate::address::{self, UpstreamTarget, Zone};
use crate::corefile::{ConfigError, Directive, Token};
use crate::resolv;

/// Most upstreams one `forward` may name (CoreDNS's limit).
pub const MAX_UPSTREAMS: usize = 15;

/// Largest TTL (RFC 2181: 2^31 - 1 seconds).
const MAX_TTL: u64 = i32::MAX as u64;

/// Largest cache capacity accepted (entries).
const MAX_CAPACITY: u64 = 100_000_000;

/// CoreDNS plugins this build does not implement yet.
#[rustfmt::skip]
const NOT_YET: &[&str] = &[
    "acl", "any", "auto", "autopath", "bufsize", "cancel", "chaos", "debug", "dns64", "dnssec",
    "dnstap", "erratic", "etcd", "file", "geoip", "grpc", "header", "health",
    "hosts", "import", "k8s_external", "kubernetes", "loadbalance", "local", "log", "loop",
    "metadata", "minimal", "nsid", "pprof", "prometheus", "ready", "reload", "rewrite", "root",
    "secondary", "sign", "template", "timeouts", "tls", "trace", "transfer", "tsig", "view",
    "whoami",
];

/// `cache` options of CoreDNS this build does not implement yet.
const CACHE_NOT_YET: &[&str] = &["prefetch", "serve_stale", "servfail", "disable", "keepttl"];

/// `forward` options of CoreDNS this build does not implement yet.
#[rustfmt::skip]
const FORWARD_NOT_YET: &[&str] = &[
    "except", "prefer_udp", "expire", "max_fails", "tls", "tls_servername", "policy",
    "health_check", "max_concurrent", "next", "failfast_all_unhealthy_upstreams",
];

/// What one server block asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSettings {
    /// `bind` addresses, in order, without duplicates; empty means the wildcards.
    pub binds: Vec<IpAddr>,
    /// The `cache` directive.
    pub cache: Option<CacheConfig>,
    /// The `forward` directive.
    pub forward: Option<ForwardSettings>,
    /// The `errors` directive.
    pub log_errors: bool,
}

/// A `forward` directive with its targets resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The `FROM` zone.
    pub from: Zone,
    /// Upstreams in order, without duplicates (resolv.conf files expanded).
    pub to: Vec<SocketAddr>,
    /// The `force_tcp` option.
    pub force_tcp: bool,
}

/// Reads the directives of a server block whose keys name `zones`.
pub fn block_settings(
    file: &str,
    directives: &[Directive],
    zones: &[Zone],
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
                settings.cache = Some(cache(file, directive, zones)?);
            }
            "forward" => {
                once(settings.forward.is_some())?;
                settings.forward = Some(forward(file, directive)?);
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
            _ if NOT_YET.contains(&name) => {
                return Err(at(line, format!("directive {name:?} is not supported yet")));
            }
            _ => return Err(at(line, format!("unknown directive {name:?}"))),
        }
    }
    Ok(settings)
}

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

/// `cache [TTL] [ZONES...] { success|denial CAPACITY [TTL] [MINTTL] }`.
fn cache(file: &str, directive: &Directive, zones: &[Zone]) -> Result<CacheConfig, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let mut args = directive.args.as_slice();
    let mut ttl = None;
    if let Some(first) = args.first() {
        let text = first.text.trim_start_matches(['-', '+']);
        if text.starts_with(|c: char| c.is_ascii_digit()) && !text.contains('.') {
            let value = number(first, "cache TTL", 1, MAX_TTL).map_err(|m| at(first.line, m))?;
            ttl = Some(value as u32);
            args = &args[1..];
        }
    }
    for token in args {
        let zone = address::parse_zone(&token.text).map_err(|m| at(token.line, m))?;
        if let Some(block_zone) = zones.iter().find(|block_zone| !zone.contains(block_zone)) {
            return Err(at(
                token.line,
                format!(
                    "cache zone {:?} does not cover the server block zone {:?}: caching only \
                     part of a block is not supported yet",
                    zone.text, block_zone.text
                ),
            ));
        }
    }
    let mut config = CacheConfig::with_ttl(ttl);
    for option in directive.block.iter().flatten() {
        let line = option.line;
        let section = match option.name.as_str() {
            "success" => &mut config.success,
            "denial" => &mut config.denial,
            name if CACHE_NOT_YET.contains(&name) => {
                return Err(at(
                    line,
                    format!("cache option {name:?} is not supported yet"),
                ));
            }
            name => return Err(at(line, format!("unknown cache option {name:?}"))),
        };
        if option.block.is_some() || option.args.is_empty() || option.args.len() > 3 {
            return Err(at(
                line,
                format!(
                    "cache option {:?} takes CAPACITY [TTL] [MINTTL]",
                    option.name
                ),
            ));
        }
        section_values(section, &option.args).map_err(|(line, m)| at(line, m))?;
    }
    for section in [&mut config.success, &mut config.denial] {
        // CoreDNS clamps with the maximum last, so a minimum above it yields the maximum.
        section.min_ttl = section.min_ttl.min(section.max_ttl);
    }
    Ok(config)
}

fn section_values(section: &mut CacheSection, args: &[Token]) -> Result<(), (usize, String)> {
    let value = |index: usize, what: &str, min: u64, max: u64| {
        number(&args[index], what, min, max).map_err(|m| (args[index].line, m))
    };
    section.capacity = value(0, "cache capacity", 1, MAX_CAPACITY)? as usize;
    if args.len() > 1 {
        section.max_ttl = value(1, "cache TTL", 1, MAX_TTL)? as u32;
    }
    if args.len() > 2 {
        section.min_ttl = value(2, "cache minimum TTL", 0, MAX_TTL)? as u32;
    }
    Ok(())
}

/// `forward FROM TO... { force_tcp }`.
fn forward(file: &str, directive: &Directive) -> Result<ForwardSettings, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let line = directive.line;
    let [from, targets @ ..] = directive.args.as_slice() else {
        return Err(at(
            line,
            "forward needs FROM and at least one TO".to_string(),
        ));
    };
    if targets.is_empty() {
        return Err(at(
            line,
            "forward needs FROM and at least one TO".to_string(),
        ));
    }
    let from_text = from.text.strip_prefix("dns://").unwrap_or(&from.text);
    let from_zone = address::parse_zone(from_text).map_err(|m| at(from.line, m))?;
    let mut to = Vec::new();
    for token in targets {
        let addresses = match address::parse_upstream(&token.text).map_err(|m| at(token.line, m))? {
            UpstreamTarget::Addr(addr) => vec![addr],
            UpstreamTarget::ResolvConf(path) => {
                resolv::read_nameservers(&path).map_err(|e| at(token.line, e.to_string()))?
            }
        };
        for addr in addresses {
            if !to.contains(&addr) {
                to.push(addr);
            }
        }
    }
    if to.len() > MAX_UPSTREAMS {
        return Err(at(
            line,
            format!(
                "forward allows at most {MAX_UPSTREAMS} upstreams, got {}",
                to.len()
            ),
        ));
    }
    let mut force_tcp = false;
    for option in directive.block.iter().flatten() {
        match option.name.as_str() {
            "force_tcp" if option.args.is_empty() && option.block.is_none() => force_tcp = true,
            "force_tcp" => {
                return Err(at(
                    option.line,
                    "forward option \"force_tcp\" takes no arguments".to_string(),
                ));
            }
            name if FORWARD_NOT_YET.contains(&name) => {
                return Err(at(
                    option.line,
                    format!("forward option {name:?} is not supported yet"),
                ));
            }
            name => return Err(at(option.line, format!("unknown forward option {name:?}"))),
        }
    }
    Ok(ForwardSettings {
        from: from_zone,
        to,
        force_tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corefile;

    fn settings(body: &str) -> Result<BlockSettings, String> {
        let blocks = corefile::parse("Corefile", &format!(".:53 {{\n{body}\n}}"))
            .map_err(|e| e.to_string())?;
        let zones = [address::parse_zone(".").unwrap()];
        block_settings("Corefile", &blocks[0].directives, &zones).map_err(|e| e.to_string())
    }

    fn error(body: &str) -> String {
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
        let cache = got.cache.unwrap();
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
        assert!(forward.force_tcp);
    }

    #[test]
    fn cache_forms() {
        assert_eq!(
            settings("cache").unwrap().cache,
            Some(CacheConfig::with_ttl(None))
        );
        assert_eq!(
            settings("cache 30").unwrap().cache,
            Some(CacheConfig::with_ttl(Some(30)))
        );
        assert_eq!(
            settings("cache 30 .").unwrap().cache,
            Some(CacheConfig::with_ttl(Some(30)))
        );
        let cache = settings("cache 3 {\n success 10 20 0\n}")
            .unwrap()
            .cache
            .unwrap();
        assert_eq!(
            cache.success,
            CacheSection {
                capacity: 10,
                max_ttl: 20,
                min_ttl: 0
            }
        );
        assert_eq!(
            cache.denial,
            CacheSection {
                capacity: 9984,
                max_ttl: 3,
                min_ttl: 3
            }
        );
    }

    #[test]
    fn forward_forms() {
        let forward = settings("forward . 1.1.1.1 dns://8.8.8.8:54 [::1]:5353 1.1.1.1")
            .unwrap()
            .forward
            .unwrap();
        let to: Vec<String> = forward.to.iter().map(ToString::to_string).collect();
        assert_eq!(to, ["1.1.1.1:53", "8.8.8.8:54", "[::1]:5353"]);
        assert!(!forward.force_tcp);
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
            error("prometheus :9253"),
            "Corefile:2: directive \"prometheus\" is not supported yet"
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
            error("cache {\n prefetch 10\n}"),
            "Corefile:3: cache option \"prefetch\" is not supported yet"
        );
        assert_eq!(
            error("cache {\n bogus\n}"),
            "Corefile:3: unknown cache option \"bogus\""
        );
        assert_eq!(
            error("cache {\n success\n}"),
            "Corefile:3: cache option \"success\" takes CAPACITY [TTL] [MINTTL]"
        );
        assert!(error("cache {\n denial 0\n}").starts_with("Corefile:3: bad cache capacity \"0\""));
        assert!(error("cache {\n denial 10 x\n}").starts_with("Corefile:3: bad cache TTL \"x\""));
        assert!(error("cache 30 cluster.local").contains("not supported yet"));
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
            error("forward . 1.1.1.1 {\n policy sequential\n}"),
            "Corefile:3: forward option \"policy\" is not supported yet"
        );
        assert_eq!(
            error("forward . 1.1.1.1 {\n foo\n}"),
            "Corefile:3: unknown forward option \"foo\""
        );
        assert!(
            error("forward . /nonexistent/resolv.conf")
                .starts_with("Corefile:2: cannot read resolv.conf")
        );
        assert!(error("forward . 1.1.1.1\nforward . 1.1.1.1").contains("appears twice"));
    }
}
