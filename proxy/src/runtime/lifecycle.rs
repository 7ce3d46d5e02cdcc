//! The order of a run: start-up and shutdown as named phases ([`Phase`]), each a method of
//! [`Lifecycle`], called in order by [`Lifecycle::run`] and logged at `debug` with its
//! duration (`phase bind: 3 ms`).
//!
//! Start-up:
//!
//! 1. configure: the command line's limits are applied to the Corefile's configuration.
//! 2. bind: every listening socket: each shard's DNS sockets and the HTTP listeners.
//! 3. serve: the counters, the signal handlers, the HTTP thread, the reload thread and the
//!    shard threads are started.
//! 4. ready: every shard has started.
//!
//! Then the main thread waits until the shutdown flag is set: by SIGTERM or SIGINT, or
//! because a shard failed.
//!
//! Shutdown:
//!
//! 1. stop reading: the shutdown flag is set; the shards leave their loops.
//! 2. drain: the shard threads are joined (each closes its client connections as it
//!    leaves).
//! 3. teardown: the HTTP and reload threads are joined.
//!
//! How the run ended is an [`Ending`]. A new step of start-up or shutdown is a new phase:
//! one more [`Phase`], one more method here and one more line in [`Lifecycle::run`].

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use shardns_shard::{Config, ShardSockets};

use super::reload::{self, Reloader};
use super::shards::{self, RunningShards, Shards, ShardsFailed};
use super::{signals, sockets};
use crate::cli::Args;
use crate::corefile::ProcessConfig;
use crate::http;
use crate::metrics::{Exposition, ProcessCounters};

/// A named step of a run, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The command line's limits applied to the Corefile's configuration.
    Configure,
    /// Every listening socket made.
    Bind,
    /// Counters, signal handlers, the HTTP, reload and shard threads started.
    Serve,
    /// Every shard started.
    Ready,
    /// The shutdown flag set: the shards leave their loops.
    StopReading,
    /// The shard threads joined.
    Drain,
    /// The HTTP and reload threads joined.
    Teardown,
}

impl Phase {
    /// The name logged (`phase stop reading: 0 ms`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Configure => "configure",
            Phase::Bind => "bind",
            Phase::Serve => "serve",
            Phase::Ready => "ready",
            Phase::StopReading => "stop reading",
            Phase::Drain => "drain",
            Phase::Teardown => "teardown",
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The shutdown flag was set (by SIGTERM or SIGINT) and every shard stopped cleanly.
    Stopped,
    /// Shards failed: returned an error, panicked or could not start. The shutdown flag was
    /// set so that the others stopped too.
    ShardsFailed(ShardsFailed),
}

/// One run of the process: the command line and the built Corefile, taken through the
/// phases.
#[derive(Debug)]
pub(crate) struct Lifecycle<'a> {
    args: &'a Args,
    /// The Corefile as built (listening addresses as written).
    process: ProcessConfig,
    shard_count: usize,
}

/// What the bind phase made.
#[derive(Debug)]
struct Bound {
    /// The shards' configuration with the bound addresses (the real port for port 0).
    config: Config,
    /// Every shard's DNS sockets, in shard order.
    shard_sockets: Vec<ShardSockets>,
    /// One per `prometheus` address.
    http_listeners: Vec<TcpListener>,
}

/// What the serve phase started.
#[derive(Debug)]
struct Running {
    /// Set to stop every thread.
    shutdown: Arc<AtomicBool>,
    shards: RunningShards,
    /// The HTTP server, when there is a `prometheus` address.
    http_thread: Option<JoinHandle<()>>,
    /// The reload thread, when there are shards to reload.
    reload_thread: Option<JoinHandle<()>>,
}

