//! `resolve`: concurrent lookups through the system resolver, as a pod sees DNS.
//!
//! The seed's Go `testdns`, done right: N threads each loop over the names calling
//! `getaddrinfo` (std's [`ToSocketAddrs`] with port 0, which honours resolv.conf's search list,
//! `ndots` and options, and nsswitch's `files` before `dns`) until the deadline. Every lookup's
//! latency, successful or not, goes into an HDR histogram; failures are counted by the
//! resolver's message (`Name or service not known`, `Temporary failure in name resolution`,
//! ...), and lookups slower than `--limit-ms` are counted apart.
//!
//! `--family v4|v6` keeps only the addresses of that family; a lookup that returns none counts
//! as the error `no <family> address`. std asks getaddrinfo for both families (`AF_UNSPEC`),
//! so glibc still sends A and AAAA queries either way.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Arguments of `resolve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Names to look up (round-robin over them).
    #[arg(short = 'n', long = "names", value_name = "NAME", num_args = 1.., required_unless_present = "file")]
    pub names: Vec<String>,

    /// File of names, one per line; blank lines and `#` comments are skipped, and only the
    /// first word of a line counts (so a dnsperf query file `name TYPE` works).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "names"
    )]
    pub file: Option<PathBuf>,

    /// Concurrent lookups (threads).
    #[arg(short = 'c', long = "concurrency", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// Seconds to run.
    #[arg(short = 'l', long = "seconds", default_value_t = 30.0)]
    pub seconds: f64,

    /// Count lookups slower than this many milliseconds.
    #[arg(long = "limit-ms", default_value_t = 100)]
    pub limit_ms: u64,

    /// Address family to require in the answers.
    #[arg(long, value_enum, default_value_t = Family::Any)]
    pub family: Family,

    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which addresses a lookup must return to count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// At least one address of either family.
    Any,
    /// At least one IPv4 address.
    V4,
    /// At least one IPv6 address.
    V6,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest lookup.
    pub max: u64,
}

/// What `resolve` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Threads that ran lookups.
    pub concurrency: u32,
    /// Wall-clock seconds from the first lookup to the end of the last one.
    pub duration_s: f64,
    /// The names looked up.
    pub names: Vec<String>,
    /// The `--family` filter.
    pub family: Family,
    /// Lookups done (successes and errors).
    pub lookups: u64,
    /// Lookups that returned an address of the wanted family.
    pub ok: u64,
    /// Failed lookups.
    pub error_count: u64,
    /// Failed lookups by the resolver's message.
    pub errors: BTreeMap<String, u64>,
    /// Lookups per second.
    pub qps: f64,
    /// Latency of every lookup, errors included.
    pub latency_us: Latency,
    /// The `--limit-ms` threshold.
    pub limit_ms: u64,
    /// Lookups slower than `limit_ms`.
    pub over_limit: u64,
}

/// One thread's tallies.
struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        // 1 µs to 10 min, 3 significant digits.
        let histogram = Histogram::new_with_bounds(1, 600_000_000, 3)?;
        Ok(Tally {
            histogram,
            ok: 0,
            errors: BTreeMap::new(),
        })
    }
}

/// Runs `resolve`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let names = names_from_args(&args)?;
    let report = measure(&args, names)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(())
}

/// The names from `-n` or `-f`.
fn names_from_args(args: &Args) -> anyhow::Result<Vec<String>> {
    let names = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_names(&text)
        }
        None => args.names.clone(),
    };
    ensure!(!names.is_empty(), "no names to look up");
    Ok(names)
}

