//! The epoll driver: UDP listeners served with `recvmmsg`/`sendmmsg` in batches of
//! [`BATCH`], in the same epoll set as the [`Reactor`]'s slow-path sockets.
//!
//! Hot path, allocation-free: `recvmmsg` fills 64 preallocated receive slots; each query is
//! handed to [`Handler::handle_query`] with a preallocated send slot as its output buffer; an
//! immediate reply is queued in the `sendmmsg` batch (the peer address is copied from the
//! receive slot), which is flushed after the receive batch.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::debug;

use super::reactor::{KIND_UDP_LISTENER, Reactor, split_token};
use super::sys::{empty_msghdr, empty_storage, sockaddr_from_storage, sockaddr_to_storage};
use super::{UDP_QUERY_MAX, drain_transmits, run_timers, wait_timeout};
use crate::drain::{Drain, DrainState};
use crate::handler::{Client, Handler, MAX_MESSAGE, Outcome, Protocol};

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 64;
/// Receive batches per readiness event before serving other sockets.
const RECV_ROUNDS: usize = 8;
/// Size of one send slot (a handler output buffer).
const SEND_STRIDE: usize = MAX_MESSAGE + 1;

/// Preallocated `mmsghdr`s with their iovecs, addresses and data buffers.
struct Batch {
    stride: usize,
    bufs: Box<[u8]>,
    addrs: Box<[libc::sockaddr_storage]>,
    namelens: Box<[u32]>,
    lens: Box<[usize]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl Batch {
    fn new(stride: usize) -> Batch {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Batch {
            stride,
            bufs: vec![0u8; stride * BATCH].into_boxed_slice(),
            addrs: vec![empty_storage(); BATCH].into_boxed_slice(),
            namelens: vec![0; BATCH].into_boxed_slice(),
            lens: vec![0; BATCH].into_boxed_slice(),
            iovs: vec![iov; BATCH].into_boxed_slice(),
            hdrs: (0..BATCH)
                .map(|_| libc::mmsghdr {
                    msg_hdr: empty_msghdr(),
                    msg_len: 0,
                })
                .collect(),
        }
    }

    /// Points the first `n` headers at their slots (re-derived before every call, so no
    /// stale pointer outlives a Rust borrow of the buffers).
    fn prepare(&mut self, n: usize) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: base.wrapping_add(i * self.stride).cast(),
                iov_len: self.lens[i],
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.namelens[i];
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }
}

/// The UDP state of the epoll driver.
struct Udp<'a> {
    sockets: &'a [(u16, UdpSocket)],
    recv: Batch,
    send: Batch,
    /// Queued replies in `send`, all for `send_fd`.
    send_len: usize,
    send_fd: RawFd,
}

