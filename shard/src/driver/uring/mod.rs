//! The io_uring driver: one multishot `RecvMsg` per UDP listener on a provided buffer ring,
//! replies sent as `SendMsg` entries from a fixed pool of slots (many per submit), and the
//! [`Reactor`]'s epoll descriptor watched with a multishot `PollAdd` for the slow path.
//!
//! The ring is built with `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel accepts it (else a
//! plain ring). It must be created and used on the shard's thread.

mod queue;

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, RecvMsgOut};
use io_uring::{IoUring, Probe, cqueue, opcode};
use tracing::debug;

use self::queue::{Queue, Token};
use super::bufring::{BufRing, SendPool};
use super::sys::{empty_msghdr, kernel_version, sockaddr_from_bytes};
use super::{Reactor, UDP_QUERY_MAX, drain_transmits, run_timers, wait_timeout};
use crate::drain::{Drain, DrainState};
use crate::handler::{Client, Handler, Outcome, Protocol};

const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 8192;
/// Provided buffers per UDP listener.
const BUFS_PER_LISTENER: u16 = 512;
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();
/// One provided buffer: `io_uring_recvmsg_out` header, the peer address, the payload.
const RECV_STRIDE: usize = (16 + NAME_LEN + UDP_QUERY_MAX + 1).next_multiple_of(64);
const SEND_SLOTS: usize = 1024;
/// Completions handled per loop iteration.
const CQE_BATCH: usize = 512;

/// One UDP listener and its receive state.
#[derive(Debug)]
struct Listener {
    id: u16,
    fd: RawFd,
    bufs: BufRing,
    /// The template for the multishot receive: only the name and control lengths matter.
    msghdr: Box<libc::msghdr>,
    /// Its multishot receive is queued or in flight.
    armed: bool,
}

/// The io_uring driver's state. Field order matters: the ring is dropped (after the
/// cancellation in `Drop`) before the memory it points into.
pub(crate) struct Uring {
    queue: Queue,
    listeners: Vec<Listener>,
    sends: SendPool,
    poll_armed: bool,
    /// Listeners are (re-)armed; false once a drain stopped reading.
    receiving: bool,
    cqes: Vec<cqueue::Entry>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("listeners", &self.listeners.len())
            .field("backlog", &self.queue.backlog())
            .finish()
    }
}

/// Builds a ring of `entries` submission entries, preferring SINGLE_ISSUER + DEFER_TASKRUN.
fn build_ring(entries: u32) -> io::Result<IoUring> {
    let fancy = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES.max(entries * 2))
        .build(entries);
    match fancy {
        Ok(ring) => Ok(ring),
        Err(e) => {
            debug!("io_uring with SINGLE_ISSUER|DEFER_TASKRUN: {e}; using a plain ring");
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES.max(entries * 2))
                .build(entries)
        }
    }
}

/// Checks that a ring can be built, has the features and opcodes the driver uses, and
/// accepts a buffer ring. `Err` says what is missing.
fn check_ring(ring: &IoUring) -> Result<(), String> {
    if !ring.params().is_feature_ext_arg() {
        return Err("kernel lacks IORING_FEAT_EXT_ARG".into());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("io_uring opcode {name} unsupported"));
        }
    }
    Ok(())
}

fn check_kernel() -> Result<(), String> {
    match kernel_version() {
        Some(v) if v >= (6, 0) => Ok(()),
        Some((a, b)) => Err(format!("kernel {a}.{b} < 6.0 (no multishot recvmsg)")),
        None => Err("cannot read kernel version".into()),
    }
}

/// Whether the io_uring driver can run here; `Err` names why not. Builds and drops a small
/// plain ring (a DEFER_TASKRUN ring's teardown would interrupt the calling thread's blocking
/// socket calls with EINTR).
pub(crate) fn probe() -> Result<(), String> {
    check_kernel()?;
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    check_ring(&ring)?;
    let br = BufRing::new(&ring.submitter(), 1, 4096, 0)
        .map_err(|e| format!("buffer ring registration: {e}"))?;
    let _ = ring.submitter().unregister_buf_ring(br.bgid());
    Ok(())
}

