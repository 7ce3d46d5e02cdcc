//! `reflect`: the cheapest UDP responder, the kernel's per-query floor.
//!
//! A blocking `recvmmsg` takes up to `--batch` datagrams (`MSG_WAITFORONE`: it returns as
//! soon as one arrived and takes whatever else is queued), the QR bit is set in each
//! (byte 2 |= 0x80; no parsing), and one `sendmmsg` returns them to their senders.
//!
//! SIGTERM and SIGINT set a flag; the socket has a 100 ms receive timeout (`SO_RCVTIMEO`,
//! so the hot path has no extra `poll` call), after which the flag is checked, so
//! `reflect` exits with status 0 within about 100 ms of the signal.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::socket::{
    MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt, sockopt,
};

/// Receive buffer per datagram (a longer datagram is echoed truncated).
const DATAGRAM_MAX: usize = 4096;
/// Socket buffers asked for (capped by `net.core.[rw]mem_max`): a deep closed-loop window
/// must fit in the receive queue.
const SOCKET_BUFFER: usize = 4 << 20;

/// Arguments of `reflect`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:5399 (port 0 picks a free port; the line on
    /// standard error names it).
    pub addr: SocketAddr,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Datagrams per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
}

/// Runs `reflect` until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(cpu) = args.cpu {
        crate::load::pin(cpu)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    let socket = UdpSocket::bind(args.addr).with_context(|| format!("binding {}", args.addr))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    eprintln!("reflecting on {}", socket.local_addr()?);
    // Nothing is printed on the way out: whoever started us may have closed our stderr
    // after reading the line above, and a failed write must not turn exit 0 into a panic.
    reflect(&socket, usize::from(args.batch), &stop)?;
    Ok(())
}

/// Echoes datagrams with QR set until `stop`; returns how many were sent back.
fn reflect(socket: &UdpSocket, batch: usize, stop: &AtomicBool) -> anyhow::Result<u64> {
    let fd = socket.as_raw_fd();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut buf = vec![0u8; batch * DATAGRAM_MAX];
    let mut lens = vec![0usize; batch];
    let mut peers: Vec<Option<SockaddrStorage>> = vec![None; batch];
    let mut reflected = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let received = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buf
                .chunks_exact_mut(DATAGRAM_MAX)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                &mut slices,
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => {
                    let mut n = 0;
                    for result in results {
                        // Too short to carry a flags byte, or no sender: not echoed.
                        lens[n] = if result.bytes >= 3 {
                            result.bytes.min(DATAGRAM_MAX)
                        } else {
                            0
                        };
                        peers[n] = result.address;
                        n += 1;
                    }
                    n
                }
                // Receive timeout (check the stop flag), signal, or a stray ICMP error.
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Err(e).context("recvmmsg"),
            }
        };
        // Compact the echoable datagrams to the front, setting QR.
        let mut kept = 0;
        for i in 0..received {
            if lens[i] == 0 || peers[i].is_none() {
                continue;
            }
            if i != kept {
                buf.copy_within(
                    i * DATAGRAM_MAX..i * DATAGRAM_MAX + lens[i],
                    kept * DATAGRAM_MAX,
                );
                lens[kept] = lens[i];
                peers[kept] = peers[i];
            }
            buf[kept * DATAGRAM_MAX + 2] |= 0x80;
            kept += 1;
        }
        let mut start = 0;
        while start < kept {
            let slices: Vec<[IoSlice<'_>; 1]> = buf
                .chunks_exact(DATAGRAM_MAX)
                .zip(&lens[..kept])
                .skip(start)
                .map(|(chunk, &len)| [IoSlice::new(&chunk[..len])])
                .collect();
            match sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &peers[start..kept],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let sent = results.count();
                    reflected += sent as u64;
                    // A datagram the kernel refused is skipped rather than retried forever.
                    start += sent.max(1);
                }
                Err(Errno::EINTR) => {}
                Err(_) => start += 1,
            }
        }
    }
    Ok(reflected)
}
