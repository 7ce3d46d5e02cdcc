//! `compare`: shardns and its peers side by side in one run, one table.
//!
//! One Unbound upstream serves the 8 names of `scripts/bench-hit.sh` from static local data
//! (refusing everything else, never recursing), pinned to the load CPU. Every server under
//! test runs at once on its own loopback port, pinned to the server CPU: shardns on each
//! `--io` driver and shard count, dnsdist with a packet cache, Unbound as a caching
//! forwarder, dnsmasq, and the reflector (the kernel's floor). Each is warmed with one query
//! per name. Then rounds interleave the servers (A, B, C, A, B, C, ...) so that drift of a
//! shared host hits all alike; for each run the server's CPU time comes from
//! `/proc/PID/stat` and, where `perf` can count, its instructions and cycles from
//! `perf stat -p PID`. The table gives medians with ranges, and ratios taken within a round.
//!
//! Submodules: [`servers`] (configs, pinned start, guards), [`client`] (load and dnsperf),
//! [`counters`] (/proc and perf), [`stats`], [`report`] (table and file), [`chart`] (PNG),
//! [`dns`] (warm-up queries).

mod chart;
mod client;
mod counters;
mod dns;
mod plan;
mod report;
mod servers;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use client::Client;
use plan::specs;
use report::{Sample, Series};
use servers::{NAMES, Role, Server, Spec, find_on_path};

/// Arguments of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// CPU every server under test is pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,

    /// CPU the load generator and the upstream are pinned to.
    #[arg(long, default_value_t = 1)]
    pub load_cpu: usize,

    /// shardns I/O drivers to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["uring", "epoll"])]
    pub io: Vec<Io>,

    /// shardns shard counts to run (comma-separated), each with every `--io`.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub shards: Vec<u32>,

    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Seconds per run.
    #[arg(short = 'l', long = "seconds", default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured load, in seconds, right before each measured run: on a shared VM an idle
    /// vCPU takes seconds to regain full speed, which would otherwise land in the run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Load client.
    #[arg(long, value_enum, default_value_t = ClientChoice::Load)]
    pub client: ClientChoice,

    /// The shardns binary (default: target/release/shardns beside this binary, else PATH).
    #[arg(long, value_name = "PATH")]
    pub shardns: Option<PathBuf>,

    /// Servers to run (comma-separated); missing programs are skipped.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["shardns", "dnsdist", "unbound", "dnsmasq", "reflector"])]
    pub servers: Vec<Kind>,

    /// Where `<YYYY-MM-DD>.md` and `<YYYY-MM-DD>.png` go.
    #[arg(long, default_value = "docs/bench")]
    pub out_dir: PathBuf,
}

/// shardns `--io` drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Io {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

/// Kinds of server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// shardns (each `--io` × `--shards`).
    Shardns,
    /// dnsdist with a packet cache.
    Dnsdist,
    /// Unbound as a caching forwarder.
    Unbound,
    /// dnsmasq.
    Dnsmasq,
    /// `shardns-bench reflect`.
    Reflector,
}

/// `--client` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientChoice {
    /// The project's generator.
    Load,
    /// dnsperf `-c 8 -q 500`.
    Dnsperf,
    /// Both, one after the other in each round.
    Both,
}

