//! Text forms of zones, server block keys, upstream addresses and address prefixes.
//!
//! Functions here return a plain message on error; the caller adds the file and line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shardns_shard::config::Cidr;

/// The DNS port, used when a key or an upstream names none.
pub(super) const DNS_PORT: u16 = 53;

/// A zone in the two forms the engine wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// Lowercase uncompressed wire form (`b"\0"` for the root).
    pub wire: Vec<u8>,
    /// Presentation form with a trailing dot (`cluster.local.`, `.`).
    pub text: String,
}

impl Zone {
    /// Whether `self` is `other` or an ancestor of it.
    pub(super) fn contains(&self, other: &Zone) -> bool {
        other.text == self.text
            || self.text == "."
            || other.text.ends_with(&format!(".{}", self.text))
    }

    /// The names `self` and `other` have in common, as a zone: the deeper of the two when one
    /// contains the other, else none.
    pub(super) fn overlap<'a>(&'a self, other: &'a Zone) -> Option<&'a Zone> {
        if self.contains(other) {
            Some(other)
        } else if other.contains(self) {
            Some(self)
        } else {
            None
        }
    }
}

/// Parses a zone name (`cluster.local`, `cluster.local.`, `.`; case-insensitive).
pub(crate) fn parse_zone(text: &str) -> Result<Zone, String> {
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.is_empty() {
        return Ok(Zone {
            wire: vec![0],
            text: ".".to_string(),
        });
    }
    if trimmed.contains('/') {
        return Err(format!("zone {text:?}: CIDR zones are not supported yet"));
    }
    let mut wire = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "zone {text:?}: labels must be 1 to 63 characters long"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "zone {text:?}: character {bad:?} is not allowed in a zone name"
            ));
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    if wire.len() > 255 {
        return Err(format!("zone {text:?} is longer than 255 bytes"));
    }
    Ok(Zone {
        wire,
        text: format!("{trimmed}."),
    })
}

/// What an address prefix may look like, for messages.
pub(super) const CIDR_EXPECTED: &str =
    "an address prefix such as 10.0.0.0/8 or fd00::/56, or an address";

/// Parses an address prefix as CoreDNS's `acl` reads one: `IP/LEN`, or an address alone (a
/// /32 or /128); host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`, as Go's `ParseCIDR`).
/// The error says what is wrong; the caller names the directive.
pub(super) fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{text:?} is not {CIDR_EXPECTED}"))?;
    let longest = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => longest,
        Some(prefix) => prefix
            .parse::<u8>()
            .ok()
            .filter(|&prefix| prefix <= longest)
            .ok_or_else(|| {
                format!("{text:?}: the prefix length must be a number from 0 to {longest}")
            })?,
    };
    Cidr::new(ip, prefix).ok_or_else(|| format!("{text:?} is not {CIDR_EXPECTED}"))
}

/// Strips a `dns://` scheme; other schemes are refused.
fn strip_scheme<'a>(text: &'a str, what: &str) -> Result<&'a str, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok(text);
    };
    match scheme.to_ascii_lowercase().as_str() {
        "dns" => Ok(rest),
        "tls" | "https" | "grpc" | "quic" => Err(format!(
            "{what} {text:?}: {scheme}:// is not supported yet (only dns://)"
        )),
        _ => Err(format!(
            "{what} {text:?}: unknown scheme {scheme}:// (expected dns://)"
        )),
    }
}

/// Parses a server block key: `[dns://]ZONE[:PORT]`; the port defaults to 53, 0 picks one.
pub(super) fn parse_key(text: &str) -> Result<(Zone, u16), String> {
    let rest = strip_scheme(text, "server block key")?;
    let (zone, port) = match rest.split_once(':') {
        Some((zone, port)) => {
            let port = port.parse::<u16>().map_err(|_| {
                format!("server block key {text:?}: bad port {port:?} (expected 0 to 65535)")
            })?;
            (zone, port)
        }
        None => (rest, DNS_PORT),
    };
    Ok((parse_zone(zone)?, port))
}

/// What an upstream argument of `forward` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UpstreamTarget {
    /// An address (`IP`, `IP:PORT`, `[V6]:PORT`, `dns://...`).
    Addr(SocketAddr),
    /// A file to read `nameserver` lines from.
    ResolvConf(String),
}

