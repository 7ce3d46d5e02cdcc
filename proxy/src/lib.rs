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

use runtime::lifecycle::{Ending, Lifecycle};

pub use cli::{Args, CoalesceArg, IoArg};

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
    match Lifecycle::new(&args, config).run() {
        Ok(Ending::Stopped) => {
            tracing::info!("shardns stopped");
            ExitCode::SUCCESS
        }
        Ok(Ending::ShardsFailed(failed)) => {
            tracing::error!("{failed}");
            ExitCode::FAILURE
        }
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