/// A temporary directory removed on drop.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `compare`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.rounds == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--rounds and -l must be positive");
    }
    let stop = crate::stop_flag()?;
    let exe = std::env::current_exe()?;
    let mut skipped = Vec::new();
    let clients = choose_clients(&args, &exe, &mut skipped)?;
    let unbound = find_on_path("unbound")
        .context("unbound is missing: the upstream needs it (scripts/bench-peers.sh)")?;

    let work =
        WorkDir(std::env::temp_dir().join(format!("shardns-compare.{}", std::process::id())));
    std::fs::create_dir_all(&work.0)?;
    let queries = work.0.join("queries.txt");
    std::fs::write(
        &queries,
        NAMES.iter().map(|n| format!("{n} A\n")).collect::<String>(),
    )?;

    let upstream_port = servers::free_port()?;
    let upstream_spec = Spec {
        label: "upstream unbound".into(),
        role: Role::Peer,
        program: unbound.clone(),
        args: vec![
            "-d".into(),
            "-c".into(),
            work.0.join("upstream.conf").display().to_string(),
        ],
        files: vec![(
            work.0.join("upstream.conf"),
            servers::unbound_upstream_conf(upstream_port, &work.0),
        )],
        answers: true,
    };
    let upstream_addr = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    let _upstream = servers::start(
        upstream_spec,
        upstream_addr,
        args.load_cpu,
        &work.0.join("upstream.log"),
    )?;

    let mut running: Vec<Server> = Vec::new();
    for mut spec in specs(&args, &exe, &work.0, &mut skipped) {
        let addr = SocketAddr::from(([127, 0, 0, 1], servers::free_port()?));
        plan::bind(&mut spec, addr.port(), upstream_port, &work.0);
        let log = work
            .0
            .join(format!("server-{}.log", running.len() + skipped.len()));
        match servers::start(spec.clone(), addr, args.server_cpu, &log) {
            Ok(server) => running.push(server),
            Err(e) => skipped.push(format!("{}: did not start: {e:#}", spec.label)),
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
    }
    if running.is_empty() {
        bail!("no server started: {}", skipped.join("; "));
    }

    let perf = counters::perf_works();
    if !perf {
        skipped.push(
            "instructions and cycles per query: `perf stat -e instructions` does not work here"
                .into(),
        );
    }
    let mut series: Vec<Series> = clients
        .iter()
        .flat_map(|&client| {
            running.iter().map(move |s| Series {
                server: s.spec.label.clone(),
                role: s.spec.role,
                client,
                rounds: Vec::new(),
            })
        })
        .collect();
    let n = running.len();
    for round in 1..=args.rounds {
        for (ci, &client) in clients.iter().enumerate() {
            for (si, server) in running.iter_mut().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let run = Run {
                    client,
                    exe: &exe,
                    queries: &queries,
                    args: &args,
                    perf,
                    work: &work.0,
                    stop: &stop,
                };
                let sample = match measure(server, &run) {
                    Ok(sample) => Some(sample),
                    Err(e) => {
                        tracing::warn!(
                            "round {round} {} with {}: {e:#}",
                            server.spec.label,
                            client.name()
                        );
                        None
                    }
                };
                series[ci * n + si].rounds.push(sample);
            }
        }
    }
    finish(&args, &series, &running, skipped, perf)
}

/// The clients to use; `load` is dropped with a reason when it is not implemented yet and
/// `--client both` was asked, and is an error when it was the only client.
fn choose_clients(
    args: &Args,
    exe: &Path,
    skipped: &mut Vec<String>,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = match args.client {
        ClientChoice::Load => vec![Client::Load],
        ClientChoice::Dnsperf => vec![Client::Dnsperf],
        ClientChoice::Both => vec![Client::Load, Client::Dnsperf],
    };
    if clients.contains(&Client::Load)
        && let Err(e) = client::load_ready(exe)
    {
        if clients.len() == 1 {
            return Err(e);
        }
        skipped.push(format!("client load: {e:#}"));
        clients.retain(|&c| c != Client::Load);
    }
    if clients.contains(&Client::Dnsperf) && find_on_path("dnsperf").is_none() {
        if clients.len() == 1 {
            bail!("dnsperf is missing (scripts/bench-peers.sh)");
        }
        skipped.push("client dnsperf: not on PATH".into());
        clients.retain(|&c| c != Client::Dnsperf);
    }
    Ok(clients)
}

/// What one measurement needs besides the server.
#[derive(Debug)]
struct Run<'a> {
    client: Client,
    exe: &'a Path,
    queries: &'a Path,
    args: &'a Args,
    perf: bool,
    work: &'a Path,
    stop: &'a AtomicBool,
}

