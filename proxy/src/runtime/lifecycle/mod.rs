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
//! 4. bind: every listening socket: each shard's DNS sockets and the HTTP listeners, taken
//!    over from a running shardns when one answers on the hand-off socket ([`super::handoff`]).
//! 5. serve: the counters, the signal handlers, the HTTP thread, the reload thread and the
//!    shard threads are started.
//! 6. ready: every shard has started; the pidfile is written; the `loop` check starts.
//! 7. take over (after a hand-off): the predecessor's cache, then the switch: it stops reading.
//! 8. install: node-local mode's NOTRACK rules, then the threads that keep them and the
//!    interface, and that watch the template and the kube-dns ConfigMap; the hand-off socket
//!    for the next upgrade.
//!
//! Then the main thread waits for the stop flag (SIGTERM or SIGINT, a loop detected, or a
//! successor that took over) or for a shard to fail.
//!
//! Shutdown:
//!
//! 1. withdraw: `/ready` answers 503; in node-local mode the rules are removed, so new
//!    queries go to the cluster DNS while those already here are answered (after a hand-off
//!    they stay: they are the successor's now).
//! 2. lameduck: after a signal, DNS and `/health` are served for the `health` directive's
//!    `lameduck` duration.
//! 3. stop reading: after a signal the shards are asked to drain: they stop reading and
//!    leave once they owe nothing, so what reached them before the rules went is answered
//!    (after a hand-off they are draining already; after a failure or a loop the shutdown
//!    flag is set and they leave their loops at once).
//! 4. drain: the shard threads are joined (each closes its client connections as it
//!    leaves); those still owing replies past the query timeout and a grace are stopped.
//! 5. teardown: the HTTP, reload and loop threads are joined; in node-local mode the
//!    interface is removed; the pidfile is removed (neither after a hand-off).
//! 6. linger (after a hand-off, with `--handoff-linger`, not in a supervisor's worker): the
//!    process stays, serving nothing, until SIGTERM, so that a pod's container is not
//!    restarted by the kubelet while the new pod serves.
//!
//! How the run ended is an [`Ending`]. A new step of start-up or shutdown is a new phase:
//! one more [`Phase`], one more method and one more line in [`Lifecycle::run`].
//!
//! - `state`: the phases, the endings and what each phase hands to the next.
//! - `start`: the start-up phases; `stop`: the shutdown phases.

pub(crate) mod start;
mod state;
mod stop;

use std::time::Instant;

use std::sync::Arc;

use super::{shards, signals};
use crate::cli::Args;

pub(crate) use state::{Ending, Loaded, Phase, load};

/// One run of the process: the command line, taken through the phases.
#[derive(Debug)]
pub(crate) struct Lifecycle<'a> {
    args: &'a Args,
    /// The shard count asked for (a hand-off keeps the predecessor's).
    shard_count: usize,
}

impl<'a> Lifecycle<'a> {
    /// A run with the settings of `args`.
    pub(crate) fn new(args: &'a Args) -> Lifecycle<'a> {
        let shard_count = args
            .shards
            .map_or_else(shards::default_count, |count| count as usize);
        Lifecycle { args, shard_count }
    }

    /// Whether to linger after a hand-off: `--handoff-linger`, except in a supervisor's
    /// worker (its supervisor must see it exit to know it was taken over).
    fn lingers(&self) -> bool {
        self.args.handoff_linger && self.args.worker_of.is_none()
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
        if running.successor.is_some() {
            phase(Phase::TakeOver, || self.take_over(&mut running));
        }
        phase(Phase::Install, || self.install(&mut running))?;
        tracing::info!("started in {} ms", started.elapsed().as_millis());
        running.shards.wait_for_stop(&running.stop);
        let stopping = Instant::now();
        phase(Phase::Withdraw, || self.withdraw(&mut running));
        phase(Phase::Lameduck, || self.lameduck(&running));
        phase(Phase::StopReading, || self.stop_reading(&running));
        let drained = phase(Phase::Drain, || self.drain(&mut running));
        let ending = running.ending(drained);
        let signalled = Arc::clone(&running.signalled);
        phase(Phase::Teardown, || self.teardown(running));
        tracing::info!("stopped in {} ms", stopping.elapsed().as_millis());
        if matches!(ending, Ending::HandedOff) && self.lingers() {
            phase(Phase::Linger, || signals::linger(&signalled));
        }
        Ok(ending)
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
