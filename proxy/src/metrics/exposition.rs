//! The `/metrics` page in the Prometheus text format 0.0.4: each family once, with `# HELP`
//! and `# TYPE`, in a fixed order, every value summed over the shards when rendered.
//!
//! - CoreDNS's cache metrics, named and labelled as CoreDNS does so that existing dashboards
//!   work: `coredns_cache_*{server, type, view, zones}` for every server block with a
//!   `cache`. `server` is `dns://` plus the block's first listening address (`dns://:53` for
//!   the wildcard), `zones` the cache's zones joined by commas, `view` empty. Labels are
//!   written sorted by name, as the Go client writes them.
//! - CoreDNS's forward metrics, named and labelled as CoreDNS's `forward` plugin writes them:
//!   `coredns_proxy_*{proxy_name="forward", to}` for every upstream of
//!   [`Config::upstreams`], `to` being the upstream's `IP:PORT` (`[IPv6]:PORT`), and the
//!   unlabelled `coredns_forward_healthcheck_broken_total` and
//!   `coredns_forward_max_concurrent_rejects_total` (always written, as CoreDNS's registry
//!   does). The duration histogram has one series per upstream and RCODE seen (`rcode` as
//!   miekg/dns names it, else the number); its `le` label comes last, as the Go client writes
//!   it.
//! - CoreDNS's `acl` families and shardns's `shardns_ratelimited_total`, per listening
//!   address and zone, when some block has those directives (in [`super::policy`]).
//! - shardns's own `shardns_upstream_*{shard, to}` gauges (per upstream and shard) and
//!   `shardns_shard_*{shard}` series, one per shard, for a per-shard dashboard.
//!
//! The upstream labels are those of the configuration the page was made for (at start-up).
//! A reload may change the upstreams but not the shards' counter arrays, which keep the
//! start-up length: only the indices present in both are written, and after a reload that
//! reorders or replaces upstreams, index `i` is still labelled with the start-up address of
//! index `i` (restart to relabel). Upstreams a reload adds beyond the start-up count are not
//! counted by the shards, so they have no series.
//!
//! `coredns_cache_requests_total` is hits plus misses: every lookup is one or the other, as in
//! CoreDNS, and the hit path does not count requests separately (one counter less per hit).
//! `coredns_cache_entries` sums what each shard holds: a key resolved through its owner
//! shard is stored by the owner and by the shard that asked, so it counts once per copy.

use std::fmt::{Display, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use shardns_node::{SETUP_ERRORS_METRIC, SetupErrors};
use shardns_shard::{
    Bound, Config, Counter, DRIVER_EPOLL, DRIVER_URING, DURATION_BUCKETS, ShardStats, UpstreamStats,
};

use super::families::{
    CACHE_FAMILIES, CACHE_TYPES, DURATION_FAMILY, FORWARD_FAMILIES, PROTOCOLS, PROXY_NAME,
    SHARD_FAMILIES, UPSTREAM_FAMILIES, UPSTREAM_GAUGES, error_rcode_label, upstream_rcode_label,
};
use super::policy::PolicySeries;
use super::requests::RequestSeries;
use crate::runtime::fastpath::FastpathCounters;

/// `coredns_build_info`'s `goversion` label: the Rust compiler that built shardns.
const BUILD_TOOLCHAIN: &str = env!("SHARDNS_RUSTC_VERSION");

/// `coredns_build_info`'s `revision` label: the source's git revision, when it was known.
const BUILD_REVISION: &str = env!("SHARDNS_REVISION");

/// The `Content-Type` of the page.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The labels of one set of cache series and the server blocks counted under them (one,
/// unless two blocks share a first address and zones).
#[derive(Debug)]
struct CacheSeries {
    server: String,
    zones: String,
    blocks: Vec<usize>,
}

/// What `/metrics` shows: the label values worked out once from the configuration, and
/// every shard's counters.
#[derive(Debug)]
pub(crate) struct Exposition {
    caches: Vec<CacheSeries>,
    /// The `to` label of each upstream, indexed like [`Config::upstreams`]; only the indices
    /// every shard counts.
    upstreams: Vec<String>,
    /// CoreDNS's `coredns_dns_*` request families.
    requests: RequestSeries,
    /// The `acl` and `ratelimit` families.
    policies: PolicySeries,
    shards: Vec<Arc<ShardStats>>,
    /// Counters of the process, beside the shards'.
    process: Arc<ProcessCounters>,
}

/// Counters of the process itself (not of a shard), kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct ProcessCounters {
    /// `coredns_reload_failed_total`: reloads whose Corefile did not build or needed a
    /// restart.
    pub(crate) reload_failed: Counter,
    /// `coredns_nodecache_setup_errors_total{errortype}`, in node-local mode.
    pub(crate) setup_errors: Option<Arc<SetupErrors>>,
    /// `shardns_http_connections_refused_total`: HTTP connections closed at the cap.
    pub(crate) http_refused: Arc<Counter>,
    /// The in-kernel fast path's counters, when it runs (`fastpath`).
    pub(crate) fastpath: Option<Arc<FastpathCounters>>,
}

