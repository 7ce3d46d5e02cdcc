//! UDP: a blocking `recvmmsg` of up to `--batch` datagrams (`MSG_WAITFORONE`), one answer
//! each, one `sendmmsg` back, as `reflect` does. The socket's 100 ms receive timeout lets the
//! loop see the stop flag.

use std::io::{IoSlice, IoSliceMut};
use std::net::UdpSocket;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

use super::Counters;
use super::answer::{MAX_REPLY, answer};

/// Receive buffer per datagram (a longer one is answered from its first bytes, or FORMERR).
const DATAGRAM_MAX: usize = 4096;

/// Answers datagrams until `stop`; pipelined mode's `delay` is slept once per batch.
pub(super) fn serve(
    socket: &UdpSocket,
    batch: usize,
    delay: Duration,
    counters: &Counters,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let fd = socket.as_raw_fd();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let mut input = vec![0u8; batch * DATAGRAM_MAX];
    let mut lens = vec![0usize; batch];
    let mut peers: Vec<Option<SockaddrStorage>> = vec![None; batch];
    let mut output = vec![0u8; batch * MAX_REPLY];
    let mut out_lens = vec![0usize; batch];
    let mut out_peers: Vec<Option<SockaddrStorage>> = vec![None; batch];
    while !stop.load(Ordering::Relaxed) {
        let received = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = input
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
                        lens[n] = result.bytes.min(DATAGRAM_MAX);
                        peers[n] = result.address;
                        n += 1;
                    }
                    n
                }
                // Receive timeout (look at the stop flag), a signal, a stray ICMP error.
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Err(e).context("recvmmsg"),
            }
        };
        let mut replies = 0;
        for i in 0..received {
            if peers[i].is_none() {
                continue;
            }
            let query = &input[i * DATAGRAM_MAX..i * DATAGRAM_MAX + lens[i]];
            let out = &mut output[replies * MAX_REPLY..(replies + 1) * MAX_REPLY];
            if let Some(len) = answer(query, out) {
                out_lens[replies] = len;
                out_peers[replies] = peers[i];
                replies += 1;
            }
        }
        if replies > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut start = 0;
        while start < replies {
            let slices: Vec<[IoSlice<'_>; 1]> = output
                .chunks_exact(MAX_REPLY)
                .zip(&out_lens[..replies])
                .skip(start)
                .map(|(chunk, &len)| [IoSlice::new(&chunk[..len])])
                .collect();
            match sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &out_peers[start..replies],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let sent = results.count();
                    counters
                        .udp_queries
                        .fetch_add(sent as u64, Ordering::Relaxed);
                    // A datagram the kernel refused is skipped rather than retried forever.
                    start += sent.max(1);
                }
                Err(Errno::EINTR) => {}
                Err(_) => start += 1,
            }
        }
    }
    Ok(())
}
