//! The UDP loop: per socket turn, up to [`BATCH`] queries in one `sendmmsg`; one `poll` over
//! all sockets (and the pacing timer); `recvmmsg(MSG_DONTWAIT)` in batches of [`BATCH`] on
//! each readable socket until it runs dry. Sockets are connected, so the kernel filters
//! foreign sources and no addresses are passed per message.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};

use super::queries::MAX_QUERY_LEN;
use super::wait::Waiter;
use super::worker::Worker;

/// Messages per `sendmmsg`/`recvmmsg`.
pub(crate) const BATCH: usize = 64;
/// Receive buffer per message (larger replies are truncated; only the header and question
/// are read).
const REPLY_MAX: usize = 4096;
/// Socket buffer sizes asked for (the kernel caps them at `net.core.[rw]mem_max`).
const SOCKET_BUFFER: usize = 1 << 20;

/// Scratch space for one thread's batches.
struct Batches {
    send_headers: MultiHeaders<SockaddrStorage>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_buf: Vec<u8>,
    send_lens: [usize; BATCH],
    send_ids: [u16; BATCH],
    recv_buf: Vec<u8>,
    recv_lens: [usize; BATCH],
}

/// Opens a socket connected to `server`.
fn open(server: SocketAddr) -> anyhow::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).context("binding a UDP socket")?;
    socket
        .connect(server)
        .with_context(|| format!("connecting a UDP socket to {server}"))?;
    socket.set_nonblocking(true)?;
    // Best effort: larger buffers absorb bursts of a deep window.
    let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    Ok(socket)
}

/// Runs the worker's share over UDP to `server`.
pub(crate) fn run(worker: &mut Worker<'_>, server: SocketAddr) -> anyhow::Result<()> {
    let sockets: Vec<UdpSocket> = (0..worker.plan.endpoints)
        .map(|_| open(server))
        .collect::<anyhow::Result<_>>()?;
    let waiter = Waiter::new()?;
    let mut pollfds: Vec<PollFd<'_>> = sockets
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    pollfds.push(PollFd::new(waiter.fd(), PollFlags::POLLIN));
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let mut b = Batches {
        send_headers: MultiHeaders::preallocate(BATCH, None),
        recv_headers: MultiHeaders::preallocate(BATCH, None),
        send_buf: vec![0; BATCH * MAX_QUERY_LEN],
        send_lens: [0; BATCH],
        send_ids: [0; BATCH],
        recv_buf: vec![0; BATCH * REPLY_MAX],
        recv_lens: [0; BATCH],
    };
    let mut turn = 0;
    while let Some((now, send_budget)) = worker.turn() {
        let sending = send_budget.is_some();
        if let Some(mut budget) = send_budget {
            for k in 0..fds.len() {
                let ep = (turn + k) % fds.len();
                while budget > 0 {
                    let count = worker.room(ep).min(BATCH).min(budget as usize);
                    if count == 0 {
                        break;
                    }
                    let sent = send_batch(worker, ep, fds[ep], count, now, &mut b);
                    budget -= count as u64;
                    if sent < count {
                        break;
                    }
                }
            }
            turn = turn.wrapping_add(1);
            if budget > 0 && worker.plan.open {
                worker.drop_unsent(budget, now);
            }
        }
        let room = sending && (0..fds.len()).any(|ep| worker.room(ep) > 0);
        let timeout = waiter.timeout(worker.wait_ns(now, sending, room))?;
        match poll(&mut pollfds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        for (ep, pollfd) in pollfds[..fds.len()].iter().enumerate() {
            if pollfd.any().unwrap_or(true) {
                receive(worker, ep, fds[ep], &mut b)?;
            }
        }
        worker.expire(worker.now());
    }
    Ok(())
}

/// Issues `count` queries on socket `ep` and sends them with one `sendmmsg`; returns how
/// many went out.
fn send_batch(
    worker: &mut Worker<'_>,
    ep: usize,
    fd: RawFd,
    count: usize,
    now: u64,
    b: &mut Batches,
) -> usize {
    let mut issued = 0;
    for chunk in b.send_buf.chunks_exact_mut(MAX_QUERY_LEN).take(count) {
        let Some((len, id)) = worker.issue(ep, now, chunk) else {
            break;
        };
        b.send_lens[issued] = len;
        b.send_ids[issued] = id;
        issued += 1;
    }
    let slices: Vec<[IoSlice<'_>; 1]> = b
        .send_buf
        .chunks_exact(MAX_QUERY_LEN)
        .zip(&b.send_lens[..issued])
        .map(|(chunk, &len)| [IoSlice::new(&chunk[..len])])
        .collect();
    let addresses = [None::<SockaddrStorage>; BATCH];
    let sent = match sendmmsg(
        fd,
        &mut b.send_headers,
        &slices,
        &addresses[..issued],
        [],
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(results) => results.count(),
        Err(_) => {
            worker.stats.send_errors += 1;
            0
        }
    };
    worker.sent(ep, &b.send_ids[..issued], sent, now);
    sent
}

/// Receives from socket `ep` in batches until it has nothing more.
fn receive(worker: &mut Worker<'_>, ep: usize, fd: RawFd, b: &mut Batches) -> anyhow::Result<()> {
    loop {
        let received = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = b
                .recv_buf
                .chunks_exact_mut(REPLY_MAX)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            match recvmmsg(
                fd,
                &mut b.recv_headers,
                &mut slices,
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => {
                    let mut n = 0;
                    for (len, result) in b.recv_lens.iter_mut().zip(results) {
                        *len = result.bytes.min(REPLY_MAX);
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(()),
                // ICMP port unreachable and the like: the queries will time out.
                Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {
                    worker.stats.recv_errors += 1;
                    return Ok(());
                }
                Err(e) => return Err(e).context("recvmmsg"),
            }
        };
        let now = worker.now();
        for (chunk, &len) in b
            .recv_buf
            .chunks_exact(REPLY_MAX)
            .zip(&b.recv_lens[..received])
        {
            worker.reply(ep, &chunk[..len], now);
        }
        if received < BATCH {
            return Ok(());
        }
    }
}
