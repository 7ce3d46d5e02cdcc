//! node-cache's checks of the values in a kube-dns ConfigMap, ported from the Go code that
//! makes them (kubernetes/dns at the commit fetched for issue 11, and what it vendors):
//!
//! - **kube-dns's own check**, `Config.Validate` (`pkg/dns/config/config.go`):
//!   `validateFederations`, `validateStubDomains` (domain: an RFC 1123 subdomain from
//!   apimachinery's `IsDNS1123Subdomain`; nameserver: split by Go's `net.SplitHostPort`, the
//!   port if any a `ParseUint(port, 10, 16)`, then refused when the host is not an IP in
//!   apimachinery's strict `IsValidIP` sense *and* the whole value is not an RFC 1123
//!   subdomain), `validateUpstreamNameserver` (at most three; each one
//!   `util.ValidateNameserverIpAndPort` in `pkg/dns/util/util.go`);
//! - **node-cache's check**, `Config.ValidateNodeLocalCacheConfig` (same file,
//!   `validateForwardProxy`): each nameserver as CoreDNS's `parse.HostPortOrFile` and
//!   `parse.Transport` read it (`plugin/pkg/parse/host.go`, `transport.go`), and only the
//!   `dns` and `tls` transports.
//!
//! The functions return `Err(reason)` with the reason in words, for [`super::ConfigMapError`].

use std::net::IpAddr;

/// At most this many `upstreamNameservers` (kube-dns's `validateUpstreamNameserver`).
pub(super) const MAX_UPSTREAM_NAMESERVERS: usize = 3;

/// Longest RFC 1123 subdomain (apimachinery's `DNS1123SubdomainMaxLength`).
const SUBDOMAIN_MAX_LENGTH: usize = 253;

/// Longest RFC 1123 label (apimachinery's `DNS1123LabelMaxLength`).
const LABEL_MAX_LENGTH: usize = 63;

/// The transports CoreDNS's `parse.Transport` strips from the front of an address, in the
/// order it tries them.
const TRANSPORTS: [&str; 7] = ["tls", "dns", "quic", "grpc", "https3", "https", "unix"];

/// apimachinery's `IsDNS1123Label`: at most 63 characters matching
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
pub(super) fn is_rfc1123_label(value: &str) -> bool {
    value.len() <= LABEL_MAX_LENGTH && label_matches(value)
}

/// apimachinery's `IsDNS1123Subdomain`: at most 253 characters, labels matching
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots (no per-label length limit, no final dot,
/// lowercase only).
pub(super) fn is_rfc1123_subdomain(value: &str) -> bool {
    value.len() <= SUBDOMAIN_MAX_LENGTH && value.split('.').all(label_matches)
}

/// Whether `label` matches `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn label_matches(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|byte| alphanumeric(byte) || *byte == b'-')
        }
        _ => false,
    }
}

/// Go's `net.SplitHostPort`: `host:port`, `[host]:port` (the port may be empty); the error
/// is Go's reason.
pub(super) fn split_host_port(text: &str) -> Result<(&str, &str), &'static str> {
    const MISSING_PORT: &str = "missing port in address";
    const TOO_MANY_COLONS: &str = "too many colons in address";
    let Some(last_colon) = text.rfind(':') else {
        return Err(MISSING_PORT);
    };
    let (host, no_open_bracket_from, no_close_bracket_from) = if text.starts_with('[') {
        let Some(end) = text.find(']') else {
            return Err("missing ']' in address");
        };
        if end + 1 == text.len() {
            return Err(MISSING_PORT);
        }
        if end + 1 != last_colon {
            return Err(if text.as_bytes()[end + 1] == b':' {
                TOO_MANY_COLONS
            } else {
                MISSING_PORT
            });
        }
        (&text[1..end], 1, end + 1)
    } else {
        let host = &text[..last_colon];
        if host.contains(':') {
            return Err(TOO_MANY_COLONS);
        }
        (host, 0, 0)
    };
    if text[no_open_bracket_from..].contains('[') {
        return Err("unexpected '[' in address");
    }
    if text[no_close_bracket_from..].contains(']') {
        return Err("unexpected ']' in address");
    }
    Ok((host, &text[last_colon + 1..]))
}

/// Go's `net.ParseIP`: dotted IPv4 without leading zeros or IPv6 without a zone. Rust's
/// parser accepts and refuses the same forms.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// apimachinery's strict `IsValidIP`: an IP that Go parses, not IPv4-mapped IPv6, and
/// written in its canonical form (`value == ip.String()`, so lowercase, `::` where RFC 5952
/// puts it).
fn is_canonical_ip(text: &str) -> bool {
    match parse_ip(text) {
        Some(IpAddr::V6(address)) if address.to_ipv4_mapped().is_some() => false,
        Some(address) => address.to_string() == text,
        None => false,
    }
}

