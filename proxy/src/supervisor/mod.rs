//! `shardns --supervise`: a small process meant as the container's PID 1, with no DNS logic.
//! It makes the Corefile (node-local mode), sets up the interface, holds every listening
//! socket (its own, or those of the shardns it took over on the hand-off socket), and runs
//! the DNS work in a worker process (this binary, `--worker-of`) that takes the sockets from
//! it. Once the worker serves, it installs the rules and keeps them.
//!
//! - A worker that dies (SIGKILL, a panic, the OOM killer) is restarted on the same sockets
//!   within milliseconds: queries wait in the kernel's socket buffers meanwhile instead of
//!   failing, and the rules and addresses stay. Repeated deaths back off, and past a limit
//!   the node fails open: the rules go, so pods' queries reach the cluster DNS, until a worker
//!   has served for 30 s ([`restarts`]).
//! - SIGTERM or SIGINT: the rules go first, then the worker gets SIGTERM (its lameduck and
//!   drain), then the interface goes; exit 0. SIGUSR1 and a rewritten Corefile reach the
//!   worker as SIGUSR1.
//! - A worker that exits 0 unasked was taken over by a new shardns on the hand-off socket (the
//!   worker listens there): the supervisor exits 0 and leaves the node to the successor.
//! - `-metrics-listen-address` is the supervisor's: `coredns_nodecache_setup_errors_total`
//!   and the workers' restarts.

mod restarts;
mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardns_node::SetupErrors;

use crate::cli::Args;
use crate::http;
use crate::metrics::{header, render_setup_errors, sample};
use crate::runtime::handoff::predecessor::Listening;
use crate::runtime::lifecycle::start::{ask_for_sockets, offer};
use crate::runtime::lifecycle::{Loaded, load};
use crate::runtime::node_local::NodeLocal;
use crate::runtime::{endpoints, pidfile, shards, signals, sockets};
use restarts::Restarts;
use workers::{Desk, Launcher, start_desk};

/// How often the supervisor looks at its worker and its flags.
const TICK: Duration = Duration::from_millis(5);
/// How long a worker told to stop may take (its lameduck and drain are inside).
const WORKER_STOP_WAIT: Duration = Duration::from_secs(60);
/// A worker's status when its configuration is not valid.
const EXIT_USAGE: i32 = 64;
/// A worker's status when its loop check saw a loop.
const EXIT_LOOP: i32 = 3;

/// How the supervisor ended.
enum End {
    /// SIGTERM or SIGINT.
    Stopped,
    /// The worker was taken over by a new shardns.
    HandedOff,
    /// The worker stopped for good with this status (loop, bad configuration).
    Worker(u8),
}

/// Runs the supervisor until SIGTERM or SIGINT, a hand-off, or a worker that stops for good.
pub(crate) fn supervise(args: &Args) -> ExitCode {
    match run(args) {
        Ok(End::Stopped | End::HandedOff) => ExitCode::SUCCESS,
        Ok(End::Worker(status)) => ExitCode::from(status),
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<End> {
    let started = Instant::now();
    let Loaded { process, node, .. } = match load(args, true) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("shardns: {message}");
            return Ok(End::Worker(EXIT_USAGE as u8));
        }
    };
    if let Some(node) = &node {
        // The worker reads the Corefile from -conf: it cannot run one held in memory here.
        if node.corefile_unwritten() {
            eprintln!(
                "shardns: the Corefile could not be written to -conf (see the log above), and \
                 a supervised worker reads it from there"
            );
            return Ok(End::Worker(EXIT_USAGE as u8));
        }
        node.prepare();
    }
    // The sockets: those of a shardns already running, else new ones.
    let (mut inherited, mut predecessor) = ask_for_sockets(args.handoff_path())?;
    let mut cache = None;
    if let Some(predecessor) = &mut predecessor {
        cache = Some(predecessor.receive_cache().unwrap_or_else(|error| {
            tracing::warn!("cache hand-off: {error}");
            Vec::new()
        }));
    }
    let shard_count = if predecessor.is_some() {
        inherited.shards
    } else {
        args.shards
            .map_or_else(shards::default_count, |count| count as usize)
    };
    let written: Vec<SocketAddr> = process
        .config
        .listeners
        .iter()
        .map(|listener| listener.addr)
        .collect();
    let bound = sockets::bind_all(&written, shard_count, &mut inherited)?;
    let mut http_listeners = Vec::new();
    for plan in endpoints::plan(&process, None) {
        http_listeners.push((plan, sockets::metrics_listener(plan.addr, &mut inherited)?));
    }
    let offer = offer(&written, &bound, &http_listeners);
    drop((bound, http_listeners));
    let signals = signals::install()?;
    let private = private_socket(args)?;
    let listening = Arc::new(Listening::bind(&private).context("the workers' socket")?);
    let desk = Arc::new(Desk {
        offer,
        shards: shard_count,
        cache: Mutex::new(cache),
        predecessor: Mutex::new(predecessor),
        serving: AtomicU32::new(0),
        shutdown: AtomicBool::new(false),
    });
    let desk_thread = start_desk(Arc::clone(&listening), Arc::clone(&desk))?;
    let restarts_count = Arc::new(AtomicU64::new(0));
    let failed_open = Arc::new(AtomicBool::new(false));
    let http_shutdown = Arc::new(AtomicBool::new(false));
    let http_thread = match (&node, args.node_cache.is_node_local()) {
        (Some(node), true) => Some(page(
            args.node_cache.metrics_listen_address,
            node,
            &restarts_count,
            &failed_open,
            &http_shutdown,
        )?),
        _ => None,
    };
    let pidfile = args
        .node_cache
        .pidfile
        .clone()
        .filter(|path| pidfile::write_or_log(path));
    let launcher = Launcher::new(&private)?;
    let mut supervisor = Supervisor {
        launcher,
        desk: Arc::clone(&desk),
        node,
        worker: None,
        since: Instant::now(),
        restart_at: Some(Instant::now()),
        restarts: Restarts::default(),
        restarts_count,
        failed_open,
        installed: false,
        stop: signals.stop,
        reload: signals.reload,
    };
    tracing::info!(
        "supervisor ready in {} ms: {} sockets held, {shard_count} shards",
        started.elapsed().as_millis(),
        desk.offer.fds.len()
    );
    let end = supervisor.watch();
    supervisor.stop(&end);
    let signalled = signals.signalled;
    desk.shutdown.store(true, Ordering::SeqCst);
    let _ = desk_thread.join();
    listening.remove();
    http_shutdown.store(true, Ordering::SeqCst);
    if let Some(thread) = http_thread {
        let _ = thread.join();
    }
    if let Some(path) = pidfile.filter(|_| !matches!(end, End::HandedOff)) {
        let _ = std::fs::remove_file(path);
    }
    if matches!(end, End::HandedOff) && args.handoff_linger {
        signals::linger(&signalled);
    }
    Ok(end)
}

