//! The phases of a run, how it ended, and what each phase hands to the next.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use shardns_shard::{Config, Drain, ShardControl, ShardSockets};

use crate::cli::Args;
use crate::corefile::{self, ProcessConfig};
use crate::runtime::endpoints::EndpointPlan;
use crate::runtime::handoff::Offer;
use crate::runtime::handoff::predecessor::Listening;
use crate::runtime::handoff::successor::Successor;
use crate::runtime::node_local::NodeLocal;
use crate::runtime::readiness::Readiness;
use crate::runtime::shards::{RunningShards, ShardsFailed};

/// A named step of a run, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The Corefile read and built (in node-local mode, first made from the template).
    Load,
    /// The command line's limits applied to the Corefile's configuration.
    Configure,
    /// Node-local mode: the interface holding the local IPs.
    Prepare,
    /// Every listening socket made, or taken over.
    Bind,
    /// Counters, signal handlers, the HTTP, reload and shard threads started.
    Serve,
    /// Every shard started; the pidfile written; the loop check started.
    Ready,
    /// After a hand-off: the predecessor's cache taken, then the switch.
    TakeOver,
    /// Node-local mode: the rules installed, the node-sync and corefile-watch threads
    /// started; the hand-off socket listened on.
    Install,
    /// `/ready` answers 503; node-local mode: the rules removed (not after a hand-off).
    Withdraw,
    /// DNS and `/health` still served for the `lameduck` duration.
    Lameduck,
    /// The shutdown flag set: the shards leave their loops.
    StopReading,
    /// The shard threads joined.
    Drain,
    /// The other threads joined; node-local mode: the interface removed; the pidfile removed.
    Teardown,
    /// After a hand-off with `--handoff-linger`: waiting, serving nothing, for SIGTERM.
    Linger,
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
            Phase::TakeOver => "take over",
            Phase::Install => "install",
            Phase::Withdraw => "withdraw",
            Phase::Lameduck => "lameduck",
            Phase::StopReading => "stop reading",
            Phase::Drain => "drain",
            Phase::Teardown => "teardown",
            Phase::Linger => "linger",
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
    /// Another process took the sockets over; this one answered what it had taken.
    HandedOff,
}

/// What the load phase made.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The Corefile as built (listening addresses as written).
    pub(crate) process: ProcessConfig,
    /// The Corefile's path, read again on reload (`None`: the built-in one).
    pub(crate) conf: Option<PathBuf>,
    /// Node-local mode's state.
    pub(crate) node: Option<NodeLocal>,
}

/// What the bind phase made.
#[derive(Debug)]
pub(super) struct Bound {
    /// The shards' configuration with the bound addresses (the real port for port 0).
    pub(super) config: Config,
    /// Every shard's DNS sockets, in shard order.
    pub(super) shard_sockets: Vec<ShardSockets>,
    /// One per HTTP address, with its routes.
    pub(super) http_listeners: Vec<(EndpointPlan, TcpListener)>,
    /// Copies of every socket, to hand over to a successor.
    pub(super) offer: Offer,
    /// The process these sockets were taken from, to take its cache from next.
    pub(super) successor: Option<Successor>,
}

/// What the serve phase started.
#[derive(Debug)]
pub(super) struct Running {
    /// Set by a signal, the loop check or a hand-off: the stop begins.
    pub(super) stop: Arc<AtomicBool>,
    /// Set by SIGTERM or SIGINT only: what a lingering process waits for.
    pub(super) signalled: Arc<AtomicBool>,
    /// Set to stop every thread.
    pub(super) shutdown: Arc<AtomicBool>,
    /// Set to reload the Corefile (SIGUSR1, or a Corefile rewritten in node-local mode).
    pub(super) reload: Arc<AtomicBool>,
    /// The configuration the shards started with (bound addresses).
    pub(super) config: Arc<Config>,
    pub(super) shards: RunningShards,
    /// Reaches every shard (none without shards).
    pub(super) control: Option<ShardControl>,
    /// The shards' drain (a hand-off).
    pub(super) drain: Arc<Drain>,
    pub(super) readiness: Arc<Readiness>,
    /// The HTTP server, when there is an HTTP address.
    pub(super) http_thread: Option<JoinHandle<()>>,
    /// The reload thread, when there are shards to reload.
    pub(super) reload_thread: Option<JoinHandle<()>>,
    /// The loop check, while it runs.
    pub(super) loop_thread: Option<JoinHandle<()>>,
    /// The fast path's thread (`fastpath`), when it runs.
    pub(super) fastpath_thread: Option<JoinHandle<()>>,
    /// Set by the loop check when it saw a loop.
    pub(super) loop_detected: Arc<AtomicBool>,
    pub(super) node: Option<NodeLocal>,
    /// The pidfile written.
    pub(super) pidfile: Option<PathBuf>,
    /// `health ... { lameduck D }`.
    pub(super) lameduck: Option<Duration>,
    /// The process being taken over, until the switch.
    pub(super) successor: Option<Successor>,
    /// The sockets to hand over, until the hand-off thread holds them.
    pub(super) offer: Option<Offer>,
    /// The hand-off socket listened on, and its thread.
    pub(super) handoff: Option<(Arc<Listening>, JoinHandle<()>)>,
    /// Set when a successor took over.
    pub(super) handed_off: Arc<AtomicBool>,
}

impl Running {
    /// Whether a successor took over.
    pub(super) fn handed_off(&self) -> bool {
        self.handed_off.load(Ordering::SeqCst)
    }

    /// How the run ended, given how the shards ended.
    pub(super) fn ending(&self, drained: Result<(), ShardsFailed>) -> Ending {
        match drained {
            _ if self.loop_detected.load(Ordering::SeqCst) => Ending::LoopDetected,
            Err(failed) => Ending::ShardsFailed(failed),
            Ok(()) if self.handed_off() => Ending::HandedOff,
            Ok(()) => Ending::Stopped,
        }
    }
}

/// Reads and builds the Corefile: the built-in one, `--conf`, or in node-local mode the one
/// made from node-cache's template (written to `-conf` when `write`). The error is the
/// message for stderr.
pub(crate) fn load(args: &Args, write: bool) -> Result<Loaded, String> {
    if args.worker_of.is_some() {
        // A supervisor's worker: the supervisor made the Corefile and owns the node.
        let conf = args.conf.clone().or_else(|| {
            args.node_cache
                .is_node_local()
                .then(|| args.node_cache.corefile.clone())
        });
        let process = corefile::load(conf.as_deref(), &args.resolv_conf)
            .map_err(|error| error.to_string())?;
        return Ok(Loaded {
            process,
            conf,
            node: None,
        });
    }
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