/// Parses a `forward` target. Anything that is not an address and does not look like one
/// is taken as a resolv.conf path if it contains a `/` or names an existing file.
pub(super) fn parse_upstream(text: &str) -> Result<UpstreamTarget, String> {
    let rest = strip_scheme(text, "upstream")?;
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(UpstreamTarget::Addr(addr));
    }
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok(UpstreamTarget::Addr(SocketAddr::new(ip, DNS_PORT)));
    }
    if let Some(host) = rest
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        && let Ok(ip) = host.parse::<IpAddr>()
    {
        return Ok(UpstreamTarget::Addr(SocketAddr::new(ip, DNS_PORT)));
    }
    let address_like = rest
        .chars()
        .all(|c| c.is_ascii_hexdigit() || ".:[]".contains(c));
    let path_like = rest.contains('/') || std::path::Path::new(rest).is_file();
    if rest.len() == text.len() && !address_like && path_like {
        return Ok(UpstreamTarget::ResolvConf(rest.to_string()));
    }
    Err(format!(
        "bad upstream {text:?} (expected IP, IP:PORT, [IPV6]:PORT, dns://IP[:PORT] or the path \
         of a resolv.conf file)"
    ))
}

/// Parses a `bind` address: a plain IP.
pub(super) fn parse_bind(text: &str) -> Result<IpAddr, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse::<IpAddr>()
        .map_err(|_| format!("bad bind address {text:?} (expected an IPv4 or IPv6 address)"))
}

/// Where `prometheus` without an address serves `/metrics` (CoreDNS's default).
pub(super) const PROMETHEUS_DEFAULT: &str = "localhost:9153";

/// What a listening address for HTTP is, for messages.
pub(crate) const LISTEN_EXPECTED: &str =
    "HOST:PORT with HOST an IP address, [IPV6], localhost or nothing";

/// Parses a listening address for HTTP (`prometheus`, `health`, `ready`, node-cache's
/// `-metrics-listen-address`), `HOST:PORT`: HOST is an IPv4 address, an IPv6 address in
/// brackets, `localhost` (127.0.0.1) or empty. An empty or unspecified HOST (`:9253`,
/// `0.0.0.0:9253`, `[::]:9253`) means every address of both families, as Go's `net.Listen`
/// has it for CoreDNS; all three come back as `0.0.0.0:PORT`. The error says what is wrong,
/// for the caller to put in its message (with [`LISTEN_EXPECTED`]).
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("no port".to_string());
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("bad port {port:?}"))?;
    let ip = if host.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        IpAddr::V6(ip)
    } else if host.contains(':') {
        return Err("IPv6 addresses go in brackets".to_string());
    } else if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("{host:?} is not an IP address"))?;
        IpAddr::V4(ip)
    } else {
        return Err("hostnames other than localhost are not supported".to_string());
    };
    if ip.is_unspecified() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    Ok(SocketAddr::new(ip, port))
}