/// Where workers take their sockets: beside the hand-off socket, else in the temporary
/// directory; named after this process and a random number, since in a container every
/// supervisor is PID 1 and the old and the new pod of an upgrade share the directory.
fn private_socket(args: &Args) -> anyhow::Result<PathBuf> {
    let directory = match args.handoff_path() {
        Some(path) => path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&directory)?;
    Ok(directory.join(format!(
        "shardns-worker-{}-{:08x}.sock",
        std::process::id(),
        rand::random::<u32>()
    )))
}

/// The supervisor's metrics: node-cache's setup errors, the workers restarted, and whether
/// the node has failed open.
fn page_text(errors: &SetupErrors, restarts: u64, failed_open: bool) -> String {
    let mut body = String::new();
    render_setup_errors(&mut body, errors);
    let name = "shardns_supervisor_worker_restarts_total";
    header(
        &mut body,
        name,
        "counter",
        "Workers restarted after they died.",
    );
    sample(&mut body, name, &[], restarts);
    let name = "shardns_supervisor_failed_open";
    header(
        &mut body,
        name,
        "gauge",
        "1 while the rules are out because workers keep dying.",
    );
    sample(&mut body, name, &[], u8::from(failed_open));
    body
}

/// The supervisor's page on `addr`: node-cache's setup errors, and the workers' restarts.
fn page(
    addr: SocketAddr,
    node: &NodeLocal,
    restarts: &Arc<AtomicU64>,
    failed_open: &Arc<AtomicBool>,
    shutdown: &Arc<AtomicBool>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let listener = sockets::metrics_listener(addr, &mut Default::default())?;
    let (errors, restarts, failed_open) =
        (node.errors(), Arc::clone(restarts), Arc::clone(failed_open));
    let router = http::Router::new().get("/metrics", move || {
        let body = page_text(
            &errors,
            restarts.load(Ordering::SeqCst),
            failed_open.load(Ordering::SeqCst),
        );
        http::Response::ok(crate::metrics::CONTENT_TYPE, body)
    });
    let endpoint = http::Endpoint { listener, router };
    Ok(http::start(
        vec![endpoint],
        Arc::clone(shutdown),
        Arc::new(shardns_shard::Counter::default()),
    )?)
}

