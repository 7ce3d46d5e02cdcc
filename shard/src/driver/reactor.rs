//! The slow path shared by both drivers: an epoll set holding the TCP listeners, client TCP
//! connections, upstream UDP sockets (one per exchange) and upstream TCP connections, and the code that serves
//! them for a [`Handler`]. The epoll driver adds its UDP listeners to the same set; the
//! io_uring driver watches [`Reactor::epoll_fd`] with a multishot poll and calls
//! [`Reactor::poll_ready`] when it fires. The shard's peer wake-up eventfd (see
//! [`super::peers`]) is in the set too, so a message from another shard wakes either driver.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use tracing::debug;

use super::peers::PeerLinks;
use super::sys::{Epoll, connect_nonblocking};
use crate::config::Limits;
use crate::handler::{Client, Handler, Link, LinkError, MAX_MESSAGE, Outcome, Protocol, Transmit};
use crate::stats::{Bound, BoundLog, ShardStats};
use crate::tcp::{Admission, ClientTable, FrameDecoder, OutBuf, READ_PAUSE};

/// Token kind (high 32 bits of an epoll token): a UDP listener of the epoll driver.
pub(crate) const KIND_UDP_LISTENER: u64 = 1;
const KIND_TCP_LISTENER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const KIND_UP_UDP: u64 = 4;
const KIND_UP_TCP: u64 = 5;
const KIND_PEER: u64 = 6;

/// Builds an epoll token from a kind and an id.
pub(crate) fn token(kind: u64, id: u32) -> u64 {
    (kind << 32) | u64::from(id)
}

/// Splits an epoll token into kind and id.
pub(crate) fn split_token(token: u64) -> (u64, u32) {
    (token >> 32, token as u32)
}

const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const WRITABLE: u32 = libc::EPOLLOUT as u32;
const BROKEN: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
/// A client that lets this much unread reply data pile up is disconnected.
const MAX_CLIENT_BACKLOG: usize = 1 << 20;
/// Reads per readiness event before yielding to other sockets (level-triggered: they return).
const READ_BUDGET: usize = 32;
/// Peer messages handed to the handler per wake-up before serving other sockets; the rest
/// wait for the next turn (the shard wakes itself).
pub(crate) const PEER_BUDGET: usize = 1024;
/// How often idle client connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// One upstream TCP connection.
#[derive(Debug)]
struct UpstreamConn {
    stream: TcpStream,
    link: Link,
    connected: bool,
    want_write: bool,
    decoder: FrameDecoder,
    out: OutBuf,
}

/// One upstream UDP socket (bound to a port the kernel picks, connected to `addr`).
#[derive(Debug)]
struct UpstreamUdp {
    socket: UdpSocket,
    addr: SocketAddr,
    link: Link,
}

/// The shared slow path: see the module documentation. `M` is the shard group's peer
/// message type.
#[derive(Debug)]
pub(crate) struct Reactor<M> {
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    listeners: Vec<(u16, TcpListener)>,
    clients: ClientTable<TcpStream>,
    /// Upstream UDP sockets by the `conn` of their link: one per exchange, opened by the
    /// first query that names the link, closed when the engine says so.
    up_udp: HashMap<u32, UpstreamUdp>,
    up_tcp: HashMap<u32, UpstreamConn>,
    scratch: Box<[u8]>,
    out: Box<[u8]>,
    expired: Vec<u32>,
    next_sweep: Instant,
    peers: Option<PeerLinks<M>>,
    /// Upstream connections with queries queued since the last [`Reactor::flush_writes`].
    dirty_upstreams: Vec<u32>,
    /// Client connections with replies queued since the last [`Reactor::flush_writes`].
    dirty_clients: Vec<u32>,
    /// Where reaching a bound is counted and logged.
    bounds: Bounds,
}

/// The counters (the shard's, or the reactor's own when the shard has none) and the log
/// limit of the reactor's bounds.
#[derive(Debug)]
struct Bounds {
    stats: Arc<ShardStats>,
    log: BoundLog,
}

