//! The upstream UDP sockets of one shard, as the engine sees them. Every exchange (a query's
//! attempt, or a health probe) gets a socket of its own, which the driver opens (bound to a
//! port the kernel picks at random from the ephemeral range, and connected to the upstream)
//! the first time a query names its link, and closes when the exchange is over. So a forger
//! must guess a fresh port as well as a fresh ID for every query (RFC 5452 §9.2), a reply
//! that comes late finds no socket, and any datagram on a socket while its exchange is on is
//! a forgery or a broken upstream (the engine then goes on over TCP).
//!
//! Ports are bounded: at most [`MAX_UDP_SOCKETS`] per shard. Past that, an exchange shares a
//! socket already open to the same upstream, picked at random (replies are still told apart
//! by ID and question).

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::{Link, Protocol};

/// Most upstream UDP sockets one shard keeps open at once.
pub(crate) const MAX_UDP_SOCKETS: usize = 1024;

/// One open socket: its upstream, how many exchanges use it, and whether more may share it.
#[derive(Debug, Clone, Copy)]
struct Socket {
    upstream: u16,
    users: u32,
    shareable: bool,
}

/// The open upstream UDP sockets of one shard, by the `conn` of their [`Link`].
#[derive(Debug)]
pub(crate) struct UdpSockets {
    open: HashMap<u32, Socket>,
    next_conn: u32,
    /// Sockets no exchange uses any more, for the driver to close.
    closed: VecDeque<Link>,
    max: usize,
}

impl Default for UdpSockets {
    fn default() -> UdpSockets {
        UdpSockets::with_max(MAX_UDP_SOCKETS)
    }
}

fn link(upstream: u16, conn: u32) -> Link {
    Link {
        upstream,
        protocol: Protocol::Udp,
        conn,
    }
}

impl UdpSockets {
    /// At most `max` sockets open.
    pub(crate) fn with_max(max: usize) -> UdpSockets {
        UdpSockets {
            open: HashMap::new(),
            next_conn: 1,
            closed: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// A socket for one more exchange with `upstream`: a new one, or, when the shard has
    /// its maximum open, one open to `upstream` (the `pick`-th, modulo their number) if there
    /// is any. Returns its link and whether it is shared.
    pub(crate) fn acquire(&mut self, upstream: u16, pick: u64) -> (Link, bool) {
        if self.open.len() >= self.max {
            let mut candidates: Vec<u32> = self
                .open
                .iter()
                .filter(|(_, s)| s.upstream == upstream && s.shareable)
                .map(|(&conn, _)| conn)
                .collect();
            if !candidates.is_empty() {
                // The map's order is arbitrary; sort so that `pick` alone decides.
                candidates.sort_unstable();
                let conn = candidates[(pick % candidates.len() as u64) as usize];
                if let Some(socket) = self.open.get_mut(&conn) {
                    socket.users += 1;
                    return (link(upstream, conn), true);
                }
            }
        }
        let mut conn = self.next_conn;
        while conn == 0 || self.open.contains_key(&conn) {
            conn = conn.wrapping_add(1);
        }
        self.next_conn = conn.wrapping_add(1);
        self.open.insert(
            conn,
            Socket {
                upstream,
                users: 1,
                shareable: true,
            },
        );
        (link(upstream, conn), false)
    }

    /// An exchange on `link` is over: the socket closes when it was the last one using it.
    /// Links that are not open UDP sockets are ignored.
    pub(crate) fn release(&mut self, link: Link) {
        if link.protocol != Protocol::Udp {
            return;
        }
        let Some(socket) = self.open.get_mut(&link.conn) else {
            return;
        };
        socket.users = socket.users.saturating_sub(1);
        if socket.users == 0 {
            let socket = self.open.remove(&link.conn).expect("present");
            self.closed
                .push_back(self::link(socket.upstream, link.conn));
        }
    }

    /// No open socket is shared any more (a reload renumbered the upstreams); each closes
    /// when its exchanges are over.
    pub(crate) fn retire_all(&mut self) {
        for socket in self.open.values_mut() {
            socket.shareable = false;
        }
    }

    /// The next socket for the driver to close.
    pub(crate) fn pop_closed(&mut self) -> Option<Link> {
        self.closed.pop_front()
    }

    /// Whether sockets wait to be closed.
    pub(crate) fn closing(&self) -> bool {
        !self.closed.is_empty()
    }

    /// Open sockets.
    pub(crate) fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exchange_gets_a_socket_closed_when_it_is_over() {
        let mut udp = UdpSockets::default();
        let (a, shared_a) = udp.acquire(0, 0);
        let (b, shared_b) = udp.acquire(0, 0);
        let (c, _) = udp.acquire(1, 0);
        assert!(!shared_a && !shared_b);
        assert_ne!(a, b);
        assert_ne!(a.conn, c.conn);
        assert!(a.conn != 0 && b.conn != 0 && c.conn != 0);
        assert_eq!((a.protocol, c.upstream), (Protocol::Udp, 1));
        assert_eq!(udp.open(), 3);
        udp.release(b);
        assert_eq!(udp.pop_closed(), Some(b));
        assert_eq!(udp.pop_closed(), None);
        // Releasing twice, or what is not an open socket, changes nothing.
        udp.release(b);
        udp.release(Link {
            protocol: Protocol::Tcp,
            ..a
        });
        assert_eq!((udp.open(), udp.closing()), (2, false));
        udp.release(a);
        udp.release(c);
        assert_eq!(udp.open(), 0);
        assert_eq!(
            std::iter::from_fn(|| udp.pop_closed()).collect::<Vec<_>>(),
            [a, c]
        );
    }

    #[test]
    fn past_the_maximum_exchanges_share_sockets_to_their_upstream() {
        let mut udp = UdpSockets::with_max(3);
        let (a, _) = udp.acquire(0, 0);
        let (b, _) = udp.acquire(0, 0);
        let (c, _) = udp.acquire(1, 0);
        let (d, shared) = udp.acquire(0, 1);
        assert!(shared);
        assert!(d == a || d == b);
        assert_ne!(udp.acquire(0, 0).0, udp.acquire(0, 1).0, "pick chooses");
        let (e, shared) = udp.acquire(1, 7);
        assert_eq!((e, shared), (c, true));
        // An upstream with no socket open gets one anyway.
        let (f, shared) = udp.acquire(2, 0);
        assert!(!shared && f.upstream == 2);
        assert_eq!(udp.open(), 4);
        // A shared socket closes with its last user.
        udp.release(c);
        assert!(!udp.closing());
        udp.release(e);
        assert_eq!(udp.pop_closed(), Some(c));
    }

    #[test]
    fn retired_sockets_are_not_shared() {
        let mut udp = UdpSockets::with_max(1);
        let (a, _) = udp.acquire(0, 0);
        udp.retire_all();
        let (b, shared) = udp.acquire(0, 0);
        assert!(!shared && b != a);
        udp.release(a);
        assert_eq!(udp.pop_closed(), Some(a));
    }

    #[test]
    fn conn_numbers_skip_zero_and_those_in_use() {
        let mut udp = UdpSockets {
            next_conn: u32::MAX,
            ..UdpSockets::default()
        };
        let (a, _) = udp.acquire(0, 0);
        let (b, _) = udp.acquire(0, 0);
        assert_eq!((a.conn, b.conn), (u32::MAX, 1));
        udp.next_conn = u32::MAX;
        let (c, _) = udp.acquire(0, 0);
        assert_eq!(c.conn, 2);
    }
}