/// [`parse_listen`] for the directive `kind` (`prometheus`, `health`, `ready`), with its
/// message.
pub(super) fn parse_http_listen(kind: &str, text: &str) -> Result<SocketAddr, String> {
    parse_listen(text).map_err(|why| {
        format!(
            "bad {kind} address {text:?}: {why} (expected {LISTEN_EXPECTED}, e.g. :9253, \
             127.0.0.1:9153 or [::1]:9153)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let text = |input: &str| parse_cidr(input).map(|cidr| cidr.to_string());
        assert_eq!(text("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(text("192.0.2.7").unwrap(), "192.0.2.7/32");
        assert_eq!(text("fd00:1:2:3::9/56").unwrap(), "fd00:1:2::/56");
        assert_eq!(text("::1").unwrap(), "::1/128");
        assert_eq!(text("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(
            text("10.0.0.0/33").unwrap_err(),
            "\"10.0.0.0/33\": the prefix length must be a number from 0 to 32"
        );
        assert_eq!(
            text("fd00::/x").unwrap_err(),
            "\"fd00::/x\": the prefix length must be a number from 0 to 128"
        );
        assert_eq!(
            text("10.0.0/8").unwrap_err(),
            "\"10.0.0/8\" is not an address prefix such as 10.0.0.0/8 or fd00::/56, or an \
             address"
        );
    }

    #[test]
    fn zones() {
        assert_eq!(
            parse_zone(".").unwrap(),
            Zone {
                wire: vec![0],
                text: ".".into()
            }
        );
        assert_eq!(parse_zone("").unwrap().text, ".");
        let zone = parse_zone("Cluster.LOCAL.").unwrap();
        assert_eq!(zone.wire, b"\x07cluster\x05local\x00");
        assert_eq!(zone.text, "cluster.local.");
        assert_eq!(parse_zone("in-addr.arpa").unwrap().text, "in-addr.arpa.");
        assert!(parse_zone("a..b").unwrap_err().contains("1 to 63"));
        assert!(parse_zone("a b").unwrap_err().contains("not allowed"));
        assert!(parse_zone(&"a".repeat(64)).is_err());
        assert!(
            parse_zone(&["abcdefgh"; 40].join("."))
                .unwrap_err()
                .contains("255")
        );
        assert!(
            parse_zone("10.0.0.0/8")
                .unwrap_err()
                .contains("not supported yet")
        );
    }

    #[test]
    fn containment() {
        let root = parse_zone(".").unwrap();
        let local = parse_zone("cluster.local").unwrap();
        let svc = parse_zone("svc.cluster.local").unwrap();
        let other = parse_zone("acluster.local").unwrap();
        assert!(root.contains(&local) && local.contains(&svc) && local.contains(&local));
        assert!(!svc.contains(&local) && !local.contains(&other));
        assert_eq!(root.overlap(&local), Some(&local));
        assert_eq!(local.overlap(&root), Some(&local));
        assert_eq!(svc.overlap(&local), Some(&svc));
        assert_eq!(local.overlap(&local), Some(&local));
        assert_eq!(local.overlap(&other), None);
        assert_eq!(svc.overlap(&other), None);
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key(".:53").unwrap(), (parse_zone(".").unwrap(), 53));
        assert_eq!(parse_key("cluster.local").unwrap().1, 53);
        assert_eq!(parse_key("dns://example.org:1053").unwrap().1, 1053);
        assert_eq!(parse_key(".:0").unwrap().1, 0);
        assert!(parse_key(".:99999").unwrap_err().contains("bad port"));
        assert!(
            parse_key("tls://.:853")
                .unwrap_err()
                .contains("not supported yet")
        );
        assert!(parse_key("foo://.").unwrap_err().contains("unknown scheme"));
    }

    #[test]
    fn upstreams() {
        let addr = |text: &str| match parse_upstream(text).unwrap() {
            UpstreamTarget::Addr(addr) => addr.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(addr("10.0.0.10"), "10.0.0.10:53");
        assert_eq!(addr("10.0.0.10:5353"), "10.0.0.10:5353");
        assert_eq!(addr("2001:db8::1"), "[2001:db8::1]:53");
        assert_eq!(addr("[2001:db8::1]"), "[2001:db8::1]:53");
        assert_eq!(addr("[2001:db8::1]:5300"), "[2001:db8::1]:5300");
        assert_eq!(addr("dns://1.1.1.1"), "1.1.1.1:53");
        assert_eq!(addr("dns://1.1.1.1:54"), "1.1.1.1:54");
        assert!(
            parse_upstream("tls://1.1.1.1")
                .unwrap_err()
                .contains("tls:// is not supported yet")
        );
        assert!(
            parse_upstream("10.0.0.300")
                .unwrap_err()
                .starts_with("bad upstream")
        );
        assert!(
            parse_upstream("no-such-file")
                .unwrap_err()
                .starts_with("bad upstream")
        );
        assert_eq!(
            parse_upstream("/nonexistent/resolv.conf").unwrap(),
            UpstreamTarget::ResolvConf("/nonexistent/resolv.conf".to_string())
        );
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        assert_eq!(
            parse_upstream(manifest).unwrap(),
            UpstreamTarget::ResolvConf(manifest.to_string())
        );
        assert!(parse_upstream(&format!("dns://{manifest}")).is_err());
    }

    #[test]
    fn binds() {
        assert_eq!(
            parse_bind("169.254.20.10").unwrap().to_string(),
            "169.254.20.10"
        );
        assert_eq!(parse_bind("::1").unwrap().to_string(), "::1");
        assert_eq!(parse_bind("[::1]").unwrap().to_string(), "::1");
        assert!(parse_bind("eth0").unwrap_err().contains("bad bind address"));
    }
}
