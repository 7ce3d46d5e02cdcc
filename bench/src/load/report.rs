//! Counters and the latency histogram of a run, the [`Report`] they become (the JSON schema
//! `compare` parses), and the dnsperf-like text summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in nanoseconds from 1 ns to 60 s, 3 significant digits.
const HIGHEST_NS: u64 = 60_000_000_000;

/// Counters one worker keeps (merged across workers at the end).
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub mismatched: u64,
    /// Replies whose ID matched nothing in flight (usually a reply after its timeout).
    pub late: u64,
    /// Open loop: queries due that could not be sent (every ID of every socket in flight).
    pub dropped: u64,
    /// Send calls that failed (the queries were not counted as sent).
    pub send_errors: u64,
    /// Receive errors such as ECONNREFUSED (nothing listening).
    pub recv_errors: u64,
    pub rcodes: [u64; 16],
    pub latency_ns: Histogram<u64>,
    /// Query-file lines sent at least once (warm-up included).
    pub names: NameSet,
    /// `--unique`: names sent (each a new one; warm-up included).
    pub fresh_names: u64,
}

/// A set of query-file line indices (a bitset).
#[derive(Debug, Clone, Default)]
pub(crate) struct NameSet {
    words: Vec<u64>,
}

impl NameSet {
    /// An empty set with room for indices below `len`.
    pub(crate) fn with_len(len: usize) -> Self {
        NameSet {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Adds `index` (grows when needed).
    pub(crate) fn insert(&mut self, index: usize) {
        let word = index / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (index % 64);
    }

    /// Adds every index of `other`.
    pub(crate) fn union(&mut self, other: &NameSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// Number of indices in the set.
    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            sent: 0,
            answered: 0,
            lost: 0,
            mismatched: 0,
            late: 0,
            dropped: 0,
            send_errors: 0,
            recv_errors: 0,
            rcodes: [0; 16],
            latency_ns: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("constant histogram bounds are valid"),
            names: NameSet::default(),
            fresh_names: 0,
        }
    }

    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.lost += other.lost;
        self.mismatched += other.mismatched;
        self.late += other.late;
        self.dropped += other.dropped;
        self.send_errors += other.send_errors;
        self.recv_errors += other.recv_errors;
        for (sum, n) in self.rcodes.iter_mut().zip(other.rcodes) {
            *sum += n;
        }
        // Same bounds on both sides: addition cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
        self.names.union(&other.names);
        self.fresh_names += other.fresh_names;
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Figures printed in the text summary but not part of the JSON schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details {
    /// Smallest latency, microseconds.
    pub min_us: f64,
    /// Replies that matched no query in flight (late after a timeout, or unknown IDs).
    pub late: u64,
    /// Open loop: due queries that could not be sent because every ID was in flight.
    pub dropped: u64,
    /// Failed send calls.
    pub send_errors: u64,
    /// Receive errors (ECONNREFUSED: nothing listening; TCP: broken connections).
    pub recv_errors: u64,
    /// Lines (queries) in the query file.
    pub query_lines: u64,
    /// `--unique`: what every name ends with (`<random prefix>.<zone>`).
    pub unique_suffix: Option<String>,
}

/// The result of one `load` run; serialises to exactly the JSON schema `compare` parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `"closed"` or `"open"`.
    pub mode: String,
    /// `"udp"` or `"tcp"`.
    pub protocol: String,
    /// The server as `ip:port`.
    pub server: String,
    /// Measured seconds (warm-up excluded).
    pub duration_s: f64,
    /// Open loop: the offered rate; closed loop: `null`.
    pub offered_qps: Option<f64>,
    pub sent: u64,
    pub answered: u64,
    pub lost: u64,
    pub mismatched: u64,
    /// Answered queries per second.
    pub qps: f64,
    /// Answer counts by RCODE name.
    pub rcodes: BTreeMap<String, u64>,
    pub latency_us: Latency,
    /// Distinct query-file lines sent at least once (warm-up included: the server saw them).
    #[serde(default)]
    pub unique_names: u64,
    /// `--zipf S`: the exponent of the Zipf draws; `null` when the file is cycled in order.
    #[serde(default)]
    pub zipf_s: Option<f64>,
    /// Text-summary extras, not serialised.
    #[serde(skip)]
    pub details: Details,
}

/// The mnemonic of an RCODE (RFC 6895), or `RCODEn`.
pub(crate) fn rcode_name(rcode: usize) -> String {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    NAMES
        .get(rcode)
        .map_or_else(|| format!("RCODE{rcode}"), |name| (*name).to_owned())
}

impl Report {
    /// Builds the report of merged `stats`.
    pub(crate) fn new(
        mode: &str,
        protocol: &str,
        server: String,
        duration_s: f64,
        offered_qps: Option<f64>,
        stats: &Stats,
    ) -> Self {
        let h = &stats.latency_ns;
        let us = |ns: u64| ns as f64 / 1000.0;
        let latency_us = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                mean: h.mean() / 1000.0,
                p50: us(h.value_at_quantile(0.50)),
                p90: us(h.value_at_quantile(0.90)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
            }
        };
        let rcodes = (0..16)
            .filter(|&rcode| stats.rcodes[rcode] > 0)
            .map(|rcode| (rcode_name(rcode), stats.rcodes[rcode]))
            .collect();
        Report {
            mode: mode.to_owned(),
            protocol: protocol.to_owned(),
            server,
            duration_s,
            offered_qps,
            sent: stats.sent,
            answered: stats.answered,
            lost: stats.lost,
            mismatched: stats.mismatched,
            qps: if duration_s > 0.0 {
                stats.answered as f64 / duration_s
            } else {
                0.0
            },
            rcodes,
            latency_us,
            unique_names: stats.names.count() + stats.fresh_names,
            zipf_s: None,
            details: Details {
                min_us: if h.is_empty() { 0.0 } else { us(h.min()) },
                late: stats.late,
                dropped: stats.dropped,
                send_errors: stats.send_errors,
                recv_errors: stats.recv_errors,
                query_lines: 0,
                unique_suffix: None,
            },
        }
    }