impl Exposition {
    /// The page for `config` (with its listeners' bound addresses) over `shards`, indexed by
    /// shard.
    pub(crate) fn new(
        config: &Config,
        shards: Vec<Arc<ShardStats>>,
        process: Arc<ProcessCounters>,
    ) -> Exposition {
        let mut caches: Vec<CacheSeries> = Vec::new();
        for (block, server) in config.servers.iter().enumerate() {
            let Some(cache) = &server.cache else { continue };
            let address = config
                .listeners
                .iter()
                .find(|listener| listener.servers.contains(&block))
                .map(|listener| listener.addr);
            let server = server_label(address);
            let zones = cache
                .zones
                .iter()
                .map(|zone| zone_text(zone))
                .collect::<Vec<_>>()
                .join(",");
            match caches
                .iter_mut()
                .find(|series| series.server == server && series.zones == zones)
            {
                Some(series) => series.blocks.push(block),
                None => caches.push(CacheSeries {
                    server,
                    zones,
                    blocks: vec![block],
                }),
            }
        }
        let counted = shards
            .iter()
            .map(|stats| stats.upstreams.len())
            .min()
            .unwrap_or(usize::MAX);
        let upstreams = config
            .upstreams
            .iter()
            .take(counted)
            .map(|upstream| upstream.addr.to_string())
            .collect();
        let blocks = shards
            .first()
            .map_or(config.servers.len(), |stats| stats.servers.len());
        Exposition {
            caches,
            upstreams,
            requests: RequestSeries::new(config, blocks),
            policies: PolicySeries::new(config, blocks),
            shards,
            process,
        }
    }

    /// The same page for `config` (a reload): new labels, the same counters.
    pub(crate) fn relabel(&self, config: &Config) -> Exposition {
        Exposition::new(config, self.shards.clone(), Arc::clone(&self.process))
    }

    /// The process's counters (the reload thread counts failed reloads there).
    pub(crate) fn process(&self) -> &Arc<ProcessCounters> {
        &self.process
    }

    /// The sum over the shards of `value` of upstream `index`.
    fn upstream_sum(&self, index: usize, value: impl Fn(&UpstreamStats) -> u64) -> u64 {
        self.shards
            .iter()
            .filter_map(|shard| shard.upstreams.get(index))
            .fold(0, |sum, stats| sum.wrapping_add(value(stats)))
    }

    /// CoreDNS's process families: `coredns_build_info` and `coredns_reload_failed_total`.
    fn render_process(&self, out: &mut String) {
        let name = "coredns_build_info";
        header(
            out,
            name,
            "gauge",
            "A metric with a constant '1' value labeled by version, revision, and goversion \
             from which CoreDNS was built.",
        );
        let labels = [
            ("goversion", BUILD_TOOLCHAIN),
            ("revision", BUILD_REVISION),
            ("version", env!("CARGO_PKG_VERSION")),
        ];
        sample(out, name, &labels, 1);
        let name = "coredns_reload_failed_total";
        header(
            out,
            name,
            "counter",
            "Counter of the number of failed reload attempts.",
        );
        sample(out, name, &[], self.process.reload_failed.get());
        if let Some(errors) = &self.process.setup_errors {
            render_setup_errors(out, errors);
        }
    }

