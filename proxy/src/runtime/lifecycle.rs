//! The order of a run: start-up and shutdown as named phases ([`Phase`]), each a method of
//! [`Lifecycle`], called in order by [`Lifecycle::run`] and logged at `debug` with its
//! duration (`phase bind: 3 ms`); the whole start-up and the whole stop are logged at `info`.
//!
//! Start-up:
//!
//! 1. load: the Corefile read and built; in node-local mode (`-localip`) first made from
//!    node-cache's template and written to `-conf` ([`super::node_local`]).
//! 2. configure: the command line's limits are applied to the Corefile's configuration.
//! 3. prepare (node-local): the interface holding the local IPs.
//! 4. bind: every listening socket: each shard's DNS sockets and the HTTP listeners.
//! 5. serve: the counters, the signal handlers, the HTTP thread, the reload thread and the
//!    shard threads are started.
//! 6. ready: every shard has started; the pidfile is written; the `loop` check starts.
//! 7. install (node-local): the NOTRACK rules, then the threads that keep them and the
//!    interface, and that watch the template and the kube-dns ConfigMap.
//!
//! Then the main thread waits for the stop flag (SIGTERM or SIGINT, or a loop detected) or
//! for a shard to fail.
//!
//! Shutdown:
//!
//! 1. withdraw: `/ready` answers 503; in node-local mode the rules are removed, so new
//!    queries go to the cluster DNS while those already here are answered.
//! 2. lameduck: after a signal, DNS and `/health` are served for the `health` directive's
//!    `lameduck` duration.
//! 3. stop reading: the shutdown flag is set; the shards leave their loops.
//! 4. drain: the shard threads are joined (each closes its client connections as it
//!    leaves).
//! 5. teardown: the HTTP, reload and loop threads are joined; in node-local mode the
//!    interface is removed; the pidfile is removed.
//!
//! How the run ended is an [`Ending`]. A new step of start-up or shutdown is a new phase:
//! one more [`Phase`], one more method here and one more line in [`Lifecycle::run`].

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use shardns_shard::{Config, ShardSockets};

use super::endpoints::{self, EndpointPlan};
use super::node_local::NodeLocal;
use super::readiness::Readiness;
use super::reload::{self, Reloader};
use super::shards::{self, RunningShards, Shards, ShardsFailed};
use super::{loop_check, signals, sockets};
use crate::cli::Args;
use crate::corefile::{self, ProcessConfig};
use crate::http;
use crate::metrics::{Exposition, ProcessCounters};

/// A named step of a run, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The Corefile read and built (in node-local mode, first made from the template).
    Load,
    /// The command line's limits applied to the Corefile's configuration.
    Configure,
    /// Node-local mode: the interface holding the local IPs.
    Prepare,
    /// Every listening socket made.
    Bind,
    /// Counters, signal handlers, the HTTP, reload and shard threads started.
    Serve,
    /// Every shard started; the pidfile written; the loop check started.
    Ready,
    /// Node-local mode: the rules installed, the node-sync and corefile-watch threads started.
    Install,
    /// `/ready` answers 503; node-local mode: the rules removed.
    Withdraw,
    /// DNS and `/health` still served for the `lameduck` duration.
    Lameduck,
    /// The shutdown flag set: the shards leave their loops.
    StopReading,
    /// The shard threads joined.
    Drain,
    /// The other threads joined; node-local mode: the interface removed; the pidfile removed.
    Teardown,
}

impl Phase {
    /// The name logged (`phase stop reading: 0 ms`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Configure => "configure",
            Phase::Prepare => "prepare",
            Phase::Bind => "bind",
            Phase::Serve => "serve",
            Phase::Ready => "ready",
            Phase::Install => "install",
            Phase::Withdraw => "withdraw",
            Phase::Lameduck => "lameduck",
            Phase::StopReading => "stop reading",
            Phase::Drain => "drain",
            Phase::Teardown => "teardown",
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The Corefile (or node-local mode's inputs) is not valid: the message, for stderr.
    Invalid(String),
    /// The stop flag was set (by SIGTERM or SIGINT) and every shard stopped cleanly.
    Stopped,
    /// Shards failed: returned an error, panicked or could not start. The shutdown flag was
    /// set so that the others stopped too.
    ShardsFailed(ShardsFailed),
    /// The `loop` check saw a block's probe come back (logged by the shard that saw it).
    LoopDetected,
}

/// One run of the process: the command line, taken through the phases.
#[derive(Debug)]
pub(crate) struct Lifecycle<'a> {
    args: &'a Args,
    shard_count: usize,
}

