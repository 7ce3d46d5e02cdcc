//! Shard threads: one per core of the affinity mask, pinned, each running an
//! [`Engine`] on its own sockets until the shutdown flag is set.
//!
//! In steps, so that the lifecycle can start other threads in between and wait on its own
//! terms: [`counters`] for every shard, [`Shards::new`] links them (the peer mesh, and the
//! [`ShardControl`] that reaches them all), [`Shards::start`] spawns the threads, and the
//! [`RunningShards`] they become are waited for ([`RunningShards::wait_until_started`],
//! [`RunningShards::wait_for_stop`]) and joined ([`RunningShards::join`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use core_affinity::CoreId;
use shardns_shard::fastpath::Publisher;
use shardns_shard::{
    Coalesce, Config, Drain, Engine, Group, IoMode, PeerMessage, ShardControl, ShardSockets,
    ShardSpec, ShardStats, peer_mesh,
};

/// Upstream counter slots allocated per shard at least (a reload may add upstreams).
const STATS_UPSTREAMS: usize = 32;
/// Server block counter slots allocated per shard beyond the Corefile's own (a reload may add
/// blocks: a stub domain added to the kube-dns ConfigMap). Each costs a block's cache counters
/// and one request slot per listening address, about 1.5 KiB.
const SPARE_BLOCKS: usize = 16;

/// How often the main thread looks at the shutdown flag while the shards run.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Shards that stopped badly.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} shards failed")]
pub(crate) struct ShardsFailed {
    /// How many returned an error, panicked or could not start.
    pub failed: usize,
    /// How many there were.
    pub total: usize,
}

/// The cores this process may run on, in order (empty if unknown).
pub(crate) fn allowed_cores() -> Vec<CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// The default shard count: one per allowed core, at least one.
pub(crate) fn default_count() -> usize {
    allowed_cores().len().max(1)
}

/// One set of counters per shard for `config`, made by the process so that the metrics page
/// reads them.
pub(crate) fn counters(config: &Config, shards: usize) -> Vec<Arc<ShardStats>> {
    // Room for upstreams and blocks a reload may add.
    let upstream_slots = config.upstreams.len().max(STATS_UPSTREAMS);
    let blocks = config.servers.len() + SPARE_BLOCKS;
    (0..shards)
        .map(|_| Arc::new(ShardStats::with_room(config, blocks, upstream_slots)))
        .collect()
}

/// What a shard thread tells the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The shard's engine is built and about to run.
    Started(usize),
    /// The thread is ending (returned, failed or panicked).
    Exited(usize),
}

/// A shard thread's line to the main thread: it reports [`Event::Started`] when told and
/// [`Event::Exited`] when dropped, so the main thread learns of every exit, panics too.
struct Reporter {
    index: usize,
    sender: mpsc::Sender<Event>,
}

impl Reporter {
    fn started(&self) {
        let _ = self.sender.send(Event::Started(self.index));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.sender.send(Event::Exited(self.index));
    }
}

/// The shards, linked but not started.
#[derive(Debug)]
pub(crate) struct Shards {
    config: Arc<Config>,
    coalesce: Coalesce,
    /// What each shard runs on, in shard order.
    specs: Vec<ShardSpec<PeerMessage>>,
    stats: Vec<Arc<ShardStats>>,
    shutdown: Arc<AtomicBool>,
    drain: Arc<Drain>,
    /// Cache chunks from a predecessor, imported by every shard before it serves.
    preload: Arc<Vec<Vec<u8>>>,
    /// Where `fastpath` blocks publish hot entries, when the fast path runs.
    publisher: Option<Publisher>,
}

