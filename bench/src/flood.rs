//! `flood`: the lightest closed-loop client, for measuring what a server costs the whole node
//! when the client's own work is small. Each of `-c` connected UDP sockets keeps `-q` queries
//! in flight: it sends batches with one `sendmmsg` and counts replies with non-blocking
//! `recvmmsg` drains, with no per-query matching, timing or histogram (`load` does all of
//! that, and costs the client several microseconds a query). A socket whose replies stop for
//! 200 ms counts what it had in flight as lost and sends again. Prints one JSON object:
//! answered, lost, seconds, qps.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::load::{QueryOptions, load_queries};
use crate::mmsg::Batch;

/// Arguments of `flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The server, e.g. 169.254.20.10:53.
    pub server: SocketAddr,
    /// Query file: `name TYPE` per line (as `load -d`); the names are asked in turn.
    #[arg(short = 'd', long = "datafile")]
    pub queries: PathBuf,
    /// Seconds to run.
    #[arg(short = 'l', long = "seconds", default_value_t = 5.0)]
    pub seconds: f64,
    /// Sockets (source ports).
    #[arg(short = 'c', long = "clients", default_value_t = 8)]
    pub sockets: usize,
    /// Queries in flight per socket.
    #[arg(short = 'q', long = "outstanding", default_value_t = 32)]
    pub outstanding: usize,
    /// Pin to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// Datagrams per `sendmmsg` / `recvmmsg`.
const BATCH: usize = 64;
/// A reply slot: queries and replies of cached names are small.
const SLOT: usize = 1500;
/// A socket with queries in flight and no reply for this long counts them lost.
const STALL: Duration = Duration::from_millis(200);

struct Flow {
    socket: UdpSocket,
    in_flight: usize,
    last_reply: Instant,
    next_id: u16,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(cpu) = args.cpu {
        crate::load::pin(cpu)?;
    }
    let queries = load_queries(Some(&args.queries), QueryOptions::default())?;
    anyhow::ensure!(
        !queries.is_empty(),
        "no queries in {}",
        args.queries.display()
    );
    let mut flows = Vec::with_capacity(args.sockets);
    for _ in 0..args.sockets.max(1) {
        let socket = UdpSocket::bind(if args.server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        socket.connect(args.server).context("connecting")?;
        socket.set_nonblocking(true)?;
        flows.push(Flow {
            socket,
            in_flight: 0,
            last_reply: Instant::now(),
            next_id: 1,
        });
    }
    let window = args.outstanding.max(1);
    let mut out = Batch::new(BATCH, SLOT);
    let mut inbound = Batch::new(BATCH, SLOT);
    let (mut answered, mut lost, mut next_query) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.seconds);
    while Instant::now() < end {
        for flow in &mut flows {
            if flow.in_flight > 0 && flow.last_reply.elapsed() > STALL {
                lost += flow.in_flight as u64;
                flow.in_flight = 0;
            }
            while flow.in_flight < window {
                let count = (window - flow.in_flight).min(BATCH);
                for i in 0..count {
                    let query = &queries[next_query % queries.len()];
                    next_query += 1;
                    let slot = out.slot_mut(i);
                    slot[..query.wire.len()].copy_from_slice(&query.wire);
                    slot[..2].copy_from_slice(&flow.next_id.to_be_bytes());
                    flow.next_id = flow.next_id.wrapping_add(1);
                    out.lens[i] = query.wire.len();
                    out.peers[i] = None;
                }
                let sent = out.send(flow.socket.as_raw_fd(), count) as usize;
                if flow.in_flight == 0 {
                    flow.last_reply = Instant::now();
                }
                flow.in_flight += sent;
                if sent < count {
                    break;
                }
            }
        }
        let mut fds: Vec<PollFd<'_>> = flows
            .iter()
            .map(|flow| PollFd::new(std::os::fd::AsFd::as_fd(&flow.socket), PollFlags::POLLIN))
            .collect();
        let ready = poll(&mut fds, PollTimeout::from(10u8))?;
        if ready == 0 {
            continue;
        }
        let readable: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        for (flow, readable) in flows.iter_mut().zip(readable) {
            if !readable {
                continue;
            }
            while let Some(n) = inbound.recv(flow.socket.as_raw_fd())? {
                if n == 0 {
                    break;
                }
                answered += n as u64;
                flow.in_flight = flow.in_flight.saturating_sub(n);
                flow.last_reply = Instant::now();
                if n < BATCH {
                    break;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "answered": answered,
            "lost": lost,
            "seconds": seconds,
            "qps": answered as f64 / seconds,
        })
    );
    Ok(())
}