    /// The forward families: CoreDNS's `coredns_proxy_*` per upstream (when there are
    /// upstreams) and `coredns_forward_*`, then shardns's per-upstream gauges.
    fn render_forward(&self, out: &mut String, shard_names: &[String]) {
        if !self.upstreams.is_empty() {
            self.render_durations(out);
        }
        for family in UPSTREAM_FAMILIES {
            if self.upstreams.is_empty() {
                break;
            }
            header(out, family.name, "counter", family.help);
            for (index, to) in self.upstreams.iter().enumerate() {
                let sum =
                    |protocol| self.upstream_sum(index, |stats| (family.value)(stats, protocol));
                if family.by_protocol {
                    for (protocol, proto) in PROTOCOLS.iter().enumerate() {
                        let labels = [("proto", *proto), ("proxy_name", PROXY_NAME), ("to", to)];
                        sample(out, family.name, &labels, sum(protocol));
                    }
                } else {
                    let labels = [("proxy_name", PROXY_NAME), ("to", to.as_str())];
                    sample(out, family.name, &labels, sum(0));
                }
            }
        }
        for &(name, help, value) in FORWARD_FAMILIES {
            header(out, name, "counter", help);
            let sum = self
                .shards
                .iter()
                .fold(0u64, |sum, stats| sum.wrapping_add(value(stats)));
            sample(out, name, &[], sum);
        }
        for &(name, help, value) in UPSTREAM_GAUGES {
            if self.upstreams.is_empty() {
                break;
            }
            header(out, name, "gauge", help);
            for (index, to) in self.upstreams.iter().enumerate() {
                for (stats, shard) in self.shards.iter().zip(shard_names) {
                    if let Some(stats) = stats.upstreams.get(index) {
                        let labels = [("shard", shard.as_str()), ("to", to.as_str())];
                        sample(out, name, &labels, value(stats));
                    }
                }
            }
        }
    }

