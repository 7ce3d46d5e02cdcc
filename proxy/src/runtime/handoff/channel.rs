//! The hand-off connection's framing: `u32` length (big-endian, of what follows), a type byte,
//! the payload; descriptors travel beside a frame's bytes (`SCM_RIGHTS`) and are queued in
//! the order they arrive. Every read has a deadline: a peer that stops talking is an error,
//! not a hang.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shardns_shard::fdpass;

/// The largest frame accepted (a cache chunk is about 64 KiB).
const MAX_FRAME: usize = 4 << 20;

/// The kinds of frame, in the order a hand-off sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Frame {
    /// New → old: the versions it speaks (JSON [`super::protocol::Hello`]).
    Hello = 1,
    /// Old → new: the version chosen and the sockets it hands over (JSON
    /// [`super::protocol::Welcome`]).
    Welcome = 2,
    /// Old → new: no hand-off, with the reason (JSON [`super::protocol::Refuse`]).
    Refuse = 3,
    /// Old → new: a batch of the sockets, as descriptors (payload: their count, `u32`).
    Sockets = 4,
    /// New → old: the sockets came; send the cache.
    Ready = 5,
    /// Old → new: a chunk of cache entries.
    Cache = 6,
    /// Old → new: no more cache entries (payload: the bytes of entries sent, `u64`).
    CacheEnd = 7,
    /// New → old: stop reading and leave.
    Switch = 8,
    /// Old → new: stopped reading.
    Done = 9,
}

impl Frame {
    fn of(byte: u8) -> Option<Frame> {
        Some(match byte {
            1 => Frame::Hello,
            2 => Frame::Welcome,
            3 => Frame::Refuse,
            4 => Frame::Sockets,
            5 => Frame::Ready,
            6 => Frame::Cache,
            7 => Frame::CacheEnd,
            8 => Frame::Switch,
            9 => Frame::Done,
            _ => return None,
        })
    }
}

/// One end of a hand-off connection.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    pub(crate) fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// Sends a frame.
    pub(crate) fn send(&mut self, frame: Frame, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&header(frame, payload.len())?)?;
        self.stream.write_all(payload)
    }

    /// Sends a [`Frame::Sockets`] carrying `fds` (at most [`fdpass::MAX_FDS`]).
    pub(crate) fn send_fds(&mut self, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let count = (fds.len() as u32).to_be_bytes();
        let mut bytes = header(Frame::Sockets, count.len())?.to_vec();
        bytes.extend_from_slice(&count);
        fdpass::send_with_fds(&self.stream, &bytes, fds)
    }

    /// The next frame, waiting until `deadline` at most.
    pub(crate) fn receive(&mut self, deadline: Instant) -> io::Result<(Frame, Vec<u8>)> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the other process did not answer in time",
                ));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut chunk = vec![0u8; 64 * 1024];
            let (n, fds) = match fdpass::recv_with_fds(&self.stream, &mut chunk) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 && fds.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other process closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.fds.extend(fds);
        }
    }

    /// The next frame, which must be `expected`.
    pub(crate) fn expect(&mut self, expected: Frame, deadline: Instant) -> io::Result<Vec<u8>> {
        let (frame, payload) = self.receive(deadline)?;
        if frame != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {expected:?}, got {frame:?}"),
            ));
        }
        Ok(payload)
    }

    /// Takes `count` of the descriptors received so far, in order.
    pub(crate) fn take_fds(&mut self, count: usize) -> io::Result<Vec<OwnedFd>> {
        if self.fds.len() < count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{count} descriptors announced, {} received", self.fds.len()),
            ));
        }
        Ok(self.fds.drain(..count).collect())
    }

    /// A whole frame from the buffer, if there is one.
    fn parse(&mut self) -> io::Result<Option<(Frame, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::of(self.buf[4]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame type {}", self.buf[4]),
            )
        })?;
        let payload = self.buf[5..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some((frame, payload)))
    }
}

fn header(frame: Frame, payload: usize) -> io::Result<[u8; 5]> {
    if payload + 1 > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let len = (payload as u32 + 1).to_be_bytes();
    Ok([len[0], len[1], len[2], len[3], frame as u8])
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn frames_and_descriptors_arrive_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<_> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        a.send(Frame::Welcome, b"{}").unwrap();
        let fds: Vec<_> = sockets.iter().map(AsFd::as_fd).collect();
        a.send_fds(&fds[..2]).unwrap();
        a.send_fds(&fds[2..]).unwrap();
        a.send(Frame::Cache, &vec![7u8; 100_000]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(b.expect(Frame::Welcome, deadline).unwrap(), b"{}");
        let mut got = Vec::new();
        for _ in 0..2 {
            let count = b.expect(Frame::Sockets, deadline).unwrap();
            let count = u32::from_be_bytes(count.try_into().unwrap()) as usize;
            got.extend(b.take_fds(count).unwrap());
        }
        let got: Vec<_> = got
            .into_iter()
            .map(|fd| UdpSocket::from(fd).local_addr().unwrap())
            .collect();
        assert_eq!(got, addrs);
        assert_eq!(b.expect(Frame::Cache, deadline).unwrap().len(), 100_000);
        // Silence is an error at the deadline; so is garbage.
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(b.receive(soon).unwrap_err().kind(), io::ErrorKind::TimedOut);
        a.stream.write_all(&[0, 0, 0, 2, 99, 0]).unwrap();
        assert_eq!(
            b.receive(deadline).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
