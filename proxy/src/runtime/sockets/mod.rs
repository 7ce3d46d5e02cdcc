//! The one place listening sockets are created. Every shard gets its own UDP socket and TCP
//! listener per listening address, all with `SO_REUSEPORT`, so the kernel spreads clients
//! over the shards.
//!
//! A listener on port 0 gets an ephemeral port: the first UDP socket binds to port 0 and
//! every other socket of that listener (all shards, UDP and TCP) binds to the port it got.
//!
//! The Prometheus endpoints' TCP listeners ([`metrics_listener`]) are made here too.
//!
//! An address another process already serves is refused, naming that process where
//! [`owner`] can tell: with `SO_REUSEPORT`, binding it would silently share its traffic with
//! the other process (each getting part of the clients). Sockets a predecessor handed over
//! ([`Inherited`]) are used as they are, for the addresses and shards they were made for.

mod owner;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use shardns_shard::ShardSockets;
use socket2::{Domain, Protocol, Socket, Type};

use super::handoff::{Inherited, SocketKind};

/// `listen(2)` backlog of the TCP listeners.
pub(crate) const TCP_BACKLOG: i32 = 1024;

/// `listen(2)` backlog of an HTTP listener: room for a burst of connections while the HTTP
/// thread accepts them (it caps them at 1024 open; see `http::server::Limits`).
pub(crate) const METRICS_BACKLOG: i32 = 1024;

/// Receive and send buffer asked for on UDP sockets (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
pub(crate) const UDP_BUFFER_BYTES: usize = 4 << 20;

/// How many ephemeral ports are tried for a port-0 listener before giving up.
const EPHEMERAL_ATTEMPTS: usize = 8;

/// Linux `EAFNOSUPPORT`: the kernel has no IPv6.
const EAFNOSUPPORT: i32 = 97;

/// Linux `EACCES`, `EADDRNOTAVAIL`.
const EACCES: i32 = 13;
const EADDRNOTAVAIL: i32 = 99;

/// A listening socket that could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// Another process already serves the address.
    #[error("{addr} ({protocol}) is already served by {owner}: stop it first, or listen elsewhere")]
    InUse {
        addr: SocketAddr,
        /// "udp", "tcp" or "http".
        protocol: &'static str,
        /// `process PID (name)`, or `another process` when it cannot be told.
        owner: String,
    },
    /// The system refused for another reason (the OS error is the source).
    #[error("cannot listen on {addr} ({protocol}){hint}")]
    Os {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: io::Error,
        /// What may help, in parentheses after a space, or nothing.
        hint: &'static str,
    },
}

impl SocketError {
    /// The error for `source` on `addr` over `protocol`: an address in use names its owner,
    /// an address not on this host or a privileged port says what helps.
    fn new(addr: SocketAddr, protocol: &'static str, source: io::Error) -> SocketError {
        if source.kind() == io::ErrorKind::AddrInUse {
            let kind = if protocol == "udp" { "udp" } else { "tcp" };
            let owner = owner::owner(addr, kind).unwrap_or_else(|| "another process".to_string());
            return SocketError::InUse {
                addr,
                protocol,
                owner,
            };
        }
        let hint = match source.raw_os_error() {
            Some(EACCES) if addr.port() < 1024 => {
                " (a port below 1024 needs root or the CAP_NET_BIND_SERVICE capability)"
            }
            Some(EADDRNOTAVAIL) => {
                " (the address is not on this host: add it with `ip addr add`, or let shardns \
                 set up its interface with -setupinterface)"
            }
            _ => "",
        };
        SocketError::Os {
            addr,
            protocol,
            source,
            hint,
        }
    }

    /// The address it is about.
    #[cfg(test)]
    fn addr(&self) -> SocketAddr {
        match self {
            SocketError::InUse { addr, .. } | SocketError::Os { addr, .. } => *addr,
        }
    }

    /// The protocol it is about (`udp`, `tcp` or `http`).
    #[cfg(test)]
    fn protocol(&self) -> &'static str {
        match self {
            SocketError::InUse { protocol, .. } | SocketError::Os { protocol, .. } => protocol,
        }
    }

    /// The system's error, unless the address was in use.
    fn os_error(&self) -> Option<&io::Error> {
        match self {
            SocketError::Os { source, .. } => Some(source),
            SocketError::InUse { .. } => None,
        }
    }
}

