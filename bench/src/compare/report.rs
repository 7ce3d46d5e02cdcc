//! The comparison table (markdown), the report file around it, and the machine facts.

use std::fmt::Write as _;

use super::client::Client;
use super::servers::Role;
use super::stats::{Summary, best_per_round, same_round_ratios, summarize};

/// One server × client run of one round.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Answered queries per second.
    pub qps: f64,
    /// Answered queries per CPU-second of the server process.
    pub q_per_cpu_s: Option<f64>,
    /// Server instructions per answered query.
    pub insns_per_q: Option<f64>,
    /// Server cycles per answered query.
    pub cycles_per_q: Option<f64>,
    /// 99th-percentile latency, µs (own generator only).
    pub p99_us: Option<f64>,
}

/// All rounds of one server with one client (`None` for a round that failed).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Server label.
    pub server: String,
    /// For the ratio columns.
    pub role: Role,
    /// The client.
    pub client: Client,
    /// One entry per round.
    pub rounds: Vec<Option<Sample>>,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Server label.
    pub server: String,
    /// Client name.
    pub client: &'static str,
    /// Answered QPS.
    pub qps: Option<Summary>,
    /// q/CPU-s.
    pub q_per_cpu_s: Option<Summary>,
    /// q/CPU-s ÷ the reflector's, same round.
    pub vs_reflector: Option<Summary>,
    /// q/CPU-s ÷ the best peer's, same round.
    pub vs_best_peer: Option<Summary>,
    /// Instructions per query.
    pub insns_per_q: Option<Summary>,
    /// Cycles per query.
    pub cycles_per_q: Option<Summary>,
    /// p99 latency, µs.
    pub p99_us: Option<Summary>,
}

fn column(s: &Series, f: impl Fn(&Sample) -> Option<f64>) -> Vec<Option<f64>> {
    s.rounds.iter().map(|r| r.as_ref().and_then(&f)).collect()
}

fn summary_of(values: &[Option<f64>]) -> Option<Summary> {
    summarize(&values.iter().flatten().copied().collect::<Vec<_>>())
}

/// Summarizes every series; ratios are taken per round against the same client's reflector
/// and best peer (the peer with the highest q/CPU-s in that round).
pub fn rows(series: &[Series]) -> Vec<Row> {
    let rounds = series.iter().map(|s| s.rounds.len()).max().unwrap_or(0);
    let qcpu = |s: &Series| column(s, |x| x.q_per_cpu_s);
    series
        .iter()
        .map(|s| {
            let same_client = series.iter().filter(|o| o.client == s.client);
            let reflector = same_client
                .clone()
                .find(|o| o.role == Role::Reflector)
                .map(qcpu);
            let peers: Vec<Vec<Option<f64>>> = same_client
                .filter(|o| o.role == Role::Peer)
                .map(qcpu)
                .collect();
            let peer_refs: Vec<&[Option<f64>]> = peers.iter().map(Vec::as_slice).collect();
            let best_peer = (!peers.is_empty()).then(|| best_per_round(&peer_refs, rounds));
            let mine = qcpu(s);
            let ratio = |base: Option<Vec<Option<f64>>>| {
                base.and_then(|b| summarize(&same_round_ratios(&mine, &b)))
            };
            Row {
                server: s.server.clone(),
                client: s.client.name(),
                qps: summary_of(&column(s, |x| Some(x.qps))),
                q_per_cpu_s: summary_of(&mine),
                vs_reflector: ratio(reflector),
                vs_best_peer: ratio(best_peer),
                insns_per_q: summary_of(&column(s, |x| x.insns_per_q)),
                cycles_per_q: summary_of(&column(s, |x| x.cycles_per_q)),
                p99_us: summary_of(&column(s, |x| x.p99_us)),
            }
        })
        .collect()
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        format!("-{out}")
    } else {
        out
    }
}

fn count_cell(s: Option<Summary>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => thousands(s.median),
        Some(s) => format!(
            "{} ({}–{})",
            thousands(s.median),
            thousands(s.min),
            thousands(s.max)
        ),
    }
}

fn ratio_cell(s: Option<Summary>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => format!("{:.2}", s.median),
        Some(s) => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
    }
}

/// The table as markdown: medians with the range over rounds in brackets.
pub fn render_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| server | client | answered QPS | q/CPU-s | ÷ reflector, same round | ÷ best peer, same round | \
         instructions / query | cycles / query | p99 µs |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.server.replace('|', "\\|"),
            r.client,
            count_cell(r.qps),
            count_cell(r.q_per_cpu_s),
            ratio_cell(r.vs_reflector),
            ratio_cell(r.vs_best_peer),
            count_cell(r.insns_per_q),
            count_cell(r.cycles_per_q),
            count_cell(r.p99_us),
        );
    }
    t
}

