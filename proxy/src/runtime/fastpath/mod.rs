//! The fast-path thread (the `fastpath` directive; docs/FASTPATH.md). At start-up, in the
//! `serve` phase, the BPF program is loaded, the planned addresses served ([`Plan`]) and the
//! program attached to every interface matching a directive's names. Then the thread:
//!
//! - applies the shards' publications ([`Publication`]) to the answers map: an entry is
//!   rendered once per combination of query bits and block number, and leaves the map when
//!   every shard that published it withdrew it (eviction, reload) or when it expires;
//! - attaches to new matching interfaces (a pod's veth appearing) as rtnetlink announces
//!   them (within the 100 ms the thread waits for publications at most), and rescans every
//!   second in case an event was lost; forgets vanished ones;
//! - every second: removes expired entries, reads the hit counters into the metrics
//!   ([`FastpathCounters`]: `coredns_cache_hits_total` counts the program's hits too) and
//!   sends each entry's new hits to the shard that first published it
//!   ([`Control::KernelHits`]: they count towards its `prefetch` and eviction);
//! - on the shutdown flag, detaches from every interface.
//!
//! A start-up that cannot load or attach logs why and serves through the sockets alone: the
//! fast path is an optimisation, never a reason not to answer.

mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardns_fastpath::{
    Answer, AnswerKey, Error as FastpathError, Fastpath, Lifetime, LinkEvents, QueryBits,
    boot_time_ns,
};
use shardns_shard::fastpath::{
    HotEntry, KernelHit, Publication, Publisher, ReplyBits, publication_channel,
};
use shardns_shard::{CacheStats, Config, Control, Counter, Gauge, ShardControl};

pub(crate) use plan::Plan;
use plan::{Held, Table};

use crate::corefile::directives::interface_matches;

/// Publications waiting for the thread at most; beyond, the shards drop (and count) them.
const CHANNEL: usize = 4096;
/// How often interfaces are rescanned, expired entries removed and counters read.
const TICK: Duration = Duration::from_secs(1);

/// What the fast path counts, for `/metrics`.
#[derive(Debug)]
pub(crate) struct FastpathCounters {
    /// The program's hits by server block and kind (only `hits` is used): added to
    /// `coredns_cache_hits_total` and `coredns_cache_requests_total`.
    pub(crate) servers: Box<[CacheStats]>,
    /// The program's own counters, as last read (`shardns_fastpath_*_total`).
    pub(crate) hits: Gauge,
    pub(crate) misses: Gauge,
    pub(crate) expired: Gauge,
    pub(crate) too_big: Gauge,
    pub(crate) errors: Gauge,
    /// Entries in the map (`shardns_fastpath_entries`).
    pub(crate) entries: Gauge,
    /// Interfaces the program is attached to (`shardns_fastpath_interfaces`).
    pub(crate) interfaces: Gauge,
    /// Publications that could not be written: over the answer's limits (1,024 bytes after
    /// the question, 32 records) or the map full.
    pub(crate) refused: Counter,
}

impl FastpathCounters {
    /// Zeros, with room for `blocks` server blocks' hits.
    pub(crate) fn new(blocks: usize) -> FastpathCounters {
        FastpathCounters {
            servers: (0..blocks).map(|_| CacheStats::default()).collect(),
            hits: Gauge::default(),
            misses: Gauge::default(),
            expired: Gauge::default(),
            too_big: Gauge::default(),
            errors: Gauge::default(),
            entries: Gauge::default(),
            interfaces: Gauge::default(),
            refused: Counter::default(),
        }
    }
}

/// A fast path loaded and attached, before its thread runs.
pub(crate) struct Started {
    /// What the shards publish into.
    pub(crate) publisher: Publisher,
    pub(crate) counters: Arc<FastpathCounters>,
    state: State,
    receiver: Receiver<Publication>,
}

/// Loads the program for `plan` and attaches it (see the module documentation); `None`
/// (logged) when it cannot be loaded. `cold`: no predecessor serves (not a hand-off), so a
/// filter of this program found on an interface was left by a shardns that was killed
/// (kernels before 6.6 attach through tc filters, which outlive their process) and is
/// removed before attaching.
pub(crate) fn load(config: Arc<Config>, plan: Plan, cold: bool) -> Option<Started> {
    let mut fastpath = match Fastpath::load() {
        Ok(fastpath) => fastpath,
        Err(error) => {
            tracing::error!("fastpath: {error}; every query is answered through the sockets");
            return None;
        }
    };
    for &(addr, number) in &plan.served {
        if let Err(error) = fastpath.serve(addr, number) {
            tracing::error!("fastpath: serving {addr}: {error}; the sockets answer alone");
            return None;
        }
    }
    let (publisher, receiver) = publication_channel(CHANNEL);
    let counters = Arc::new(FastpathCounters::new(config.servers.len()));
    // Opened before the first scan, so that no interface appears unseen in between.
    let events = LinkEvents::open()
        .map_err(|error| tracing::warn!("fastpath: no interface events ({error}); rescans only"))
        .ok();
    let mut state = State {
        fastpath,
        plan,
        config,
        table: Table::default(),
        counters: Arc::clone(&counters),
        refused: HashSet::new(),
        events,
        control: None,
        cold,
    };
    state.scan();
    Some(Started {
        publisher,
        counters,
        state,
        receiver,
    })
}

