//! `load`: a dnsperf-compatible DNS load generator that can saturate a core.
//!
//! Each thread (`-T`) owns its sockets (`-c`, split across threads), its share of the window
//! (`-q`) and of the rate (`-Q`). UDP sends up to 64 queries per `sendmmsg` and receives
//! with `recvmmsg` in batches of 64 under one `poll` over all sockets ([`udp`]); TCP
//! pipelines queries over `-c` connections ([`tcp`]). Replies are matched by (socket, ID)
//! and must have QR set and carry the query's question ([`worker`]); a query unanswered
//! after `--timeout-ms` is lost and its ID freed ([`flight`]). Latency goes into an HDR
//! histogram in nanoseconds ([`report`]). Queries go through the file in order, or with
//! `--zipf S` are drawn at random with Zipf's law over the file's lines ([`zipf`]), or with
//! `--unique` each asks a name never asked before in the run ([`unique`]), so that a
//! caching server misses every time.

mod flight;
mod pacing;
mod queries;
mod report;
mod tcp;
mod udp;
mod unique;
mod wait;
mod worker;
mod zipf;

use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

pub use pacing::Spacing;
#[allow(unused_imports)]
pub use report::{Details, Latency, Report};

pub(crate) use queries::{QueryOptions, build as build_query, load as load_queries, qtype_code};
use unique::UniqueNames;
use worker::{Plan, Progress, Worker};
use zipf::Zipf;

/// Transport of the queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    #[default]
    Udp,
    Tcp,
}

/// Arguments of `load` (dnsperf's flags where dnsperf has one).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server address.
    #[arg(short = 's', long = "server", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub server: IpAddr,
    /// Server port.
    #[arg(short = 'p', long = "port", default_value_t = 53)]
    pub port: u16,
    /// Query file: `name TYPE` per line, `#` comments (standard input when absent).
    #[arg(short = 'd', long = "datafile", conflicts_with = "unique")]
    pub queries: Option<PathBuf>,
    /// Seconds to send for (after the warm-up).
    #[arg(short = 'l', long = "seconds", default_value_t = 10.0)]
    pub seconds: f64,
    /// Queries per second at most; with --open, the fixed offered rate.
    #[arg(short = 'Q', long = "max-qps")]
    pub max_qps: Option<f64>,
    /// Sockets (source ports) for UDP, connections for TCP [default: 64 UDP, 8 TCP].
    #[arg(short = 'c', long = "clients")]
    pub sockets: Option<usize>,
    /// Closed loop: queries in flight at most (split over sockets and threads).
    #[arg(short = 'q', long = "outstanding", default_value_t = 1024)]
    pub outstanding: usize,
    /// Threads, each with its own sockets and share of -c, -q and -Q.
    #[arg(short = 'T', long = "threads", default_value_t = 1)]
    pub threads: usize,
    /// Send EDNS0 (OPT record, UDP payload 1232).
    #[arg(short = 'e', long = "edns")]
    pub edns: bool,
    /// Set the DNSSEC OK bit (implies -e).
    #[arg(short = 'D', long = "dnssec")]
    pub dnssec: bool,
    /// Transport.
    #[arg(short = 'm', long = "mode", value_enum, default_value_t = Protocol::Udp)]
    pub protocol: Protocol,
    /// Open loop: offer exactly -Q queries per second whatever the server does.
    #[arg(long, requires = "max_qps")]
    pub open: bool,
    /// Open-loop spacing of send times.
    #[arg(long, value_enum, default_value_t = Spacing::Even)]
    pub spacing: Spacing,
    /// Pin thread i to CPU N+i.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// A query unanswered after this many milliseconds is lost.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Draw each query at random instead of going through the file in order: line k (rank
    /// k) with probability proportional to 1/k^S (Zipf's law; S > 0).
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Seed of the --zipf draws (thread i uses SEED + i * 2^32).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// No query file: every query asks a name never asked before in the run,
    /// `N.PREFIX.ZONE` (N counts up, PREFIX is random per run), so a cache misses every time.
    #[arg(long, conflicts_with = "zipf")]
    pub unique: bool,
    /// The zone of the --unique names.
    #[arg(long, value_name = "ZONE", default_value = unique::DEFAULT_ZONE)]
    pub unique_zone: String,
    /// The query type of the --unique names.
    #[arg(long, value_name = "TYPE", default_value = "A")]
    pub unique_type: String,
}