/// The sockets of every shard, and where each listener ended up.
#[derive(Debug)]
pub(crate) struct Bound {
    /// One entry per shard; sockets are tagged with their listener index.
    pub shards: Vec<ShardSockets>,
    /// The bound address of each listener (the real port for port 0), or `None` for an IPv6
    /// wildcard skipped because the host has no IPv6.
    pub addrs: Vec<Option<SocketAddr>>,
}

/// Creates the sockets of `shard_count` shards for `listeners` (indexed as in the config),
/// taking those `inherited` holds for them.
pub(crate) fn bind_all(
    listeners: &[SocketAddr],
    shard_count: usize,
    inherited: &mut Inherited,
) -> Result<Bound, SocketError> {
    let mut shards: Vec<ShardSockets> = (0..shard_count).map(|_| ShardSockets::default()).collect();
    let mut addrs = Vec::with_capacity(listeners.len());
    for (index, &addr) in listeners.iter().enumerate() {
        let index = u16::try_from(index).map_err(|_| {
            SocketError::new(addr, "udp", io::Error::other("more than 65535 listeners"))
        })?;
        let sockets = match take_listener(addr, shard_count, inherited) {
            Some(taken) => taken,
            None => bind_listener(addr, shard_count),
        };
        match sockets {
            Ok(sockets) => {
                addrs.push(Some(sockets.addr));
                for ((shard, udp), tcp) in shards.iter_mut().zip(sockets.udp).zip(sockets.tcp) {
                    shard.udp.push((index, udp));
                    shard.tcp.push((index, tcp));
                }
            }
            Err(error)
                if addr.ip().is_unspecified()
                    && addr.is_ipv6()
                    && error.os_error().is_some_and(no_ipv6) =>
            {
                tracing::warn!(%addr, "no IPv6 on this host, not listening on the IPv6 wildcard");
                addrs.push(None);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Bound { shards, addrs })
}

fn no_ipv6(error: &io::Error) -> bool {
    error.raw_os_error() == Some(EAFNOSUPPORT) || error.kind() == io::ErrorKind::AddrNotAvailable
}

/// The sockets of one listener for every shard.
struct ListenerSockets {
    addr: SocketAddr,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

/// The sockets of the listener written `addr` that a predecessor handed over, those it did
/// not (a shard it did not have) made anew on the same port; `None` if it handed over none.
fn take_listener(
    addr: SocketAddr,
    shard_count: usize,
    inherited: &mut Inherited,
) -> Option<Result<ListenerSockets, SocketError>> {
    let udp: Vec<Option<UdpSocket>> = (0..shard_count)
        .map(|shard| {
            inherited
                .take(SocketKind::Udp, addr, Some(shard))
                .map(UdpSocket::from)
        })
        .collect();
    let tcp: Vec<Option<TcpListener>> = (0..shard_count)
        .map(|shard| {
            inherited
                .take(SocketKind::Tcp, addr, Some(shard))
                .map(TcpListener::from)
        })
        .collect();
    let bound = udp
        .iter()
        .flatten()
        .find_map(|socket| socket.local_addr().ok())
        .or_else(|| tcp.iter().flatten().find_map(|l| l.local_addr().ok()))?;
    let made = || -> Result<ListenerSockets, SocketError> {
        let mut sockets = ListenerSockets {
            addr: bound,
            udp: Vec::with_capacity(shard_count),
            tcp: Vec::with_capacity(shard_count),
        };
        for socket in udp {
            let socket = match socket {
                Some(socket) => socket,
                None => udp_socket(bound).map_err(|e| SocketError::new(bound, "udp", e))?,
            };
            socket
                .set_nonblocking(true)
                .map_err(|e| SocketError::new(bound, "udp", e))?;
            sockets.udp.push(socket);
        }
        for listener in tcp {
            let listener = match listener {
                Some(listener) => listener,
                None => tcp_listener(bound).map_err(|e| SocketError::new(bound, "tcp", e))?,
            };
            listener
                .set_nonblocking(true)
                .map_err(|e| SocketError::new(bound, "tcp", e))?;
            sockets.tcp.push(listener);
        }
        Ok(sockets)
    };
    Some(made())
}

fn bind_listener(addr: SocketAddr, shard_count: usize) -> Result<ListenerSockets, SocketError> {
    let udp_error = |addr, source| SocketError::new(addr, "udp", source);
    if addr.port() != 0 {
        // With SO_REUSEPORT the kernel would let these sockets join another process's on the
        // same address and split the clients between them: make sure nobody holds it.
        if let Err(source) = unshared_socket(addr, Type::DGRAM, Protocol::UDP) {
            return Err(udp_error(addr, source));
        }
        if let Err(source) = unshared_socket(addr, Type::STREAM, Protocol::TCP) {
            return Err(SocketError::new(addr, "tcp", source));
        }
    }
    let mut attempt = 0;
    'attempts: loop {
        attempt += 1;
        let first = udp_socket(addr).map_err(|e| udp_error(addr, e))?;
        let port = first.local_addr().map_err(|e| udp_error(addr, e))?.port();
        let bound = SocketAddr::new(addr.ip(), port);
        let mut udp = vec![first];
        for _ in 1..shard_count {
            udp.push(udp_socket(bound).map_err(|e| udp_error(bound, e))?);
        }
        let mut tcp = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            match tcp_listener(bound) {
                Ok(listener) => tcp.push(listener),
                Err(error)
                    if addr.port() == 0
                        && error.kind() == io::ErrorKind::AddrInUse
                        && attempt < EPHEMERAL_ATTEMPTS =>
                {
                    tracing::debug!(%bound, "TCP port taken, trying another ephemeral port");
                    continue 'attempts;
                }
                Err(source) => return Err(SocketError::new(bound, "tcp", source)),
            }
        }
        return Ok(ListenerSockets {
            addr: bound,
            udp,
            tcp,
        });
    }
}

/// Binds a socket of `kind` to `addr` without `SO_REUSEPORT` and closes it: it fails
/// (`AddrInUse`) when another socket is bound there. TCP sockets in TIME_WAIT (left by a
/// previous run) do not count: `SO_REUSEADDR` passes over them, not over a listener.
fn unshared_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

/// A socket with the options every listening socket shares.
fn socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: a smaller buffer only means drops under bursts.
    if let Err(error) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%addr, %error, "cannot set SO_RCVBUF");
    }
    if let Err(error) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(%addr, %error, "cannot set SO_SNDBUF");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The non-blocking TCP listener of a Prometheus endpoint at `addr`. An unspecified IP