/// What the load phase made.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The Corefile as built (listening addresses as written).
    pub process: ProcessConfig,
    /// The Corefile's path, read again on reload (`None`: the built-in one).
    pub conf: Option<PathBuf>,
    /// Node-local mode's state.
    pub node: Option<NodeLocal>,
}

/// What the bind phase made.
#[derive(Debug)]
struct Bound {
    /// The shards' configuration with the bound addresses (the real port for port 0).
    config: Config,
    /// Every shard's DNS sockets, in shard order.
    shard_sockets: Vec<ShardSockets>,
    /// One per HTTP address, with its routes.
    http_listeners: Vec<(EndpointPlan, TcpListener)>,
}

/// What the serve phase started.
#[derive(Debug)]
struct Running {
    /// Set by a signal or the loop check: the stop begins.
    stop: Arc<AtomicBool>,
    /// Set to stop every thread.
    shutdown: Arc<AtomicBool>,
    /// Set to reload the Corefile (SIGUSR1, or a Corefile rewritten in node-local mode).
    reload: Arc<AtomicBool>,
    /// The configuration the shards started with (bound addresses).
    config: Arc<Config>,
    shards: RunningShards,
    readiness: Arc<Readiness>,
    /// The HTTP server, when there is an HTTP address.
    http_thread: Option<JoinHandle<()>>,
    /// The reload thread, when there are shards to reload.
    reload_thread: Option<JoinHandle<()>>,
    /// The loop check, while it runs.
    loop_thread: Option<JoinHandle<()>>,
    /// Set by the loop check when it saw a loop.
    loop_detected: Arc<AtomicBool>,
    node: Option<NodeLocal>,
    /// The pidfile written.
    pidfile: Option<PathBuf>,
    /// `health ... { lameduck D }`.
    lameduck: Option<Duration>,
}

/// Reads and builds the Corefile: the built-in one, `--conf`, or in node-local mode the one
/// made from node-cache's template (written to `-conf` when `write`). The error is the
/// message for stderr.
pub(crate) fn load(args: &Args, write: bool) -> Result<Loaded, String> {
    if !args.node_cache.is_node_local() {
        let process = corefile::load(args.conf.as_deref(), &args.resolv_conf)
            .map_err(|error| error.to_string())?;
        return Ok(Loaded {
            process,
            conf: args.conf.clone(),
            node: None,
        });
    }
    let generated = NodeLocal::generate(args, write).map_err(|error| format!("{error:#}"))?;
    let file = generated.path.display().to_string();
    let process = corefile::build_process(&file, &generated.corefile).map_err(|error| {
        format!(
            "{error} (the Corefile made from {})",
            args.node_cache.base_corefile.display()
        )
    })?;
    Ok(Loaded {
        process,
        conf: Some(generated.path),
        node: Some(generated.node),
    })
}