impl<'a> Lifecycle<'a> {
    /// A run of `process` (the Corefile as built) with the settings of `args`.
    pub(crate) fn new(args: &'a Args, process: ProcessConfig) -> Lifecycle<'a> {
        let shard_count = args
            .shards
            .map_or_else(shards::default_count, |count| count as usize);
        Lifecycle {
            args,
            process,
            shard_count,
        }
    }

    /// Runs every phase in order and returns how the run ended, once every thread has
    /// stopped. An error is a start-up that failed before the shards ran.
    pub(crate) fn run(self) -> anyhow::Result<Ending> {
        let config = phase(Phase::Configure, || self.configure());
        let bound = phase(Phase::Bind, || self.bind(config))?;
        let mut running = phase(Phase::Serve, || self.serve(bound))?;
        // Node setup (the node-local interface, the iptables rules) goes here, as a phase of
        // its own between serve and ready.
        phase(Phase::Ready, || self.ready(&mut running));
        running.shards.wait_for_stop();
        phase(Phase::StopReading, || self.stop_reading(&running));
        let drained = phase(Phase::Drain, || self.drain(&mut running));
        phase(Phase::Teardown, || self.teardown(running));
        Ok(match drained {
            Ok(()) => Ending::Stopped,
            Err(failed) => Ending::ShardsFailed(failed),
        })
    }

    /// Configure: the shards' configuration, with the limits of the command line.
    fn configure(&self) -> Config {
        let mut config = self.process.config.clone();
        self.args.apply_limits(&mut config.limits);
        tracing::info!(
            "shardns {} starting: {} shards, io {}",
            env!("CARGO_PKG_VERSION"),
            self.shard_count,
            self.args.io.name()
        );
        if self.args.conf.is_none() {
            let upstreams: Vec<String> = config
                .upstreams
                .iter()
                .map(|upstream| upstream.addr.to_string())
                .collect();
            let listener = config.listeners.first().map(|l| l.addr.to_string());
            tracing::info!(
                "built-in configuration: a cache on {} forwarding . to {} (from {})",
                listener.unwrap_or_default(),
                upstreams.join(" "),
                self.args.resolv_conf.display()
            );
        }
        for server in config
            .servers
            .iter()
            .filter(|server| server.forward.is_none())
        {
            tracing::warn!(
                "server block {} has no forward: it answers REFUSED to every query it has not \
                 cached",
                server.zone_text
            );
        }
        config
    }

    /// Bind: every listening socket, and `config` with the addresses they got.
    fn bind(&self, mut config: Config) -> anyhow::Result<Bound> {
        let addrs: Vec<SocketAddr> = config
            .listeners
            .iter()
            .map(|listener| listener.addr)
            .collect();
        let bound = sockets::bind_all(&addrs, self.shard_count)?;
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
        let mut http_listeners = Vec::with_capacity(self.process.metrics.len());
        for &addr in &self.process.metrics {
            let listener = sockets::metrics_listener(addr)?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!("serving metrics on http://{bound}/metrics");
            http_listeners.push(listener);
        }
        Ok(Bound {
            config,
            shard_sockets: bound.shards,
            http_listeners,
        })
    }

    /// Serve: the counters, the signal handlers and the shards' peer mesh, then the HTTP,
    /// reload and shard threads.
    fn serve(&self, bound: Bound) -> anyhow::Result<Running> {
        let Bound {
            config,
            shard_sockets,
            http_listeners,
        } = bound;
        let stats = shards::counters(&config, shard_sockets.len());
        let config = Arc::new(config);
        let signals = signals::install()?;
        let shutdown = signals.shutdown;
        let shards = Shards::new(
            Arc::clone(&config),
            self.args.io.mode(),
            self.args.coalesce.mode(),
            shard_sockets,
            stats.clone(),
            Arc::clone(&shutdown),
        )?;
        let process = Arc::new(ProcessCounters::default());
        let exposition = Arc::new(Mutex::new(Exposition::new(&config, stats, process)));
        let http_thread = if http_listeners.is_empty() {
            None
        } else {
            let endpoints = http_listeners
                .into_iter()
                .map(|listener| http::Endpoint {
                    listener,
                    router: http::Router::new().metrics(Arc::clone(&exposition), None),
                })
                .collect();
            let thread = http::start(endpoints, Arc::clone(&shutdown))
                .context("cannot start the http thread")?;
            Some(thread)
        };
        let reloader = Reloader::new(
            self.args.conf.clone(),
            self.args.resolv_conf.clone(),
            &self.process,
            config,
        )
        .with_metrics(exposition);
        let reload_thread = shards.control().and_then(|control| {
            match reload::start(reloader, control, signals.reload, Arc::clone(&shutdown)) {
                Ok(thread) => Some(thread),
                Err(error) => {
                    tracing::error!(%error, "cannot start the reload thread");
                    None
                }
            }
        });
        let shards = shards.start();
        Ok(Running {
            shutdown,
            shards,
            http_thread,
            reload_thread,
        })
    }

    /// Ready: every shard has started (or one has already stopped).
    fn ready(&self, running: &mut Running) {
        running.shards.wait_until_started();
    }

    /// Stop reading: the shutdown flag is set, so the shards leave their loops (and the
    /// other threads theirs).
    fn stop_reading(&self, running: &Running) {
        running.shutdown.store(true, Ordering::SeqCst);
    }

    /// Drain: every shard thread is joined; each closes its client connections as it
    /// leaves.
    fn drain(&self, running: &mut Running) -> Result<(), ShardsFailed> {
        running.shards.join()
    }

    /// Teardown: the HTTP and reload threads are joined.
    fn teardown(&self, running: Running) {
        if let Some(thread) = running.http_thread
            && thread.join().is_err()
        {
            tracing::error!("the http thread panicked");
        }
        if let Some(thread) = running.reload_thread
            && thread.join().is_err()
        {
            tracing::error!("the reload thread panicked");
        }
    }
}

/// Runs `phase` and logs its duration.
fn phase<T>(phase: Phase, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = run();
    let name = phase.name();
    tracing::debug!("phase {name}: {} ms", started.elapsed().as_millis());
    result
}