/// listens on every address of both families (one IPv6 socket that also takes IPv4, as Go's
/// `net.Listen` does for CoreDNS), or on every IPv4 address where the host has no IPv6.
/// Without `SO_REUSEPORT`: a second process on the port is an error, not a silent split of
/// the scrapes.
pub(crate) fn metrics_listener(
    addr: SocketAddr,
    inherited: &mut Inherited,
) -> Result<TcpListener, SocketError> {
    let error = |addr, source| SocketError::new(addr, "http", source);
    if let Some(fd) = inherited.take(SocketKind::Http, addr, None) {
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).map_err(|e| error(addr, e))?;
        return Ok(listener);
    }
    if !addr.ip().is_unspecified() {
        return http_listener(addr, true).map_err(|e| error(addr, e));
    }
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port());
    match http_listener(any6, false) {
        Err(source) if no_ipv6(&source) => {
            let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            http_listener(any4, true).map_err(|e| error(any4, e))
        }
        result => result.map_err(|e| error(any6, e)),
    }
}

fn http_listener(addr: SocketAddr, only_v6: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(METRICS_BACKLOG)?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket.into())
}

/// `addr` with an unspecified IP replaced by the loopback address of its family: where this
/// host reaches a listener bound to every address (CoreDNS dials `:53`, the local host, the
/// same way).
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(bound: &Bound, listener: u16) -> Vec<u16> {
        let mut ports = Vec::new();
        for shard in &bound.shards {
            for (index, socket) in &shard.udp {
                if *index == listener {
                    ports.push(socket.local_addr().unwrap().port());
                }
            }
            for (index, socket) in &shard.tcp {
                if *index == listener {
                    ports.push(socket.local_addr().unwrap().port());
                }
            }
        }
        ports
    }

    #[test]
    fn port_zero_gives_one_port_to_every_shard() {
        let listeners = [
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
        let bound = bind_all(&listeners, 2, &mut Default::default()).unwrap();
        assert_eq!(bound.shards.len(), 2);
        for shard in &bound.shards {
            assert_eq!(
                shard
                    .udp
                    .iter()
                    .map(|(index, _)| *index)
                    .collect::<Vec<_>>(),
                [0, 1]
            );
            assert_eq!(
                shard
                    .tcp
                    .iter()
                    .map(|(index, _)| *index)
                    .collect::<Vec<_>>(),
                [0, 1]
            );
        }
        for listener in 0..2 {
            let ports = ports(&bound, listener);
            assert_eq!(ports.len(), 4);
            assert!(
                ports[0] != 0 && ports.iter().all(|&port| port == ports[0]),
                "{ports:?}"
            );
            assert_eq!(bound.addrs[usize::from(listener)].unwrap().port(), ports[0]);
        }
        assert_ne!(ports(&bound, 0)[0], ports(&bound, 1)[0]);
    }

    #[test]
    fn sockets_serve_traffic() {
        let bound = bind_all(
            &["127.0.0.1:0".parse().unwrap()],
            1,
            &mut Default::default(),
        )
        .unwrap();
        let addr = bound.addrs[0].unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"ping", addr).unwrap();
        let server = &bound.shards[0].udp[0].1;
        server.set_nonblocking(false).unwrap();
        let mut buffer = [0u8; 16];
        let (length, _) = server.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"ping");
        let _stream = std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn ipv6_loopback_when_available() {
        let Ok(bound) = bind_all(&["[::1]:0".parse().unwrap()], 2, &mut Default::default()) else {
            return;
        };
        let ports = ports(&bound, 0);
        assert!(ports.iter().all(|&port| port == ports[0] && port != 0));
    }

    #[test]
    fn a_taken_port_is_an_error_naming_its_owner() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind_all(&[addr], 1, &mut Default::default()).unwrap_err();
        assert_eq!(error.addr(), addr);
        let message = error.to_string();
        let owner = format!("process {} (", std::process::id());
        assert!(
            message.starts_with(&format!("{addr} (tcp) is already served by {owner}")),
            "{message}"
        );
    }

    #[test]
    fn an_address_served_with_so_reuseport_is_refused_not_shared() {
        // Another process's shardns: UDP and TCP with SO_REUSEPORT, as bind_all makes them.
        let first = bind_all(
            &["127.0.0.1:0".parse().unwrap()],
            1,
            &mut Default::default(),
        )
        .unwrap();
        let addr = first.addrs[0].unwrap();
        let error = bind_all(&[addr], 2, &mut Default::default()).unwrap_err();
        assert!(
            matches!(
                error,
                SocketError::InUse {
                    protocol: "udp",
                    ..
                }
            ),
            "{error}"
        );
        // Once it is gone, the address is free again.
        drop(first);
        bind_all(&[addr], 2, &mut Default::default()).expect("free again");
    }

    #[test]
    fn os_errors_are_said_once_with_a_hint() {
        let error = SocketError::new(
            "192.0.2.1:53".parse().unwrap(),
            "udp",
            io::Error::from_raw_os_error(EADDRNOTAVAIL),
        );
        let chain = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(chain.matches("(os error 99)").count(), 1, "{chain}");
        assert!(chain.contains("-setupinterface"), "{chain}");
        let error = SocketError::new(
            "0.0.0.0:53".parse().unwrap(),
            "udp",
            io::Error::from_raw_os_error(EACCES),
        );
        assert!(
            error.to_string().contains("CAP_NET_BIND_SERVICE"),
            "{error}"
        );
    }

    #[test]
    fn metrics_listeners() {
        let listener =
            metrics_listener("127.0.0.1:0".parse().unwrap(), &mut Default::default()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let _client = std::net::TcpStream::connect(addr).unwrap();
        // The port is taken now: no SO_REUSEPORT sharing.
        let error = metrics_listener(addr, &mut Default::default()).unwrap_err();
        assert_eq!((error.addr(), error.protocol()), (addr, "http"));
        assert!(matches!(error, SocketError::InUse { .. }), "{error}");

        // The unspecified address takes IPv4 clients (on an IPv6 socket where there is IPv6).
        let any = metrics_listener("0.0.0.0:0".parse().unwrap(), &mut Default::default()).unwrap();
        let port = any.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let accepted = (0..100).find_map(|_| match any.accept() {
            Ok(accepted) => Some(accepted),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
        });
        assert!(accepted.is_some());
    }
}