/// The supervisor's state while it watches its worker.
struct Supervisor {
    launcher: Launcher,
    desk: Arc<Desk>,
    node: Option<NodeLocal>,
    worker: Option<Child>,
    /// When the current worker started.
    since: Instant,
    /// When to start the next worker, while there is none.
    restart_at: Option<Instant>,
    restarts: Restarts,
    restarts_count: Arc<AtomicU64>,
    failed_open: Arc<AtomicBool>,
    /// The rules went in (after the first worker served).
    installed: bool,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Supervisor {
    /// Watches until the stop flag, a hand-off or a worker that stops for good.
    fn watch(&mut self) -> End {
        let reload = Arc::new(AtomicBool::new(false));
        loop {
            thread::sleep(TICK);
            let now = Instant::now();
            if self.stop.load(Ordering::SeqCst) {
                return End::Stopped;
            }
            if self.reload.swap(false, Ordering::SeqCst) || reload.swap(false, Ordering::SeqCst) {
                self.signal(Signal::SIGUSR1);
            }
            if let Some(at) = self.restart_at
                && now >= at
            {
                self.restart_at = None;
                match self.launcher.spawn() {
                    Ok(child) => {
                        tracing::info!("worker {} started", child.id());
                        self.worker = Some(child);
                        self.since = now;
                    }
                    Err(error) => {
                        tracing::error!("cannot start a worker: {error}");
                        self.restart_at = Some(now + Duration::from_secs(1));
                    }
                }
            }
            let Some(worker) = &mut self.worker else {
                continue;
            };
            let pid = worker.id();
            if self.desk.serving.load(Ordering::SeqCst) == pid {
                if !self.installed {
                    self.installed = true;
                    if let Some(node) = &mut self.node
                        && let Err(error) = node.install(Arc::clone(&reload))
                    {
                        tracing::error!("{error:#}");
                    }
                }
                if self.restarts.serving(self.since, now) {
                    tracing::info!("worker {pid} has served for 30 s: the rules go back in");
                    self.failed_open.store(false, Ordering::SeqCst);
                    if let Some(node) = &self.node {
                        node.restore_rules();
                    }
                }
            }
            let status = match worker.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!("waiting for worker {pid}: {error}");
                    continue;
                }
            };
            self.worker = None;
            if let Some(end) = self.after(pid, status, now) {
                return end;
            }
        }
    }

    /// A worker exited unasked: whether that ends the supervisor, else when to restart it.
    fn after(&mut self, pid: u32, status: ExitStatus, now: Instant) -> Option<End> {
        match status.code() {
            Some(0) => {
                tracing::info!("worker {pid} was taken over: leaving the node to its successor");
                return Some(End::HandedOff);
            }
            Some(EXIT_USAGE) => return Some(End::Worker(EXIT_USAGE as u8)),
            Some(EXIT_LOOP) => return Some(End::Worker(1)),
            _ => {}
        }
        let decision = self.restarts.died(now);
        self.restarts_count.fetch_add(1, Ordering::SeqCst);
        tracing::error!(
            "worker {pid} died ({status}): restarting in {} ms on the same sockets",
            decision.wait.as_millis()
        );
        if decision.fail_open {
            tracing::error!(
                "workers keep dying: removing the rules, the node uses the cluster DNS"
            );
            self.failed_open.store(true, Ordering::SeqCst);
            if let Some(node) = &self.node {
                node.fail_open();
            }
        }
        self.restart_at = Some(now + decision.wait);
        None
    }

    /// Sends `signal` to the worker, if there is one.
    fn signal(&self, signal: Signal) {
        if let Some(worker) = &self.worker {
            let _ = kill(Pid::from_raw(worker.id() as i32), signal);
        }
    }

    /// The stop: the rules first (not after a hand-off), then the worker, then the interface.
    fn stop(&mut self, end: &End) {
        let handed_off = matches!(end, End::HandedOff);
        if let Some(node) = &mut self.node {
            if handed_off {
                node.hand_over();
            }
            node.withdraw();
        }
        if let Some(mut worker) = self.worker.take() {
            let _ = kill(Pid::from_raw(worker.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + WORKER_STOP_WAIT;
            loop {
                match worker.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        tracing::warn!("worker {} did not stop: killing it", worker.id());
                        let _ = worker.kill();
                        let _ = worker.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(TICK),
                }
            }
        }
        if let Some(node) = &mut self.node {
            node.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use shardns_node::SetupErrorType;

    use super::*;

    #[test]
    fn the_page_has_setup_errors_restarts_and_failing_open() {
        let errors = SetupErrors::new();
        errors.record(SetupErrorType::Configmap);
        let page = page_text(&errors, 3, true);
        assert!(
            page.contains("coredns_nodecache_setup_errors_total{errortype=\"configmap\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("# TYPE shardns_supervisor_worker_restarts_total counter\n"));
        assert!(
            page.contains("\nshardns_supervisor_worker_restarts_total 3\n"),
            "{page}"
        );
        assert!(page.contains("# TYPE shardns_supervisor_failed_open gauge\n"));
        assert!(
            page.ends_with("\nshardns_supervisor_failed_open 1\n"),
            "{page}"
        );
        assert!(page_text(&errors, 0, false).ends_with("\nshardns_supervisor_failed_open 0\n"));
    }

    #[test]
    fn two_supervisors_with_the_same_pid_get_different_worker_sockets() {
        // In a container every supervisor is PID 1; the old and the new pod of an upgrade
        // share the hand-off directory. A name from the PID alone was the same for both.
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("shardns-private-{}", std::process::id()));
        let socket = dir.join("handoff.sock");
        let args = Args::try_parse_from(["shardns", "--handoff-socket", socket.to_str().unwrap()])
            .unwrap();
        let first = private_socket(&args).unwrap();
        let second = private_socket(&args).unwrap();
        assert_eq!(first.parent(), Some(dir.as_path()));
        assert_ne!(first, second);
        let _ = std::fs::remove_dir(&dir);
    }
}