impl Udp<'_> {
    /// Receives up to [`RECV_ROUNDS`] batches from listener `li` and answers them.
    fn readable<H: Handler>(&mut self, now: Instant, li: usize, handler: &mut H) {
        let Some((listener, socket)) = self.sockets.get(li) else {
            return;
        };
        let (listener, fd) = (*listener, socket.as_raw_fd());
        for _ in 0..RECV_ROUNDS {
            self.recv.lens.fill(UDP_QUERY_MAX);
            self.recv
                .namelens
                .fill(size_of::<libc::sockaddr_storage>() as u32);
            self.recv.prepare(BATCH);
            let hdrs = self.recv.hdrs.as_mut_ptr();
            // SAFETY: `hdrs` holds BATCH initialised mmsghdrs whose name/iov pointers were
            // just set by `prepare` to live, writable slots of `self.recv` (each iov at most
            // `stride` bytes); nothing else touches those buffers during the call.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs,
                    BATCH as _,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        debug!("recvmmsg: {e}");
                        break;
                    }
                }
            }
            let n = rc as usize;
            for i in 0..n {
                let h = &self.recv.hdrs[i];
                let len = (h.msg_len as usize).min(UDP_QUERY_MAX);
                let namelen = h.msg_hdr.msg_namelen;
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    debug!("dropping oversized UDP query");
                    continue;
                }
                let Some(peer) = sockaddr_from_storage(&self.recv.addrs[i], namelen) else {
                    continue;
                };
                if self.send_len == BATCH || (self.send_len > 0 && self.send_fd != fd) {
                    self.flush();
                }
                self.send_fd = fd;
                let slot = self.send_len;
                let client = Client {
                    listener,
                    protocol: Protocol::Udp,
                    peer,
                    conn: 0,
                };
                let query = &self.recv.bufs[i * self.recv.stride..][..len];
                let out = &mut self.send.bufs[slot * SEND_STRIDE..][..SEND_STRIDE];
                if let Outcome::Reply(n) = handler.handle_query(now, client, query, out) {
                    self.send.addrs[slot] = self.recv.addrs[i];
                    self.send.namelens[slot] = namelen;
                    self.send.lens[slot] = n.min(MAX_MESSAGE);
                    self.send_len += 1;
                }
            }
            self.flush();
            if n < BATCH {
                break;
            }
        }
    }

    /// Queues a copy of a later reply (from [`Handler::poll_transmit`]).
    fn queue_copy(&mut self, client: Client, payload: &[u8]) {
        let Some((_, socket)) = self.sockets.iter().find(|(id, _)| *id == client.listener) else {
            debug!("reply for unknown UDP listener {}", client.listener);
            return;
        };
        if payload.len() > MAX_MESSAGE {
            debug!("dropping UDP reply of {} bytes", payload.len());
            return;
        }
        let fd = socket.as_raw_fd();
        if self.send_len == BATCH || (self.send_len > 0 && self.send_fd != fd) {
            self.flush();
        }
        self.send_fd = fd;
        let slot = self.send_len;
        self.send.bufs[slot * SEND_STRIDE..][..payload.len()].copy_from_slice(payload);
        self.send.namelens[slot] = sockaddr_to_storage(&client.peer, &mut self.send.addrs[slot]);
        self.send.lens[slot] = payload.len();
        self.send_len += 1;
    }

    /// Sends the queued replies with `sendmmsg`. A datagram the kernel refuses is dropped
    /// (logged at debug); a full socket buffer drops the rest of the batch.
    fn flush(&mut self) {
        let len = self.send_len;
        self.send_len = 0;
        if len == 0 {
            return;
        }
        self.send.prepare(len);
        let mut done = 0;
        while done < len {
            let hdrs = self.send.hdrs[done..len].as_mut_ptr();
            // SAFETY: `hdrs` points at `len - done` initialised mmsghdrs whose name/iov
            // pointers `prepare` set to live slots of `self.send` holding `lens[i]` bytes
            // (at most the stride); the kernel only reads them (and writes msg_len).
            let rc = unsafe { libc::sendmmsg(self.send_fd, hdrs, (len - done) as _, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        debug!("sendmmsg: {e}; dropping {} replies", len - done);
                        return;
                    }
                    _ => {
                        debug!("sendmmsg: {e}");
                        done += 1;
                    }
                }
            } else {
                done += (rc as usize).max(1);
            }
        }
    }
}

/// Runs the epoll driver until `shutdown` is set, or until the drain lets it leave.
pub(crate) fn run<H: Handler>(
    sockets: &[(u16, UdpSocket)],
    reactor: &mut Reactor<H::Peer>,
    handler: &mut H,
    shutdown: &AtomicBool,
    drain: &Drain,
) -> io::Result<()> {
    for (i, (_, s)) in sockets.iter().enumerate() {
        s.set_nonblocking(true)?;
        reactor.add_udp_listener(s.as_raw_fd(), i as u32)?;
    }
    let mut udp = Udp {
        sockets,
        recv: Batch::new(UDP_QUERY_MAX + 1),
        send: Batch::new(SEND_STRIDE),
        send_len: 0,
        send_fd: -1,
    };
    let mut draining = DrainState::new(drain);
    while !shutdown.load(Ordering::Relaxed) {
        if draining.must_stop_reading() {
            for (_, s) in sockets {
                reactor.remove_fd(s.as_raw_fd());
            }
            reactor.stop_reading(Instant::now(), handler);
            draining.stopped_reading();
        }
        if draining.may_leave(handler.is_idle() && reactor.has_no_clients()) {
            break;
        }
        let timeout = wait_timeout(handler, Instant::now());
        let n = reactor.wait(timeout)?;
        let now = Instant::now();
        for i in 0..n {
            let (tok, ev) = reactor.event(i);
            match split_token(tok) {
                (KIND_UDP_LISTENER, id) => udp.readable(now, id as usize, handler),
                _ => reactor.dispatch(now, tok, ev, handler),
            }
        }
        run_timers(handler, reactor, now);
        drain_transmits(handler, reactor, now, |c, p| udp.queue_copy(c, p));
        udp.flush();
    }
    reactor.close_all(Instant::now(), handler);
    Ok(())
}
