//! I/O drivers: they move bytes between sockets and a [`Handler`] and decide nothing.
//!
//! - [`epoll`]: epoll + `recvmmsg`/`sendmmsg` in batches of 64 on the UDP listeners.
//! - [`uring`]: io_uring with multishot `RecvMsg` on a provided buffer ring per UDP listener
//!   and many `SendMsg` entries per submit.
//! - [`reactor`]: the slow path both share (TCP listeners, client TCP connections, upstream
//!   UDP sockets and TCP connections), an epoll set. The epoll driver puts its UDP listeners
//!   into the same set; the io_uring driver watches the set's descriptor with a multishot
//!   poll on the ring.
//! - [`fdpass`]: open descriptors passed to another process (`SCM_RIGHTS`), for hand-offs.
//! - [`peers`]: the peer mesh that carries the handler's peer messages between shard threads
//!   and [`crate::Control`]s from the process (channels and a wake-up eventfd per shard, the
//!   eventfd in the reactor's set).
//!
//! All of the crate's `unsafe` code lives in this module tree.

#[allow(unsafe_code)]
mod bufring;
#[allow(unsafe_code)]
pub(crate) mod epoll;
#[allow(unsafe_code)]
pub mod fdpass;
mod peers;
mod reactor;
#[allow(unsafe_code)]
mod sys;
#[allow(unsafe_code)]
pub(crate) mod uring;

use std::time::{Duration, Instant};

use crate::handler::{Client, Handler, Protocol, Transmit};
pub use peers::{PeerLinks, ShardControl, peer_mesh};
pub(crate) use reactor::Reactor;

/// The longest a driver sleeps before looking at the shutdown flag and its timers again.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// Largest UDP query accepted from a client; longer datagrams are dropped.
const UDP_QUERY_MAX: usize = 4096;

/// Whether io_uring can serve on this machine: `Err` names why not.
///
/// The probe runs on a short-lived helper thread: tearing down an io_uring instance can
/// leave task work for the thread that created it, which interrupts that thread's next
/// blocking socket call that has a timeout (EINTR).
pub fn uring_available() -> Result<(), String> {
    std::thread::Builder::new()
        .name("uring-probe".into())
        .spawn(uring::probe)
        .map_err(|e| format!("cannot spawn probe thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("io_uring probe panicked".into()))
}

/// How long to wait for I/O: until the handler's next deadline, at most [`MAX_WAIT`].
pub(crate) fn wait_timeout<H: Handler>(handler: &H, now: Instant) -> Duration {
    match handler.poll_timeout() {
        Some(t) => t.saturating_duration_since(now).min(MAX_WAIT),
        None => MAX_WAIT,
    }
}

/// Fires the handler's timer if due and closes idle client connections.
pub(crate) fn run_timers<H: Handler>(
    handler: &mut H,
    reactor: &mut Reactor<H::Peer>,
    now: Instant,
) {
    if handler.poll_timeout().is_some_and(|t| t <= now) {
        handler.handle_timeout(now);
    }
    reactor.sweep(now, handler);
}

/// Drains the handler's output after a batch of input. [`Handler::poll_transmit`]: UDP
/// client replies go to `udp_reply` (the driver's send path), everything else to the
/// reactor, whose TCP writes go out once per connection at the end of the round.
/// [`Handler::poll_peer`]: each message is queued to its shard, and every shard queued to is
/// woken once.
pub(crate) fn drain_transmits<H: Handler>(
    handler: &mut H,
    reactor: &mut Reactor<H::Peer>,
    now: Instant,
    mut udp_reply: impl FnMut(Client, &[u8]),
) {
    loop {
        while let Some(t) = handler.poll_transmit() {
            match t {
                Transmit::Reply { client, payload } if client.protocol == Protocol::Udp => {
                    udp_reply(client, &payload);
                }
                other => reactor.perform(now, other, handler),
            }
        }
        let closed = reactor.flush_writes(now, handler);
        while let Some((shard, message)) = handler.poll_peer() {
            reactor.queue_peer(shard, message);
        }
        if !closed {
            break;
        }
    }
    reactor.flush_peer_wakes();
}