impl Uring {
    /// Builds the ring and registers a buffer ring per UDP listener (made non-blocking).
    /// `Err` says why io_uring cannot be used.
    pub(crate) fn new(sockets: &[(u16, UdpSocket)]) -> Result<Uring, String> {
        Uring::with_sizes(sockets, BUFS_PER_LISTENER, SQ_ENTRIES)
    }

    /// [`Uring::new`] with `bufs` (a power of two) provided buffers per listener and a
    /// submission ring of `sq_entries`.
    fn with_sizes(
        sockets: &[(u16, UdpSocket)],
        bufs: u16,
        sq_entries: u32,
    ) -> Result<Uring, String> {
        check_kernel()?;
        let ring = build_ring(sq_entries).map_err(|e| format!("io_uring_setup: {e}"))?;
        check_ring(&ring)?;
        let mut listeners = Vec::with_capacity(sockets.len());
        for (i, (id, socket)) in sockets.iter().enumerate() {
            socket
                .set_nonblocking(true)
                .map_err(|e| format!("set_nonblocking: {e}"))?;
            let bufs = BufRing::new(&ring.submitter(), bufs, RECV_STRIDE, i as u16)
                .map_err(|e| format!("buffer ring registration: {e}"))?;
            let mut msghdr = Box::new(empty_msghdr());
            msghdr.msg_namelen = NAME_LEN as u32;
            listeners.push(Listener {
                id: *id,
                fd: socket.as_raw_fd(),
                bufs,
                msghdr,
                armed: false,
            });
        }
        let sends = SendPool::new(SEND_SLOTS).map_err(|e| format!("send buffers: {e}"))?;
        Ok(Uring {
            queue: Queue::new(ring),
            listeners,
            sends,
            poll_armed: false,
            receiving: true,
            cqes: Vec::with_capacity(CQE_BATCH),
        })
    }

    /// Runs the driver until `shutdown` is set, or until the drain lets it leave.
    pub(crate) fn run<H: Handler>(
        &mut self,
        reactor: &mut Reactor<H::Peer>,
        handler: &mut H,
        shutdown: &AtomicBool,
        drain: &Drain,
    ) -> io::Result<()> {
        let epfd = reactor.epoll_fd();
        // More completions are waiting / the reactor may have more ready: do not sleep.
        let (mut cq_full, mut reactor_more) = (false, false);
        let mut draining = DrainState::new(drain);
        while !shutdown.load(Ordering::Relaxed) {
            if draining.must_stop_reading() {
                self.stop_receiving();
                reactor.stop_reading(Instant::now(), handler);
                draining.stopped_reading();
            }
            // Completions of receives still in flight are answered before leaving.
            let receiving = self.listeners.iter().any(|l| l.armed);
            if draining.may_leave(!receiving && handler.is_idle() && reactor.has_no_clients()) {
                break;
            }
            self.arm(epfd);
            let timeout = if cq_full || reactor_more {
                Duration::ZERO
            } else {
                wait_timeout(handler, Instant::now())
            };
            self.queue.enter(timeout)?;
            let now = Instant::now();
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            cqes.extend(self.queue.ring.completion().take(CQE_BATCH));
            let mut reactor_ready = false;
            for cqe in &cqes {
                match Token::of(cqe.user_data()) {
                    Some(Token::Receive(listener)) => {
                        self.on_receive(now, usize::from(listener), cqe, handler);
                    }
                    Some(Token::Send(slot)) => {
                        if cqe.result() < 0 {
                            debug!("sendmsg: {}", io::Error::from_raw_os_error(-cqe.result()));
                        }
                        self.sends.release(slot);
                    }
                    Some(Token::ReactorPoll) => {
                        reactor_ready = true;
                        if !cqueue::more(cqe.flags()) {
                            self.poll_armed = false;
                        }
                    }
                    Some(Token::Cancel) | None => {}
                }
            }
            cq_full = cqes.len() == CQE_BATCH;
            self.cqes = cqes;
            for l in &self.listeners {
                l.bufs.publish();
            }
            if reactor_ready || reactor_more {
                reactor_more = reactor.poll_ready(now, handler);
            }
            run_timers(handler, reactor, now);
            let (queue, listeners, sends) = (&mut self.queue, &self.listeners, &mut self.sends);
            drain_transmits(handler, reactor, now, |client, payload| {
                queue_copy(queue, listeners, sends, client, payload);
            });
        }
        reactor.close_all(Instant::now(), handler);
        Ok(())
    }

