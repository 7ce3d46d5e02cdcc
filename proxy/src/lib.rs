//! `shardns`: a node-local DNS caching proxy for Kubernetes, a drop-in for
//! k8s-dns-node-cache (NodeLocal DNSCache). The binary parses its [`Args`] and calls [`run`].
//!
//! - `cli`: command-line arguments and logging.
//! - `corefile`: the Corefile language: tokenizer, parser, directives, and the build of
//!   [`shardns_shard::Config`] (plus the process-level settings).
//! - `runtime`: running the process: `sockets` (every listening socket is created there),
//!   `shards` (the pinned shard threads), `signals` (every signal handler), `reload` (SIGUSR1
//!   and the `reload` directive: a new configuration for every shard).
//! - `http`: the one HTTP server and its routes (`/metrics`).
//! - `metrics`: the Prometheus page summing the shards' counters.
#![forbid(unsafe_code)]

mod cli;
mod corefile;
mod http;
mod metrics;
mod runtime;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use shardns_shard::ShardStats;

use runtime::{reload, shards, signals, sockets};

pub use cli::{Args, CoalesceArg, IoArg};

/// Upstream counter slots allocated per shard at least (a reload may add upstreams).
const STATS_UPSTREAMS: usize = 32;

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// Runs the process for `args`: sets up logging, loads the Corefile (status 64 with a
/// `FILE:LINE` message when it is not valid), then with `--validate` prints OK, else serves
/// until SIGTERM or SIGINT (status 0) or until a shard fails (status 1).
pub fn run(args: Args) -> ExitCode {
    cli::init_logging(args.verbose);
    let config = match corefile::load(args.conf.as_deref(), &args.resolv_conf) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shardns: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.validate {
        println!("OK");
        return ExitCode::SUCCESS;
    }
    match serve(&args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the sockets, starts the shards (and the metrics endpoints) and waits until they stop.
fn serve(args: &Args, process: corefile::ProcessConfig) -> anyhow::Result<()> {
    let mut config = process.config.clone();
    config.limits.upstream_tcp_inflight = args.upstream_inflight as usize;
    config.limits.upstream_tcp_conns = args.upstream_conns as usize;
    config.limits.attempt_timeout = args.upstream_timeout;
    config.limits.query_timeout = args.query_timeout;
    let metrics_addrs = process.metrics.clone();
    let shard_count = args
        .shards
        .map_or_else(shards::default_count, |count| count as usize);
    tracing::info!(
        "shardns {} starting: {shard_count} shards, io {}",
        env!("CARGO_PKG_VERSION"),
        args.io.name()
    );
    let addrs: Vec<_> = config
        .listeners
        .iter()
        .map(|listener| listener.addr)
        .collect();
    let bound = sockets::bind_all(&addrs, shard_count)?;
    for (listener, addr) in config.listeners.iter_mut().zip(&bound.addrs) {
        let Some(addr) = addr else { continue };
        listener.addr = *addr;
        let zones: Vec<&str> = listener
            .servers
            .iter()
            .map(|&server| config.servers[server].zone_text.as_str())
            .collect();
        tracing::info!("serving zones {} on {addr} (udp, tcp)", zones.join(" "));
    }
    let mut metrics_listeners = Vec::with_capacity(metrics_addrs.len());
    for addr in metrics_addrs {
        let listener = sockets::metrics_listener(addr)?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!("serving metrics on http://{bound}/metrics");
        metrics_listeners.push(listener);
    }
    // Room for upstreams a reload may add (the blocks cannot change without a restart).
    let upstream_slots = config.upstreams.len().max(STATS_UPSTREAMS);
    let stats: Vec<Arc<ShardStats>> = (0..bound.shards.len())
        .map(|_| Arc::new(ShardStats::new(config.servers.len(), upstream_slots)))
        .collect();
    let config = Arc::new(config);
    let signals = signals::install()?;
    let shutdown = signals.shutdown;
    let exposition = Arc::new(Mutex::new(metrics::Exposition::new(&config, stats.clone())));
    let metrics_thread = if metrics_listeners.is_empty() {
        None
    } else {
        let router = http::routes(Arc::clone(&exposition));
        let thread = http::start(metrics_listeners, router, Arc::clone(&shutdown))
            .context("cannot start the metrics thread")?;
        Some(thread)
    };
    let reloader = reload::Reloader::new(
        args.conf.clone(),
        args.resolv_conf.clone(),
        &process,
        Arc::clone(&config),
    )
    .with_metrics(exposition, stats.clone());
    let mut reload_thread = None;
    let result = shards::run_all(
        config,
        args.io.mode(),
        args.coalesce.mode(),
        bound.shards,
        stats,
        Arc::clone(&shutdown),
        |control| match reload::start(reloader, control, signals.reload, Arc::clone(&shutdown)) {
            Ok(thread) => reload_thread = Some(thread),
            Err(error) => tracing::error!(%error, "cannot start the reload thread"),
        },
    );
    shutdown.store(true, Ordering::SeqCst);
    if let Some(thread) = metrics_thread
        && thread.join().is_err()
    {
        tracing::error!("the metrics thread panicked");
    }
    if let Some(thread) = reload_thread
        && thread.join().is_err()
    {
        tracing::error!("the reload thread panicked");
    }
    result?;
    tracing::info!("shardns stopped");
    Ok(())
}
