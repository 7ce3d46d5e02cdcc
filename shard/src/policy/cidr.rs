//! An address prefix (`10.0.0.0/8`, `fd00::/56`) as `acl` and `ratelimit` match client
//! addresses against it.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 or IPv6 prefix, its host bits cleared. IPv4-mapped IPv6 client addresses
/// (`::ffff:10.0.0.1`, from a dual-stack socket) match IPv4 prefixes, as CoreDNS's `acl`
/// matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The prefix of `addr` with `prefix` bits (host bits cleared, as Go's `ParseCIDR`
    /// does), or `None` when `prefix` is longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = mask(addr, prefix)?;
        Some(Cidr { addr, prefix })
    }

    /// The whole of one family: `0.0.0.0/0` or `::/0`.
    pub fn any(ipv6: bool) -> Cidr {
        let addr = match ipv6 {
            false => IpAddr::from([0u8; 4]),
            true => IpAddr::from([0u8; 16]),
        };
        Cidr { addr, prefix: 0 }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this prefix (IPv4-mapped IPv6 addresses as IPv4).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `addr` with all but its first `prefix` bits cleared; `None` when `prefix` is too long.
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> Option<IpAddr> {
    let prefix = u32::from(prefix);
    match addr {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Some(IpAddr::from((u32::from(v4) & mask).to_be_bytes()))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Some(IpAddr::from((u128::from(v6) & mask).to_be_bytes()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_their_addresses_only() {
        let net = Cidr::new(ip("192.168.1.77"), 24).unwrap();
        assert_eq!(net.to_string(), "192.168.1.0/24", "host bits cleared");
        assert!(net.contains(ip("192.168.1.1")));
        assert!(net.contains(ip("::ffff:192.168.1.200")), "IPv4-mapped");
        assert!(!net.contains(ip("192.168.2.1")));
        assert!(!net.contains(ip("::1")));
        let host = Cidr::new(ip("10.0.0.1"), 32).unwrap();
        assert!(host.contains(ip("10.0.0.1")) && !host.contains(ip("10.0.0.2")));
        let v6 = Cidr::new(ip("fd00:1:2:3::1"), 56).unwrap();
        assert_eq!(v6.to_string(), "fd00:1:2::/56");
        assert!(v6.contains(ip("fd00:1:2:ff::9")));
        assert!(!v6.contains(ip("fd00:1:2:100::9")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::any(false).contains(ip("203.0.113.9")));
        assert!(Cidr::any(true).contains(ip("2001:db8::1")));
        assert!(!Cidr::any(true).contains(ip("203.0.113.9")));
        assert_eq!(Cidr::new(ip("10.0.0.0"), 33), None);
        assert_eq!(Cidr::new(ip("::"), 129), None);
        assert!(Cidr::new(ip("::1"), 128).unwrap().contains(ip("::1")));
    }
}