impl Shards {
    /// One shard per entry of `sockets`, shard `i` counting into `stats[i]` (a shard without
    /// one counts into its own), each stopping once `shutdown` is set. Fails, after logging
    /// why and setting `shutdown`, when the peer mesh that links them cannot be built.
    pub(crate) fn new(
        config: Arc<Config>,
        io: IoMode,
        coalesce: Coalesce,
        sockets: Vec<ShardSockets>,
        stats: Vec<Arc<ShardStats>>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Shards, ShardsFailed> {
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
        let drain = Arc::new(Drain::new(total));
        let specs = sockets
            .into_iter()
            .zip(mesh)
            .enumerate()
            .map(|(index, (sockets, peers))| ShardSpec {
                index,
                io,
                sockets,
                shutdown: Arc::clone(&shutdown),
                limits: config.limits,
                peers,
                stats: stats.get(index).map(Arc::clone),
                drain: Arc::clone(&drain),
            })
            .collect();
        Ok(Shards {
            config,
            coalesce,
            specs,
            stats,
            shutdown,
            drain,
            preload: Arc::default(),
            publisher: None,
        })
    }

    /// The shards publish hot entries of `fastpath` blocks to `publisher`.
    pub(crate) fn publish_to(&mut self, publisher: Publisher) {
        self.publisher = Some(publisher);
    }

    /// Cache chunks (from a predecessor's export) every shard imports, keeping what it owns,
    /// before it serves.
    pub(crate) fn preload(&mut self, chunks: Vec<Vec<u8>>) {
        self.preload = Arc::new(chunks);
    }

    /// The shards' drain: requested at a hand-off, they stop reading and leave once they owe
    /// nothing.
    pub(crate) fn drain(&self) -> Arc<Drain> {
        Arc::clone(&self.drain)
    }

    /// The handle that reaches every shard (for reloads); `None` without shards.
    pub(crate) fn control(&self) -> Option<ShardControl> {
        self.specs.first().map(|spec| spec.peers.control())
    }

    /// Spawns one thread per shard, pinned to a core of the affinity mask. A thread that
    /// cannot be spawned sets the shutdown flag (the others stop) and counts as failed, with
    /// every shard after it.
    pub(crate) fn start(self) -> RunningShards {
        let Shards {
            config,
            coalesce,
            specs,
            stats,
            shutdown,
            drain: _,
            preload,
            publisher,
        } = self;
        let cores = allowed_cores();
        let total = specs.len();
        let group = Group::new(total, coalesce);
        let (sender, events) = mpsc::channel();
        let mut handles = Vec::with_capacity(total);
        let mut failed = 0;
        for spec in specs {
            let index = spec.index;
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let reporter = Reporter {
                index,
                sender: sender.clone(),
            };
            let config = Arc::clone(&config);
            let stats = stats.get(index).map(Arc::clone);
            let preload = Arc::clone(&preload);
            let publisher = publisher.clone();
            let spawned = thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
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
                    let mut engine = match publisher {
                        Some(publisher) => engine.with_publisher(publisher),
                        None => engine,
                    };
                    let mut stored = 0;
                    for chunk in preload.iter() {
                        stored += engine.import_cache(std::time::Instant::now(), chunk).stored;
                    }
                    if !preload.is_empty() {
                        tracing::debug!(shard = index, stored, "cache entries taken over");
                    }
                    reporter.started();
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
        RunningShards {
            handles,
            events,
            shutdown,
            failed,
            total,
        }
    }
}

/// The shard threads, spawned.
#[derive(Debug)]
pub(crate) struct RunningShards {
    /// Each spawned thread by shard index, `None` once joined.
    handles: Vec<Option<JoinHandle<io::Result<()>>>>,
    events: mpsc::Receiver<Event>,
    shutdown: Arc<AtomicBool>,
    /// Shards that failed or could not start, so far.
    failed: usize,
    total: usize,
}

impl RunningShards {
    /// How many shards there are.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Waits until every spawned shard has started, or until one exits first (it is joined,
    /// and a failure sets the shutdown flag).
    pub(crate) fn wait_until_started(&mut self) {
        let mut started = 0;
        while started < self.handles.len() {
            match self.events.recv() {
                Ok(Event::Started(_)) => started += 1,
                Ok(Event::Exited(index)) => {
                    self.reap(index);
                    break;
                }
                Err(_) => break,
            }
        }
        tracing::debug!("{started} of {} shards started", self.total);
    }

    /// Waits until `stop` is set (by a signal, or by the loop check) or the shutdown flag is
    /// (here, when a shard fails, so that the others stop too). A shard that leaves cleanly
    /// before (shards only do on shutdown) is joined and the wait goes on, until no shard is
    /// left.
    pub(crate) fn wait_for_stop(&mut self, stop: &AtomicBool) {
        while !self.shutdown.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            match self.events.recv_timeout(STOP_POLL) {
                Ok(Event::Exited(index)) => self.reap(index),
                Ok(Event::Started(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Joins every shard thread (they leave their loops once the shutdown flag is set). The
    /// run failed if any shard failed, panicked or could not start.
    pub(crate) fn join(&mut self) -> Result<(), ShardsFailed> {
        while let Ok(event) = self.events.recv() {
            if let Event::Exited(index) = event {
                self.reap(index);
            }
        }
        self.outcome()
    }

    /// Joins every shard thread as they leave by themselves (a drain); those still running
    /// at `deadline` are stopped with the shutdown flag.
    pub(crate) fn join_by(&mut self, deadline: Instant) -> Result<(), ShardsFailed> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("shards still draining at the deadline: stopping them");
                self.shutdown.store(true, Ordering::SeqCst);
                return self.join();
            }
            match self.events.recv_timeout(left.min(STOP_POLL)) {
                Ok(Event::Exited(index)) => self.reap(index),
                Ok(Event::Started(_)) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.outcome(),
            }
        }
    }

    /// How the shards ended.
    fn outcome(&self) -> Result<(), ShardsFailed> {
        if self.failed == 0 {
            Ok(())
        } else {
            Err(ShardsFailed {
                failed: self.failed,
                total: self.total,
            })
        }
    }

    /// Joins the thread of shard `index`, which has exited; a failure sets the shutdown flag
    /// so the others stop too.
    fn reap(&mut self, index: usize) {
        let Some(handle) = self.handles.get_mut(index).and_then(Option::take) else {
            return;
        };
        let error = match handle.join() {
            Ok(Ok(())) => {
                tracing::debug!(shard = index, "shard stopped");
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(panic.as_ref()),
        };
        tracing::error!(shard = index, %error, "shard failed, stopping");
        self.failed += 1;
        self.shutdown.store(true, Ordering::SeqCst);
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
        let shards = Shards::new(
            Arc::new(config),
            IoMode::Epoll,
            Coalesce::Across,
            Vec::new(),
            Vec::new(),
            shutdown,
        )
        .unwrap();
        assert!(shards.start().join().is_ok());
    }

    #[test]
    fn started_shards_stop_on_the_flag() {
        let config = crate::corefile::build("t", ".:0 {\n bind 127.0.0.1\n}").unwrap();
        let addrs: Vec<_> = config.listeners.iter().map(|l| l.addr).collect();
        let bound = crate::runtime::sockets::bind_all(&addrs, 2, &mut Default::default()).unwrap();
        let stats = counters(&config, 2);
        let shutdown = Arc::new(AtomicBool::new(false));
        let shards = Shards::new(
            Arc::new(config),
            IoMode::Epoll,
            Coalesce::Across,
            bound.shards,
            stats,
            Arc::clone(&shutdown),
        )
        .unwrap();
        assert!(shards.control().is_some());
        let mut running = shards.start();
        running.wait_until_started();
        assert!(!shutdown.load(Ordering::SeqCst), "no shard failed");
        let flag = Arc::clone(&shutdown);
        let signal = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
        });
        running.wait_for_stop(&AtomicBool::new(false));
        assert!(shutdown.load(Ordering::SeqCst));
        assert!(running.join().is_ok());
        signal.join().unwrap();
    }
}
