//! The upstream UDP sockets of one shard, as the engine sees them. Each is bound to a port
//! the kernel picks at random from the ephemeral range and connected to its upstream (the
//! driver opens it the first time a query names its link). An exchange (a query's attempt,
//! or a health probe) takes:
//!
//! - under load, once [`SOCKETS_BEFORE_SHARING`] sockets to its upstream are in use, one of
//!   those with fewer than [`EXCHANGES_AT_ONCE`] exchanges on it, at random: the replies of
//!   several exchanges then come on one socket, and a burst opens no more sockets;
//! - else an idle socket of its upstream, at random (at most [`IDLE_PER_UPSTREAM`] are kept
//!   between exchanges);
//! - else a new one.
//!
//! A socket serves at most [`EXCHANGES_PER_SOCKET`] exchanges, then closes. So a forger must
//! guess one of a few open, changing ports as well as the ID (RFC 5452 §9.2), while the cost
//! of opening, registering and closing a socket is shared by many exchanges
//! (docs/BENCHMARKS.md: a socket per exchange cost the UDP miss path 2.4× the CPU).
//!
//! A socket is closed, never reused, once it is *burnt*: a datagram on it answered nothing
//! (a forger who found the port, or a broken upstream: every exchange on it goes on over
//! TCP), or an exchange on it timed out or failed (a late reply would otherwise meet the
//! next exchange).
//!
//! Ports are bounded: at most [`MAX_UDP_SOCKETS`] per shard. Past that, an exchange shares a
//! socket already in use to the same upstream, picked at random (replies are still told
//! apart by ID and question).

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::{Link, Protocol};

/// Most upstream UDP sockets one shard keeps open at once.
pub(crate) const MAX_UDP_SOCKETS: usize = 1024;
/// Exchanges one socket serves before it is closed.
pub(crate) const EXCHANGES_PER_SOCKET: u32 = 64;
/// Idle sockets kept per upstream for the next exchanges.
pub(crate) const IDLE_PER_UPSTREAM: usize = 8;
/// Sockets open to one upstream before exchanges share them.
pub(crate) const SOCKETS_BEFORE_SHARING: usize = 8;
/// Exchanges on one socket at once, when shared.
pub(crate) const EXCHANGES_AT_ONCE: u32 = 8;

/// One open socket: its upstream, how many exchanges use it now and have used it, and
/// whether more may use it.
#[derive(Debug, Clone, Copy)]
struct Socket {
    upstream: u16,
    users: u32,
    served: u32,
    /// Not after a reload renumbered the upstreams, nor once burnt.
    reusable: bool,
}