    /// Cancels every listener's multishot receive and arms none again (a drain): what the
    /// receives deliver until their last completion is still answered.
    fn stop_receiving(&mut self) {
        self.receiving = false;
        for (i, l) in self.listeners.iter().enumerate() {
            if l.armed {
                let e = opcode::AsyncCancel::new(Token::Receive(i as u16).user_data())
                    .build()
                    .user_data(Token::Cancel.user_data());
                // SAFETY: a cancellation points at no memory.
                unsafe { self.queue.push(e) };
            }
        }
    }

    /// Queues the multishot receives (unless draining) and the reactor poll that are not
    /// armed.
    fn arm(&mut self, epfd: RawFd) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if self.receiving && !l.armed {
                let e = opcode::RecvMsgMulti::new(Fd(l.fd), &*l.msghdr, l.bufs.bgid())
                    .build()
                    .user_data(Token::Receive(i as u16).user_data());
                // SAFETY: the receive points at the listener's boxed msghdr and buffer ring,
                // both owned by `self` and alive until the cancellation in `Drop` completes.
                unsafe { self.queue.push(e) };
                l.armed = true;
            }
        }
        if !self.poll_armed {
            let e = opcode::PollAdd::new(Fd(epfd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::ReactorPoll.user_data());
            // SAFETY: a poll points at no memory; the reactor's epoll descriptor outlives
            // the driver's loop.
            unsafe { self.queue.push(e) };
            self.poll_armed = true;
        }
    }

    /// Handles a multishot receive completion: answer the query, give the buffer back.
    fn on_receive<H: Handler>(&mut self, now: Instant, li: usize, cqe: &cqueue::Entry, h: &mut H) {
        let Some(l) = self.listeners.get_mut(li) else {
            return;
        };
        if !cqueue::more(cqe.flags()) {
            l.armed = false;
        }
        let res = cqe.result();
        if res < 0 {
            if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                debug!("recvmsg multishot: {}", io::Error::from_raw_os_error(-res));
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
            return;
        };
        let data = l.bufs.buf(bid, res as usize);
        match RecvMsgOut::parse(data, &l.msghdr) {
            Ok(msg) if msg.is_payload_truncated() => debug!("dropping oversized UDP query"),
            Ok(msg) => {
                if let Some(peer) = sockaddr_from_bytes(msg.name_data()) {
                    let client = Client {
                        listener: l.id,
                        protocol: Protocol::Udp,
                        peer,
                        conn: 0,
                    };
                    match self.sends.alloc() {
                        Some(slot) => {
                            let out = self.sends.buf_mut(slot);
                            let outcome = h.handle_query(now, client, msg.payload_data(), out);
                            if let Outcome::Reply(n) = outcome {
                                let hdr = self.sends.prepare(slot, n, &peer);
                                let e = opcode::SendMsg::new(Fd(l.fd), hdr)
                                    .build()
                                    .user_data(Token::Send(slot).user_data());
                                // SAFETY: the send points at slot `slot` of the send pool,
                                // which is released only when its completion arrives.
                                unsafe { self.queue.push(e) };
                            } else {
                                self.sends.release(slot);
                            }
                        }
                        None => debug!("all send slots busy; dropping a UDP query"),
                    }
                }
            }
            Err(()) => debug!("malformed recvmsg buffer"),
        }
        l.bufs.recycle(bid);
    }
}

