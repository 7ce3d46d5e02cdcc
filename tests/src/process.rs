//! Running a helper command (dig, unbound-control) to completion within a deadline.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmd` (stdin closed, stdout and stderr captured), polling every 10 ms; kills it if it
/// has not exited within `timeout`. Returns its standard output. Fails if it cannot be started
/// (the error says "running {what}", so `what` may carry an install hint), if it times out,
/// or if it exits with a non-zero status (the error then shows stdout and stderr).
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration, what: &str) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    // Read while it runs: a child writing more than a pipe holds would block until killed.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}):\n{stdout}{}",
            String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        );
    }
    Ok(stdout)
}

/// A thread reading `pipe` to its end.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`); `None` if
/// the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The peak resident set size of process `pid` in KiB (`VmHWM`); `None` if it is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}
