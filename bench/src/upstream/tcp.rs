//! TCP: one thread per connection, buffered reads, 2-byte length framing (RFC 1035 4.2.2).
//!
//! Pipelined (the default): every complete query a read returns is answered, and the replies
//! go out in one write (after `--delay-us`, once per read). Serialised (`--serialize`, as
//! CoreDNS): the queries of a connection are answered one at a time, in order, each after the
//! delay and in its own write, so a connection carries at most one reply per delay.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Counters;
use super::answer::{MAX_REPLY, answer};

/// How often blocked threads look at the stop flag.
pub(super) const STOP_CHECK: Duration = Duration::from_millis(100);
/// A reply not written within this closes the connection (the peer stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Input buffer: room for one read and always for a whole largest frame (2 + 65535 bytes).
const INPUT: usize = 128 * 1024;
/// Stack of a connection thread (it keeps its buffers on the heap).
const STACK: usize = 256 * 1024;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub serialize: bool,
    pub delay: Duration,
    /// Connections open at once at most; more are closed at once.
    pub max_conns: u64,
}

/// Accepts connections until `stop`, each served by its own thread in `scope`; calls `tick`
/// about every [`STOP_CHECK`].
pub(super) fn accept<'scope>(
    scope: &'scope Scope<'scope, '_>,
    listener: TcpListener,
    config: Config,
    counters: &'scope Counters,
    stop: &'scope AtomicBool,
    tick: impl Fn(),
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(STOP_CHECK).unwrap_or(PollTimeout::NONE);
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors and the like: try again on the next turn.
                Err(_) => break,
            };
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
            if open > config.max_conns {
                counters.open.fetch_sub(1, Ordering::Relaxed);
                counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counters.peak_open.fetch_max(open, Ordering::Relaxed);
            let spawned = std::thread::Builder::new()
                .name("upstream-conn".into())
                .stack_size(STACK)
                .spawn_scoped(scope, move || {
                    serve(stream, config, counters, stop);
                    counters.open.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                counters.open.fetch_sub(1, Ordering::Relaxed);
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        if last_tick.elapsed() >= STOP_CHECK {
            tick();
            last_tick = Instant::now();
        }
    }
    Ok(())
}

/// Answers the queries of one connection until the peer closes it, an error, or `stop`.
fn serve(mut stream: TcpStream, config: Config, counters: &Counters, stop: &AtomicBool) {
    // Go (CoreDNS) sets TCP_NODELAY too: every reply leaves at once.
    let ready = stream.set_nonblocking(false).is_ok()
        && stream.set_nodelay(true).is_ok()
        && stream.set_read_timeout(Some(STOP_CHECK)).is_ok()
        && stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
    if !ready {
        return;
    }
    let mut input = vec![0u8; INPUT];
    let mut filled = 0;
    let mut out = Vec::with_capacity(INPUT);
    let mut reply = [0u8; MAX_REPLY];
    'connection: while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut input[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        filled += n;
        let mut at = 0;
        let mut answered = 0;
        while filled - at >= 2 {
            let len = usize::from(u16::from_be_bytes([input[at], input[at + 1]]));
            if filled - at - 2 < len {
                break;
            }
            let query = &input[at + 2..at + 2 + len];
            at += 2 + len;
            let Some(reply_len) = answer(query, &mut reply) else {
                continue;
            };
            answered += 1;
            out.extend_from_slice(&(reply_len as u16).to_be_bytes());
            out.extend_from_slice(&reply[..reply_len]);
            if config.serialize {
                if !config.delay.is_zero() {
                    std::thread::sleep(config.delay);
                }
                let written = stream.write_all(&out);
                out.clear();
                if written.is_err() || stop.load(Ordering::Relaxed) {
                    counters.tcp_queries.fetch_add(answered, Ordering::Relaxed);
                    break 'connection;
                }
            }
        }
        if !out.is_empty() {
            if !config.delay.is_zero() {
                std::thread::sleep(config.delay);
            }
            let written = stream.write_all(&out);
            out.clear();
            if written.is_err() {
                counters.tcp_queries.fetch_add(answered, Ordering::Relaxed);
                break;
            }
        }
        counters.tcp_queries.fetch_add(answered, Ordering::Relaxed);
        input.copy_within(at..filled, 0);
        filled -= at;
    }
}
