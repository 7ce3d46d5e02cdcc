//! The TCP loop: `-c` connections, each with up to its window of queries pipelined
//! (RFC 7766), 2-byte length framing, non-blocking I/O under one `poll`. A connection the
//! server closes loses its queries in flight and is reopened on the next turn.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::time::Duration;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};

use super::queries::MAX_QUERY_LEN;
use super::wait::Waiter;
use super::worker::Worker;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// How long a (re)connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One connection and its buffers.
#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    /// Framed queries not yet written, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// Bytes read and not yet parsed, from `in_at`.
    input: Vec<u8>,
    in_at: usize,
}

impl Conn {
    fn new() -> Self {
        Conn {
            stream: None,
            out: Vec::new(),
            out_at: 0,
            input: Vec::new(),
            in_at: 0,
        }
    }

    fn connect(&mut self, server: SocketAddr) -> std::io::Result<()> {
        let stream = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        self.stream = Some(stream);
        self.out.clear();
        self.out_at = 0;
        self.input.clear();
        self.in_at = 0;
        Ok(())
    }

    /// Writes what it can; `Err` when the connection is broken.
    fn flush(&mut self) -> std::io::Result<()> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        while self.out_at < self.out.len() {
            match stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        Ok(())
    }
}

/// Runs the worker's share over TCP to `server`.
pub(crate) fn run(worker: &mut Worker<'_>, server: SocketAddr) -> anyhow::Result<()> {
    let mut conns: Vec<Conn> = (0..worker.plan.endpoints).map(|_| Conn::new()).collect();
    for conn in &mut conns {
        conn.connect(server)
            .with_context(|| format!("connecting to {server} over TCP"))?;
    }
    let waiter = Waiter::new()?;
    let mut query = [0u8; MAX_QUERY_LEN];
    let mut revents = vec![PollFlags::empty(); conns.len()];
    while let Some((now, send_budget)) = worker.turn() {
        let sending = send_budget.is_some();
        if let Some(mut budget) = send_budget {
            for (ep, conn) in conns.iter_mut().enumerate() {
                if conn.stream.is_none() && conn.connect(server).is_err() {
                    worker.stats.send_errors += 1;
                    continue;
                }
                while budget > 0 && worker.room(ep) > 0 {
                    let Some((len, id)) = worker.issue(ep, now, &mut query) else {
                        break;
                    };
                    conn.out.extend_from_slice(&(len as u16).to_be_bytes());
                    conn.out.extend_from_slice(&query[..len]);
                    worker.sent(ep, &[id], 1, now);
                    budget -= 1;
                }
                if conn.flush().is_err() {
                    broken(worker, ep, conn);
                }
            }
            if budget > 0 && worker.plan.open {
                worker.drop_unsent(budget, now);
            }
        }
        let room = sending && (0..conns.len()).any(|ep| worker.room(ep) > 0);
        let timeout = waiter.timeout(worker.wait_ns(now, sending, room))?;
        {
            let mut pollfds: Vec<PollFd<'_>> = conns
                .iter()
                .filter_map(|c| {
                    let events = if c.out_at < c.out.len() {
                        PollFlags::POLLIN | PollFlags::POLLOUT
                    } else {
                        PollFlags::POLLIN
                    };
                    c.stream.as_ref().map(|s| PollFd::new(s.as_fd(), events))
                })
                .collect();
            pollfds.push(PollFd::new(waiter.fd(), PollFlags::POLLIN));
            match poll(&mut pollfds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let mut ready = pollfds
                .iter()
                .map(|p| p.revents().unwrap_or(PollFlags::POLLIN));
            for (conn, revents) in conns.iter().zip(&mut revents) {
                *revents = match conn.stream {
                    Some(_) => ready.next().unwrap_or(PollFlags::empty()),
                    None => PollFlags::empty(),
                };
            }
        }
        for (ep, conn) in conns.iter_mut().enumerate() {
            let events = revents[ep];
            if events.intersects(PollFlags::POLLOUT) && conn.flush().is_err() {
                broken(worker, ep, conn);
                continue;
            }
            if events.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
                && read(worker, ep, conn).is_err()
            {
                broken(worker, ep, conn);
            }
        }
        worker.expire(worker.now());
    }
    Ok(())
}

/// The connection failed or was closed: its queries are lost; it reopens on the next turn.
fn broken(worker: &mut Worker<'_>, ep: usize, conn: &mut Conn) {
    worker.stats.recv_errors += 1;
    worker.abandon(ep);
    conn.stream = None;
}

/// Reads what is there and hands every complete reply to the worker; `Err` when the
/// connection is closed or broken.
fn read(worker: &mut Worker<'_>, ep: usize, conn: &mut Conn) -> std::io::Result<()> {
    let Some(stream) = &mut conn.stream else {
        return Ok(());
    };
    loop {
        let filled = conn.input.len();
        conn.input.resize(filled + READ_CHUNK, 0);
        let n = match stream.read(&mut conn.input[filled..]) {
            Ok(0) => {
                conn.input.truncate(filled);
                return Err(ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => {
                conn.input.truncate(filled);
                return Err(e);
            }
        };
        conn.input.truncate(filled + n);
        let now = worker.now();
        while let Some(header) = conn.input.get(conn.in_at..conn.in_at + 2) {
            let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
            let Some(reply) = conn.input.get(conn.in_at + 2..conn.in_at + 2 + len) else {
                break;
            };
            worker.reply(ep, reply, now);
            conn.in_at += 2 + len;
        }
        conn.input.drain(..conn.in_at);
        conn.in_at = 0;
        if n < READ_CHUNK {
            return Ok(());
        }
    }
}
