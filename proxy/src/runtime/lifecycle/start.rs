//! The start-up phases: configure, bind (or take over), serve, ready, take over, install.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use shardns_shard::Config;

use super::Lifecycle;
use super::state::{Bound, Loaded, Running};
use crate::http;
use crate::metrics::{Exposition, ProcessCounters};
use crate::runtime::endpoints::{self, EndpointPlan};
use crate::runtime::handoff::predecessor::{self, Hooks, Listening};
use crate::runtime::handoff::successor::{self, TakeOver};
use crate::runtime::handoff::{Inherited, Offer, SocketInfo, SocketKind};
use crate::runtime::node_local::NodeLocal;
use crate::runtime::readiness::Readiness;
use crate::runtime::reload::{self, Reloader};
use crate::runtime::shards::{self, Shards};
use crate::runtime::sockets::Bound as BoundSockets;
use crate::runtime::{fastpath, loop_check, pidfile, signals, sockets};

/// How long a process that refused to hand over may take to exit before this one gives up.
const PREDECESSOR_EXIT_WAIT: Duration = Duration::from_secs(120);

impl Lifecycle<'_> {
    /// Configure: the shards' configuration, with the limits of the command line.
    pub(super) fn configure(&self, loaded: &Loaded) -> Config {
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

    /// Bind: every listening socket (taken over from the process on the hand-off socket, if
    /// one answers), and `config` with the addresses they got.
    pub(super) fn bind(&self, mut config: Config, loaded: &Loaded) -> anyhow::Result<Bound> {
        let (mut inherited, successor) = self.ask_for_sockets()?;
        let shard_count = if successor.is_some() {
            if inherited.shards != self.shard_count && self.args.shards.is_some() {
                tracing::warn!(
                    "taking over {} shards (--shards {} applies at a restart)",
                    inherited.shards,
                    self.shard_count
                );
            }
            inherited.shards
        } else {
            self.shard_count
        };
        let written: Vec<SocketAddr> = config
            .listeners
            .iter()
            .map(|listener| listener.addr)
            .collect();
        let bound = sockets::bind_all(&written, shard_count, &mut inherited)?;
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
            let listener = sockets::metrics_listener(plan.addr, &mut inherited)?;
            let bound = listener.local_addr().unwrap_or(plan.addr);
            tracing::info!("serving {} on http://{bound}", plan.paths());
            http_listeners.push((plan, listener));
        }
        if inherited.left() > 0 {
            tracing::info!(
                "{} sockets of the predecessor are not used (addresses no longer served)",
                inherited.left()
            );
        }
        let offer = offer(&written, &bound, &http_listeners);
        Ok(Bound {
            config,
            shard_sockets: bound.shards,
            http_listeners,
            offer,
            successor,
        })
    }

    /// The sockets to start on: a worker's from its supervisor (which must give them), else
    /// a running shardns's on the hand-off socket, if one answers.
    fn ask_for_sockets(&self) -> anyhow::Result<(Inherited, Option<successor::Successor>)> {
        if let Some(private) = &self.args.worker_of {
            return match successor::take_over(private)? {
                TakeOver::Inherited(successor, inherited) => Ok((inherited, Some(successor))),
                other => anyhow::bail!(
                    "the supervisor on {} gave no sockets: {other:?}",
                    private.display()
                ),
            };
        }
        ask_for_sockets(self.args.handoff_path())
    }

    /// Serve: the counters, the signal handlers and the shards' peer mesh, then the HTTP,
    /// reload and shard threads.
    pub(super) fn serve(&self, bound: Bound, loaded: Loaded) -> anyhow::Result<Running> {
        let Bound {
            config,
            shard_sockets,
            http_listeners,
            offer,
            mut successor,
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
        let mut shards = Shards::new(
            Arc::clone(&config),
            self.args.io.mode(),
            self.args.coalesce.mode(),
            shard_sockets,
            stats.clone(),
            Arc::clone(&shutdown),
        )?;
        // The fast path (`fastpath`): loaded and attached now; its thread starts with the
        // shards.
        let fastpath = match fastpath::Plan::of(&config) {
            Ok(plan) => {
                plan.and_then(|plan| fastpath::load(Arc::clone(&config), plan, successor.is_none()))
            }
            Err(message) => {
                tracing::error!("{message}; every query is answered through the sockets");
                None
            }
        };
        if let Some(started) = &fastpath {
            shards.publish_to(started.publisher.clone());
        }
        let process_counters = Arc::new(ProcessCounters {
            setup_errors: node.as_ref().map(NodeLocal::errors),
            fastpath: fastpath
                .as_ref()
                .map(|started| Arc::clone(&started.counters)),
            ..ProcessCounters::default()
        });
        let exposition = Arc::new(Mutex::new(Exposition::new(
            &config,
            stats.clone(),
            Arc::clone(&process_counters),
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
            let thread = http::start(
                endpoints,
                Arc::clone(&shutdown),
                Arc::clone(&process_counters.http_refused),
            )
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
        let reloader = match &node {
            Some(node) => reloader.with_unwritten(node.unwritten_corefile()),
            None => reloader,
        };
        if let Some(successor) = &mut successor {
            let started = Instant::now();
            match successor.receive_cache() {
                Ok(chunks) => {
                    let bytes: usize = chunks.iter().map(Vec::len).sum();
                    tracing::info!(
                        "cache taken over from process {}: {} chunks, {bytes} bytes in {} ms",
                        successor.pid,
                        chunks.len(),
                        started.elapsed().as_millis()
                    );
                    shards.preload(chunks);
                }
                Err(error) => {
                    tracing::warn!("cache hand-off from process {}: {error}", successor.pid)
                }
            }
        }
        let control = shards.control();
        let drain = shards.drain();
        let reload_thread = control.clone().and_then(|control| {
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
        let fastpath_thread = fastpath.and_then(|started| {
            started
                .spawn(Arc::clone(&shutdown), control.clone())
                .map_err(|error| tracing::error!(%error, "cannot start the fastpath thread"))
                .ok()
        });
        Ok(Running {
            stop: signals.stop,
            signalled: signals.signalled,
            shutdown,
            reload: signals.reload,
            config,
            shards,
            control,
            drain,
            readiness,
            http_thread,
            reload_thread,
            loop_thread: None,
            fastpath_thread,
            loop_detected: Arc::new(AtomicBool::new(false)),
            node,
            pidfile: None,
            lameduck: process.lameduck,
            successor,
            offer: Some(offer),
            handoff: None,
            handed_off: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Ready: every shard has started (or one has already stopped); `/ready` may pass; the
    /// pidfile is written; the `loop` check starts.
    pub(super) fn ready(&self, running: &mut Running) {
        running.shards.wait_until_started();
        running.readiness.serving();
        // A worker's supervisor writes the pidfile.
        if let Some(path) = self
            .args
            .node_cache
            .pidfile
            .as_ref()
            .filter(|_| self.args.worker_of.is_none())
            && pidfile::write_or_log(path)
        {
            running.pidfile = Some(path.clone());
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

    /// Take over (after a hand-off): every shard serves (with the predecessor's cache): the
    /// switch, after which the predecessor reads no more and this process serves alone.
    pub(super) fn take_over(&self, running: &mut Running) {
        let Some(successor) = running.successor.take() else {
            return;
        };
        let pid = successor.pid;
        let started = Instant::now();
        match successor.switch() {
            Ok(()) => tracing::info!(
                "process {pid} stopped reading: serving alone ({} ms to switch)",
                started.elapsed().as_millis()
            ),
            Err(error) => tracing::warn!("switch from process {pid}: {error}"),
        }
    }

    /// Install: node-local mode's rules, now that every listener serves, and the threads that
    /// keep them and watch the template; then the hand-off socket, for the next upgrade.
    pub(super) fn install(&self, running: &mut Running) -> anyhow::Result<()> {
        if let Some(node) = &mut running.node {
            node.install(Arc::clone(&running.reload))?;
        }
        let (Some(path), Some(control), Some(offer)) = (
            self.args.handoff_path(),
            running.control.clone(),
            running.offer.take(),
        ) else {
            return Ok(());
        };
        let listening = match Listening::bind(&path) {
            Ok(listening) => Arc::new(listening),
            Err(error) => {
                tracing::warn!(
                    "cannot listen on the hand-off socket {}: {error} (upgrades will restart)",
                    path.display()
                );
                return Ok(());
            }
        };
        let hooks = Hooks {
            offer,
            shards: running.shards.total(),
            control,
            drain: Arc::clone(&running.drain),
            handed_off: Arc::clone(&running.handed_off),
            stop: Arc::clone(&running.stop),
            shutdown: Arc::clone(&running.shutdown),
        };
        let thread = predecessor::start(Arc::clone(&listening), hooks)
            .context("cannot start the handoff thread")?;
        tracing::info!("hand-off socket: {}", path.display());
        running.handoff = Some((listening, thread));
        Ok(())
    }
}

/// The sockets of a running shardns, if one answers on the hand-off socket `path`. One that
/// refuses is waited for: it must be gone before this process binds and sets up the node.
pub(crate) fn ask_for_sockets(
    path: Option<PathBuf>,
) -> anyhow::Result<(Inherited, Option<successor::Successor>)> {
    let Some(path) = path else {
        return Ok((Inherited::default(), None));
    };
    match successor::take_over(&path) {
        Ok(TakeOver::Nobody) => Ok((Inherited::default(), None)),
        Ok(TakeOver::Inherited(successor, inherited)) => Ok((inherited, Some(successor))),
        Ok(TakeOver::Refused { pid, reason }) => {
            tracing::warn!("process {pid} refused the hand-off ({reason}): waiting for it to exit");
            anyhow::ensure!(
                successor::wait_for_exit(pid, PREDECESSOR_EXIT_WAIT),
                "process {pid} refused the hand-off and still runs after {} s",
                PREDECESSOR_EXIT_WAIT.as_secs()
            );
            Ok((Inherited::default(), None))
        }
        Err(error) => {
            tracing::warn!(
                "no hand-off from {} ({error}): starting on fresh sockets",
                path.display()
            );
            Ok((Inherited::default(), None))
        }
    }
}

/// Copies of every socket (`try_clone`: the same socket, another descriptor), tagged with the
/// address as written and the shard, for a successor. A socket that cannot be copied is left
/// out (the successor binds that one anew).
pub(crate) fn offer(
    written: &[SocketAddr],
    bound: &BoundSockets,
    http: &[(EndpointPlan, TcpListener)],
) -> Offer {
    let mut offer = Offer::default();
    let mut add = |kind, written, shard, fd: std::io::Result<OwnedFd>| match fd {
        Ok(fd) => offer.add(
            SocketInfo {
                kind,
                written,
                shard,
            },
            fd,
        ),
        Err(error) => tracing::debug!(%written, %error, "socket not offered for hand-off"),
    };
    for (shard, sockets) in bound.shards.iter().enumerate() {
        for (listener, socket) in &sockets.udp {
            if let Some(&addr) = written.get(usize::from(*listener)) {
                add(
                    SocketKind::Udp,
                    addr,
                    Some(shard),
                    socket.try_clone().map(OwnedFd::from),
                );
            }
        }
        for (listener, socket) in &sockets.tcp {
            if let Some(&addr) = written.get(usize::from(*listener)) {
                add(
                    SocketKind::Tcp,
                    addr,
                    Some(shard),
                    socket.try_clone().map(OwnedFd::from),
                );
            }
        }
    }
    for (plan, listener) in http {
        add(
            SocketKind::Http,
            plan.addr,
            None,
            listener.try_clone().map(OwnedFd::from),
        );
    }
    offer
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