    /// `coredns_proxy_request_duration_seconds`: per upstream, one histogram for each RCODE
    /// with at least one exchange; `_bucket` cumulative, `_sum` in seconds.
    fn render_durations(&self, out: &mut String) {
        header(
            out,
            DURATION_FAMILY,
            "histogram",
            "Histogram of the time each request took.",
        );
        let bucket_name = format!("{DURATION_FAMILY}_bucket");
        let sum_name = format!("{DURATION_FAMILY}_sum");
        let count_name = format!("{DURATION_FAMILY}_count");
        let bounds: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_string()])
            .collect();
        for (index, to) in self.upstreams.iter().enumerate() {
            for rcode in 0..UpstreamStats::RCODES {
                let rcode_label = upstream_rcode_label(rcode);
                let mut buckets = [0u64; 17];
                let mut sum_micros = 0u64;
                for stats in self.shards.iter().filter_map(|s| s.upstreams.get(index)) {
                    let histogram = &stats.durations[rcode];
                    for (total, counter) in buckets.iter_mut().zip(&histogram.buckets) {
                        *total = total.wrapping_add(counter.get());
                    }
                    sum_micros = sum_micros.wrapping_add(histogram.sum_micros.get());
                }
                let count = buckets.iter().fold(0u64, |sum, n| sum.wrapping_add(*n));
                if count == 0 {
                    continue;
                }
                let labels = [
                    ("proxy_name", PROXY_NAME),
                    ("rcode", rcode_label.as_str()),
                    ("to", to.as_str()),
                ];
                let mut cumulative = 0u64;
                for (bucket, le) in buckets.iter().zip(&bounds) {
                    cumulative = cumulative.wrapping_add(*bucket);
                    let [proxy_name, rcode, to] = labels;
                    let labels = [proxy_name, rcode, to, ("le", le.as_str())];
                    sample(out, &bucket_name, &labels, cumulative);
                }
                sample(out, &sum_name, &labels, sum_micros as f64 / 1e6);
                sample(out, &count_name, &labels, count);
            }
        }
    }

    /// The page, summing the shards' counters now.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096 + 2048 * self.shards.len());
        for family in CACHE_FAMILIES {
            if self.caches.is_empty() {
                break;
            }
            header(&mut out, family.name, family.kind, family.help);
            for series in &self.caches {
                let sum = |kind: usize| {
                    let mut sum = 0u64;
                    // The fast path's hits are cache hits too.
                    let fastpath = self.process.fastpath.as_ref().map(|f| &f.servers[..]);
                    let counted = self.shards.iter().map(|shard| &shard.servers[..]);
                    for servers in counted.chain(fastpath) {
                        for &block in &series.blocks {
                            if let Some(stats) = servers.get(block) {
                                sum = sum.wrapping_add((family.value)(stats, kind));
                            }
                        }
                    }
                    sum
                };
                let labels = |kind: Option<&'static str>| {
                    let mut labels = vec![("server", series.server.as_str())];
                    labels.extend(kind.map(|kind| ("type", kind)));
                    labels.extend([("view", ""), ("zones", series.zones.as_str())]);
                    labels
                };
                if family.typed {
                    for (index, kind) in CACHE_TYPES.iter().enumerate() {
                        sample(&mut out, family.name, &labels(Some(kind)), sum(index));
                    }
                } else {
                    sample(&mut out, family.name, &labels(None), sum(0));
                }
            }
        }
        self.requests.render(&mut out, &self.shards);
        self.policies.render(&mut out, &self.shards);
        self.render_process(&mut out);
        let shard_names: Vec<String> = (0..self.shards.len()).map(|i| i.to_string()).collect();
        self.render_forward(&mut out, &shard_names);
        let name = "shardns_shard_info";
        header(
            &mut out,
            name,
            "gauge",
            "A shard, with the I/O driver it runs (1 for every running shard).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            let io = match stats.driver.get() {
                DRIVER_EPOLL => "epoll",
                DRIVER_URING => "io_uring",
                _ => continue,
            };
            sample(&mut out, name, &[("io", io), ("shard", shard)], 1);
        }
        for &(name, help, value) in SHARD_FAMILIES {
            header(&mut out, name, "counter", help);
            for (stats, shard) in self.shards.iter().zip(&shard_names) {
                sample(&mut out, name, &[("shard", shard)], value(stats));
            }
        }
        let name = "shardns_shard_peer_messages_total";
        header(
            &mut out,
            name,
            "counter",
            "Messages exchanged with other shards (misses handed to a key's owner, answers \
             sent back).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            for (direction, count) in [
                ("sent", stats.peer_sent.get()),
                ("received", stats.peer_received.get()),
            ] {
                let labels = [("direction", direction), ("shard", shard.as_str())];
                sample(&mut out, name, &labels, count);
            }
        }
        let name = "shardns_shard_limit_reached_total";
        header(
            &mut out,
            name,
            "counter",
            "Times a bound of the shard was reached (client TCP connections at the cap, a \
             client TCP connection with too many unread replies, pending queries or waiting \
             clients at the cap).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            for bound in Bound::ALL {
                let labels = [("limit", bound.label()), ("shard", shard.as_str())];
                sample(&mut out, name, &labels, stats.bounds.get(bound));
            }
        }
        let name = "shardns_http_connections_refused_total";
        header(
            &mut out,
            name,
            "counter",
            "HTTP connections closed at once because the connection cap was reached.",
        );
        sample(&mut out, name, &[], self.process.http_refused.get());
        let name = "shardns_shard_error_replies_total";
        header(
            &mut out,
            name,
            "counter",
            "Error replies sent to clients, by RCODE (RCODEs never sent are left out).",
        );
        for (stats, shard) in self.shards.iter().zip(&shard_names) {
            for (rcode, counter) in stats.error_replies.iter().enumerate() {
                let count = counter.get();
                if count != 0 {
                    let rcode = error_rcode_label(rcode);
                    let labels = [("rcode", rcode.as_str()), ("shard", shard.as_str())];
                    sample(&mut out, name, &labels, count);
                }
            }
        }
        self.render_fastpath(&mut out, &shard_names);
        out
    }

    /// `shardns_fastpath_*`: the program's counters (summed over CPUs), the map's entries,
    /// the interfaces attached, and per shard what was published and what a full channel
    /// dropped. Written whether or not the fast path runs (zeros when it does not), so that
    /// dashboards adding its hits to the query rate work everywhere.
    fn render_fastpath(&self, out: &mut String, shard_names: &[String]) {
        let off = FastpathCounters::new(0);
        let fastpath = self.process.fastpath.as_deref().unwrap_or(&off);
        let program = [
            (
                "hits",
                "Queries the in-kernel fast path answered.",
                &fastpath.hits,
            ),
            (
                "misses",
                "Queries it looked up without finding an entry.",
                &fastpath.misses,
            ),
            (
                "expired",
                "Queries whose entry had expired.",
                &fastpath.expired,
            ),
            (
                "too_big",
                "Queries whose answer was over their UDP limit.",
                &fastpath.too_big,
            ),
            (
                "errors",
                "Rewrites that failed in the kernel.",
                &fastpath.errors,
            ),
        ];
        for (what, help, value) in program {
            let name = format!("shardns_fastpath_{what}_total");
            header(out, &name, "counter", help);
            sample(out, &name, &[], value.get());
        }
        let gauges = [
            (
                "entries",
                "Answers in the fast path's map.",
                &fastpath.entries,
            ),
            (
                "interfaces",
                "Interfaces the fast path is attached to.",
                &fastpath.interfaces,
            ),
        ];
        for (what, help, value) in gauges {
            let name = format!("shardns_fastpath_{what}");
            header(out, &name, "gauge", help);
            sample(out, &name, &[], value.get());
        }
        let name = "shardns_fastpath_refused_total";
        header(
            out,
            name,
            "counter",
            "Publications not written: over the answer's limits or the map full.",
        );
        sample(out, name, &[], fastpath.refused.get());
        type PerShard = (&'static str, &'static str, fn(&ShardStats) -> u64);
        let per_shard: [PerShard; 2] = [
            (
                "shardns_fastpath_published_total",
                "Cache entries a shard published to the fast path.",
                |stats| stats.fastpath_published.get(),
            ),
            (
                "shardns_fastpath_dropped_total",
                "Publications a shard dropped because the fast path's channel was full.",
                |stats| stats.fastpath_dropped.get(),
            ),
        ];
        for (name, help, value) in per_shard {
            header(out, name, "counter", help);
            for (stats, shard) in self.shards.iter().zip(shard_names) {
                sample(out, name, &[("shard", shard.as_str())], value(stats));
            }
        }
    }
}

