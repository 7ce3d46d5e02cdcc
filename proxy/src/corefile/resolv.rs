//! Reading `nameserver` lines from a resolv.conf file, as `forward . /etc/resolv.conf` does.
//!
//! Like the C resolver and CoreDNS, lines that are not `nameserver ADDRESS` (comments,
//! `search`, `options`, ...) are ignored, and so are nameserver lines whose address does not
//! parse. Upstreams get port 53.

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;

use super::address::DNS_PORT;

/// A resolv.conf file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum ResolvError {
    /// The file could not be read.
    #[error("cannot read resolv.conf {path:?}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable `nameserver` line.
    #[error("resolv.conf {path:?} has no usable nameserver line")]
    NoNameserver {
        /// The file.
        path: String,
    },
}

/// The most of a resolv.conf file read (glibc reads far less of it).
const MAX_RESOLV_CONF: u64 = 1 << 20;

/// Reads the nameservers of the resolv.conf file at `path`, in file order. Only a regular
/// file (or a link to one) is read, and at most [`MAX_RESOLV_CONF`] bytes of it: a path such
/// as `/dev/zero` or `/dev/stdin` would otherwise never end or block start-up.
pub(super) fn read_nameservers(path: &str) -> Result<Vec<SocketAddr>, ResolvError> {
    let read = |path: &str| -> std::io::Result<String> {
        let file = std::fs::File::open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        file.take(MAX_RESOLV_CONF).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let text = read(path).map_err(|source| ResolvError::Read {
        path: path.to_string(),
        source,
    })?;
    let servers = parse_nameservers(&text);
    if servers.is_empty() {
        return Err(ResolvError::NoNameserver {
            path: path.to_string(),
        });
    }
    Ok(servers)
}

/// The nameservers named in resolv.conf `text`.
pub(super) fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(parse_server)
        .collect()
}

/// `IP`, or an IPv6 address with a `%SCOPE` (an interface index or name).
fn parse_server(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (address, scope) = text.split_once('%')?;
    let ip = address.parse::<Ipv6Addr>().ok()?;
    let scope_id = scope
        .parse::<u32>()
        .ok()
        .or_else(|| interface_index(scope))?;
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope_id)))
}

/// The index of a network interface, from sysfs.
fn interface_index(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let path = Path::new("/sys/class/net").join(name).join("ifindex");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(text: &str) -> Vec<String> {
        parse_nameservers(text)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn typical_files() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\n\
                    nameserver 10.96.0.10\noptions ndots:5 timeout:2\n\
                    nameserver 2001:4860:4860::8888 # google\n;nameserver 9.9.9.9\n\
                    \tnameserver\t1.1.1.1  \n";
        assert_eq!(
            servers(text),
            ["10.96.0.10:53", "[2001:4860:4860::8888]:53", "1.1.1.1:53"]
        );
    }

    #[test]
    fn bad_lines_are_ignored() {
        assert!(servers("nameserver\nnameserver foo\nnameservers 1.1.1.1\n").is_empty());
        assert_eq!(servers("nameserver fe80::1%3"), ["[fe80::1%3]:53"]);
        assert!(servers("nameserver fe80::1%no-such-interface-xyz").is_empty());
        assert_eq!(
            servers("nameserver fe80::1%lo").len(),
            usize::from(Path::new("/sys/class/net/lo").exists())
        );
    }

    #[test]
    fn files() {
        let error = read_nameservers("/nonexistent/resolv.conf").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read resolv.conf \"/nonexistent/resolv.conf\"")
        );
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let error = read_nameservers(manifest).unwrap_err();
        assert!(matches!(error, ResolvError::NoNameserver { .. }), "{error}");
        assert!(error.to_string().ends_with("has no usable nameserver line"));
        // Devices and directories are refused at once (a read of /dev/zero never ends).
        for path in ["/dev/zero", "/dev/null", "/"] {
            let error = read_nameservers(path).unwrap_err().to_string();
            assert!(error.contains("not a regular file"), "{path}: {error}");
        }
    }
}
