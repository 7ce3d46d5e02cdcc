//! Who already serves an address: the kernel's socket tables (`/proc/net/{udp,tcp}{,6}`) name
//! the socket's inode, and `/proc/PID/fd` names the process holding it. Used to say which
//! process a refused listening address belongs to; best effort (a process in another PID
//! namespace, or without the right to read its descriptors, stays unnamed).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's state numbers in `/proc/net/tcp*` and `/proc/net/udp*`: a listening TCP
/// socket, and a bound UDP socket.
const TCP_LISTEN: u8 = 0x0A;
const UDP_BOUND: u8 = 0x07;

/// The process holding a socket bound to `addr` over `protocol` (`udp` or `tcp`), as
/// `process 1234 (name)`, when it can be found.
pub(crate) fn owner(addr: SocketAddr, protocol: &str) -> Option<String> {
    let state = if protocol == "udp" {
        UDP_BOUND
    } else {
        TCP_LISTEN
    };
    let mut inodes = Vec::new();
    for table in ["", "6"] {
        let path = format!("/proc/net/{protocol}{table}");
        if let Ok(text) = fs::read_to_string(path) {
            inodes.extend(inodes_serving(&text, addr, state));
        }
    }
    inodes.iter().find_map(|&inode| process_with_socket(inode))
}

/// The inodes of the sockets in a `/proc/net/*` table that are in `state` on `addr`'s port
/// and on its address, the wildcard, or any address when `addr` is the wildcard.
fn inodes_serving(table: &str, addr: SocketAddr, state: u8) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = parse_address(fields.get(1)?)?;
            let entry_state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            let same_ip = local.ip() == addr.ip()
                || local.ip().is_unspecified()
                || addr.ip().is_unspecified()
                || mapped(local.ip()) == Some(addr.ip());
            (entry_state == state && local.port() == addr.port() && same_ip && inode != 0)
                .then_some(inode)
        })
        .collect()
}

/// The IPv4 address behind an IPv4-mapped IPv6 one.
fn mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// A `/proc/net` address, `0100007F:0035` or 32 hex digits and a port: the address is
/// written as 32-bit words in the host's byte order (little-endian here).
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |at: usize| -> Option<[u8; 4]> {
        let value = u32::from_str_radix(address.get(at..at + 8)?, 16).ok()?;
        Some(value.to_le_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (index, at) in (0..32).step_by(8).enumerate() {
                octets[index * 4..index * 4 + 4].copy_from_slice(&word(at)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `process PID (name)` for the process holding socket `inode`, if one can be read.
fn process_with_socket(inode: u64) -> Option<String> {
    let wanted = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
        });
        if holds {
            let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("process {pid} ({})", name.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses() {
        assert_eq!(
            parse_address("0100007F:0035"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_address("0000000000000000FFFF00000100007F:9ADF"),
            Some("[::ffff:127.0.0.1]:39647".parse().unwrap())
        );
        assert_eq!(
            parse_address("00000000000000000000000001000000:0035"),
            Some("[::1]:53".parse().unwrap())
        );
        assert_eq!(parse_address("zz:0035"), None);
        assert_eq!(parse_address("0100007F"), None);
    }

    #[test]
    fn table_rows_match_by_port_state_and_address() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2\n\
             1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2\n\
             2: 0100007F:0036 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2\n\
             3: 0200007F:0035 00000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 444 2\n";
        let ours: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert_eq!(inodes_serving(table, ours, UDP_BOUND), [111, 222]);
        let wildcard: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert_eq!(inodes_serving(table, wildcard, UDP_BOUND), [111, 222]);
        assert!(inodes_serving(table, ours, TCP_LISTEN).is_empty());
    }

    #[test]
    fn finds_this_process_holding_a_socket() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let owner = owner(addr, "udp").expect("this process holds it");
        assert!(
            owner.starts_with(&format!("process {} (", std::process::id())),
            "{owner}"
        );
    }
}
