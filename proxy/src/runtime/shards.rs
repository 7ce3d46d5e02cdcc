//! Shard threads: one per core of the affinity mask, pinned, each running an
//! [`Engine`] on its own sockets until the shutdown flag is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use core_affinity::CoreId;
use shardns_shard::engine::{Coalesce, Group};
use shardns_shard::{
    Config, Engine, IoMode, ShardControl, ShardSockets, ShardSpec, ShardStats, peer_mesh,
};

/// Shards that stopped badly.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} shards failed")]
pub struct ShardsFailed {
    /// How many returned an error, panicked or could not start.
    pub failed: usize,
    /// How many there were.
    pub total: usize,
}

/// The cores this process may run on, in order (empty if unknown).
pub fn allowed_cores() -> Vec<CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// The default shard count: one per allowed core, at least one.
pub fn default_count() -> usize {
    allowed_cores().len().max(1)
}

/// Sends its shard index when dropped, so the main thread learns of every exit, panics too.
struct Exit {
    index: usize,
    sender: mpsc::Sender<usize>,
}

impl Drop for Exit {
    fn drop(&mut self) {
        let _ = self.sender.send(self.index);
    }
}

/// Runs one shard per entry of `sockets` until `shutdown` is set, shard `i` counting into
/// `stats[i]` (made by the process, so the metrics endpoint reads them; a shard without one
/// counts into its own). `on_start` gets the handle that reaches every shard (for reloads)
/// before they start. A shard that fails sets `shutdown`, so the others stop too, and the
/// whole run reports failure.
pub fn run_all(
    config: Arc<Config>,
    io: IoMode,
    coalesce: Coalesce,
    sockets: Vec<ShardSockets>,
    stats: Vec<Arc<ShardStats>>,
    shutdown: Arc<AtomicBool>,
    on_start: impl FnOnce(ShardControl),
) -> Result<(), ShardsFailed> {
    let cores = allowed_cores();
    let group = Group::new(sockets.len(), coalesce);
    let total = sockets.len();
    let mesh = match peer_mesh(total) {
        Ok(mesh) => mesh,
        Err(error) => {
            tracing::error!(%error, "cannot build the shards' peer mesh");
            shutdown.store(true, Ordering::SeqCst);
            return Err(ShardsFailed {
                failed: total,
                total,
            });
        }
    };
    if let Some(first) = mesh.first() {
        on_start(first.control());
    }
    let (sender, exits) = mpsc::channel();
    let mut handles = Vec::with_capacity(total);
    let mut failed = 0;
    for (index, (sockets, peers)) in sockets.into_iter().zip(mesh).enumerate() {
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let exit = Exit {
            index,
            sender: sender.clone(),
        };
        let config = Arc::clone(&config);
        let stats = stats.get(index).map(Arc::clone);
        let spec = ShardSpec {
            index,
            io,
            sockets,
            shutdown: Arc::clone(&shutdown),
            limits: config.limits,
            peers,
        };
        let spawned = thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                let _exit = exit;
                if let Some(core) = core
                    && !core_affinity::set_for_current(core)
                {
                    tracing::warn!(
                        shard = index,
                        core = core.id,
                        "cannot pin shard to its core"
                    );
                }
                let engine = Engine::new(config, group, index);
                let engine = match stats {
                    Some(stats) => engine.with_stats(stats),
                    None => engine,
                };
                shardns_shard::run_shard(spec, engine)
            });
        match spawned {
            Ok(handle) => handles.push(Some(handle)),
            Err(error) => {
                tracing::error!(shard = index, %error, "cannot start shard thread");
                shutdown.store(true, Ordering::SeqCst);
                failed += total - index;
                break;
            }
        }
    }
    drop(sender);
    for index in exits {
        let Some(handle) = handles.get_mut(index).and_then(Option::take) else {
            continue;
        };
        let error = match handle.join() {
            Ok(Ok(())) => {
                tracing::debug!(shard = index, "shard stopped");
                continue;
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(panic.as_ref()),
        };
        tracing::error!(shard = index, %error, "shard failed, stopping");
        failed += 1;
        shutdown.store(true, Ordering::SeqCst);
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(ShardsFailed { failed, total })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert!(default_count() >= 1);
        assert_eq!(allowed_cores().len().max(1), default_count());
    }

    #[test]
    fn panic_messages() {
        let panic = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(panic.as_ref()), "panicked: boom 1");
        let panic = std::panic::catch_unwind(|| std::panic::panic_any(5)).unwrap_err();
        assert_eq!(panic_message(panic.as_ref()), "panicked: (no message)");
    }

    #[test]
    fn no_shards_is_success() {
        let config = crate::corefile::build("t", ". {\n}").unwrap();
        let shutdown = Arc::new(AtomicBool::new(true));
        assert!(
            run_all(
                Arc::new(config),
                IoMode::Epoll,
                Coalesce::Across,
                Vec::new(),
                Vec::new(),
                shutdown,
                |_| {}
            )
            .is_ok()
        );
    }
}
