//! `upstream`: a fast benchmark upstream on UDP and TCP at one loopback address. Every
//! query gets NOERROR and one synthetic record for the asked name (A 192.0.2.1, TTL 300;
//! [`answer`]), with no zone data, so it can stand behind a forwarder on the miss path
//! without being the bottleneck.
//!
//! - UDP: batched `recvmmsg`/`sendmmsg` on the main thread ([`udp`]).
//! - TCP: one thread per connection with buffered reads ([`tcp`]). Pipelined by default
//!   (every query a read returns is answered at once, replies in one write); with
//!   `--serialize` each connection's queries are answered one at a time, in order, each after
//!   `--delay-us`, like CoreDNS (miekg/dns) does.
//!
//! It counts queries answered, TCP connections accepted and the most open at once, prints
//! them on standard output when SIGTERM or SIGINT stops it, and with `--stats-file` keeps
//! them as JSON in that file (rewritten about every 100 ms while running and on exit, by
//! rename, so a reader never sees half a file).

mod answer;
mod tcp;
mod udp;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::socket::{setsockopt, sockopt};
use serde::{Deserialize, Serialize};

/// Socket buffers asked for (capped by `net.core.[rw]mem_max`).
const SOCKET_BUFFER: usize = 4 << 20;
/// The longest `--delay-us` (10 s).
const MAX_DELAY_US: u64 = 10_000_000;

/// Arguments of `upstream`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address for both UDP and TCP, in 127.0.0.0/8, e.g. 127.0.0.1:5399 (port 0 picks a
    /// port free for both; the line on standard error names it).
    pub addr: SocketAddr,
    /// TCP: answer each connection's queries one at a time, in order, each after the delay
    /// (as CoreDNS does); without it, everything a read returns is answered at once.
    #[arg(long)]
    pub serialize: bool,
    /// Microseconds before each reply (serialised TCP), or before each batch of replies
    /// (pipelined TCP, UDP).
    #[arg(long, value_name = "US", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_US))]
    pub delay_us: u64,
    /// Keep the counters in this file as JSON (rewritten while running and on exit).
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Pin to this CPU (every thread).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// TCP connections open at once at most; more are closed as soon as accepted.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_conns: u64,
    /// Datagrams per recvmmsg/sendmmsg.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
}

/// What the upstream counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    accepted: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    refused: AtomicU64,
}

/// The counters as printed and written to `--stats-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Queries answered, UDP and TCP.
    pub queries: u64,
    pub udp_queries: u64,
    pub tcp_queries: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections open now.
    pub tcp_open: u64,
    /// The most TCP connections open at once.
    pub tcp_peak_open: u64,
    /// Connections closed at once because `--max-conns` were open.
    pub tcp_refused: u64,
    pub serialize: bool,
    pub delay_us: u64,
}

impl Counters {
    fn snapshot(&self, args: &Args) -> Stats {
        let udp = self.udp_queries.load(Ordering::Relaxed);
        let tcp = self.tcp_queries.load(Ordering::Relaxed);
        Stats {
            queries: udp + tcp,
            udp_queries: udp,
            tcp_queries: tcp,
            tcp_connections: self.accepted.load(Ordering::Relaxed),
            tcp_open: self.open.load(Ordering::Relaxed),
            tcp_peak_open: self.peak_open.load(Ordering::Relaxed),
            tcp_refused: self.refused.load(Ordering::Relaxed),
            serialize: args.serialize,
            delay_us: args.delay_us,
        }
    }
}

/// Runs `upstream` until SIGTERM or SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(args.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()),
        "upstream listens on 127.0.0.0/8 only, not {}",
        args.addr
    );
    anyhow::ensure!(args.max_conns >= 1, "--max-conns must be >= 1");
    if let Some(cpu) = args.cpu {
        crate::load::pin(cpu)?;
    }
    let stop = crate::stop_flag()?;
    let (listener, socket) = bind(args.addr)?;
    socket.set_read_timeout(Some(tcp::STOP_CHECK))?;
    let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    let mode = if args.serialize {
        "serialised"
    } else {
        "pipelined"
    };
    eprintln!(
        "upstream on {} (UDP and TCP; TCP {mode}, delay {} us)",
        socket.local_addr()?,
        args.delay_us
    );
    let counters = Counters::default();
    let config = tcp::Config {
        serialize: args.serialize,
        delay: Duration::from_micros(args.delay_us),
        max_conns: args.max_conns,
    };
    let refresh = || {
        if let Some(path) = &args.stats_file
            && let Err(e) = write_stats(path, &counters.snapshot(&args))
        {
            tracing::warn!("{e:#}");
        }
    };
    let served = std::thread::scope(|scope| -> anyhow::Result<()> {
        let (counters, stop) = (&counters, &*stop);
        let acceptor = scope.spawn(move || {
            let outcome = tcp::accept(scope, listener, config, counters, stop, refresh);
            // The UDP loop must not outlive a failed acceptor.
            stop.store(true, Ordering::Relaxed);
            outcome
        });
        let udp = udp::serve(
            &socket,
            usize::from(args.batch),
            config.delay,
            counters,
            stop,
        );
        stop.store(true, Ordering::Relaxed);
        let tcp = acceptor
            .join()
            .map_err(|_| anyhow::anyhow!("the TCP acceptor panicked"))?;
        udp.and(tcp)
    });
    let stats = counters.snapshot(&args);
    refresh();
    // Whoever started us may have closed our standard output: a failed write is not an error.
    let _ = writeln!(
        std::io::stdout(),
        "answered {} queries (UDP {}, TCP {}); TCP connections accepted {}, at most {} open at once, {} refused",
        stats.queries,
        stats.udp_queries,
        stats.tcp_queries,
        stats.tcp_connections,
        stats.tcp_peak_open,
        stats.tcp_refused
    );
    served
}

/// Binds TCP and UDP on the same address; port 0 picks a port free for both.
fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, UdpSocket)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding TCP {addr}"))?;
        let bound = listener.local_addr()?;
        match UdpSocket::bind(bound) {
            Ok(socket) => return Ok((listener, socket)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt")).with_context(|| format!("binding UDP {addr}"))
}

/// Writes `stats` to `path` through a temporary file and a rename.
fn write_stats(path: &Path, stats: &Stats) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut text = serde_json::to_string(stats)?;
    text.push('\n');
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}
