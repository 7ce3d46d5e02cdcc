//! The load clients: the project's generator (`shardns-bench load ... --json`, run as a
//! subprocess and parsed with a mirror of its report) and dnsperf (`-c 8 -q 500`, as in
//! `scripts/bench-hit.sh`).
//!
//! Running `load` as a subprocess keeps `compare` independent of the load module's Rust API,
//! isolates a crash, and lets `taskset` pin the whole generator to the load CPU.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;

use super::servers::{Guard, pinned};

/// Which client drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Client {
    /// The project's generator (`shardns-bench load`).
    Load,
    /// dnsperf with `-c 8 -q 500`.
    Dnsperf,
}

impl Client {
    /// Name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Client::Load => "load",
            Client::Dnsperf => "dnsperf",
        }
    }
}

/// What one client run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Queries answered.
    pub answered: u64,
    /// Answered queries per second.
    pub qps: f64,
    /// 99th-percentile latency in µs (own generator only).
    pub p99_us: Option<f64>,
    /// Answers by rcode.
    pub rcodes: BTreeMap<String, u64>,
}

/// Mirror of the fields of `load --json` that `compare` reads.
#[derive(Debug, Deserialize)]
struct LoadReport {
    answered: u64,
    qps: f64,
    #[serde(default)]
    rcodes: BTreeMap<String, u64>,
    latency_us: LoadLatency,
}

#[derive(Debug, Deserialize)]
struct LoadLatency {
    p99: f64,
}

/// Parses `load --json` output (the last line that is a JSON object).
pub fn parse_load_json(stdout: &str) -> anyhow::Result<Outcome> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("no JSON report in load's output"))?;
    let r: LoadReport = serde_json::from_str(line).context("parsing load's JSON report")?;
    Ok(Outcome {
        answered: r.answered,
        qps: r.qps,
        p99_us: Some(r.latency_us.p99),
        rcodes: r.rcodes,
    })
}

/// Parses dnsperf's summary.
pub fn parse_dnsperf(text: &str) -> anyhow::Result<Outcome> {
    let after = |key: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    };
    let first_word = |key: &str| after(key).and_then(|v| v.split_whitespace().next());
    let answered = first_word("Queries completed:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no 'Queries completed' in dnsperf output: {text}"))?;
    let qps = first_word("Queries per second:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no 'Queries per second' in dnsperf output"))?;
    // "Response codes:       NOERROR 1234 (100.00%), SERVFAIL 1 (0.00%)"
    let mut rcodes = BTreeMap::new();
    if let Some(codes) = after("Response codes:") {
        for part in codes.split(',') {
            let mut words = part.split_whitespace();
            if let (Some(code), Some(Ok(n))) = (words.next(), words.next().map(str::parse::<u64>)) {
                rcodes.insert(code.to_owned(), n);
            }
        }
    }
    Ok(Outcome {
        answered,
        qps,
        p99_us: None,
        rcodes,
    })
}

/// The `load` arguments for one run (dnsperf-compatible flags).
pub fn load_args(server: SocketAddr, queries: &Path, seconds: f64) -> Vec<String> {
    vec![
        "load".into(),
        "-s".into(),
        server.ip().to_string(),
        "-p".into(),
        server.port().to_string(),
        "-d".into(),
        queries.display().to_string(),
        "-l".into(),
        seconds.to_string(),
        "--json".into(),
    ]
}

/// `Err` with the reason when this binary's `load` cannot run yet (its skeleton says
/// "not written yet"; a real one takes `--json`).
pub fn load_ready(exe: &Path) -> anyhow::Result<()> {
    let out = Command::new(exe)
        .args(["load", "--help"])
        .stdin(Stdio::null())
        .output()?;
    let help = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && help.contains("--json") {
        Ok(())
    } else {
        bail!(
            "load: not written yet (`{} load --help` lists no --json)",
            exe.display()
        )
    }
}

