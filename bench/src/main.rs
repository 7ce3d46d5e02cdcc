//! `shardns-bench`: the project's load tools.
//!
//! - `load`: a dnsperf-compatible generator that can saturate a core (batched
//!   `sendmmsg`/`recvmmsg` over many source ports), closed- or open-loop, UDP or TCP, with
//!   HDR-histogram latency percentiles.
//! - `reflect`: the cheapest possible UDP responder (echo with QR set): the kernel's floor.
//! - `resolve`: concurrent lookups through the system resolver (`getaddrinfo`), as a pod sees.
//! - `compare`: every server pinned to one CPU, the same load on another, one table.
//! - `names`: a query file of N distinct names under one zone (for `load --zipf`).
//! - `upstream`: a fast synthetic upstream on UDP and TCP, pipelined or serialising like
//!   CoreDNS, that counts its queries and connections (for the miss path).
#![forbid(unsafe_code)]

mod compare;
mod flood;
mod load;
mod mmsg;
mod names;
mod reflect;
mod resolve;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// A flag that SIGTERM and SIGINT set, for the tools that run until stopped.
pub(crate) fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    Ok(stop)
}

/// shardns's load tools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send DNS queries and measure answers (dnsperf-compatible flags).
    Load(load::Args),
    /// Keep queries in flight and count replies, nothing else: the lightest client.
    Flood(flood::Args),
    /// Echo every datagram back with QR set: the per-query kernel floor.
    Reflect(reflect::Args),
    /// Concurrent lookups through the system resolver (getaddrinfo).
    Resolve(resolve::Args),
    /// Run servers side by side and print a comparison table.
    Compare(compare::Args),
    /// Write a query file of N distinct names (`n0.ZONE TYPE` ...) to standard output.
    Names(names::Args),
    /// Answer every query with one synthetic record (UDP and TCP, pipelined or serialised).
    Upstream(upstream::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,shardns_bench=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Load(args) => load::run(args),
        Command::Flood(args) => flood::run(args),
        Command::Reflect(args) => reflect::run(args),
        Command::Resolve(args) => resolve::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Names(args) => names::run(args),
        Command::Upstream(args) => upstream::run(args),
    }
}