impl Bounds {
    fn reached(&mut self, now: Instant, bound: Bound, limit: usize) {
        self.log.reached(now, &self.stats.bounds, bound, limit);
    }
}

/// What flushing a client connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Keep it.
    Open,
    /// A write failed: close it.
    Failed,
    /// It left more than [`MAX_CLIENT_BACKLOG`] unread: close it.
    Backlogged,
}

impl<M> Reactor<M> {
    /// Creates the epoll set and registers the TCP listeners (made non-blocking).
    pub(crate) fn new(
        listeners: Vec<(u16, TcpListener)>,
        limits: &Limits,
    ) -> io::Result<Reactor<M>> {
        let epoll = Epoll::new()?;
        for (i, (_, l)) in listeners.iter().enumerate() {
            l.set_nonblocking(true)?;
            epoll.add(l.as_raw_fd(), READABLE, token(KIND_TCP_LISTENER, i as u32))?;
        }
        Ok(Reactor {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            listeners,
            clients: ClientTable::new(
                limits.client_tcp_max,
                limits.client_tcp_idle,
                limits.query_timeout,
            ),
            up_udp: HashMap::new(),
            up_tcp: HashMap::new(),
            scratch: vec![0u8; MAX_MESSAGE + 1].into_boxed_slice(),
            out: vec![0u8; MAX_MESSAGE].into_boxed_slice(),
            expired: Vec::new(),
            next_sweep: Instant::now() + SWEEP_EVERY,
            peers: None,
            dirty_upstreams: Vec::new(),
            dirty_clients: Vec::new(),
            bounds: Bounds {
                stats: Arc::default(),
                log: BoundLog::new(0),
            },
        })
    }

    /// Counts the bounds this reactor reaches into `stats` and names shard `shard` in
    /// their log lines.
    pub(crate) fn count_bounds(&mut self, shard: usize, stats: Arc<ShardStats>) {
        self.bounds = Bounds {
            stats,
            log: BoundLog::new(shard),
        };
    }

    /// Connects the shard to its group: registers the wake-up eventfd of `peers` in the
    /// epoll set, so messages from the process reach [`Handler::handle_control`] and
    /// messages from other shards [`Handler::handle_peer`], and sends what
    /// [`Handler::poll_peer`] returns through it. Without this, peer messages are dropped.
    pub(crate) fn attach_peers(&mut self, peers: PeerLinks<M>) -> io::Result<()> {
        if let Some(old) = self.peers.take() {
            self.epoll.delete(old.wake_fd())?;
        }
        self.epoll
            .add(peers.wake_fd(), libc::EPOLLIN as u32, token(KIND_PEER, 0))?;
        // Wake-ups sent before now are still counted (level-triggered); this covers messages
        // left behind by a reactor that consumed their wake-up but not all of them.
        if peers.queued() > 0 {
            peers.wake_self();
        }
        self.peers = Some(peers);
        Ok(())
    }

    /// The TCP listeners, for logging.
    pub(crate) fn listeners(&self) -> &[(u16, TcpListener)] {
        &self.listeners
    }

    /// The epoll descriptor (for the io_uring driver's poll).
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Registers a UDP listener of the epoll driver under `token(KIND_UDP_LISTENER, id)`.
    pub(crate) fn add_udp_listener(&self, fd: RawFd, id: u32) -> io::Result<()> {
        self.epoll
            .add(fd, libc::EPOLLIN as u32, token(KIND_UDP_LISTENER, id))
    }