/// Default `--seed`: runs repeat their draws unless told otherwise.
const DEFAULT_SEED: u64 = 1;

/// Default UDP sockets: with `-q 1024` this drove `reflect` on the other core to ~100 % CPU
/// on the 2-core bench machine (fewer, deeper sockets batch better on the generator side,
/// but many source ports spread load over servers that shard by port).
const DEFAULT_UDP_SOCKETS: usize = 64;
/// Default TCP connections.
const DEFAULT_TCP_CONNECTIONS: usize = 8;

impl Args {
    /// Defaults (closed loop, UDP, -c 64, -q 1024, 1 thread; used by `compare`) against `server` with `queries_file`
    /// for `seconds`.
    #[allow(dead_code)]
    pub fn for_server(server: SocketAddr, queries_file: PathBuf, seconds: f64) -> Self {
        Args {
            server: server.ip(),
            port: server.port(),
            queries: Some(queries_file),
            seconds,
            max_qps: None,
            sockets: None,
            outstanding: 1024,
            threads: 1,
            edns: false,
            dnssec: false,
            protocol: Protocol::Udp,
            open: false,
            spacing: Spacing::Even,
            cpu: None,
            timeout_ms: 1000,
            json: false,
            warmup: 0.0,
            zipf: None,
            seed: DEFAULT_SEED,
            unique: false,
            unique_zone: unique::DEFAULT_ZONE.to_owned(),
            unique_type: "A".to_owned(),
        }
    }
}

/// Runs `load` and prints the text summary (or the JSON object with `--json`).
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = measure(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Runs the load described by `args` and returns its report (progress on standard error
/// when that is a terminal).
pub fn measure(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds.is_finite(),
        "-l must be > 0"
    );
    anyhow::ensure!(
        args.warmup >= 0.0 && args.warmup.is_finite(),
        "--warmup must be >= 0"
    );
    anyhow::ensure!(args.threads >= 1, "-T must be >= 1");
    anyhow::ensure!(args.outstanding >= 1, "-q must be >= 1");
    anyhow::ensure!(args.timeout_ms >= 1, "--timeout-ms must be >= 1");
    if let Some(qps) = args.max_qps {
        anyhow::ensure!(qps > 0.0 && qps.is_finite(), "-Q must be > 0");
    }
    anyhow::ensure!(!args.open || args.max_qps.is_some(), "--open needs -Q RATE");
    let options = QueryOptions {
        edns: args.edns,
        dnssec: args.dnssec,
    };
    let unique = if args.unique {
        let qtype = qtype_code(&args.unique_type)
            .ok_or_else(|| anyhow::anyhow!("--unique-type: unknown type {:?}", args.unique_type))?;
        Some(
            UniqueNames::new(&args.unique_zone, qtype, options)
                .map_err(|why| anyhow::anyhow!("--unique-zone: {why}"))?,
        )
    } else {
        None
    };
    let queries = match &unique {
        // One stand-in query: the workers never read it, but the list is not empty.
        Some(names) => vec![names.query(0)],
        None => queries::load(args.queries.as_deref(), options)?,
    };
    let zipf = args
        .zipf
        .map(|s| Zipf::new(queries.len(), s))
        .transpose()
        .map_err(|why| anyhow::anyhow!("--zipf: {why}"))?;
    let server = SocketAddr::new(args.server, args.port);
    let threads = args.threads;
    let default_sockets = match args.protocol {
        Protocol::Udp => DEFAULT_UDP_SOCKETS,
        Protocol::Tcp => DEFAULT_TCP_CONNECTIONS,
    };
    let sockets = args.sockets.unwrap_or(default_sockets).max(threads);
    let plans = plans(args, sockets, queries.len());

    let progress = Progress::default();
    let barrier = Barrier::new(threads);
    let results = Mutex::new(Vec::with_capacity(threads));
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (index, plan) in plans.into_iter().enumerate() {
            let (queries, progress, barrier, results) = (&queries, &progress, &barrier, &results);
            let zipf = zipf.as_ref();
            let unique = unique.as_ref();
            let cpu = args.cpu.map(|n| n + index);
            let protocol = args.protocol;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let outcome = thread(
                    queries, zipf, unique, progress, barrier, plan, cpu, protocol, server,
                );
                let stats = outcome?;
                results
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
                    .push(stats);
                Ok(())
            }));
        }
        if std::io::stderr().is_terminal() {
            show_progress(&progress, &handles);
        }
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        }
        Ok(())
    })?;

    let mut total = report::Stats::new();
    for stats in results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
    {
        total.merge(&stats);
    }
    let mode = if args.open { "open" } else { "closed" };
    let protocol = match args.protocol {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
    };
    let offered = if args.open { args.max_qps } else { None };
    let mut report = Report::new(
        mode,
        protocol,
        server.to_string(),
        args.seconds,
        offered,
        &total,
    );
    report.zipf_s = zipf.as_ref().map(Zipf::exponent);
    match &unique {
        Some(names) => report.details.unique_suffix = Some(names.suffix().to_owned()),
        None => report.details.query_lines = queries.len() as u64,
    }
    Ok(report)
}