    /// The dnsperf-like text summary.
    pub fn text(&self) -> String {
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        let mut out = String::new();
        let offered = self
            .offered_qps
            .map_or(String::new(), |q| format!(", offered {q} QPS"));
        let _ = writeln!(
            out,
            "Statistics ({} loop, {}, server {}{offered}):\n",
            self.mode, self.protocol, self.server
        );
        let _ = writeln!(out, "  Queries sent:         {}", self.sent);
        let _ = writeln!(
            out,
            "  Queries completed:    {} ({:.2}%)",
            self.answered,
            pct(self.answered, self.sent)
        );
        let _ = writeln!(
            out,
            "  Queries lost:         {} ({:.2}%)",
            self.lost,
            pct(self.lost, self.sent)
        );
        let _ = writeln!(out, "  Queries mismatched:   {}", self.mismatched);
        if let Some(suffix) = &self.details.unique_suffix {
            let _ = writeln!(
                out,
                "  Unique names sent:    {} (--unique: every query a new name, N.{suffix})",
                self.unique_names
            );
        } else {
            let order = self
                .zipf_s
                .map_or_else(|| "in file order".to_owned(), |s| format!("Zipf s = {s}"));
            let _ = writeln!(
                out,
                "  Unique names sent:    {} of {} lines ({order})",
                self.unique_names, self.details.query_lines
            );
        }
        let d = &self.details;
        for (label, n) in [
            ("Late/unknown replies:", d.late),
            ("Queries not sent:    ", d.dropped),
            ("Send errors:         ", d.send_errors),
            ("Receive errors:      ", d.recv_errors),
        ] {
            if n > 0 {
                let _ = writeln!(out, "  {label} {n}");
            }
        }
        let codes: Vec<String> = self
            .rcodes
            .iter()
            .map(|(name, &n)| format!("{name} {n} ({:.2}%)", pct(n, self.answered)))
            .collect();
        let _ = writeln!(out, "\n  Response codes:       {}", codes.join(", "));
        let _ = writeln!(out, "  Run time (s):         {:.6}", self.duration_s);
        let _ = writeln!(out, "  Queries per second:   {:.6}\n", self.qps);
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "  Average Latency (s):  {:.6} (min {:.6}, max {:.6})",
            l.mean / 1e6,
            d.min_us / 1e6,
            l.max / 1e6
        );
        let _ = writeln!(
            out,
            "  Latency (us):         p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_percentiles_and_schema() {
        let mut stats = Stats::new();
        for ns in 1..=1000u64 {
            stats.latency_ns.record(ns * 1000).unwrap();
        }
        stats.sent = 1002;
        stats.answered = 1000;
        stats.lost = 2;
        stats.rcodes[0] = 990;
        stats.rcodes[3] = 10;
        let report = Report::new("closed", "udp", "127.0.0.1:53".into(), 2.0, None, &stats);
        let l = &report.latency_us;
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert_eq!(report.qps, 500.0);
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 14, "{keys:?}");
        assert_eq!(json["unique_names"], 0);
        assert!(json["zipf_s"].is_null());
        assert_eq!(json["rcodes"]["NXDOMAIN"], 10);
        assert!(json["offered_qps"].is_null());
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back.rcodes, report.rcodes);
        assert!(
            report
                .text()
                .contains("Queries completed:    1000 (99.80%)")
        );
        assert_eq!(rcode_name(12), "RCODE12");
    }

    #[test]
    fn name_set_counts_distinct_indices_across_merges() {
        let mut a = Stats::new();
        a.names = NameSet::with_len(100);
        for i in [0, 5, 5, 63, 64, 99] {
            a.names.insert(i);
        }
        let mut b = Stats::new();
        b.names.insert(5);
        b.names.insert(200);
        assert_eq!(a.names.count(), 5);
        a.merge(&b);
        assert_eq!(a.names.count(), 6);
        let mut c = Stats::new();
        c.merge(&a);
        assert_eq!(c.names.count(), 6);
        let report = Report::new("open", "udp", "x".into(), 1.0, Some(1.0), &c);
        assert_eq!(report.unique_names, 6);
    }

    #[test]
    fn fresh_names_add_up_across_merges_and_show_in_the_text() {
        let mut a = Stats::new();
        a.fresh_names = 10;
        let mut b = Stats::new();
        b.fresh_names = 5;
        a.merge(&b);
        let mut report = Report::new("closed", "udp", "x".into(), 1.0, None, &a);
        assert_eq!(report.unique_names, 15);
        report.details.unique_suffix = Some("abc.miss.test".into());
        assert!(
            report.text().contains(
                "Unique names sent:    15 (--unique: every query a new name, N.abc.miss.test)"
            ),
            "{}",
            report.text()
        );
    }
}