    /// Waits up to `timeout` for events; returns how many [`Reactor::event`] can read.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        self.epoll.wait(&mut self.events, timeout)
    }

    /// The `i`th event of the last [`Reactor::wait`]: (token, event mask).
    pub(crate) fn event(&self, i: usize) -> (u64, u32) {
        let ev = self.events[i];
        (ev.u64, ev.events)
    }

    /// Polls the epoll set without blocking and serves everything ready. Returns `true` if
    /// anything was ready: the caller must poll again (without sleeping) until it returns
    /// `false`, because a socket left readable after its read budget does not wake the epoll
    /// descriptor's own pollers again.
    pub(crate) fn poll_ready<H: Handler<Peer = M>>(
        &mut self,
        now: Instant,
        handler: &mut H,
    ) -> bool {
        let n = match self.wait(Duration::ZERO) {
            Ok(n) => n,
            Err(e) => {
                debug!("epoll_wait: {e}");
                return false;
            }
        };
        for i in 0..n {
            let (tok, ev) = self.event(i);
            self.dispatch(now, tok, ev, handler);
        }
        n > 0
    }

    /// Serves one epoll event for a socket the reactor owns.
    pub(crate) fn dispatch<H: Handler<Peer = M>>(
        &mut self,
        now: Instant,
        tok: u64,
        ev: u32,
        handler: &mut H,
    ) {
        let (kind, id) = split_token(tok);
        match kind {
            KIND_TCP_LISTENER => self.accept(now, id as usize, handler),
            KIND_CLIENT => self.client_event(now, id, ev, handler),
            KIND_UP_UDP => self.upstream_udp_readable(now, id, handler),
            KIND_UP_TCP => self.upstream_tcp_event(now, id, ev, handler),
            KIND_PEER => self.peer_readable(now, handler),
            _ => debug!("unexpected epoll token {tok:#x}"),
        }
    }

    /// Performs a transmit that is not a UDP client reply (those belong to the driver). TCP
    /// data is queued: [`Reactor::flush_writes`] writes it.
    pub(crate) fn perform<H: Handler>(&mut self, now: Instant, t: Transmit, handler: &mut H) {
        match t {
            Transmit::Reply { client, payload } => self.reply_tcp(now, client, &payload),
            Transmit::Query {
                link,
                addr,
                payload,
            } => match link.protocol {
                Protocol::Udp => self.query_udp(now, link, addr, &payload, handler),
                Protocol::Tcp => self.query_tcp(now, link, addr, &payload, handler),
            },
            Transmit::Close { link } => match link.protocol {
                Protocol::Tcp => {
                    self.up_tcp.remove(&link.conn);
                }
                Protocol::Udp => self.close_udp(link.conn),
            },
        }
    }

    /// Queues a message for shard `shard`; its wake-up goes out with
    /// [`Reactor::flush_peer_wakes`].
    pub(crate) fn queue_peer(&mut self, shard: usize, message: M) {
        match &mut self.peers {
            Some(peers) => {
                peers.queue(shard, message);
            }
            None => debug!("peer message for shard {shard} but no peer links; dropped"),
        }
    }

    /// Writes out what [`Reactor::perform`] queued on TCP connections since the last call: one
    /// write per connection for all its queries (or replies) of the round, not one each.
    /// Returns `true` if a connection failed and was closed, which may have given the handler
    /// more to transmit (retries on other connections): the caller drains it and calls again.
    pub(crate) fn flush_writes<H: Handler>(&mut self, now: Instant, handler: &mut H) -> bool {
        let mut closed = false;
        let mut ids = std::mem::take(&mut self.dirty_upstreams);
        ids.sort_unstable();
        ids.dedup();
        for id in ids.drain(..) {
            let Some(conn) = self.up_tcp.get_mut(&id) else {
                continue;
            };
            if !conn.connected {
                continue;
            }
            if let Err(error) = flush_upstream(&self.epoll, conn) {
                self.close_link(now, id, LinkError::write(error.kind()), handler);
                closed = true;
            }
        }
        self.dirty_upstreams = ids;
        let mut ids = std::mem::take(&mut self.dirty_clients);
        ids.sort_unstable();
        ids.dedup();
        for t in ids.drain(..) {
            let Some(conn) = self.clients.get_mut(t) else {
                continue;
            };
            let flushed = flush_client(&self.epoll, t, conn, now);
            if flushed == Flushed::Backlogged {
                self.bounds
                    .reached(now, Bound::ClientTcpBacklog, MAX_CLIENT_BACKLOG);
            }
            if flushed != Flushed::Open || (conn.read_closed && conn.is_quiet()) {
                self.close_client(now, t, handler);
                closed = true;
            }
        }
        self.dirty_clients = ids;
        closed
    }

    /// Writes the eventfd of each shard that peer messages were queued to since the
    /// last call, once per shard. The drivers call it after every round of transmits.
    pub(crate) fn flush_peer_wakes(&mut self) {
        if let Some(peers) = &mut self.peers {
            peers.flush_wakes();
        }
    }

    /// The peer eventfd is readable: clear it, hand every message from the process to the
    /// handler, then up to [`PEER_BUDGET`] messages from the inbox. If more remain, wake this
    /// shard again so they are served on the next turn, after the other ready sockets.
    fn peer_readable<H: Handler<Peer = M>>(&mut self, now: Instant, handler: &mut H) {
        let Some(peers) = &self.peers else { return };
        peers.clear_wake();
        while let Some(control) = peers.try_recv_control() {
            handler.handle_control(now, control);
        }
        for _ in 0..PEER_BUDGET {
            match peers.try_recv() {
                Some(message) => handler.handle_peer(now, message),
                None => return,
            }
        }
        if peers.queued() > 0 {
            peers.wake_self();
        }
    }

    /// Closes idle client connections (at most every 50 ms).
    pub(crate) fn sweep<H: Handler>(&mut self, now: Instant, handler: &mut H) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        let mut expired = std::mem::take(&mut self.expired);
        self.clients.expired(now, &mut expired);
        for t in expired.drain(..) {
            if self.clients.stalled(t, now) {
                debug!("client {t} left its replies unread for the idle time; closing");
                self.bounds
                    .reached(now, Bound::ClientTcpBacklog, READ_PAUSE);
            } else {
                debug!("closing idle client connection {t}");
            }
            self.close_client(now, t, handler);
        }
        self.expired = expired;
    }

    /// Stops reading for a drain (see [`crate::Drain`]): the TCP listeners leave the epoll
    /// set, and every client connection is read no more: it is closed once its owed replies
    /// are written (at once if it owes none).
    pub(crate) fn stop_reading<H: Handler>(&mut self, now: Instant, handler: &mut H) {
        for (_, listener) in &self.listeners {
            if let Err(e) = self.epoll.delete(listener.as_raw_fd()) {
                debug!("epoll delete listener: {e}");
            }
        }
        for t in self.clients.tokens() {
            let Some(conn) = self.clients.get_mut(t) else {
                continue;
            };
            conn.read_closed = true;
            if conn.is_quiet() {
                self.close_client(now, t, handler);
            } else {
                let ev = if conn.want_write { WRITABLE } else { 0 };
                let _ = self
                    .epoll
                    .modify(conn.io.as_raw_fd(), ev, token(KIND_CLIENT, t));
            }
        }
    }

    /// Takes a descriptor out of the epoll set (a UDP listener of the epoll driver, at a
    /// drain).
    pub(crate) fn remove_fd(&self, fd: RawFd) {
        if let Err(e) = self.epoll.delete(fd) {
            debug!("epoll delete: {e}");
        }
    }

    /// Whether no client connection is left (a draining shard waits for this).
    pub(crate) fn has_no_clients(&self) -> bool {
        self.clients.len() == 0
    }

    /// Closes every client connection, telling the handler (for shutdown).
    pub(crate) fn close_all<H: Handler>(&mut self, now: Instant, handler: &mut H) {
        let conns: Vec<Client> = self.clients.drain().map(|c| c.client).collect();
        for c in conns {
            handler.handle_client_closed(now, c);
        }
        self.up_tcp.clear();
    }

    fn accept<H: Handler>(&mut self, now: Instant, idx: usize, handler: &mut H) {
        for _ in 0..READ_BUDGET {
            let Some((listener_id, listener)) = self.listeners.get(idx) else {
                return;
            };
            let listener_id = *listener_id;
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("accept: {e}");
                    return;
                }
            };
            match self.clients.admit() {
                Admission::Room => {}
                Admission::Evict(t) => {
                    debug!("client TCP cap reached: closing longest-idle connection {t}");
                    self.bounds
                        .reached(now, Bound::ClientTcpConnections, self.clients.max());
                    self.close_client(now, t, handler);
                }
                Admission::Full => {
                    debug!("client TCP cap reached and all busy: refusing {peer}");
                    self.bounds
                        .reached(now, Bound::ClientTcpConnections, self.clients.max());
                    continue;
                }
            }
            if let Err(e) = stream.set_nonblocking(true) {
                debug!("set_nonblocking: {e}");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let fd = stream.as_raw_fd();
            let t = self.clients.insert(now, stream, listener_id, peer);
            if let Err(e) = self.epoll.add(fd, READABLE, token(KIND_CLIENT, t)) {
                debug!("epoll add client: {e}");
                self.clients.remove(t);
            }
        }
    }

    fn client_event<H: Handler>(&mut self, now: Instant, t: u32, ev: u32, handler: &mut H) {
        let Some(conn) = self.clients.get_mut(t) else {
            return;
        };
        let mut close = false;
        if ev & (READABLE | BROKEN) != 0 && conn.wants_read() {
            for _ in 0..READ_BUDGET {
                if conn.out.len() >= READ_PAUSE {
                    break; // the rest waits until the client reads (see `flush_client`)
                }
                match (&conn.io).read(&mut self.scratch) {
                    Ok(0) => {
                        conn.read_closed = true;
                        break;
                    }
                    Ok(n) => {
                        // Only a whole query is activity: a client that sends a byte now
                        // and then (slowloris) is closed at the idle timeout all the same.
                        conn.decoder.push(&self.scratch[..n]);
                        let client = conn.client;
                        while let Some(msg) = conn.decoder.next_message() {
                            conn.last_active = now;
                            match handler.handle_query(now, client, msg, &mut self.out) {
                                Outcome::Reply(len) => {
                                    let len = len.min(self.out.len());
                                    conn.out.push_frame(&self.out[..len]);
                                }
                                Outcome::Pending => conn.pending += 1,
                                Outcome::Drop => {}
                            }
                        }
                        if n < self.scratch.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        debug!("client {t} read: {e}");
                        close = true;
                        break;
                    }
                }
            }
        }
        if ev & BROKEN != 0 && conn.read_closed {
            close = true;
        }
        if !close {
            let flushed = flush_client(&self.epoll, t, conn, now);
            if flushed == Flushed::Backlogged {
                self.bounds
                    .reached(now, Bound::ClientTcpBacklog, MAX_CLIENT_BACKLOG);
            }
            close = flushed != Flushed::Open;
        }
        if close || (conn.read_closed && conn.is_quiet()) {
            self.close_client(now, t, handler);
        } else if conn.read_closed && !conn.want_write {
            // Stop level-triggered EOF reports while replies are still owed.
            let _ = self
                .epoll
                .modify(conn.io.as_raw_fd(), 0, token(KIND_CLIENT, t));
        }
    }

    fn reply_tcp(&mut self, now: Instant, client: Client, msg: &[u8]) {
        let Some(conn) = self.clients.get_mut(client.conn) else {
            debug!("reply for closed client connection {}", client.conn);
            return;
        };
        if !conn.queue_reply(now, msg, true) {
            debug!("reply of {} bytes too long for TCP", msg.len());
        }
        // Written by `flush_writes`, with the connection's other replies of this round.
        self.dirty_clients.push(client.conn);
    }

    fn close_client<H: Handler>(&mut self, now: Instant, t: u32, handler: &mut H) {
        if let Some(conn) = self.clients.remove(t) {
            handler.handle_client_closed(now, conn.client);
        }
    }

    fn query_udp<H: Handler>(
        &mut self,
        now: Instant,
        link: Link,
        addr: SocketAddr,
        payload: &[u8],
        handler: &mut H,
    ) {
        if self
            .up_udp
            .get(&link.conn)
            .is_some_and(|u| u.addr != addr || u.link != link)
        {
            // Not expected (the engine closes a link before its number returns).
            self.close_udp(link.conn);
        }
        if !self.up_udp.contains_key(&link.conn) {
            match open_upstream_udp(&self.epoll, addr, link) {
                Ok(u) => {
                    self.up_udp.insert(link.conn, u);
                }
                Err(e) => {
                    debug!("upstream {addr} udp socket: {e}");
                    handler.handle_link_closed(now, link, LinkError::dial(e.kind()));
                    return;
                }
            }
        }
        let Some(u) = self.up_udp.get(&link.conn) else {
            return;
        };
        match u.socket.send(payload) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => debug!("upstream {addr}: {e}"),
            Err(e) => {
                debug!("upstream {addr} udp send: {e}");
                self.close_udp(link.conn);
                handler.handle_link_closed(now, link, LinkError::write(e.kind()));
            }
        }
    }

    /// Closes the upstream UDP socket of link number `conn`, if open.
    fn close_udp(&mut self, conn: u32) {
        if let Some(u) = self.up_udp.remove(&conn)
            && let Err(e) = self.epoll.delete(u.socket.as_raw_fd())
        {
            debug!("epoll delete upstream udp socket: {e}");
        }
    }

    fn upstream_udp_readable<H: Handler>(&mut self, now: Instant, conn: u32, handler: &mut H) {
        for _ in 0..READ_BUDGET {
            // Looked up each time: the handler may have closed the socket (a Close is
            // performed later, but a failed send closes at once).
            let Some(u) = self.up_udp.get(&conn) else {
                return;
            };
            let link = u.link;
            match u.socket.recv(&mut self.scratch) {
                Ok(n) => handler.handle_response(now, link, &self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("upstream {} udp: {e}", u.addr);
                    self.close_udp(conn);
                    handler.handle_link_closed(now, link, LinkError::read(e.kind()));
                    return;
                }
            }
        }
    }

    fn query_tcp<H: Handler>(
        &mut self,
        now: Instant,
        link: Link,
        addr: SocketAddr,
        payload: &[u8],
        handler: &mut H,
    ) {
        if !self.up_tcp.contains_key(&link.conn) {
            let opened = connect_nonblocking(&addr).and_then(|stream| {
                let ev = READABLE | WRITABLE;
                self.epoll
                    .add(stream.as_raw_fd(), ev, token(KIND_UP_TCP, link.conn))?;
                Ok(stream)
            });
            match opened {
                Ok(stream) => {
                    let conn = UpstreamConn {
                        stream,
                        link,
                        connected: false,
                        want_write: true,
                        decoder: FrameDecoder::new(),
                        out: OutBuf::default(),
                    };
                    self.up_tcp.insert(link.conn, conn);
                }
                Err(e) => {
                    debug!("upstream {addr} tcp connect: {e}");
                    handler.handle_link_closed(now, link, LinkError::dial(e.kind()));
                    return;
                }
            }
        }
        let Some(conn) = self.up_tcp.get_mut(&link.conn) else {
            return;
        };
        if !conn.out.push_frame(payload) {
            debug!("upstream query of {} bytes too long for TCP", payload.len());
        }
        // Written by `flush_writes`, with the connection's other queries of this round (or,
        // while it connects, when it becomes writable).
        self.dirty_upstreams.push(link.conn);
    }

    fn upstream_tcp_event<H: Handler>(&mut self, now: Instant, id: u32, ev: u32, h: &mut H) {
        let Some(conn) = self.up_tcp.get_mut(&id) else {
            return;
        };
        let mut broken = None;
        if !conn.connected {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    debug!("upstream tcp connect: {e}");
                    broken = Some(LinkError::dial(e.kind()));
                }
                Ok(None) if ev & (WRITABLE | BROKEN) != 0 => conn.connected = true,
                Ok(None) => {}
            }
        }
        if broken.is_none() && conn.connected {
            broken = flush_upstream(&self.epoll, conn)
                .err()
                .map(|e| LinkError::write(e.kind()));
        }
        if broken.is_none() && conn.connected && ev & (READABLE | BROKEN) != 0 {
            for _ in 0..READ_BUDGET {
                match (&conn.stream).read(&mut self.scratch) {
                    Ok(0) => {
                        broken = Some(LinkError::read(io::ErrorKind::UnexpectedEof));
                        break;
                    }
                    Ok(n) => {
                        conn.decoder.push(&self.scratch[..n]);
                        while let Some(msg) = conn.decoder.next_message() {
                            h.handle_response(now, conn.link, msg);
                        }
                        if n < self.scratch.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!("upstream tcp read: {e}");
                        broken = Some(LinkError::read(e.kind()));
                        break;
                    }
                }
            }
        }
        if let Some(error) = broken {
            self.close_link(now, id, error, h);
        }
    }

    fn close_link<H: Handler>(&mut self, now: Instant, id: u32, error: LinkError, handler: &mut H) {
        if let Some(conn) = self.up_tcp.remove(&id) {
            handler.handle_link_closed(now, conn.link, error);
        }
    }
}

