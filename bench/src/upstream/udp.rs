//! UDP: a blocking `recvmmsg` of up to `--batch` datagrams (`MSG_WAITFORONE`), one answer
//! each, one `sendmmsg` back, as `reflect` does. The socket's 100 ms receive timeout lets the
//! loop see the stop flag.

use std::net::UdpSocket;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Counters;
use super::answer::{MAX_REPLY, answer};
use crate::mmsg::Batch;

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
    let mut input = Batch::new(batch, DATAGRAM_MAX);
    let mut output = Batch::new(batch, MAX_REPLY);
    while !stop.load(Ordering::Relaxed) {
        // None: receive timeout (look at the stop flag), a signal, a stray ICMP error.
        let Some(received) = input.recv(fd)? else {
            continue;
        };
        let mut replies = 0;
        for i in 0..received {
            if input.peers[i].is_none() {
                continue;
            }
            if let Some(len) = answer(input.datagram(i), output.slot_mut(replies)) {
                output.lens[replies] = len;
                output.peers[replies] = input.peers[i];
                replies += 1;
            }
        }
        if replies > 0 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let sent = output.send(fd, replies);
        counters.udp_queries.fetch_add(sent, Ordering::Relaxed);
    }
    Ok(())
}
