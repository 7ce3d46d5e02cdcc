//! `reflect`: the cheapest UDP responder, the kernel's per-query floor.
//!
//! A blocking `recvmmsg` takes up to `--batch` datagrams (`MSG_WAITFORONE`: it returns as
//! soon as one arrived and takes whatever else is queued), the QR bit is set in each
//! (byte 2 |= 0x80; no parsing), and one `sendmmsg` returns them to their senders.
//!
//! SIGTERM and SIGINT set a flag; the socket has a 100 ms receive timeout (`SO_RCVTIMEO`,
//! so the hot path has no extra `poll` call), after which the flag is checked, so
//! `reflect` exits with status 0 within about 100 ms of the signal.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::socket::{setsockopt, sockopt};

use crate::mmsg::Batch;

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
    let stop = crate::stop_flag()?;
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
    let mut datagrams = Batch::new(batch, DATAGRAM_MAX);
    let mut reflected = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // None: receive timeout (check the stop flag), signal, or a stray ICMP error.
        let Some(received) = datagrams.recv(fd)? else {
            continue;
        };
        // Compact the echoable datagrams to the front, setting QR. Too short to carry a
        // flags byte, or no sender: not echoed.
        let mut kept = 0;
        for i in 0..received {
            let len = datagrams.lens[i];
            if len < 3 || datagrams.peers[i].is_none() {
                continue;
            }
            if i != kept {
                datagrams.buf.copy_within(
                    i * DATAGRAM_MAX..i * DATAGRAM_MAX + len,
                    kept * DATAGRAM_MAX,
                );
                datagrams.lens[kept] = len;
                datagrams.peers[kept] = datagrams.peers[i];
            }
            datagrams.slot_mut(kept)[2] |= 0x80;
            kept += 1;
        }
        reflected += datagrams.send(fd, kept);
    }
    Ok(reflected)
}