/// A UDP socket for `link`: bound to port 0, so the kernel picks a random free port of the
/// ephemeral range (Linux draws the starting point at random for every bind), and connected
/// to `addr`, so the kernel delivers only datagrams from the upstream's address and port.
fn open_upstream_udp(epoll: &Epoll, addr: SocketAddr, link: Link) -> io::Result<UpstreamUdp> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    socket.set_nonblocking(true)?;
    epoll.add(
        socket.as_raw_fd(),
        libc::EPOLLIN as u32,
        token(KIND_UP_UDP, link.conn),
    )?;
    Ok(UpstreamUdp { socket, addr, link })
}

/// Writes what it can of `out` to `stream`. Returns `Err` if the connection is broken.
fn write_out(stream: &TcpStream, out: &mut OutBuf) -> io::Result<()> {
    while !out.is_empty() {
        match (&*stream).write(out.pending()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Flushes a client connection and updates its epoll interest; says whether it must be
/// closed, and why.
fn flush_client(
    epoll: &Epoll,
    t: u32,
    conn: &mut crate::tcp::ClientConn<TcpStream>,
    now: Instant,
) -> Flushed {
    let before = conn.out.len();
    if let Err(e) = write_out(&conn.io, &mut conn.out) {
        debug!("client {t} write: {e}");
        return Flushed::Failed;
    }
    conn.wrote(now, before);
    if conn.out.len() > MAX_CLIENT_BACKLOG {
        debug!("client {t} not reading its replies; closing");
        return Flushed::Backlogged;
    }
    // Reading stops while too many replies wait (`READ_PAUSE`), and resumes once written.
    let want = !conn.out.is_empty();
    let paused = !conn.read_closed && !conn.wants_read();
    if want != conn.want_write || paused != conn.read_paused {
        conn.want_write = want;
        conn.read_paused = paused;
        let mut ev = if conn.wants_read() { READABLE } else { 0 };
        if want {
            ev |= WRITABLE;
        }
        if let Err(e) = epoll.modify(conn.io.as_raw_fd(), ev, token(KIND_CLIENT, t)) {
            debug!("epoll modify client {t}: {e}");
            return Flushed::Failed;
        }
    }
    Flushed::Open
}

/// Flushes an upstream connection and updates its epoll interest.
fn flush_upstream(epoll: &Epoll, conn: &mut UpstreamConn) -> io::Result<()> {
    write_out(&conn.stream, &mut conn.out)?;
    let want = !conn.out.is_empty();
    if want != conn.want_write {
        conn.want_write = want;
        let ev = if want { READABLE | WRITABLE } else { READABLE };
        epoll.modify(
            conn.stream.as_raw_fd(),
            ev,
            token(KIND_UP_TCP, conn.link.conn),
        )?;
    }
    Ok(())
}