/// One client run against one server: its answered QPS, and what the server spent.
fn measure(server: &mut Server, run: &Run) -> anyhow::Result<Sample> {
    let pid = server.guard.pid();
    if run.args.warmup > 0.0 {
        client::run(
            run.client,
            run.exe,
            server.addr,
            run.queries,
            run.args.warmup,
            run.args.load_cpu,
            run.stop,
        )?;
    }
    let before = counters::cpu_seconds(pid)?;
    let perf = match run.perf {
        true => Some(counters::PerfStat::start(
            pid,
            run.args.load_cpu,
            &run.work.join("perf.csv"),
        )?),
        false => None,
    };
    let outcome = client::run(
        run.client,
        run.exe,
        server.addr,
        run.queries,
        run.args.seconds,
        run.args.load_cpu,
        run.stop,
    );
    let after = counters::cpu_seconds(pid)?;
    let counts = perf
        .map(counters::PerfStat::stop)
        .transpose()?
        .unwrap_or_default();
    server.guard.check_alive()?;
    let outcome = outcome?;
    let cpu = after - before;
    let answered = outcome.answered;
    let sample = Sample {
        qps: outcome.qps,
        q_per_cpu_s: (cpu > 0.0).then(|| answered as f64 / cpu),
        insns_per_q: counts
            .instructions
            .and_then(|i| stats::per(i as f64, answered)),
        cycles_per_q: counts.cycles.and_then(|c| stats::per(c as f64, answered)),
        p99_us: outcome.p99_us,
    };
    let noerror = outcome.rcodes.get("NOERROR").copied().unwrap_or(0);
    let rcodes = if noerror == answered {
        "all NOERROR".to_owned()
    } else {
        format!("NOT ALL NOERROR: {:?}", outcome.rcodes)
    };
    tracing::info!(
        "{} / {}: {:.0} QPS, {:.0} q/CPU-s, {:.0} insns/q, p99 {:?} µs, {rcodes}",
        server.spec.label,
        run.client.name(),
        sample.qps,
        sample.q_per_cpu_s.unwrap_or(0.0),
        sample.insns_per_q.unwrap_or(0.0),
        sample.p99_us,
    );
    Ok(sample)
}

/// Prints the table and writes the report and the chart.
fn finish(
    args: &Args,
    series: &[Series],
    running: &[Server],
    skipped: Vec<String>,
    perf: bool,
) -> anyhow::Result<()> {
    let rows = report::rows(series);
    let table = report::render_table(&rows);
    println!("{table}");
    for line in &skipped {
        println!("skipped: {line}");
    }
    let date = report::today();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let chart_name = format!("{date}.png");
    let bars: Vec<chart::Bar> = rows
        .iter()
        .filter_map(|r| {
            let label = format!("{} / {}", r.server, r.client);
            r.q_per_cpu_s.map(|value| chart::Bar { label, value })
        })
        .collect();
    let title = format!(
        "q/CPU-s, median and range over {} round(s), {date}",
        args.rounds
    );
    let chart = match chart::draw(&args.out_dir.join(&chart_name), &title, &bars) {
        Ok(()) => Some(chart_name.as_str()),
        Err(e) => {
            tracing::warn!("chart: {e:#}");
            None
        }
    };
    let mut machine = report::Machine::probe();
    machine.versions = plan::versions(running, args);
    let command = std::iter::once("shardns-bench".to_owned())
        .chain(std::env::args().skip(1).map(|a| report::shell_word(&a)))
        .collect::<Vec<_>>()
        .join(" ");
    let method = plan::method(args, perf);
    let doc = report::render_document(&report::Document {
        date: &date,
        command: &command,
        machine: &machine,
        method: &method,
        table: &table,
        skipped: &skipped,
        chart,
    });
    let path = args.out_dir.join(format!("{date}.md"));
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
