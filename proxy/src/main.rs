//! `shardns`: a node-local DNS caching proxy for Kubernetes, a drop-in for
//! k8s-dns-node-cache (NodeLocal DNSCache).
//!
//! - [`cli`]: command-line arguments and logging.
//! - [`corefile`]: the Corefile tokenizer and parser.
//! - [`directives`], [`address`], [`duration`], [`resolv`]: what the directives mean.
//! - [`config`]: Corefile → [`shardns_shard::Config`].
//! - [`sockets`]: every listening socket is created there.
//! - [`shards`]: the pinned shard threads and the signals that stop them.
#![forbid(unsafe_code)]

mod address;
mod cli;
mod config;
mod corefile;
mod directives;
mod duration;
mod resolv;
mod shards;
mod sockets;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(args.verbose);
    let config = match config::load(args.conf.as_deref(), &args.resolv_conf) {
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

/// Binds the sockets, starts the shards and waits until they stop.
fn serve(args: &cli::Args, mut config: shardns_shard::Config) -> anyhow::Result<()> {
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
    let shutdown = Arc::new(AtomicBool::new(false));
    shards::install_signal_handlers(&shutdown).context("cannot install signal handlers")?;
    shards::run_all(
        Arc::new(config),
        args.io.mode(),
        args.coalesce.mode(),
        bound.shards,
        shutdown,
    )?;
    tracing::info!("shardns stopped");
    Ok(())
}