/// Queues a copy of a later UDP reply as a `SendMsg`.
fn queue_copy(
    queue: &mut Queue,
    listeners: &[Listener],
    sends: &mut SendPool,
    client: Client,
    payload: &[u8],
) {
    let Some(l) = listeners.iter().find(|l| l.id == client.listener) else {
        debug!("reply for unknown UDP listener {}", client.listener);
        return;
    };
    let Some(slot) = sends.alloc() else {
        debug!("all send slots busy; dropping a UDP reply");
        return;
    };
    let buf = sends.buf_mut(slot);
    if payload.len() > buf.len() {
        sends.release(slot);
        return;
    }
    buf[..payload.len()].copy_from_slice(payload);
    let hdr = sends.prepare(slot, payload.len(), &client.peer);
    let e = opcode::SendMsg::new(Fd(l.fd), hdr)
        .build()
        .user_data(Token::Send(slot).user_data());
    // SAFETY: the send points at slot `slot` of the send pool, released only when its
    // completion arrives.
    unsafe { queue.push(e) };
}

impl Uring {
    /// Handles the completions waiting at teardown: sends free their slots, ended receives
    /// disarm their listener.
    fn reap_at_teardown(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.queue.ring.completion());
        for cqe in &cqes {
            match Token::of(cqe.user_data()) {
                Some(Token::Send(slot)) => self.sends.release(slot),
                Some(Token::Receive(listener)) if !cqueue::more(cqe.flags()) => {
                    if let Some(l) = self.listeners.get_mut(usize::from(listener)) {
                        l.armed = false;
                    }
                }
                _ => {}
            }
        }
        self.cqes = cqes;
    }
}

