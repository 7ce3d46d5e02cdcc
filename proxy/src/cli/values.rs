//! The values node-cache's flags take, parsed and checked: the `-localip` list ([`LocalIps`]),
//! ports, the `-syncinterval` period, the metrics listen address, the interface name and the
//! upstream Service name.
//!
//! node-cache (kubernetes/dns `cmd/node-cache/main.go`) keeps most of these as Go strings and
//! checks only `-localip` and the two ports (`strconv.Atoi`); a bad interface name, listen
//! address or Service name surfaces later, as a failed netlink call, listener or lookup. Here
//! each is checked when the command line is read, and the message says what was expected.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::corefile::address::{self, LISTEN_EXPECTED};
use crate::corefile::duration;

/// The addresses given to `-localip`: one or more, all of one family, in the order given
/// without repeats. node-cache binds these, adds them to its dummy interface and writes the
/// NOTRACK rules for each; one process serves one family (Go: `utilnet.IsIPv6` of each must
/// match the first).
///
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts as the IPv4 address it maps, as
/// Go's `net.IP` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalIps(Vec<IpAddr>);

impl LocalIps {
    /// The addresses, in the order given (a repeated address kept once, at its first place).
    pub fn addresses(&self) -> &[IpAddr] {
        &self.0
    }

    /// Whether the addresses are IPv6 (they are all of one family).
    pub fn is_ipv6(&self) -> bool {
        self.0[0].is_ipv6()
    }
}

/// Why a `-localip` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalIpsError {
    /// An empty item: an empty value, two commas in a row, or a comma at either end.
    #[error(
        "an address is empty (expected comma-separated IP addresses without spaces, e.g. \
         169.254.20.10,10.96.0.10)"
    )]
    Empty,
    /// An item that is not an IP address.
    #[error(
        "{0:?} is not an IP address (expected comma-separated IP addresses without spaces, \
         e.g. 169.254.20.10,10.96.0.10)"
    )]
    NotAnAddress(String),
    /// Addresses of both families.
    #[error(
        "{first} is {} but {other} is {}: the addresses must all be IPv4 or all be IPv6 \
         (run one shardns per family)",
        family(first),
        family(other)
    )]
    MixedFamilies {
        /// The first address, which sets the family.
        first: IpAddr,
        /// The first address of the other family.
        other: IpAddr,
    },
}

/// `IPv4` or `IPv6`.
fn family(address: &IpAddr) -> &'static str {
    if address.is_ipv6() { "IPv6" } else { "IPv4" }
}

impl FromStr for LocalIps {
    type Err = LocalIpsError;

    /// Parses node-cache's `-localip` value: addresses split at commas, nothing trimmed (Go's
    /// `strings.Split` and `net.ParseIP`).
    fn from_str(text: &str) -> Result<LocalIps, LocalIpsError> {
        let mut addresses: Vec<IpAddr> = Vec::new();
        for item in text.split(',') {
            if item.is_empty() {
                return Err(LocalIpsError::Empty);
            }
            let address = item
                .parse::<IpAddr>()
                .map_err(|_| LocalIpsError::NotAnAddress(item.to_string()))?
                .to_canonical();
            if let Some(&first) = addresses.first()
                && first.is_ipv6() != address.is_ipv6()
            {
                return Err(LocalIpsError::MixedFamilies {
                    first,
                    other: address,
                });
            }
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        Ok(LocalIps(addresses))
    }
}

/// The expected form of a port, for messages.
const PORT_EXPECTED: &str = "expected a port number from 1 to 65535";

/// A port for `-health-port` and `-dns.port`: node-cache takes any integer (`strconv.Atoi`)
/// and writes it into iptables rules; 0 and values outside 1-65535 are refused here.
pub(super) fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PORT_EXPECTED.to_string()),
    }
}

/// The longest period, in seconds, Go can represent (`time.Duration` is an `int64` of
/// nanoseconds).
const MAX_GO_SECONDS: u128 = i64::MAX as u128 / 1_000_000_000;