/// CoreDNS's `server` label: `dns://` and the address, without the IP when it is the
/// wildcard (`dns://:53`).
pub(super) fn server_label(addr: Option<SocketAddr>) -> String {
    match addr {
        Some(addr) if addr.ip().is_unspecified() => format!("dns://:{}", addr.port()),
        Some(addr) => format!("dns://{addr}"),
        None => "dns://".to_string(),
    }
}

/// A zone's presentation form with its trailing dot (`.` for the root), from the lowercase
/// wire form; bytes other than letters, digits, `-` and `_` are written `\DDD`.
fn zone_text(wire: &[u8]) -> String {
    let mut text = String::new();
    let mut rest = wire;
    while let Some((&length, tail)) = rest.split_first() {
        let length = usize::from(length);
        if length == 0 || length > tail.len() {
            break;
        }
        for &byte in &tail[..length] {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                text.push(char::from(byte));
            } else {
                let _ = write!(text, "\\{byte:03}");
            }
        }
        text.push('.');
        rest = &tail[length..];
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// node-cache's `coredns_nodecache_setup_errors_total{errortype}` family (also on the
/// supervisor's page).
pub(crate) fn render_setup_errors(out: &mut String, errors: &SetupErrors) {
    header(
        out,
        SETUP_ERRORS_METRIC,
        "counter",
        "The number of errors during periodic network setup for node-cache",
    );
    for (error_type, count) in errors.snapshot() {
        sample(
            out,
            SETUP_ERRORS_METRIC,
            &[("errortype", error_type.label())],
            count,
        );
    }
}

/// The `# HELP` and `# TYPE` lines of a family.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// One sample line: `name{label="value",...} value` (an integer, or a float for a histogram's
/// `_sum`).
pub(crate) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (index, (label, text)) in labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, text);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label_value(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