impl Drop for Uring {
    /// Submits what waits in the backlog (replies queued before the stop still go out),
    /// cancels everything in flight and waits (at most ~200 ms each) for the completions, so
    /// the kernel no longer references the buffers, then unregisters the buffer rings.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        while self.queue.backlog() > 0 && Instant::now() < deadline {
            if self.queue.enter(Duration::ZERO).is_err() {
                break;
            }
            self.reap_at_teardown();
        }
        // What could not be submitted never reached the kernel.
        for entry in self.queue.take_backlog() {
            match Token::of(entry.get_user_data()) {
                Some(Token::Send(slot)) => self.sends.release(slot),
                Some(Token::Receive(listener)) => {
                    if let Some(l) = self.listeners.get_mut(usize::from(listener)) {
                        l.armed = false;
                    }
                }
                _ => {}
            }
        }
        let e = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(Token::Cancel.user_data());
        // SAFETY: a cancellation points at no memory.
        unsafe { self.queue.push(e) };
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            let busy = self.sends.in_flight() > 0 || self.listeners.iter().any(|l| l.armed);
            if !busy || Instant::now() >= deadline {
                break;
            }
            if self.queue.enter(Duration::from_millis(10)).is_err() {
                break;
            }
            self.reap_at_teardown();
        }
        for l in &self.listeners {
            let _ = self
                .queue
                .ring
                .submitter()
                .unregister_buf_ring(l.bufs.bgid());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Control;
    use crate::handler::{Link, LinkError, Transmit};
    use std::sync::Arc;

    /// Echoes every query (QR set) and stops the driver after `stop_after` of them.
    struct Echo {
        seen: usize,
        stop_after: usize,
        shutdown: Arc<AtomicBool>,
    }

    impl Handler for Echo {
        type Peer = ();
        fn handle_query(&mut self, _: Instant, _: Client, q: &[u8], out: &mut [u8]) -> Outcome {
            out[..q.len()].copy_from_slice(q);
            out[2] |= 0x80;
            self.seen += 1;
            if self.seen >= self.stop_after {
                self.shutdown.store(true, Ordering::Relaxed);
            }
            Outcome::Reply(q.len())
        }
        fn handle_response(&mut self, _: Instant, _: Link, _: &[u8]) {}
        fn handle_link_closed(&mut self, _: Instant, _: Link, _: LinkError) {}
        fn handle_control(&mut self, _: Instant, _: Control) {}
        fn handle_peer(&mut self, _: Instant, _: ()) {}
        fn handle_client_closed(&mut self, _: Instant, _: Client) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_peer(&mut self) -> Option<(usize, ())> {
            None
        }
    }

    /// Sends `per_listener` numbered 12-byte queries to each of `listeners` fresh UDP
    /// sockets (from a client socket per listener, so that no client's receive buffer
    /// overflows) before the driver starts, runs the driver (with `bufs` provided buffers per
    /// listener, `sq_entries` submission entries, and its first `failing` submits failing)
    /// and checks that every query is answered.
    fn serve_everything(
        listeners: usize,
        per_listener: u16,
        bufs: u16,
        sq_entries: u32,
        failing: usize,
    ) {
        // Probed on a helper thread: a ring torn down on this one would interrupt its
        // blocking receives below (EINTR).
        if let Err(why) = crate::driver::uring_available() {
            println!("skipping: {why}");
            return;
        }
        let servers: Vec<UdpSocket> = (0..listeners)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let clients: Vec<UdpSocket> = servers
            .iter()
            .map(|server| {
                let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
                client
                    .connect(server.local_addr().expect("addr"))
                    .expect("connect");
                client
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                client
            })
            .collect();
        for (index, client) in clients.iter().enumerate() {
            for n in 0..per_listener {
                let id = index as u16 * per_listener + n;
                let mut q = [0u8; 12];
                q[..2].copy_from_slice(&id.to_be_bytes());
                client.send(&q).expect("send");
            }
        }
        let total = listeners * usize::from(per_listener);
        let shutdown = Arc::new(AtomicBool::new(false));
        let sd = shutdown.clone();
        let t = std::thread::spawn(move || {
            let sockets: Vec<(u16, UdpSocket)> = servers
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i as u16, s))
                .collect();
            let mut ring = Uring::with_sizes(&sockets, bufs, sq_entries).expect("ring");
            ring.queue.fail_submits = failing;
            let mut reactor =
                Reactor::new(Vec::new(), &crate::config::Limits::default()).expect("reactor");
            let mut h = Echo {
                seen: 0,
                stop_after: total,
                shutdown: sd.clone(),
            };
            ring.run(&mut reactor, &mut h, &sd, &crate::Drain::new(1))
                .expect("run");
            h.seen
        });
        let mut got = vec![false; total];
        for (index, client) in clients.iter().enumerate() {
            for _ in 0..per_listener {
                let mut buf = [0u8; 64];
                let len = match client.recv(&mut buf) {
                    Ok(len) => len,
                    Err(e) => {
                        shutdown.store(true, Ordering::Relaxed);
                        let seen = t.join().expect("driver thread");
                        let answered = got.iter().filter(|&&g| g).count();
                        panic!(
                            "listener {index}: {e}; {answered} of {total} answered, \
                             {seen} seen by the handler"
                        );
                    }
                };
                assert_eq!(len, 12);
                got[usize::from(u16::from_be_bytes([buf[0], buf[1]]))] = true;
            }
        }
        shutdown.store(true, Ordering::Relaxed);
        assert_eq!(t.join().expect("driver thread"), total);
        assert!(got.iter().all(|&g| g));
    }

    /// With 4 provided buffers and 100 queued datagrams, the multishot receive runs out of
    /// buffers (ENOBUFS, no MORE flag) again and again; every re-arm must pick up the rest.
    #[test]
    fn enobufs_rearm_serves_everything() {
        serve_everything(1, 100, 4, SQ_ENTRIES, 0);
    }

    /// A submission ring of 2 entries for 8 listeners that keep running out of buffers, and
    /// submits that fail 300 times at first (the ring stays full): every receive, re-arm
    /// and reply waits its turn in the backlog, and no listener goes deaf.
    #[test]
    fn a_full_submission_ring_leaves_no_listener_deaf() {
        serve_everything(8, 40, 4, 2, 300);
    }
}