/// How `-syncinterval` is read, for messages.
const SYNC_INTERVAL_READING: &str =
    "node-cache reads the duration's nanoseconds as seconds, so 60ns means every 60 s";

/// The re-check period `-syncinterval` means. node-cache parses a Go duration and ticks every
/// `value * time.Second` (`cache_app.go`), so the nanosecond count is the number of seconds:
/// its default `60` nanoseconds (printed `60ns`) is every 60 s, and `1s` every 10^9 s. Zero
/// (Go's ticker panics), negative values and periods past Go's limit (where Go's
/// multiplication would wrap) are refused.
///
/// A bare number of seconds (`-syncinterval 2`), which Go refuses for want of a unit, is
/// taken as that many seconds: what anyone writing it means, and what node-cache's `60ns`
/// default means too.
pub(super) fn sync_interval(text: &str) -> Result<Duration, String> {
    let seconds = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        text.parse::<u128>().unwrap_or(u128::MAX)
    } else {
        duration::parse(text)
            .map_err(|error| format!("{error} ({SYNC_INTERVAL_READING})"))?
            .as_nanos()
    };
    if seconds == 0 {
        return Err(format!("must be more than 0 ({SYNC_INTERVAL_READING})"));
    }
    if seconds > MAX_GO_SECONDS {
        return Err(format!(
            "{text} would mean every {seconds} s, past Go's longest duration (about 292 years): \
             {SYNC_INTERVAL_READING}"
        ));
    }
    // seconds <= MAX_GO_SECONDS, which fits in a u64.
    Ok(Duration::from_secs(seconds as u64))
}

/// The metrics listen address (`-metrics-listen-address`), `HOST:PORT` as Go's `net.Listen`
/// takes it: HOST an IPv4 address, an IPv6 address in brackets, `localhost` (127.0.0.1) or
/// empty. An empty or unspecified HOST (`:9353`, `0.0.0.0:9353`, `[::]:9353`) means every
/// address of both families and comes back as `0.0.0.0:PORT`, as the Corefile's `prometheus`
/// addresses do. Names other than `localhost` and named ports are not resolved.
pub(super) fn listen_address(text: &str) -> Result<SocketAddr, String> {
    address::parse_listen(text).map_err(|why| {
        format!("{why} (expected {LISTEN_EXPECTED}, e.g. 0.0.0.0:9353, :9353 or [::1]:9353)")
    })
}

/// The dummy interface's name (`-interfacename`), as the kernel takes it (`dev_valid_name`):
/// 1 to 15 bytes, not `.` or `..`, without `/`, `:` or white space.
pub(super) fn interface_name(text: &str) -> Result<String, String> {
    const EXPECTED: &str =
        "expected 1 to 15 characters without '/', ':' or spaces, e.g. nodelocaldns";
    if text.is_empty() || text.len() > 15 || text == "." || text == ".." {
        return Err(format!("{text:?} is not an interface name ({EXPECTED})"));
    }
    if let Some(bad) = text
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{text:?} has {bad:?} ({EXPECTED})"));
    }
    Ok(text.to_string())
}

/// The upstream Service's name (`-upstreamsvc`), a Kubernetes Service name (an RFC 1035
/// label: 1 to 63 lower-case letters, digits and `-`, starting with a letter and not ending
/// with `-`). node-cache turns it into the variable `$NAME_SERVICE_HOST` (upper case, `-` as
/// `_`) that kubelet sets in the pod.
pub(super) fn service_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('-')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Service name (expected up to 63 lower-case letters, digits and \
             '-', starting with a letter, e.g. kube-dns-upstream)"
        ))
    }
}