impl Started {
    /// Runs the thread until `shutdown` is set; it then detaches. Hits the program answered
    /// go to the shards that published the entries through `control`.
    pub(crate) fn spawn(
        self,
        shutdown: Arc<AtomicBool>,
        control: Option<ShardControl>,
    ) -> std::io::Result<JoinHandle<()>> {
        let Started {
            mut state,
            receiver,
            publisher,
            ..
        } = self;
        state.control = control;
        // The shards hold their own clones.
        drop(publisher);
        std::thread::Builder::new()
            .name("fastpath".into())
            .spawn(move || {
                let mut ticked = Instant::now();
                while !shutdown.load(Ordering::Relaxed) {
                    match receiver.recv_timeout(Duration::from_millis(100)) {
                        Ok(publication) => state.apply(publication),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    if ticked.elapsed() >= TICK {
                        ticked = Instant::now();
                        state.tick(ticked);
                    } else if state.events.as_ref().is_some_and(LinkEvents::changed) {
                        state.scan();
                    }
                }
                let attached = state.fastpath.interfaces().count();
                drop(state);
                tracing::info!("fastpath: detached from {attached} interfaces");
            })
    }
}

/// The thread's state.
struct State {
    fastpath: Fastpath,
    plan: Plan,
    config: Arc<Config>,
    table: Table<AnswerKey>,
    counters: Arc<FastpathCounters>,
    /// Interfaces already refused (logged once).
    refused: HashSet<String>,
    /// rtnetlink's link events: a rescan as soon as an interface appears.
    events: Option<LinkEvents>,
    /// Reaches the shards, to report the program's hits.
    control: Option<ShardControl>,
    /// No predecessor serves: leftover filters of this program are removed before attaching.
    cold: bool,
}

impl State {
    fn apply(&mut self, publication: Publication) {
        match publication {
            Publication::Insert(hot) => self.insert(&hot),
            Publication::Remove(hot) => {
                for key in self.keys(&hot) {
                    if let Some(held) = self.table.withdraw(&key, hot.shard()) {
                        self.remove(&key, &held);
                    }
                }
            }
            Publication::Reset { shard } => {
                for (key, held) in self.table.withdraw_shard(shard) {
                    self.remove(&key, &held);
                }
            }
        }
        self.counters.entries.set(self.table.len() as u64);
    }

    /// Every key `hot` stands for: its combinations under each number that routes its name
    /// to its block.
    fn keys(&self, hot: &HotEntry) -> Vec<AnswerKey> {
        let numbers = self.plan.numbers(&self.config, hot.server(), hot.qname());
        hot.combinations()
            .flat_map(|bits| keys_for(hot, bits, &numbers))
            .collect()
    }

    fn insert(&mut self, hot: &HotEntry) {
        let numbers = self.plan.numbers(&self.config, hot.server(), hot.qname());
        if numbers.is_empty() {
            return;
        }
        let lifetime = Lifetime {
            stored_ns: boot_ns_of(hot.stored_at()),
            ttl: hot.ttl(),
            keep_ttls: hot.keeps_ttls(),
        };
        for bits in hot.combinations() {
            let answer = match Answer::new(&hot.render(bits), lifetime) {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!("fastpath: not published: {error}");
                    self.counters.refused.inc();
                    continue;
                }
            };
            for key in keys_for(hot, bits, &numbers) {
                match self.fastpath.insert(&key, &answer) {
                    Ok(()) => self.table.insert(
                        key,
                        hot.shard(),
                        (hot.server(), hot.is_success()),
                        hot.expires_at(),
                    ),
                    Err(error) => {
                        tracing::debug!("fastpath: not published: {error}");
                        self.counters.refused.inc();
                    }
                }
            }
        }
    }

    /// Counts `key`'s last hits and takes it out of the map.
    fn remove(&mut self, key: &AnswerKey, held: &Held) {
        count(&self.fastpath, &self.counters, key, held);
        if let Err(error) = self.fastpath.remove(key) {
            tracing::warn!("fastpath: removing an entry: {error}");
        }
    }