/// Splits sockets, window and rate over the threads.
fn plans(args: &Args, sockets: usize, query_count: usize) -> Vec<Plan> {
    let threads = args.threads;
    let secs_ns = |s: f64| (s * 1e9) as u64;
    (0..threads)
        .map(|i| {
            let endpoints = sockets / threads + usize::from(i < sockets % threads);
            let rate = args.max_qps.map(|q| q / threads as f64);
            let (window, slots) = if args.open {
                // Enough IDs for everything the rate puts in flight within one timeout.
                let per_socket =
                    rate.unwrap_or(0.0) * args.timeout_ms as f64 / 1000.0 / endpoints as f64;
                (usize::MAX, (per_socket * 1.5) as usize + 2 * udp::BATCH)
            } else {
                let total =
                    args.outstanding / threads + usize::from(i < args.outstanding % threads);
                let window = total.div_ceil(endpoints).max(1);
                (window, window)
            };
            Plan {
                endpoints,
                window,
                slots: slots.min(flight::MAX_SLOTS),
                rate,
                spacing: args.spacing,
                open: args.open,
                timeout_ns: args.timeout_ms * 1_000_000,
                measure_from_ns: secs_ns(args.warmup),
                stop_ns: secs_ns(args.warmup + args.seconds),
                first_query: i * query_count / threads,
                seed: 0x5eed + i as u64,
                zipf_seed: args.seed.wrapping_add((i as u64) << 32),
                unique_first: i as u64,
                unique_step: threads as u64,
            }
        })
        .collect()
}

/// One load thread: pin, open its sockets, start with the others, run.
#[allow(clippy::too_many_arguments)]
fn thread(
    queries: &[queries::Query],
    zipf: Option<&Zipf>,
    unique: Option<&UniqueNames>,
    progress: &Progress,
    barrier: &Barrier,
    plan: Plan,
    cpu: Option<usize>,
    protocol: Protocol,
    server: SocketAddr,
) -> anyhow::Result<report::Stats> {
    let pinned = cpu.map(pin).transpose();
    barrier.wait();
    pinned?;
    let mut worker = Worker::new(queries, progress, plan, zipf, unique);
    match protocol {
        Protocol::Udp => udp::run(&mut worker, server)?,
        Protocol::Tcp => tcp::run(&mut worker, server)?,
    }
    Ok(worker.finish())
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin(cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Prints a progress line on standard error every second until the threads end.
fn show_progress<T>(progress: &Progress, handles: &[std::thread::ScopedJoinHandle<'_, T>]) {
    let mut last = (0, 0, 0);
    let mut second = 0;
    while !handles.iter().all(|h| h.is_finished()) {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            if handles.iter().all(|h| h.is_finished()) {
                return;
            }
        }
        second += 1;
        let now = (
            progress.sent.load(Ordering::Relaxed),
            progress.answered.load(Ordering::Relaxed),
            progress.lost.load(Ordering::Relaxed),
        );
        eprintln!(
            "[{second:>3}s] sent {} answered {} lost {}  ({} answered/s)",
            now.0,
            now.1,
            now.2,
            now.1 - last.1
        );
        last = now;
    }
}