/// A path that Go's empty default means "none" for (`-kubednscm`, `-pidfile`): empty is
/// `None`.
pub(super) fn optional_path(text: OsString) -> Option<PathBuf> {
    (!text.is_empty()).then(|| PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(text: &str) -> Vec<IpAddr> {
        text.parse::<LocalIps>().unwrap().addresses().to_vec()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn local_ips() {
        assert_eq!(
            ips("169.254.20.10,10.96.0.10"),
            [ip("169.254.20.10"), ip("10.96.0.10")]
        );
        assert_eq!(ips("fd00::10,fd00::a"), [ip("fd00::10"), ip("fd00::a")]);
        assert!("fd00::10".parse::<LocalIps>().unwrap().is_ipv6());
        assert!(!"169.254.20.10".parse::<LocalIps>().unwrap().is_ipv6());
        // Go's net.IP: a mapped address is IPv4, so it mixes with IPv4 and not with IPv6.
        assert_eq!(
            ips("169.254.20.10,::ffff:10.96.0.10"),
            [ip("169.254.20.10"), ip("10.96.0.10")]
        );
        // A repeat is kept once, at its first place.
        assert_eq!(
            ips("10.0.0.1,10.0.0.2,10.0.0.1"),
            [ip("10.0.0.1"), ip("10.0.0.2")]
        );
    }

    #[test]
    fn local_ips_errors() {
        let error = |text: &str| text.parse::<LocalIps>().unwrap_err();
        for text in ["", ",", "10.0.0.1,", ",10.0.0.1", "10.0.0.1,,10.0.0.2"] {
            assert_eq!(error(text), LocalIpsError::Empty, "{text:?}");
        }
        assert_eq!(
            error("10.0.0.1, 10.0.0.2"),
            LocalIpsError::NotAnAddress(" 10.0.0.2".to_string())
        );
        assert_eq!(
            error("10.0.0.256"),
            LocalIpsError::NotAnAddress("10.0.0.256".to_string())
        );
        assert_eq!(
            error("[fd00::1]"),
            LocalIpsError::NotAnAddress("[fd00::1]".to_string())
        );
        assert_eq!(
            error("fe80::1%eth0"),
            LocalIpsError::NotAnAddress("fe80::1%eth0".to_string())
        );
        assert_eq!(
            error("169.254.20.10,fd00::10,10.0.0.1"),
            LocalIpsError::MixedFamilies {
                first: ip("169.254.20.10"),
                other: ip("fd00::10")
            }
        );
        assert_eq!(
            error("169.254.20.10,fd00::10").to_string(),
            "169.254.20.10 is IPv4 but fd00::10 is IPv6: the addresses must all be IPv4 or all \
             be IPv6 (run one shardns per family)"
        );
        assert_eq!(
            error("fd00::10,::ffff:10.0.0.1").to_string(),
            "fd00::10 is IPv6 but 10.0.0.1 is IPv4: the addresses must all be IPv4 or all be \
             IPv6 (run one shardns per family)"
        );
        assert!(
            error("eth0")
                .to_string()
                .contains("\"eth0\" is not an IP address")
        );
    }

    #[test]
    fn ports() {
        assert_eq!(port("53"), Ok(53));
        assert_eq!(port("65535"), Ok(65535));
        assert_eq!(port("+8080"), Ok(8080));
        for text in ["0", "65536", "-1", "", "53 ", "http", "5.3"] {
            assert_eq!(port(text), Err(PORT_EXPECTED.to_string()), "{text:?}");
        }
    }

    #[test]
    fn sync_intervals() {
        // node-cache's reading: the nanosecond count is seconds.
        assert_eq!(sync_interval("60ns"), Ok(Duration::from_secs(60)));
        assert_eq!(sync_interval("1ns"), Ok(Duration::from_secs(1)));
        assert_eq!(sync_interval("1us"), Ok(Duration::from_secs(1_000)));
        assert_eq!(sync_interval("1s"), Ok(Duration::from_secs(1_000_000_000)));
        assert_eq!(
            sync_interval("9223372036ns"),
            Ok(Duration::from_secs(9_223_372_036))
        );
        let error = sync_interval("9223372037ns").unwrap_err();
        assert!(error.contains("past Go's longest duration"), "{error}");
        assert!(
            sync_interval("1m")
                .unwrap_err()
                .contains("past Go's longest")
        );
        assert!(
            sync_interval("0")
                .unwrap_err()
                .starts_with("must be more than 0")
        );
        assert!(
            sync_interval("0ns")
                .unwrap_err()
                .starts_with("must be more than 0")
        );
        // A bare number: seconds, though Go wants a unit.
        assert_eq!(sync_interval("60"), Ok(Duration::from_secs(60)));
        assert_eq!(sync_interval("2"), Ok(Duration::from_secs(2)));
        assert!(
            sync_interval("9223372037")
                .unwrap_err()
                .contains("past Go's longest duration")
        );
        let error = sync_interval("60x").unwrap_err();
        assert!(error.contains("so 60ns means every 60 s"), "{error}");
        assert!(
            sync_interval("-5ns")
                .unwrap_err()
                .starts_with("negative durations")
        );
        assert!(
            sync_interval("soon")
                .unwrap_err()
                .starts_with("not a duration")
        );
    }

    #[test]
    fn listen_addresses() {
        let ok = |text: &str| listen_address(text).unwrap().to_string();
        assert_eq!(ok("0.0.0.0:9353"), "0.0.0.0:9353");
        assert_eq!(ok(":9353"), "0.0.0.0:9353");
        assert_eq!(ok("[::]:9353"), "0.0.0.0:9353");
        assert_eq!(ok("127.0.0.1:9353"), "127.0.0.1:9353");
        assert_eq!(ok("localhost:9353"), "127.0.0.1:9353");
        assert_eq!(ok("[::1]:9353"), "[::1]:9353");
        let error = |text: &str| listen_address(text).unwrap_err();
        assert!(error("9353").starts_with("no port"));
        assert!(error("0.0.0.0:").starts_with("bad port \"\""));
        assert!(error(":http").starts_with("bad port \"http\""));
        assert!(error(":65536").starts_with("bad port \"65536\""));
        assert!(error("::1:9353").starts_with("IPv6 addresses go in brackets"));
        assert!(error("[10.0.0.1]:9353").starts_with("\"10.0.0.1\" is not an IPv6 address"));
        assert!(error("10.0.0.300:9353").starts_with("\"10.0.0.300\" is not an IP address"));
        assert!(error("metrics.local:9353").starts_with("hostnames other than localhost"));
        assert!(error("9353").contains("expected HOST:PORT"));
    }

    #[test]
    fn interface_names() {
        assert_eq!(
            interface_name("nodelocaldns"),
            Ok("nodelocaldns".to_string())
        );
        assert_eq!(
            interface_name("abcdefghijklmno"),
            Ok("abcdefghijklmno".to_string())
        );
        for text in ["", ".", "..", "abcdefghijklmnop"] {
            let error = interface_name(text).unwrap_err();
            assert!(
                error.contains("is not an interface name"),
                "{text:?}: {error}"
            );
        }
        assert!(
            interface_name("a/b")
                .unwrap_err()
                .starts_with("\"a/b\" has '/'")
        );
        assert!(
            interface_name("a:b")
                .unwrap_err()
                .starts_with("\"a:b\" has ':'")
        );
        assert!(
            interface_name("a b")
                .unwrap_err()
                .starts_with("\"a b\" has ' '")
        );
    }

    #[test]
    fn service_names() {
        for text in ["kube-dns", "kube-dns-upstream", "a", "dns2"] {
            assert_eq!(service_name(text), Ok(text.to_string()));
        }
        assert_eq!(service_name(&"a".repeat(63)), Ok("a".repeat(63)));
        for text in [
            "", "Kube-dns", "2dns", "-dns", "dns-", "kube_dns", "kube.dns",
        ] {
            let error = service_name(text).unwrap_err();
            assert!(error.contains("is not a Service name"), "{text:?}: {error}");
        }
        assert!(service_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn optional_paths() {
        assert_eq!(optional_path(OsString::new()), None);
        assert_eq!(
            optional_path(OsString::from("/etc/kube-dns")),
            Some(PathBuf::from("/etc/kube-dns"))
        );
    }
}
