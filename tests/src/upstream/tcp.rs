//! TCP serving: the listening socket, the accept thread, and one reader thread per
//! connection ([`Conn`]); answers are sent at once or by the scheduler.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::reply::{Decision, Wire, decide};
use super::{Inner, POLL, Proto, decrement, is_timeout, lock, read_lock, write_lock};

/// Write timeout on accepted TCP connections.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After sending FIN, how long a connection is drained (input read and discarded) before it
/// is closed, if the peer does not close first.
const FIN_LINGER: Duration = Duration::from_secs(1);

pub(super) fn bind_tcp(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    s.listen(1024)?;
    // On Linux SO_RCVTIMEO bounds accept(2) too.
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

pub(super) struct Conn {
    /// The client's address (shardns's end of the connection).
    peer: SocketAddr,
    /// `None` once closed. Read-locked for reads and writes (`&TcpStream` does both), so that
    /// taking it out (to close, or reset) closes the socket at once.
    stream: RwLock<Option<TcpStream>>,
    /// Serialises writers, so frames never interleave.
    write: Mutex<()>,
    fin_sent: AtomicBool,
    fin_at: Mutex<Option<Instant>>,
    aborted: AtomicBool,
    /// A frame was cut short and the connection went silent ([`Wire::Cut`]).
    stalled: AtomicBool,
    outstanding: AtomicU64,
    answered: AtomicUsize,
    last_answer: Mutex<Instant>,
}

impl Conn {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match read_lock(&self.stream).as_ref() {
            Some(mut s) => s.read(buf),
            None => Ok(0),
        }
    }

    /// Writes `bytes` unless FIN was sent or the connection stalled; then stalls it if
    /// `stall` (under the one write lock, so that no frame follows).
    fn write_all(&self, bytes: &[u8], stall: bool) -> bool {
        let _w = lock(&self.write);
        if self.fin_sent.load(Ordering::SeqCst) || self.stalled.load(Ordering::SeqCst) {
            return false;
        }
        let written = match read_lock(&self.stream).as_ref() {
            Some(mut s) => s.write_all(bytes).is_ok(),
            None => false,
        };
        if stall {
            self.stalled.store(true, Ordering::SeqCst);
        }
        written
    }

    /// FIN (shutdown of the write side); the reader drains and closes later.
    fn fin(&self) {
        let _w = lock(&self.write);
        if !self.fin_sent.swap(true, Ordering::SeqCst) {
            *lock(&self.fin_at) = Some(Instant::now());
            if let Some(s) = read_lock(&self.stream).as_ref() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }

    /// FIN both ways: wakes the reader, which then closes.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(s) = read_lock(&self.stream).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// RST: SO_LINGER 0, then close.
    fn reset(&self) {
        if let Some(s) = write_lock(&self.stream).take() {
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    }

    fn close(&self) {
        drop(write_lock(&self.stream).take());
    }
}

pub(super) fn serve_accept(inner: &Arc<Inner>, listener: &Socket, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) && !inner.shutdown.load(Ordering::SeqCst) {
        let (stream, peer): (TcpStream, SocketAddr) = match listener.accept() {
            Ok((s, peer)) => match peer.as_socket() {
                Some(peer) => (s.into(), peer),
                None => continue,
            },
            Err(e) if is_timeout(&e) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if stream.set_nodelay(true).is_err()
            || stream.set_read_timeout(Some(POLL)).is_err()
            || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            continue;
        }
        let conn = Arc::new(Conn {
            peer,
            stream: RwLock::new(Some(stream)),
            write: Mutex::new(()),
            fin_sent: AtomicBool::new(false),
            fin_at: Mutex::new(None),
            aborted: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            outstanding: AtomicU64::new(0),
            answered: AtomicUsize::new(0),
            last_answer: Mutex::new(Instant::now()),
        });
        let c = &inner.counters;
        c.tcp_accepted.fetch_add(1, Ordering::SeqCst);
        c.tcp_open.fetch_add(1, Ordering::SeqCst);
        {
            let mut conns = lock(&inner.conns);
            conns.retain(|w| w.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        let (i, cc) = (inner.clone(), conn.clone());
        let spawned = std::thread::Builder::new()
            .name("upstream-conn".into())
            .spawn(move || serve_conn(&i, &cc));
        let mut threads = lock(&inner.conn_threads);
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                conn.close();
                c.tcp_open.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Reap finished connection threads.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
            .into_iter()
            .partition(|t| t.is_finished());
        *threads = running;
        drop(threads);
        for t in done {
            let _ = t.join();
        }
    }
}

fn serve_conn(inner: &Arc<Inner>, conn: &Arc<Conn>) {
    serve_conn_loop(inner, conn);
    conn.close();
    inner.counters.tcp_open.fetch_sub(1, Ordering::SeqCst);
}

fn serve_conn_loop(inner: &Arc<Inner>, conn: &Arc<Conn>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    let mut received = 0usize;
    let mut last_read = Instant::now();
    let mut busy_until = Instant::now();
    if lock(&inner.behaviour).close_after == Some(0) {
        conn.fin();
    }
    loop {
        if inner.shutdown.load(Ordering::SeqCst) || conn.aborted.load(Ordering::SeqCst) {
            return;
        }
        if lock(&conn.fin_at).is_some_and(|t| t.elapsed() >= FIN_LINGER) {
            return;
        }
        let idle_timeout = lock(&inner.behaviour).idle_timeout;
        let last_answer = *lock(&conn.last_answer);
        if let Some(idle) = idle_timeout
            && conn.outstanding.load(Ordering::SeqCst) == 0
            && last_read.elapsed() >= idle
            && last_answer.elapsed() >= idle
        {
            conn.fin();
        }
        match conn.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => {
                last_read = Instant::now();
                if !conn.fin_sent.load(Ordering::SeqCst) {
                    buf.extend_from_slice(&tmp[..n]);
                }
            }
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return,
        }
        // Decide on every complete frame first (so that all of them count as outstanding),
        // then act.
        let mut decisions = Vec::new();
        let mut off = 0;
        while buf.len() >= off + 2 {
            let len = usize::from(u16::from_be_bytes([buf[off], buf[off + 1]]));
            if buf.len() < off + 2 + len {
                break;
            }
            let frame = &buf[off + 2..off + 2 + len];
            off += 2 + len;
            if conn.stalled.load(Ordering::SeqCst)
                || lock(&inner.behaviour)
                    .close_after
                    .is_some_and(|n| received >= n)
            {
                continue; // past the last query this connection takes
            }
            let d = decide(inner, frame, Proto::Tcp, conn.peer);
            if !matches!(d, Decision::Ignore) {
                received += 1;
                let o = conn.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                inner
                    .counters
                    .max_outstanding
                    .fetch_max(o, Ordering::SeqCst);
            }
            decisions.push(d);
        }
        buf.drain(..off);
        for d in decisions {
            match d {
                Decision::Ignore | Decision::Drop => {}
                Decision::Reset => {
                    conn.reset();
                    return;
                }
                Decision::Answer {
                    msgs,
                    delay,
                    serialize,
                    close_after,
                    wire,
                } => {
                    let now = Instant::now();
                    let due = if serialize {
                        busy_until.max(now) + delay
                    } else {
                        now + delay
                    };
                    busy_until = busy_until.max(due);
                    let frames = on_the_wire(&msgs, wire);
                    if due <= now {
                        tcp_send(inner, conn, &frames, close_after, wire);
                    } else {
                        let (i, c) = (inner.clone(), conn.clone());
                        inner.sched.schedule(
                            due,
                            Box::new(move || tcp_send(&i, &c, &frames, close_after, wire)),
                        );
                    }
                }
            }
        }
    }
}

/// The bytes to write for `msgs` sent as `wire` says.
fn on_the_wire(msgs: &[Vec<u8>], wire: Wire) -> Vec<u8> {
    let mut bytes = Vec::new();
    for m in msgs {
        match wire {
            Wire::Garbage { framed: false } => {}
            _ => bytes.extend_from_slice(&(m.len() as u16).to_be_bytes()),
        }
        match wire {
            Wire::Cut { .. } => {
                // Half of the first message, and nothing after it.
                bytes.extend_from_slice(&m[..m.len() / 2]);
                break;
            }
            _ => bytes.extend_from_slice(m),
        }
    }
    bytes
}

fn tcp_send(inner: &Inner, conn: &Conn, frames: &[u8], close_after: Option<usize>, wire: Wire) {
    // Counted before sending, so that a client that has the reply sees it counted.
    let counter = match wire.is_reply(Proto::Tcp) {
        true => &inner.counters.answered,
        false => &inner.counters.garbled,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let ok = conn.write_all(frames, wire == Wire::Cut { close: false });
    conn.outstanding.fetch_sub(1, Ordering::SeqCst);
    *lock(&conn.last_answer) = Instant::now();
    if !ok {
        decrement(counter);
        return;
    }
    match wire {
        Wire::Cut { close: true } => conn.fin(),
        Wire::Cut { close: false } => {}
        Wire::Reply | Wire::Garbage { .. } => {
            let answered = conn.answered.fetch_add(1, Ordering::SeqCst) + 1;
            if close_after.is_some_and(|n| answered >= n) {
                conn.fin();
            }
        }
    }
}