    fn tick(&mut self, now: Instant) {
        for (key, held) in self.table.expired(now) {
            self.remove(&key, &held);
        }
        // The hits since the last tick go to each entry's first publisher, for its prefetch
        // and eviction.
        let mut reports: HashMap<usize, Vec<KernelHit>> = HashMap::new();
        for (key, held) in self.table.iter_mut() {
            let total = count(&self.fastpath, &self.counters, key, held);
            let new = total.saturating_sub(held.counted);
            held.counted = total;
            if let Some(&shard) = held.shards.first()
                && new > 0
            {
                let bits = key.bits();
                reports.entry(shard).or_default().push(KernelHit {
                    server: held.server,
                    qname: key.qname().to_vec(),
                    qtype: key.qtype(),
                    dnssec_ok: bits.dnssec_ok,
                    checking_disabled: bits.checking_disabled,
                    hits: u32::try_from(new).unwrap_or(u32::MAX),
                });
            }
        }
        if let Some(control) = &self.control {
            for (shard, hits) in reports {
                control.send(shard, Control::KernelHits(hits.into()));
            }
        }
        if let Ok(stats) = self.fastpath.stats() {
            let c = &self.counters;
            c.hits.set(stats.hits);
            c.misses.set(stats.misses);
            c.expired.set(stats.expired);
            c.too_big.set(stats.too_big);
            c.errors.set(stats.errors);
        }
        self.counters.entries.set(self.table.len() as u64);
        self.scan();
    }

    /// Attaches to the interfaces that match and are not attached yet; forgets those gone.
    fn scan(&mut self) {
        let names: Vec<String> = match nix::net::if_::if_nameindex() {
            Ok(list) => list
                .iter()
                .map(|interface| interface.name().to_string_lossy().into_owned())
                .collect(),
            Err(error) => {
                tracing::warn!("fastpath: listing interfaces: {error}");
                return;
            }
        };
        let gone: Vec<String> = self
            .fastpath
            .interfaces()
            .filter(|attached| !names.iter().any(|name| name == attached))
            .map(str::to_string)
            .collect();
        for name in gone {
            // The kernel dropped the attachment with the device.
            let _ = self.fastpath.detach(&name);
            tracing::debug!("fastpath: {name} is gone");
        }
        self.refused.retain(|name| names.contains(name));
        for name in names {
            let wanted = self
                .plan
                .interfaces
                .iter()
                .any(|pattern| interface_matches(pattern, &name));
            if !wanted
                || self.refused.contains(&name)
                || self.fastpath.interfaces().any(|attached| attached == name)
            {
                continue;
            }
            if self.cold {
                match Fastpath::remove_leftovers(&name) {
                    Ok(true) => {
                        tracing::warn!(
                            "fastpath: removed the filter a killed shardns left on {name}"
                        )
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!("fastpath: looking for leftovers on {name}: {error}")
                    }
                }
            }
            let attached = if self.plan.force {
                self.fastpath.attach_anyway(&name)
            } else {
                self.fastpath.attach(&name)
            };
            match attached {
                Ok(()) => tracing::info!("fastpath: attached to {name}"),
                Err(error @ FastpathError::Occupied { .. }) => {
                    tracing::warn!("fastpath: {error} (fastpath ... {{ force }} attaches anyway)");
                    self.refused.insert(name);
                }
                Err(error) => {
                    tracing::warn!("fastpath: attaching to {name}: {error}");
                    self.refused.insert(name);
                }
            }
        }
        self.counters
            .interfaces
            .set(self.fastpath.interfaces().count() as u64);
    }
}

/// Adds the hits of `key` not counted yet to its block's counters; returns its total.
fn count(fastpath: &Fastpath, counters: &FastpathCounters, key: &AnswerKey, held: &Held) -> u64 {
    let total = fastpath.hits(key).ok().flatten().unwrap_or(held.counted);
    if let Some(stats) = counters.servers.get(held.server) {
        stats.hits[usize::from(!held.success)].add(total.saturating_sub(held.counted));
    }
    total
}

/// The keys of `hot` for combination `bits` under each of `numbers`.
fn keys_for<'a>(
    hot: &'a HotEntry,
    bits: ReplyBits,
    numbers: &'a [u8],
) -> impl Iterator<Item = AnswerKey> + 'a {
    numbers.iter().filter_map(move |&number| {
        AnswerKey::new(number, hot.qname(), hot.qtype(), query_bits(bits)).ok()
    })
}

/// The program's key bits for a shard's combination.
fn query_bits(bits: ReplyBits) -> QueryBits {
    QueryBits {
        edns: bits.edns,
        dnssec_ok: bits.dnssec_ok,
        checking_disabled: bits.checking_disabled,
        authentic_data: bits.authentic_data,
    }
}

/// `at` (an `Instant`, CLOCK_MONOTONIC) on the boot clock the program reads.
fn boot_ns_of(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    let ago = u64::try_from(ago.as_nanos()).unwrap_or(u64::MAX);
    boot_time_ns().unwrap_or(0).saturating_sub(ago)
}