/// Runs `client` against `server` for `seconds`, the client pinned to `cpu`.
pub fn run(
    client: Client,
    exe: &Path,
    server: SocketAddr,
    queries: &Path,
    seconds: f64,
    cpu: usize,
    stop: &AtomicBool,
) -> anyhow::Result<Outcome> {
    let mut cmd = match client {
        Client::Load => {
            let mut cmd = pinned(cpu, exe);
            cmd.args(load_args(server, queries, seconds));
            cmd
        }
        Client::Dnsperf => {
            let mut cmd = pinned(cpu, "dnsperf");
            cmd.args([
                "-s",
                &server.ip().to_string(),
                "-p",
                &server.port().to_string(),
                "-d",
            ])
            .arg(queries)
            .args(["-l", &seconds.to_string(), "-c", "8", "-q", "500"]);
            cmd
        }
    };
    let out = run_bounded(
        &mut cmd,
        client.name(),
        Duration::from_secs_f64(seconds + 30.0),
        stop,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            client.name(),
            out.status,
            stderr.trim()
        );
    }
    match client {
        Client::Load => parse_load_json(&stdout),
        Client::Dnsperf => parse_dnsperf(&format!("{stdout}\n{stderr}")),
    }
}

/// Runs `cmd` to completion, killing it after `limit` or when `stop` is set.
fn run_bounded(
    cmd: &mut Command,
    name: &str,
    limit: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Output> {
    let dir = std::env::temp_dir();
    let tag = format!("shardns-compare-{}-{name}", std::process::id());
    let (out_path, err_path) = (
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.err")),
    );
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let mut guard = Guard::new(name, child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if let Err(e) = guard.check_alive() {
            tracing::debug!("{e}");
            break guard.wait_for_exit(Duration::ZERO)?;
        }
        if Instant::now() >= deadline {
            bail!("{name} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    };
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_json_mirror() {
        let json = r#"{"mode":"closed","protocol":"udp","server":"127.0.0.1:5353","duration_s":10.0,
            "offered_qps":null,"sent":1010,"answered":1000,"lost":10,"mismatched":0,"qps":100.5,
            "rcodes":{"NOERROR":1000},"latency_us":{"mean":50.0,"p50":40,"p90":60,"p99":90,"p999":120,"max":300}}"#
            .replace('\n', " ");
        let o = parse_load_json(&format!("warming up\n{json}\n")).unwrap();
        assert_eq!(o.answered, 1000);
        assert_eq!(o.qps, 100.5);
        assert_eq!(o.p99_us, Some(90.0));
        assert_eq!(o.rcodes["NOERROR"], 1000);
        assert!(parse_load_json("error: x").is_err());
    }

    #[test]
    fn dnsperf_summary() {
        let text = "Statistics:\n\n  Queries sent:         1200000\n  Queries completed:    1199990 (100.00%)\n  \
                    Queries lost:         10 (0.00%)\n\n  Response codes:       NOERROR 1199980 (100.00%), SERVFAIL 10 (0.00%)\n  \
                    Average packet size:  request 33, response 49\n  Run time (s):         10.000\n  \
                    Queries per second:   119999.000000\n\n  Average Latency (s):  0.000750\n";
        let o = parse_dnsperf(text).unwrap();
        assert_eq!(o.answered, 1_199_990);
        assert_eq!(o.qps, 119_999.0);
        assert_eq!(o.rcodes["NOERROR"], 1_199_980);
        assert_eq!(o.rcodes["SERVFAIL"], 10);
        assert_eq!(o.p99_us, None);
        assert!(parse_dnsperf("garbage").is_err());
    }

    #[test]
    fn load_args_are_dnsperf_style() {
        let a = load_args("127.0.0.1:5353".parse().unwrap(), Path::new("/q"), 2.5);
        assert_eq!(a.join(" "), "load -s 127.0.0.1 -p 5353 -d /q -l 2.5 --json");
    }
}
