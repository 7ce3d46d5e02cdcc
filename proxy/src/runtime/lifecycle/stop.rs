//! The shutdown phases: withdraw, lameduck, stop reading, drain, teardown. After a hand-off
//! the same phases leave the node to the successor and let the shards drain by themselves.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::Lifecycle;
use super::state::Running;
use crate::runtime::shards::ShardsFailed;

/// Longer than any query may take: a drain is given this beyond the query timeout before its
/// shards are stopped.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

impl Lifecycle<'_> {
    /// Withdraw: `/ready` fails from now on; node-local mode: the rules go, so new queries
    /// reach the cluster DNS again.
    pub(super) fn withdraw(&self, running: &mut Running) {
        running.readiness.stopping();
        let handed_off = running.handed_off();
        if let Some(node) = &mut running.node {
            if handed_off {
                node.hand_over();
            }
            node.withdraw();
        }
    }

    /// Lameduck: after a signal (not a failure or a loop), DNS and `/health` are served for
    /// the `lameduck` duration.
    pub(super) fn lameduck(&self, running: &Running) {
        let Some(duration) = running.lameduck else {
            return;
        };
        if running.shutdown.load(Ordering::SeqCst)
            || running.loop_detected.load(Ordering::SeqCst)
            || running.handed_off()
        {
            return;
        }
        tracing::info!("lameduck: still serving for {} ms", duration.as_millis());
        let until = Instant::now() + duration;
        while Instant::now() < until && !running.shutdown.load(Ordering::SeqCst) {
            thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }

    /// Stop reading. After a signal the shards are asked to drain: each stops reading and
    /// leaves once it owes nothing, so the queries that reached it before the rules went
    /// (misses waiting on the upstream included) are still answered. After a hand-off they
    /// are draining already. After a failure or a loop the shutdown flag is set: the shards
    /// leave their loops at once.
    pub(super) fn stop_reading(&self, running: &Running) {
        running.stop.store(true, Ordering::SeqCst);
        if running.handed_off() {
            return;
        }
        if running.shutdown.load(Ordering::SeqCst) || running.loop_detected.load(Ordering::SeqCst) {
            running.shutdown.store(true, Ordering::SeqCst);
            return;
        }
        running.drain.request();
        if let Some(control) = &running.control {
            control.wake_all();
        }
    }

    /// Drain: every shard thread is joined; each closes its client connections as it
    /// leaves. Shards draining (a signal or a hand-off) and still owing replies past the
    /// query timeout (and a grace) are stopped; then the other threads are told to stop.
    pub(super) fn drain(&self, running: &mut Running) -> Result<(), ShardsFailed> {
        if !running.drain.is_requested() {
            return running.shards.join();
        }
        let deadline = Instant::now() + running.config.limits.query_timeout + DRAIN_GRACE;
        let drained = running.shards.join_by(deadline);
        running.shutdown.store(true, Ordering::SeqCst);
        drained
    }

    /// Teardown: the HTTP, reload and loop threads are joined; node-local mode: the
    /// interface goes; the pidfile goes.
    pub(super) fn teardown(&self, running: Running) {
        let handed_off = running.handed_off();
        if let Some((listening, thread)) = running.handoff {
            if thread.join().is_err() {
                tracing::error!("the handoff thread panicked");
            }
            // Unless a successor has put its own socket there.
            listening.remove();
        }
        for (name, thread) in [
            ("http", running.http_thread),
            ("reload", running.reload_thread),
            ("loop", running.loop_thread),
            ("fastpath", running.fastpath_thread),
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
        // After a hand-off the pidfile is the successor's.
        if let Some(path) = running.pidfile.filter(|_| !handed_off)
            && let Err(error) = std::fs::remove_file(&path)
        {
            tracing::warn!("cannot remove the pidfile {}: {error}", path.display());
        }
    }
}
