//! CoreDNS's request families, `coredns_dns_*`, named, labelled and bucketed as CoreDNS's
//! `prometheus` plugin writes them (plugin/metrics/vars), summed over the shards' request
//! slots ([`RequestSlots`]): `server` is `dns://` and the address the query came in on,
//! `zone` the block's zone (`dropped` for queries no block took), `view` empty. As with the Go
//! client, a series appears once it has counted something.

use std::sync::Arc;

use shardns_shard::{
    Config, Counter, DURATION_BUCKETS, QUERY_TYPES, RequestSlots, RequestStats, SIZE_BUCKETS,
    ShardStats, TYPE_SLOTS, Writer,
};

use super::exposition::{header, sample, server_label};
use super::families::{PROTOCOLS, error_rcode_label};

/// The `family` label, indexed like [`RequestStats::requests`]' second dimension.
const FAMILIES: [&str; 2] = ["1", "2"];

/// CoreDNS's zone label for queries no server block took.
const DROPPED: &str = "dropped";

/// The labels of one request slot.
#[derive(Debug)]
struct Slot {
    index: usize,
    server: String,
    zone: String,
}

/// The request families of a configuration.
#[derive(Debug)]
pub(crate) struct RequestSeries {
    slots: Vec<Slot>,
}

impl RequestSeries {
    /// The series of `config` (with its listeners' bound addresses) in counters with room
    /// for `blocks` server blocks.
    pub(crate) fn new(config: &Config, blocks: usize) -> RequestSeries {
        let slots = RequestSlots::of(config, blocks)
            .labels()
            .into_iter()
            .map(|(index, listener, server)| Slot {
                index,
                server: server_label(config.listeners.get(listener).map(|l| l.addr)),
                zone: server.map_or(DROPPED.to_string(), |server| {
                    config.servers[server].zone_text.clone()
                }),
            })
            .collect();
        RequestSeries { slots }
    }

    /// The sum over `shards` of what `value` reads in each slot's counters.
    fn sum(shards: &[Arc<ShardStats>], index: usize, value: impl Fn(&RequestStats) -> u64) -> u64 {
        shards
            .iter()
            .filter_map(|shard| shard.requests.get(index))
            .fold(0u64, |sum, stats| sum.wrapping_add(value(stats)))
    }

    /// Writes every request family.
    pub(crate) fn render(&self, out: &mut String, shards: &[Arc<ShardStats>]) {
        let name = "coredns_dns_requests_total";
        header(
            out,
            name,
            "counter",
            "Counter of DNS requests made per zone, protocol and family.",
        );
        for slot in &self.slots {
            for (protocol, proto) in PROTOCOLS.iter().enumerate() {
                for (family, family_label) in FAMILIES.iter().enumerate() {
                    for type_slot in 0..TYPE_SLOTS {
                        let count = Self::sum(shards, slot.index, |stats| {
                            stats.requests[protocol][family][type_slot].get()
                        });
                        if count == 0 {
                            continue;
                        }
                        let qtype = QUERY_TYPES.get(type_slot).map_or("other", |t| t.1);
                        let labels = [
                            ("family", *family_label),
                            ("proto", *proto),
                            ("server", slot.server.as_str()),
                            ("type", qtype),
                            ("view", ""),
                            ("zone", slot.zone.as_str()),
                        ];
                        sample(out, name, &labels, count);
                    }
                }
            }
        }
        let name = "coredns_dns_do_requests_total";
        header(
            out,
            name,
            "counter",
            "Counter of DNS requests with DO bit set per zone.",
        );
        for slot in &self.slots {
            let count = Self::sum(shards, slot.index, |stats| stats.do_requests.get());
            if count != 0 {
                sample(out, name, &self.labels(slot, None), count);
            }
        }
        self.render_durations(out, shards);
        for (name, help, response) in [
            (
                "coredns_dns_request_size_bytes",
                "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
                false,
            ),
            (
                "coredns_dns_response_size_bytes",
                "Size of the returned response in bytes.",
                true,
            ),
        ] {
            header(out, name, "histogram", help);
            for slot in &self.slots {
                for (protocol, proto) in PROTOCOLS.iter().enumerate() {
                    let histogram = |stats: &RequestStats| {
                        let sizes = if response {
                            &stats.response_size[protocol]
                        } else {
                            &stats.request_size[protocol]
                        };
                        (sizes.buckets.each_ref().map(Counter::get), sizes.sum.get())
                    };
                    let (buckets, sum) = self.merge(shards, slot, histogram);
                    let bounds = SIZE_BUCKETS.map(|le| le.to_string());
                    let labels = self.labels(slot, Some(proto));
                    histogram_lines(out, name, &labels, &buckets, &bounds, sum.to_string());
                }
            }
        }
        let name = "coredns_dns_responses_total";
        header(out, name, "counter", "Counter of response status codes.");
        for slot in &self.slots {
            for (writer, plugin) in Writer::LABELS.iter().enumerate() {
                for rcode in 0..17 {
                    let count = Self::sum(shards, slot.index, |stats| {
                        stats.responses[writer][rcode].get()
                    });
                    if count == 0 {
                        continue;
                    }
                    let rcode = error_rcode_label(rcode);
                    let labels = [
                        ("plugin", *plugin),
                        ("rcode", rcode.as_str()),
                        ("server", slot.server.as_str()),
                        ("view", ""),
                        ("zone", slot.zone.as_str()),
                    ];
                    sample(out, name, &labels, count);
                }
            }
        }
    }