/// kube-dns's `validateStubDomains` for one nameserver of a stub domain.
pub(super) fn check_stub_nameserver(nameserver: &str) -> Result<(), String> {
    // An error means no port or too many colons: the whole value is then taken as the host.
    let (host, port) = split_host_port(nameserver).unwrap_or((nameserver, ""));
    if !port.is_empty() && !is_go_uint16(port) {
        return Err(format!(
            "port {port:?} is not a number from 0 to 65535 (kube-dns's check)"
        ));
    }
    if !is_canonical_ip(host) && !is_rfc1123_subdomain(nameserver) {
        return Err(
            "expected an IP address in canonical form, IP:port or [IPv6]:port, or a \
                    lowercase host name (kube-dns's check)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Go's `strconv.ParseUint(text, 10, 16)`: decimal digits only (no sign), at most 65535.
fn is_go_uint16(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

/// kube-dns's `util.ValidateNameserverIpAndPort` for one upstream nameserver: an IP, or
/// `IP:port` / `[IPv6]:port` with a port from 1 to 65535 (read by Go's `strconv.Atoi`, so a
/// sign is allowed).
pub(super) fn check_upstream_nameserver(nameserver: &str) -> Result<(), String> {
    if parse_ip(nameserver).is_some() {
        return Ok(());
    }
    let (host, port) = split_host_port(nameserver).map_err(|reason| {
        format!("{reason} (expected an IP address, IP:port or [IPv6]:port; kube-dns's check)")
    })?;
    if parse_ip(host).is_none() {
        return Err(format!(
            "bad IP address {host:?} (expected an IP address, IP:port or [IPv6]:port; \
             kube-dns's check)"
        ));
    }
    match port.parse::<i64>() {
        Ok(number) if (1..=65535).contains(&number) => Ok(()),
        _ => Err(format!(
            "bad port number {port:?} (expected 1 to 65535; kube-dns's check)"
        )),
    }
}

/// node-cache's `validateForwardProxy` for one nameserver: CoreDNS's `parse.HostPortOrFile`
/// (after `parse.Transport` strips a `scheme://`), then only the `dns` and `tls` transports.
///
/// `HostPortOrFile` also accepts the path of a resolv.conf-style file in node-cache's own
/// filesystem; that is not followed here (no such path passes kube-dns's check first in
/// practice), so a value that is neither an IP nor an `IP:port` is refused.
pub(super) fn check_forward_target(nameserver: &str) -> Result<(), String> {
    let (transport, address) = TRANSPORTS
        .iter()
        .find_map(|transport| {
            let rest = nameserver.strip_prefix(transport)?.strip_prefix("://")?;
            Some((*transport, rest))
        })
        .unwrap_or(("dns", nameserver));
    if address.is_empty() {
        return Err("invalid address: nothing after the transport (node-cache's check)".into());
    }
    if transport != "unix" {
        let host = match split_host_port(address) {
            Ok((host, _port)) => host,
            Err(_) => address,
        };
        if parse_ip(strip_zone(host)).is_none() {
            return Err(format!(
                "not an IP address: {address:?} (expected IP, IP:port or [IPv6]:port, which \
                 the forward plugin needs; node-cache's check)"
            ));
        }
    }
    if transport != "dns" && transport != "tls" {
        return Err(format!(
            "unsupported transport {transport} (expected dns or tls; node-cache's check)"
        ));
    }
    Ok(())
}

/// CoreDNS's `stripZone`: drops what follows the last `%`.
fn strip_zone(host: &str) -> &str {
    host.rfind('%').map_or(host, |percent| &host[..percent])
}

/// kube-dns's `fed.ParseFederationsFlag` and `validateFederations` for the `federations` file:
/// comma-separated `name=domain` pairs (spaces around them ignored), each name an RFC 1123
/// label and each domain an RFC 1123 subdomain; blank text means none.
pub(super) fn check_federations(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    for pair in text.split(',') {
        let Some((name, domain)) = pair.trim().split_once('=') else {
            return Err(format!("{pair:?} is not in the format name=domain"));
        };
        let (name, domain) = (name.trim(), domain.trim());
        if !is_rfc1123_label(name) {
            return Err(format!(
                "{name:?} is not a valid federation name (expected a lowercase RFC 1123 \
                 label, at most 63 characters)"
            ));
        }
        if !is_rfc1123_subdomain(domain) {
            return Err(format!(
                "{domain:?} is not a valid domain name (expected a lowercase RFC 1123 \
                 subdomain)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_names() {
        for good in [
            "acme.local",
            "a",
            "0.example-1.com",
            "xn--bcher-kva.example",
        ] {
            assert!(is_rfc1123_subdomain(good), "{good}");
        }
        let long_label = "a".repeat(64);
        assert!(
            is_rfc1123_subdomain(&long_label),
            "subdomains have no per-label limit"
        );
        assert!(!is_rfc1123_label(&long_label));
        assert!(is_rfc1123_label(&"a".repeat(63)));
        let too_long = ["a"; 127].join(".");
        assert_eq!(too_long.len(), 253);
        assert!(is_rfc1123_subdomain(&too_long));
        assert!(!is_rfc1123_subdomain(&format!("{too_long}a")));
        for bad in [
            "",
            "Acme.local",
            "acme.local.",
            ".acme",
            "-a.b",
            "a-.b",
            "a..b",
            "a_b",
        ] {
            assert!(!is_rfc1123_subdomain(bad), "{bad}");
        }
        assert!(!is_rfc1123_label("a.b"));
    }

    #[test]
    fn split_host_port_as_go() {
        assert_eq!(split_host_port("1.2.3.4:53"), Ok(("1.2.3.4", "53")));
        assert_eq!(split_host_port("[::1]:53"), Ok(("::1", "53")));
        assert_eq!(split_host_port("1.2.3.4:"), Ok(("1.2.3.4", "")));
        assert_eq!(split_host_port("host:x"), Ok(("host", "x")));
        assert_eq!(split_host_port("1.2.3.4"), Err("missing port in address"));
        assert_eq!(split_host_port("::1"), Err("too many colons in address"));
        assert_eq!(split_host_port("[::1]"), Err("missing port in address"));
        assert_eq!(split_host_port("[::1]x:53"), Err("missing port in address"));
        assert_eq!(
            split_host_port("[::1]:5:3"),
            Err("too many colons in address")
        );
        assert_eq!(split_host_port("[::1:53"), Err("missing ']' in address"));
        assert_eq!(split_host_port("a[b:53"), Err("unexpected '[' in address"));
        assert_eq!(split_host_port("ab]:53"), Err("unexpected ']' in address"));
    }

    #[test]
    fn ip_parsing_matches_go() {
        // Go's net.ParseIP refuses leading zeros and zones since Go 1.17; so does Rust.
        assert!(parse_ip("01.2.3.4").is_none());
        assert!(parse_ip("fe80::1%eth0").is_none());
        assert!(parse_ip("2001:DB8::1").is_some());
        assert!(parse_ip("::ffff:1.2.3.4").is_some());
        assert!(is_canonical_ip("2001:db8::1"));
        assert!(!is_canonical_ip("2001:DB8::1"), "not lowercase");
        assert!(!is_canonical_ip("2001:db8:0:0::1"), "not compressed");
        assert!(!is_canonical_ip("::ffff:1.2.3.4"), "IPv4-mapped");
        assert!(is_canonical_ip("10.0.0.1"));
    }

    #[test]
    fn stub_nameservers_as_kube_dns_checks_them() {
        for good in [
            "1.2.3.4",
            "1.2.3.4:5353",
            "1.2.3.4:0",
            "1.2.3.4:",
            "[2001:db8::1]:53",
            "2001:db8::1",
            "dns.example.com",
            "01.2.3.4", // an RFC 1123 subdomain; the forward check refuses it
        ] {
            assert_eq!(check_stub_nameserver(good), Ok(()), "{good}");
        }
        for bad in [
            "1.2.3.4:65536",
            "1.2.3.4:+53",
            "1.2.3.4:x",
            "2001:DB8::1",
            "dns.example.com:53",
            "Dns.example.com",
            "fe80::1%eth0",
            "tls://1.2.3.4",
            "",
        ] {
            assert!(check_stub_nameserver(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_nameservers_as_kube_dns_checks_them() {
        for good in [
            "8.8.8.8",
            "8.8.8.8:53",
            "[2001:db8::1]:53",
            "2001:DB8::1",
            "8.8.8.8:+53",
        ] {
            assert_eq!(check_upstream_nameserver(good), Ok(()), "{good}");
        }
        for bad in [
            "8.8.8.8:0",
            "8.8.8.8:65536",
            "8.8.8.8:",
            "dns.google",
            "dns.google:53",
        ] {
            assert!(check_upstream_nameserver(bad).is_err(), "{bad}");
        }
        let error = check_upstream_nameserver("300.1.1.1:53").unwrap_err();
        assert!(error.starts_with("bad IP address \"300.1.1.1\""), "{error}");
    }

    #[test]
    fn forward_targets_as_node_cache_checks_them() {
        for good in [
            "1.2.3.4",
            "1.2.3.4:53",
            "[::1]:53",
            "::1",
            "tls://1.2.3.4",
            "dns://[::1]:53",
        ] {
            assert_eq!(check_forward_target(good), Ok(()), "{good}");
        }
        for bad in [
            "dns.example.com",
            "01.2.3.4",
            "grpc://1.2.3.4",
            "unix://sock",
            "tls://",
        ] {
            assert!(check_forward_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn federations() {
        assert_eq!(check_federations(""), Ok(()));
        assert_eq!(
            check_federations(" myfed = example.com , other=b.c "),
            Ok(())
        );
        assert!(check_federations("myfed").is_err());
        assert!(check_federations("My_Fed=example.com").is_err());
        assert!(check_federations("myfed=Example.com").is_err());
    }
}