impl<'a> Lifecycle<'a> {
    /// A run with the settings of `args`.
    pub(crate) fn new(args: &'a Args) -> Lifecycle<'a> {
        let shard_count = args
            .shards
            .map_or_else(shards::default_count, |count| count as usize);
        Lifecycle { args, shard_count }
    }

    /// Runs every phase in order and returns how the run ended, once every thread has
    /// stopped. An error is a start-up that failed before the shards ran.
    pub(crate) fn run(self) -> anyhow::Result<Ending> {
        let started = Instant::now();
        let loaded = match phase(Phase::Load, || load(self.args, true)) {
            Ok(loaded) => loaded,
            Err(message) => return Ok(Ending::Invalid(message)),
        };
        let config = phase(Phase::Configure, || self.configure(&loaded));
        if let Some(node) = &loaded.node {
            phase(Phase::Prepare, || node.prepare());
        }
        let bound = phase(Phase::Bind, || self.bind(config, &loaded))?;
        let mut running = phase(Phase::Serve, || self.serve(bound, loaded))?;
        phase(Phase::Ready, || self.ready(&mut running));
        phase(Phase::Install, || self.install(&mut running))?;
        tracing::info!("started in {} ms", started.elapsed().as_millis());
        running.shards.wait_for_stop(&running.stop);
        let stopping = Instant::now();
        phase(Phase::Withdraw, || self.withdraw(&mut running));
        phase(Phase::Lameduck, || self.lameduck(&running));
        phase(Phase::StopReading, || self.stop_reading(&running));
        let drained = phase(Phase::Drain, || self.drain(&mut running));
        let loop_detected = running.loop_detected.load(Ordering::SeqCst);
        phase(Phase::Teardown, || self.teardown(running));
        tracing::info!("stopped in {} ms", stopping.elapsed().as_millis());
        Ok(match drained {
            _ if loop_detected => Ending::LoopDetected,
            Ok(()) => Ending::Stopped,
            Err(failed) => Ending::ShardsFailed(failed),
        })
    }

    /// Configure: the shards' configuration, with the limits of the command line.
    fn configure(&self, loaded: &Loaded) -> Config {
        let mut config = loaded.process.config.clone();
        self.args.apply_limits(&mut config.limits);
        tracing::info!(
            "shardns {} starting: {} shards, io {}",
            env!("CARGO_PKG_VERSION"),
            self.shard_count,
            self.args.io.name()
        );
        if loaded.conf.is_none() {
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
    fn bind(&self, mut config: Config, loaded: &Loaded) -> anyhow::Result<Bound> {
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
        let node_metrics = loaded
            .node
            .as_ref()
            .map(|_| self.args.node_cache.metrics_listen_address);
        let plans = endpoints::plan(&loaded.process, node_metrics);
        let mut http_listeners = Vec::with_capacity(plans.len());
        for plan in plans {
            let listener = sockets::metrics_listener(plan.addr)?;
            let bound = listener.local_addr().unwrap_or(plan.addr);
            tracing::info!("serving {} on http://{bound}", plan.paths());
            http_listeners.push((plan, listener));
        }
        Ok(Bound {
            config,
            shard_sockets: bound.shards,
            http_listeners,
        })
    }

    /// Serve: the counters, the signal handlers and the shards' peer mesh, then the HTTP,
    /// reload and shard threads.
    fn serve(&self, bound: Bound, loaded: Loaded) -> anyhow::Result<Running> {
        let Bound {
            config,
            shard_sockets,
            http_listeners,
        } = bound;
        let Loaded {
            process,
            conf,
            node,
        } = loaded;
        let stats = shards::counters(&config, shard_sockets.len());
        let config = Arc::new(config);
        let signals = signals::install()?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let shards = Shards::new(
            Arc::clone(&config),
            self.args.io.mode(),
            self.args.coalesce.mode(),
            shard_sockets,
            stats.clone(),
            Arc::clone(&shutdown),
        )?;
        let process_counters = Arc::new(ProcessCounters {
            setup_errors: node.as_ref().map(NodeLocal::errors),
            ..ProcessCounters::default()
        });
        let exposition = Arc::new(Mutex::new(Exposition::new(
            &config,
            stats.clone(),
            process_counters,
        )));
        let readiness = Arc::new(Readiness::new(
            &config,
            stats,
            node.as_ref().and_then(NodeLocal::rules_in_place),
        ));
        let http_thread = if http_listeners.is_empty() {
            None
        } else {
            let endpoints = routers(http_listeners, &exposition, &readiness);
            let thread = http::start(endpoints, Arc::clone(&shutdown))
                .context("cannot start the http thread")?;
            Some(thread)
        };
        let reloader = Reloader::new(
            conf,
            self.args.resolv_conf.clone(),
            &process,
            Arc::clone(&config),
        )
        .with_metrics(exposition)
        .with_readiness(Arc::clone(&readiness));
        let reload_thread = shards.control().and_then(|control| {
            let reload = Arc::clone(&signals.reload);
            match reload::start(reloader, control, reload, Arc::clone(&shutdown)) {
                Ok(thread) => Some(thread),
                Err(error) => {
                    tracing::error!(%error, "cannot start the reload thread");
                    None
                }
            }
        });
        let shards = shards.start();
        Ok(Running {
            stop: signals.stop,
            shutdown,
            reload: signals.reload,
            config,
            shards,
            readiness,
            http_thread,
            reload_thread,
            loop_thread: None,
            loop_detected: Arc::new(AtomicBool::new(false)),
            node,
            pidfile: None,
            lameduck: process.lameduck,
        })
    }

    /// Ready: every shard has started (or one has already stopped); `/ready` may pass; the
    /// pidfile is written; the `loop` check starts.
    fn ready(&self, running: &mut Running) {
        running.shards.wait_until_started();
        running.readiness.serving();
        if let Some(path) = &self.args.node_cache.pidfile {
            match std::fs::write(path, format!("{}\n", std::process::id())) {
                Ok(()) => running.pidfile = Some(path.clone()),
                Err(error) => {
                    tracing::error!("cannot write the pidfile {}: {error}", path.display())
                }
            }
        }
        match loop_check::start(
            &running.config,
            Arc::clone(&running.loop_detected),
            Arc::clone(&running.stop),
        ) {
            Ok(thread) => running.loop_thread = thread,
            Err(error) => tracing::error!(%error, "cannot start the loop check"),
        }
    }

    /// Install (node-local mode): the rules, now that every listener serves, and the
    /// threads that keep them and watch the template.
    fn install(&self, running: &mut Running) -> anyhow::Result<()> {
        match &mut running.node {
            Some(node) => node.install(Arc::clone(&running.reload)),
            None => Ok(()),
        }
    }

    /// Withdraw: `/ready` fails from now on; node-local mode: the rules go, so new queries
    /// reach the cluster DNS again.
    fn withdraw(&self, running: &mut Running) {
        running.readiness.stopping();
        if let Some(node) = &mut running.node {
            node.withdraw();
        }
    }

    /// Lameduck: after a signal (not a failure or a loop), DNS and `/health` are served for
    /// the `lameduck` duration.
    fn lameduck(&self, running: &Running) {
        let Some(duration) = running.lameduck else {
            return;
        };
        if running.shutdown.load(Ordering::SeqCst) || running.loop_detected.load(Ordering::SeqCst) {
            return;
        }
        tracing::info!("lameduck: still serving for {} ms", duration.as_millis());
        let until = Instant::now() + duration;
        while Instant::now() < until && !running.shutdown.load(Ordering::SeqCst) {
            thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }

    /// Stop reading: the shutdown flag is set, so the shards leave their loops (and the
    /// other threads theirs).
    fn stop_reading(&self, running: &Running) {
        running.stop.store(true, Ordering::SeqCst);
        running.shutdown.store(true, Ordering::SeqCst);
    }

    /// Drain: every shard thread is joined; each closes its client connections as it
    /// leaves.
    fn drain(&self, running: &mut Running) -> Result<(), ShardsFailed> {
        running.shards.join()
    }

    /// Teardown: the HTTP, reload and loop threads are joined; node-local mode: the
    /// interface goes; the pidfile goes.
    fn teardown(&self, running: Running) {
        for (name, thread) in [
            ("http", running.http_thread),
            ("reload", running.reload_thread),
            ("loop", running.loop_thread),
        ] {
            if let Some(thread) = thread
                && thread.join().is_err()
            {
                tracing::error!("the {name} thread panicked");
            }
        }
        if let Some(mut node) = running.node {
            node.finish();
        }
        if let Some(path) = running.pidfile
            && let Err(error) = std::fs::remove_file(&path)
        {
            tracing::warn!("cannot remove the pidfile {}: {error}", path.display());
        }
    }
}

/// One router per HTTP address, with its routes: every `/metrics` shows the same page (and
/// the health self-probe's series when there is a `/health`), every `/ready` the same
/// readiness.
fn routers(
    listeners: Vec<(EndpointPlan, TcpListener)>,
    exposition: &Arc<Mutex<Exposition>>,
    readiness: &Arc<Readiness>,
) -> Vec<http::Endpoint> {
    let probe = listeners
        .iter()
        .any(|(plan, _)| plan.health)
        .then(http::HealthProbe::new);
    listeners
        .into_iter()
        .map(|(plan, listener)| {
            let mut router = http::Router::new();
            if plan.metrics {
                router = router.metrics(Arc::clone(exposition), probe.clone());
            }
            if plan.health
                && let Some(probe) = &probe
            {
                router = router.health(probe.clone());
            }
            if plan.ready {
                let readiness = Arc::clone(readiness);
                let check: http::ReadinessCheck = Arc::new(move || readiness.check());
                router = router.ready(check);
            }
            http::Endpoint { listener, router }
        })
        .collect()
}

/// Runs `phase` and logs its duration.
fn phase<T>(phase: Phase, run: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = run();
    let name = phase.name();
    tracing::debug!("phase {name}: {} ms", started.elapsed().as_millis());
    result
}