/// Facts about the machine for the report.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPUs this process may use.
    pub nproc: usize,
    /// Kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// `name: version` of each program used.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// Reads nproc, the kernel release and the CPU model; versions are added by the caller.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            versions: Vec::new(),
        }
    }
}

/// The first `model name` of /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Quotes a command-line word for a POSIX shell when it needs it.
pub fn shell_word(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// Everything that goes into `docs/bench/<date>.md`.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    /// `YYYY-MM-DD`.
    pub date: &'a str,
    /// The command line that produced it.
    pub command: &'a str,
    /// Machine facts.
    pub machine: &'a Machine,
    /// The method, one paragraph.
    pub method: &'a str,
    /// The table.
    pub table: &'a str,
    /// `label: reason` of servers or clients that did not run.
    pub skipped: &'a [String],
    /// The chart file name, if one was drawn.
    pub chart: Option<&'a str>,
}

/// The report file's markdown.
pub fn render_document(d: &Document) -> String {
    let m = d.machine;
    let mut s = format!(
        "# shardns compare, {}\n\n{}\n\nCommand:\n\n    {}\n\n",
        d.date, d.method, d.command
    );
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), kernel {}.\n",
        m.nproc, m.cpu_model, m.kernel
    );
    if !m.versions.is_empty() {
        s += "Versions:\n\n";
        for (name, version) in &m.versions {
            let _ = writeln!(s, "- {name}: {version}");
        }
        s += "\n";
    }
    s += d.table;
    if !d.skipped.is_empty() {
        s += "\nSkipped:\n\n";
        for line in d.skipped {
            let _ = writeln!(s, "- {line}");
        }
    }
    if let Some(chart) = d.chart {
        let _ = writeln!(s, "\n![q/CPU-s, median and range]({chart})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(server: &str, role: Role, qcpu: &[f64]) -> Series {
        Series {
            server: server.into(),
            role,
            client: Client::Load,
            rounds: qcpu
                .iter()
                .map(|&q| {
                    Some(Sample {
                        qps: q / 2.0,
                        q_per_cpu_s: Some(q),
                        ..Sample::default()
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn ratios_are_per_round_against_reflector_and_best_peer() {
        let all = [
            series("reflector", Role::Reflector, &[200.0, 400.0]),
            series("dnsdist", Role::Peer, &[100.0, 100.0]),
            series("unbound", Role::Peer, &[50.0, 200.0]),
            series("shardns", Role::Shardns, &[100.0, 200.0]),
        ];
        let rows = rows(&all);
        let shardns = &rows[3];
        assert_eq!(shardns.vs_reflector.unwrap().median, 0.5);
        // Best peer: dnsdist (100) in round 1, unbound (200) in round 2.
        assert_eq!(
            shardns.vs_best_peer.unwrap(),
            Summary {
                median: 1.0,
                min: 1.0,
                max: 1.0
            }
        );
        assert_eq!(rows[0].vs_reflector.unwrap().median, 1.0);
        assert_eq!(
            rows[2].vs_best_peer.unwrap(),
            Summary {
                median: 0.75,
                min: 0.5,
                max: 1.0
            }
        );
    }

    #[test]
    fn table_renders_medians_ranges_and_gaps() {
        let all = [series(
            "shardns --io epoll, 1 shard",
            Role::Shardns,
            &[600_000.0, 700_000.0, 650_000.0],
        )];
        let table = render_table(&rows(&all));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| server | client | answered QPS | q/CPU-s |"));
        assert_eq!(
            lines[2],
            "| shardns --io epoll, 1 shard | load | 325,000 (300,000–350,000) | 650,000 (600,000–700,000) | – | – | – | – | – |"
        );
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(
            ratio_cell(Some(Summary {
                median: 1.256,
                min: 0.85,
                max: 1.34
            })),
            "1.26 (0.85–1.34)"
        );
    }

    #[test]
    fn dates_and_cpu_model() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_414), "2025-11-22");
        assert_eq!(civil_date(11_016), "2000-02-29");
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_word("--shards"), "--shards");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn document_holds_command_machine_table_and_skips() {
        let machine = Machine {
            nproc: 2,
            kernel: "6.18".into(),
            cpu_model: "X".into(),
            versions: vec![("unbound".into(), "1.17.1".into())],
        };
        let skipped = ["dnsmasq: not on PATH".to_owned()];
        let doc = render_document(&Document {
            date: "2026-11-22",
            command: "shardns-bench compare",
            machine: &machine,
            method: "Method.",
            table: "| t |\n",
            skipped: &skipped,
            chart: Some("2026-11-22.png"),
        });
        assert!(doc.starts_with("# shardns compare, 2026-11-22\n"));
        assert!(doc.contains("    shardns-bench compare\n"));
        assert!(doc.contains("2 CPUs (X), kernel 6.18"));
        assert!(doc.contains("- unbound: 1.17.1\n"));
        assert!(doc.contains("- dnsmasq: not on PATH\n"));
        assert!(doc.contains("](2026-11-22.png)"));
    }
}