/// Names from a file: the first word of each line, skipping blank lines and `#` comments.
pub fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs the lookups and gathers the report.
pub fn measure(args: &Args, names: Vec<String>) -> anyhow::Result<Report> {
    ensure!(
        args.seconds > 0.0 && args.seconds.is_finite(),
        "-l must be a positive number"
    );
    let names = Arc::new(names);
    let limit = Duration::from_millis(args.limit_ms);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut threads = Vec::with_capacity(args.concurrency as usize);
    for index in 0..args.concurrency as usize {
        let names = Arc::clone(&names);
        let family = args.family;
        let thread = std::thread::Builder::new()
            .name(format!("resolve-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || lookup_loop(&names, index, family, deadline))
            .context("spawning a lookup thread")?;
        threads.push(thread);
    }
    let mut total = Tally::new()?;
    for thread in threads {
        let Ok(tally) = thread.join() else {
            bail!("a lookup thread panicked")
        };
        let tally = tally?;
        total.histogram.add(&tally.histogram)?;
        total.ok += tally.ok;
        for (kind, n) in tally.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    let duration_s = start.elapsed().as_secs_f64();
    let h = &total.histogram;
    let lookups = h.len();
    let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
    let over_limit = h
        .iter_recorded()
        .filter(|v| v.value_iterated_to() > limit_us)
        .map(|v| v.count_at_value())
        .sum();
    Ok(Report {
        concurrency: args.concurrency,
        duration_s,
        names: names.to_vec(),
        family: args.family,
        lookups,
        ok: total.ok,
        error_count: lookups - total.ok,
        errors: total.errors,
        qps: if duration_s > 0.0 {
            lookups as f64 / duration_s
        } else {
            0.0
        },
        latency_us: latency(h),
        limit_ms: args.limit_ms,
        over_limit,
    })
}

/// One thread: look names up round-robin, starting at its own offset, until the deadline.
fn lookup_loop(
    names: &[String],
    offset: usize,
    family: Family,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut i = offset;
    while Instant::now() < deadline {
        let name = &names[i % names.len()];
        i = i.wrapping_add(1);
        let started = Instant::now();
        let outcome = lookup(name, family);
        let micros = u64::try_from(started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        tally.histogram.saturating_record(micros);
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(kind) => *tally.errors.entry(kind).or_default() += 1,
        }
    }
    Ok(tally)
}

/// One getaddrinfo lookup; the error kind on failure.
pub fn lookup(name: &str, family: Family) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = match (name, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err(error_kind(&e)),
    };
    let wanted = match family {
        Family::Any => !addrs.is_empty(),
        Family::V4 => addrs.iter().any(SocketAddr::is_ipv4),
        Family::V6 => addrs.iter().any(SocketAddr::is_ipv6),
    };
    match (wanted, family) {
        (true, _) => Ok(()),
        (false, Family::Any) => Err("no address".to_owned()),
        (false, Family::V4) => Err("no v4 address".to_owned()),
        (false, Family::V6) => Err("no v6 address".to_owned()),
    }
}

/// The resolver's message without std's prefix, e.g. `Name or service not known`.
pub fn error_kind(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    text.to_owned()
}

/// Percentiles of a histogram of microseconds (zeros when empty).
fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            mean: 0.0,
            p50: 0,
            p90: 0,
            p99: 0,
            p999: 0,
            max: 0,
        };
    }
    Latency {
        mean: h.mean(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// The report as text for a terminal.
pub fn render_text(r: &Report) -> String {
    let mut out = format!(
        "resolve: {} threads, {:.1} s, {} name(s), family {:?}\n",
        r.concurrency,
        r.duration_s,
        r.names.len(),
        r.family
    );
    out += &format!(
        "lookups: {} (ok {}, errors {}), {:.0} per second\n",
        r.lookups, r.ok, r.error_count, r.qps
    );
    let l = &r.latency_us;
    out += &format!(
        "latency µs: mean {:.0}, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}\n",
        l.mean, l.p50, l.p90, l.p99, l.p999, l.max
    );
    out += &format!("slower than {} ms: {}\n", r.limit_ms, r.over_limit);
    for (kind, n) in &r.errors {
        out += &format!("error: {kind}: {n}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_takes_first_words_and_skips_comments() {
        let names = parse_names("# names\nwww.example.com A\n\n  api.example.org\n#x y\n");
        assert_eq!(names, ["www.example.com", "api.example.org"]);
    }

    #[test]
    fn error_kind_strips_std_prefix() {
        let e = std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        );
        assert_eq!(error_kind(&e), "Name or service not known");
    }

    #[test]
    fn localhost_resolves_and_empty_label_fails() {
        assert_eq!(lookup("localhost", Family::Any), Ok(()));
        assert!(lookup("foo..bar", Family::Any).is_err());
    }
}