/// The open upstream UDP sockets of one shard, by the `conn` of their [`Link`].
#[derive(Debug)]
pub(crate) struct UdpSockets {
    open: HashMap<u32, Socket>,
    /// Per upstream, its idle sockets (no exchange on them), for the next exchanges.
    idle: HashMap<u16, Vec<u32>>,
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
            idle: HashMap::new(),
            next_conn: 1,
            closed: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// A socket for one more exchange with `upstream`: an idle one of that upstream (the
    /// `pick`-th, modulo their number), else a new one, or, when the shard has its maximum
    /// open, one in use to `upstream` if there is any. Returns its link and whether it was
    /// open already (idle or shared: a connection-cache hit).
    pub(crate) fn acquire(&mut self, upstream: u16, pick: u64) -> (Link, bool) {
        if let Some(shared) = self.share(upstream, pick) {
            return (shared, true);
        }
        if let Some(idle) = self.idle.get_mut(&upstream)
            && !idle.is_empty()
        {
            let conn = idle.swap_remove((pick % idle.len() as u64) as usize);
            if let Some(socket) = self.open.get_mut(&conn) {
                socket.users = 1;
                socket.served += 1;
                return (link(upstream, conn), true);
            }
        }
        if self.open.len() >= self.max {
            let mut candidates: Vec<u32> = self
                .open
                .iter()
                .filter(|(_, s)| s.upstream == upstream && s.reusable && s.users > 0)
                .map(|(&conn, _)| conn)
                .collect();
            if !candidates.is_empty() {
                // The map's order is arbitrary; sort so that `pick` alone decides.
                candidates.sort_unstable();
                let conn = candidates[(pick % candidates.len() as u64) as usize];
                if let Some(socket) = self.open.get_mut(&conn) {
                    socket.users += 1;
                    socket.served += 1;
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
                served: 1,
                reusable: true,
            },
        );
        (link(upstream, conn), false)
    }

    /// Under load: when [`SOCKETS_BEFORE_SHARING`] sockets to `upstream` are in use, one of
    /// them that may take more (the `pick`-th), so that the replies of several exchanges come
    /// on one socket and a burst opens no more sockets.
    fn share(&mut self, upstream: u16, pick: u64) -> Option<Link> {
        let mut busy = 0usize;
        let mut candidates: Vec<u32> = Vec::new();
        for (&conn, socket) in &self.open {
            if socket.upstream != upstream || socket.users == 0 {
                continue;
            }
            busy += 1;
            if socket.reusable
                && socket.users < EXCHANGES_AT_ONCE
                && socket.served < EXCHANGES_PER_SOCKET
            {
                candidates.push(conn);
            }
        }
        if busy < SOCKETS_BEFORE_SHARING || candidates.is_empty() {
            return None;
        }
        // The map's order is arbitrary; sort so that `pick` alone decides.
        candidates.sort_unstable();
        let conn = candidates[(pick % candidates.len() as u64) as usize];
        let socket = self.open.get_mut(&conn)?;
        socket.users += 1;
        socket.served += 1;
        Some(link(upstream, conn))
    }

    /// An exchange on `link` is over. When it was the last one using the socket, the socket
    /// waits for the next exchange with its upstream if it may serve more and there is room
    /// among the idle ones; else it closes. Links that are not open UDP sockets are ignored.
    pub(crate) fn release(&mut self, link: Link) {
        if link.protocol != Protocol::Udp {
            return;
        }
        let Some(socket) = self.open.get_mut(&link.conn) else {
            return;
        };
        if socket.users == 0 {
            // Idle already: released twice.
            return;
        }
        socket.users -= 1;
        if socket.users > 0 {
            return;
        }
        let socket = *socket;
        let idle = self.idle.entry(socket.upstream).or_default();
        if socket.reusable && socket.served < EXCHANGES_PER_SOCKET && idle.len() < IDLE_PER_UPSTREAM
        {
            idle.push(link.conn);
        } else {
            self.close(link.conn);
        }
    }

    /// `link`'s socket is not used again: closed now if no exchange is on it, else when the
    /// last one is over. Links that are not open UDP sockets are ignored.
    pub(crate) fn burn(&mut self, link: Link) {
        if link.protocol != Protocol::Udp {
            return;
        }
        let Some(socket) = self.open.get_mut(&link.conn) else {
            return;
        };
        socket.reusable = false;
        if socket.users == 0 {
            let upstream = socket.upstream;
            if let Some(idle) = self.idle.get_mut(&upstream) {
                idle.retain(|&conn| conn != link.conn);
            }
            self.close(link.conn);
        }
    }

    /// No open socket takes new exchanges any more (a reload renumbered the upstreams): idle
    /// ones close now, the others when their exchanges are over.
    pub(crate) fn retire_all(&mut self) {
        for socket in self.open.values_mut() {
            socket.reusable = false;
        }
        let idle: Vec<u32> = self.idle.drain().flat_map(|(_, conns)| conns).collect();
        for conn in idle {
            self.close(conn);
        }
    }

    fn close(&mut self, conn: u32) {
        if let Some(socket) = self.open.remove(&conn) {
            self.closed.push_back(link(socket.upstream, conn));
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

    /// Open sockets with no exchange on them, kept for the next ones.
    pub(crate) fn idle(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exchange_has_a_socket_to_itself_kept_for_the_next_ones() {
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
        // Over: kept, idle, for the next exchange with its upstream (not another's).
        udp.release(b);
        assert_eq!((udp.open(), udp.idle(), udp.closing()), (3, 1, false));
        assert_ne!(udp.acquire(2, 0).0, b);
        assert_eq!(udp.acquire(0, 5), (b, true));
        assert_eq!(udp.idle(), 0);
        // Releasing twice, or what is not an open socket, changes nothing.
        udp.release(b);
        udp.release(b);
        udp.release(Link {
            protocol: Protocol::Tcp,
            ..a
        });
        assert_eq!((udp.open(), udp.idle(), udp.closing()), (4, 1, false));
    }

    #[test]
    fn a_socket_serves_a_bounded_number_of_exchanges() {
        let mut udp = UdpSockets::default();
        let (first, _) = udp.acquire(0, 0);
        udp.release(first);
        for _ in 1..EXCHANGES_PER_SOCKET {
            let (again, _) = udp.acquire(0, 0);
            assert_eq!(again, first);
            udp.release(again);
        }
        assert_eq!(
            udp.pop_closed(),
            Some(first),
            "closed after its last exchange"
        );
        let (next, _) = udp.acquire(0, 0);
        assert_ne!(next, first);
    }

    #[test]
    fn idle_sockets_are_bounded_per_upstream() {
        let mut udp = UdpSockets::default();
        // Ten sockets, each full: the first eight alone, then shared eight at once.
        let wanted = IDLE_PER_UPSTREAM + 2;
        let exchanges: Vec<Link> = (0..wanted * EXCHANGES_AT_ONCE as usize)
            .map(|n| udp.acquire(0, n as u64).0)
            .collect();
        let mut links: Vec<Link> = exchanges.clone();
        links.sort_unstable_by_key(|l| l.conn);
        links.dedup();
        assert_eq!(links.len(), wanted);
        for &link in &exchanges {
            udp.release(link);
        }
        assert_eq!(udp.idle(), IDLE_PER_UPSTREAM);
        assert_eq!(std::iter::from_fn(|| udp.pop_closed()).count(), 2);
        // `pick` chooses among the idle ones.
        let picked: std::collections::HashSet<Link> = (0..IDLE_PER_UPSTREAM as u64)
            .map(|pick| udp.acquire(0, pick * 7).0)
            .collect();
        assert_eq!(picked.len(), IDLE_PER_UPSTREAM);
    }

    #[test]
    fn under_load_exchanges_share_a_few_sockets() {
        let mut udp = UdpSockets::default();
        let mut links = Vec::new();
        for n in 0..SOCKETS_BEFORE_SHARING {
            let (link, shared) = udp.acquire(0, n as u64);
            assert!(!shared);
            links.push(link);
        }
        // The next ones share those, at most EXCHANGES_AT_ONCE each.
        for n in 0..(EXCHANGES_AT_ONCE as usize - 1) * SOCKETS_BEFORE_SHARING {
            let (link, shared) = udp.acquire(0, n as u64);
            assert!(shared && links.contains(&link));
        }
        assert_eq!(udp.open(), SOCKETS_BEFORE_SHARING);
        // All full: a new one.
        let (fresh, shared) = udp.acquire(0, 0);
        assert!(!shared && !links.contains(&fresh));
        // Another upstream is not shared with.
        assert!(!udp.acquire(1, 0).1);
    }

    #[test]
    fn a_burnt_socket_is_never_used_again() {
        let mut udp = UdpSockets::default();
        let (idle, _) = udp.acquire(0, 0);
        let (busy, _) = udp.acquire(0, 0);
        udp.release(idle);
        // Idle: closed at once.
        udp.burn(idle);
        assert_eq!((udp.pop_closed(), udp.idle()), (Some(idle), 0));
        // In use: closed when its exchange is over, not kept.
        udp.burn(busy);
        assert!(!udp.closing());
        udp.release(busy);
        assert_eq!((udp.pop_closed(), udp.idle()), (Some(busy), 0));
        assert_eq!(udp.open(), 0);
        // Burning what is not open changes nothing.
        udp.burn(busy);
        assert!(!udp.closing());
    }

    #[test]
    fn a_reload_closes_idle_sockets_and_those_in_use_when_done() {
        let mut udp = UdpSockets::default();
        let (idle, _) = udp.acquire(0, 0);
        let (busy, _) = udp.acquire(1, 0);
        udp.release(idle);
        udp.retire_all();
        assert_eq!(udp.pop_closed(), Some(idle));
        udp.release(busy);
        assert_eq!(udp.pop_closed(), Some(busy));
        assert_eq!((udp.open(), udp.idle()), (0, 0));
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
        // A shared socket is over with its last user.
        udp.release(c);
        assert_eq!(udp.idle(), 0);
        udp.release(e);
        assert_eq!(udp.idle(), 1);
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