    /// `coredns_dns_request_duration_seconds`, one histogram per slot.
    fn render_durations(&self, out: &mut String, shards: &[Arc<ShardStats>]) {
        let name = "coredns_dns_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Histogram of the time (in seconds) each request took per zone.",
        );
        for slot in &self.slots {
            let (buckets, sum_micros) = self.merge(shards, slot, |stats| {
                let duration = &stats.duration;
                (
                    duration.buckets.each_ref().map(Counter::get),
                    duration.sum_micros.get(),
                )
            });
            let bounds = DURATION_BUCKETS.map(|le| le.to_string());
            let sum = (sum_micros as f64 / 1e6).to_string();
            histogram_lines(out, name, &self.labels(slot, None), &buckets, &bounds, sum);
        }
    }

    /// A histogram summed over the shards: its buckets (not cumulative) and its sum.
    fn merge<const N: usize>(
        &self,
        shards: &[Arc<ShardStats>],
        slot: &Slot,
        read: impl Fn(&RequestStats) -> ([u64; N], u64),
    ) -> ([u64; N], u64) {
        let mut buckets = [0u64; N];
        let mut sum = 0u64;
        for stats in shards
            .iter()
            .filter_map(|shard| shard.requests.get(slot.index))
        {
            let (counts, part) = read(stats);
            for (total, count) in buckets.iter_mut().zip(counts) {
                *total = total.wrapping_add(count);
            }
            sum = sum.wrapping_add(part);
        }
        (buckets, sum)
    }

    /// A slot's labels in CoreDNS's order (sorted by name), with `proto` when given.
    fn labels<'a>(&self, slot: &'a Slot, proto: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut labels = Vec::with_capacity(4);
        labels.extend(proto.map(|proto| ("proto", proto)));
        labels.extend([
            ("server", slot.server.as_str()),
            ("view", ""),
            ("zone", slot.zone.as_str()),
        ]);
        labels
    }
}

/// The `_bucket` (cumulative, `le` last, `+Inf` for the last slot), `_sum` and `_count`
/// lines of one histogram series, unless it is empty.
fn histogram_lines(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    buckets: &[u64],
    bounds: &[String],
    sum: String,
) {
    let count = buckets.iter().fold(0u64, |sum, n| sum.wrapping_add(*n));
    if count == 0 {
        return;
    }
    let mut cumulative = 0u64;
    let bucket_name = format!("{name}_bucket");
    for (index, bucket) in buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*bucket);
        let le = bounds.get(index).map_or("+Inf", String::as_str);
        let mut with_le = labels.to_vec();
        with_le.push(("le", le));
        sample(out, &bucket_name, &with_le, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, sum);
    sample(out, &format!("{name}_count"), labels, count);
}
