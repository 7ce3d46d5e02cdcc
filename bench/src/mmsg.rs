//! Batched datagram I/O for the bench servers (`reflect`, `upstream`): a blocking
//! `recvmmsg` into fixed-size slots, and a `sendmmsg` of a batch that goes on until every
//! datagram was sent or refused.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// A batch of datagrams in slots of `stride` bytes, with their lengths and peers.
pub struct Batch {
    /// Headers for receiving and for sending: nix's `sendmmsg` points a header's address at
    /// the caller's peers, which a later `recvmmsg` on the same headers would write into.
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    stride: usize,
    /// The slots, `stride` bytes each.
    pub buf: Vec<u8>,
    /// The length of each slot's datagram.
    pub lens: Vec<usize>,
    /// The peer of each slot's datagram (`None`: not known, not sent).
    pub peers: Vec<Option<SockaddrStorage>>,
}

impl Batch {
    /// Room for `count` datagrams of up to `stride` bytes.
    pub fn new(count: usize, stride: usize) -> Batch {
        Batch {
            recv_headers: MultiHeaders::preallocate(count, None),
            send_headers: MultiHeaders::preallocate(count, None),
            stride,
            buf: vec![0u8; count * stride],
            lens: vec![0; count],
            peers: vec![None; count],
        }
    }

    /// The bytes of slot `i`'s datagram.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.buf[i * self.stride..i * self.stride + self.lens[i]]
    }

    /// The whole of slot `i`, to write a datagram into.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.stride..(i + 1) * self.stride]
    }

    /// Receives into the slots with one blocking `recvmmsg` (`MSG_WAITFORONE`: it returns as
    /// soon as one datagram is there, with whatever else is queued). Returns how many, or
    /// `None` on a receive timeout, a signal or a stray ICMP error (the caller looks at its
    /// stop flag and calls again). Longer datagrams are cut to the slot size.
    pub fn recv(&mut self, fd: RawFd) -> anyhow::Result<Option<usize>> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_exact_mut(self.stride)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        match recvmmsg(
            fd,
            &mut self.recv_headers,
            &mut slices,
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(results) => {
                let mut n = 0;
                for result in results {
                    self.lens[n] = result.bytes.min(self.stride);
                    self.peers[n] = result.address;
                    n += 1;
                }
                Ok(Some(n))
            }
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED) => Ok(None),
            Err(e) => Err(e).context("recvmmsg"),
        }
    }

    /// Sends the datagrams in slots `0..count` to their peers, with as many `sendmmsg` calls
    /// as it takes; a datagram the kernel refuses is skipped rather than retried forever.
    /// Returns how many were sent.
    pub fn send(&mut self, fd: RawFd, count: usize) -> u64 {
        let mut sent = 0u64;
        let mut start = 0;
        while start < count {
            let slices: Vec<[IoSlice<'_>; 1]> = self
                .buf
                .chunks_exact(self.stride)
                .zip(&self.lens[..count])
                .skip(start)
                .map(|(chunk, &len)| [IoSlice::new(&chunk[..len])])
                .collect();
            match sendmmsg(
                fd,
                &mut self.send_headers,
                &slices,
                &self.peers[start..count],
                [],
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let n = results.count();
                    sent += n as u64;
                    start += n.max(1);
                }
                Err(Errno::EINTR) => {}
                Err(_) => start += 1,
            }
        }
        sent
    }
}
