//! The container's memory request and limit against the measured bounds: the request must
//! cover a busy node's steady state, the limit the sum of every bound for the DaemonSet's
//! shard count and the ConfigMap's cache capacities. Each figure names where it was
//! measured; docs/deploy/kubernetes.md ("Resources") shows the sum.

use anyhow::{Context, Result, bail, ensure};

use crate::manifest::{Manifest, text};
use crate::rules::for_each_variant;

const MIB: f64 = 1024.0 * 1024.0;

/// VmRSS of an idle shardns, 2 shards, io_uring (3.6 MiB with epoll): docs/BENCHMARKS.md,
/// "Memory (target 4)", `scripts/bench-rss.sh 20000 2 uring`.
const IDLE_MIB: f64 = 4.0;

/// VmRSS after 20,000 names were cached on each of 2 shards, io_uring (14.5 MiB with
/// epoll): the same run. A busy node's steady state.
const BUSY_MIB: f64 = 19.0;

/// The names cached in that run.
const BUSY_NAMES: f64 = 20_000.0;

/// The miss path's worst case per shard, 8,192 queries pending and 16,384 clients waiting
/// with the longest names: about 15 MiB (docs/ARCHITECTURE.md, "The upstream path"; measured
/// +14.3 MiB, docs/BENCHMARKS.md, "Memory of the miss path").
const MISS_PATH_PER_SHARD_MIB: f64 = 15.0;

/// The largest growth any fault caused: 40 each of silent, half-open, slowloris and
/// never-reading TCP clients, 13,768 → 25,492 KiB at the peak (docs/RELIABILITY.md,
/// `clients_half_open_and_slowloris_on_dns_tcp`).
const SLOW_CLIENTS_MIB: f64 = 11.5;

/// VmRSS of the `--supervise` process beside its worker (release build, 2 shards): 2.0 MiB
/// (docs/deploy/kubernetes.md, "Resources").
const SUPERVISOR_MIB: f64 = 2.0;

/// CoreDNS's capacity of each kind (success, denial) when `cache` does not say.
const DEFAULT_CAPACITY: u64 = 9984;

/// The entries the Corefile's caches may hold, every block and both kinds (each block's
/// capacity is split over the shards, so this is the whole process's).
fn cache_capacity(corefile: &str) -> Result<u64> {
    let mut total = 0;
    let mut lines = corefile.lines().map(|line| {
        line.split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
    });
    while let Some(words) = lines.next() {
        if words.first() != Some(&"cache") {
            continue;
        }
        let (mut success, mut denial) = (DEFAULT_CAPACITY, DEFAULT_CAPACITY);
        if words.last() == Some(&"{") {
            for option in lines.by_ref() {
                let capacity = || -> Result<u64> {
                    let value = option.get(1).context("an option without a capacity")?;
                    value.parse().with_context(|| format!("capacity {value:?}"))
                };
                match option.first().copied() {
                    Some("}") => break,
                    Some("success") => success = capacity()?,
                    Some("denial") => denial = capacity()?,
                    Some(other) if option.last() == Some(&"{") => bail!("nested block {other}"),
                    _ => {}
                }
            }
        }
        total += success + denial;
    }
    Ok(total)
}

/// A Kubernetes memory quantity (`128Mi`, `1Gi`, `100M`, `134217728`) in bytes.
fn bytes(quantity: &str) -> Result<f64> {
    let units = [
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", 1024.0 * MIB),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(suffix, scale)| quantity.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((quantity, 1.0));
    let number: f64 = number
        .parse()
        .with_context(|| format!("quantity {quantity:?}"))?;
    Ok(number * scale)
}

/// The sum of the bounds for `shards` shards and a Corefile whose caches hold `entries`, in
/// MiB. A cached entry is taken to cost what one name cost on both shards together in the
/// measured run (no response shared between shards), the upper end.
fn memory_bound_mib(shards: u32, entries: u64) -> f64 {
    let per_entry_mib = (BUSY_MIB - IDLE_MIB) / BUSY_NAMES;
    SUPERVISOR_MIB
        + IDLE_MIB
        + entries as f64 * per_entry_mib
        + f64::from(shards) * MISS_PATH_PER_SHARD_MIB
        + SLOW_CLIENTS_MIB
}

#[test]
fn the_stock_corefile_holds_79872_entries() -> Result<()> {
    let corefile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proxy/testdata/Corefile.base"
    ))?;
    // 4 blocks, each 9,984 successes and 9,984 denials (the cluster zone's written out).
    assert_eq!(cache_capacity(&corefile)?, 79_872);
    assert_eq!(cache_capacity("a {\n cache 30\n}\n")?, 19_968);
    assert_eq!(
        cache_capacity("a {\n cache 30 {\n  success 100\n  prefetch 2\n }\n}\n")?,
        100 + 9984
    );
    assert_eq!(bytes("128Mi")?, 128.0 * MIB);
    assert_eq!(bytes("100M")?, 1e8);
    assert!(bytes("lots").is_err());
    Ok(())
}

#[test]
fn memory_request_and_limit_cover_the_measured_bounds() -> Result<()> {
    for_each_variant(|_, manifest: &Manifest| {
        let resources = &manifest.container()?["resources"];
        // Without --shards every CPU of the node gets a shard, and no bound holds.
        let shards: u32 = manifest
            .flag("shards")?
            .context("no --shards: the bound grows with the node's CPU count")?
            .parse()?;
        let entries = cache_capacity(&manifest.corefile()?)?;
        let bound = memory_bound_mib(shards, entries);
        let limit = bytes(&text(&resources["limits"]["memory"])).context("limits.memory")? / MIB;
        let request =
            bytes(&text(&resources["requests"]["memory"])).context("requests.memory")? / MIB;
        eprintln!(
            "{}: {shards} shards, {entries} cache entries: bound {bound:.1} MiB; request \
             {request} MiB, limit {limit} MiB",
            manifest.name()
        );
        ensure!(
            limit >= bound,
            "the memory limit {limit} MiB is under the measured bound {bound:.1} MiB: an OOM \
             kill would leave the node's rules behind"
        );
        ensure!(
            request >= BUSY_MIB,
            "the memory request {request} MiB is under a busy node's {BUSY_MIB} MiB"
        );
        ensure!(resources["requests"]["cpu"].is_string(), "no CPU request");
        ensure!(
            resources["limits"]["cpu"].is_null(),
            "a CPU limit throttles the node's DNS: latency for every pod"
        );
        Ok(())
    })
}
