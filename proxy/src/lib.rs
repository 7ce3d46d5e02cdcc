//! `shardns`: a node-local DNS caching proxy for Kubernetes, a drop-in for
//! k8s-dns-node-cache (NodeLocal DNSCache).
//!
//! # Contract
//!
//! The binary parses its command line into [`Args`] (shardns's `--long` arguments and
//! node-cache's flags in Go's syntax, [`NodeCacheArgs`]; a bad one exits with status 2 and
//! clap's message) and calls [`run`], once per process:
//! `run` sets up logging, loads the Corefile (a bad one exits with status 64 and a
//! `FILE:LINE: message` on stderr; `--validate` prints `OK` and exits 0), then serves until
//! SIGTERM or SIGINT (status 0; a second signal during the stop changes nothing) or until a shard
//! fails (status 1, `N of M shards failed`). SIGUSR1 reloads the Corefile. The node-cache
//! flags are parsed and checked only: no node setup reads them yet. Nothing else is public.
//!
//! # Map
//!
//! - `cli/`: the command-line arguments, how their limits apply to the configuration
//!   (`Args::apply_limits`), and logging; node-cache's flags in Go's syntax (`go_syntax`),
//!   as typed values (`node_cache`: [`NodeCacheArgs`]) and in the help (`help`).
//! - `corefile/`: the Corefile language, from text to the shards' [`shardns_shard::Config`]
//!   and the process-level settings beside it (`ProcessConfig`). `tokenizer` and `parser`
//!   make server blocks of directives; `directives/` has one file per directive (`cache`,
//!   `forward`, `prometheus`, `reload`; `bind` and `errors` in its `mod.rs`), which is where
//!   a directive is parsed; `build` turns the blocks into the configuration; `address`,
//!   `duration` and `resolv` are the value syntaxes they share. `mod.rs` is the surface:
//!   `load`, `ProcessConfig`, `ConfigError`, the built-in Corefile.
//! - `runtime/`: running the process. `lifecycle` holds the phases of start-up (configure,
//!   bind, serve, ready) and shutdown (stop reading, drain, teardown) in order, and how a run
//!   ended; `sockets` is the one place sockets are made; `shards` spawns, pins, waits for and
//!   joins the shard threads; `signals` is every signal handler; `reload` the reload thread.
//! - `http/`: the one HTTP server (hyper on a current-thread tokio runtime in the `http`
//!   thread): `server` accepts under limits (connections, first byte, head time, lifetime);
//!   `router` maps path and method to a route (404, 405 with `Allow`, `HEAD` from `GET`);
//!   `routes` builds `/metrics`, `/health` and `/ready`; `health_probe` is CoreDNS's
//!   self-probe of `/health`.
//! - `metrics/`: the Prometheus page the `/metrics` route renders, summing the shards'
//!   counters.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod cli;
mod corefile;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod metrics;
mod runtime;
mod supervisor;

use std::process::ExitCode;

use runtime::lifecycle::{Ending, Lifecycle};

pub use cli::{Args, CoalesceArg, IoArg, LocalIps, LocalIpsError, NodeCacheArgs};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EXIT_USAGE: u8 = 64;

/// A worker's status when the `loop` check saw a loop (its supervisor stops, status 1).
const EXIT_LOOP: u8 = 3;

/// Runs the process for `args`: sets up logging, loads the Corefile (status 64 with a
/// `FILE:LINE` message when it is not valid; in node-local mode it is first made from
/// node-cache's template), then with `--validate` prints OK, else serves until SIGTERM or
/// SIGINT (status 0), until a shard fails or until the `loop` check sees a loop (status 1).
pub fn run(args: Args) -> ExitCode {
    cli::init_logging(args.verbose);
    if args.validate {
        // Nothing is written: node-local mode makes the Corefile in memory only.
        return match runtime::lifecycle::load(&args, false) {
            Ok(_) => {
                println!("OK");
                ExitCode::SUCCESS
            }
            Err(message) => invalid(&message),
        };
    }
    if args.supervise {
        return supervisor::supervise(&args);
    }
    match Lifecycle::new(&args).run() {
        Ok(Ending::Stopped) => {
            tracing::info!("shardns stopped");
            ExitCode::SUCCESS
        }
        Ok(Ending::HandedOff) => {
            tracing::info!("shardns stopped: handed over");
            ExitCode::SUCCESS
        }
        Ok(Ending::Invalid(message)) => invalid(&message),
        Ok(Ending::ShardsFailed(failed)) => {
            tracing::error!("{failed}");
            ExitCode::FAILURE
        }
        // A worker tells its supervisor apart from a crash; the supervisor exits 1 for it.
        Ok(Ending::LoopDetected) if args.worker_of.is_some() => ExitCode::from(EXIT_LOOP),
        Ok(Ending::LoopDetected) => ExitCode::FAILURE,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A configuration that is not valid: its message on stderr, status 64.
fn invalid(message: &str) -> ExitCode {
    eprintln!("shardns: {message}");
    ExitCode::from(EXIT_USAGE)
}
