//! What a server process cost: CPU time from `/proc/PID/stat` and hardware counters from
//! `perf stat`.
//!
//! `/proc/PID/stat` of a thread-group leader reports utime and stime summed over all the
//! process's threads (live and exited), which is the process's CPU time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::servers::{Guard, pinned};

/// utime + stime in clock ticks from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so the fields are counted from the *last* `)`.
pub fn parse_stat_ticks(stat: &str) -> anyhow::Result<u64> {
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow!("no ')' in /proc stat"))?;
    // After the comm: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("/proc stat has {} fields after the comm", fields.len()))?
            .parse::<u64>()
            .with_context(|| format!("field {} of /proc stat", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_stat_ticks(&text)? as f64 / clock_ticks_per_second() as f64)
}

/// Hardware counters from one `perf stat` run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerfCounts {
    /// Instructions retired (user + kernel), when counted.
    pub instructions: Option<u64>,
    /// CPU cycles, when counted.
    pub cycles: Option<u64>,
}

/// Parses `perf stat -x,` output: `VALUE,UNIT,EVENT,...` lines; `#` lines are comments and
/// values like `<not counted>` or `<not supported>` count as missing.
pub fn parse_perf_csv(text: &str) -> PerfCounts {
    let mut counts = PerfCounts::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        // Events may carry modifiers (`instructions:u`) or a PMU prefix (`cpu_core/cycles/`).
        let event = event
            .trim()
            .trim_start_matches("cpu_core/")
            .trim_start_matches("cpu/");
        let event = event.split([':', '/']).next().unwrap_or("");
        match event {
            "instructions" => counts.instructions = Some(value),
            "cycles" => counts.cycles = Some(value),
            _ => {}
        }
    }
    counts
}

/// Whether `perf stat -e instructions` can count here (a VM may hide the PMU).
pub fn perf_works() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "instructions", "--", "true"])
        .stdout(Stdio::null())
        .output()
        .map(|o| {
            o.status.success()
                && parse_perf_csv(&String::from_utf8_lossy(&o.stderr))
                    .instructions
                    .is_some()
        })
        .unwrap_or(false)
}

/// A `perf stat -p PID` counting a server while a client runs.
#[derive(Debug)]
pub struct PerfStat {
    child: Option<Guard>,
    output: PathBuf,
}

impl PerfStat {
    /// Starts counting instructions and cycles of `pid`, with perf itself on `cpu`.
    pub fn start(pid: u32, cpu: usize, output: &Path) -> anyhow::Result<PerfStat> {
        let _ = std::fs::remove_file(output);
        let mut cmd = pinned(cpu, "perf");
        cmd.args([
            "stat",
            "-x,",
            "-e",
            "instructions,cycles",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child: Child = cmd.spawn().context("starting perf stat")?;
        Ok(PerfStat {
            child: Some(Guard::new("perf stat", child)),
            output: output.to_owned(),
        })
    }

    /// Stops perf (SIGINT makes it write its counts) and reads them.
    pub fn stop(mut self) -> anyhow::Result<PerfCounts> {
        let Some(mut guard) = self.child.take() else {
            bail!("perf stat already stopped")
        };
        let pid = Pid::from_raw(i32::try_from(guard.pid())?);
        kill(pid, Signal::SIGINT).context("stopping perf stat")?;
        guard.wait_for_exit(std::time::Duration::from_secs(5))?;
        let text = std::fs::read_to_string(&self.output)
            .with_context(|| format!("reading {}", self.output.display()))?;
        Ok(parse_perf_csv(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_plain_comm() {
        let stat =
            "1234 (unbound) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 325);
    }

    #[test]
    fn stat_with_spaces_and_parentheses_in_comm() {
        let stat = "42 (a) b (c d)) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 4 0 5 6 7";
        assert_eq!(parse_stat_ticks(stat).unwrap(), 10);
    }

    #[test]
    fn stat_truncated_is_an_error() {
        assert!(parse_stat_ticks("1 (x) S 1 2 3").is_err());
        assert!(parse_stat_ticks("no parenthesis").is_err());
    }

    #[test]
    fn own_process_has_cpu_time() {
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn perf_csv_counts_and_missing_values() {
        let csv = "# started on Sat Nov 22 10:00:00 2026\n\n\
                   12134000,,instructions,10000000,100.00,2.46,insn per cycle\n\
                   4924000,,cycles,10000000,100.00,,\n";
        assert_eq!(
            parse_perf_csv(csv),
            PerfCounts {
                instructions: Some(12_134_000),
                cycles: Some(4_924_000)
            }
        );
        let csv = "<not supported>,,instructions,0,100.00,,\n5,,cpu_core/cycles/,1,100.00,,\n";
        assert_eq!(
            parse_perf_csv(csv),
            PerfCounts {
                instructions: None,
                cycles: Some(5)
            }
        );
        let csv = "7,,instructions:u,1,100.00,,\n";
        assert_eq!(parse_perf_csv(csv).instructions, Some(7));
    }
}
