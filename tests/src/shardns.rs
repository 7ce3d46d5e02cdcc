//! The `shardns` binary under test: spawned with a Corefile in a temp dir, its stderr (and
//! stdout) collected by reader threads, its listening addresses parsed from the
//! `listening on udp|tcp ADDR (shard N, IO)` lines, SIGTERM on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::tempdir::TempDir;

/// How long start-up may take before the harness gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd process may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the `shardns` binary: `$SHARDNS_BIN` if set; else next to the test executable's
/// `deps/` directory (`target/<profile>/shardns`, which honours `CARGO_TARGET_DIR`); else
/// `$CARGO_TARGET_DIR/debug/shardns`.
pub fn shardns_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SHARDNS_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("SHARDNS_BIN={} does not exist", p.display());
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/<test>-<hash>  →  target/<profile>/shardns
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            tried.push(profile_dir.join("shardns"));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        tried.push(PathBuf::from(&t).join("debug").join("shardns"));
        tried.push(PathBuf::from(&t).join("release").join("shardns"));
    }
    for p in &tried {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    bail!(
        "the shardns binary was not found (looked at {tried:?}). Build it first with \
         `cargo build -p shardns` (same profile and CARGO_TARGET_DIR as the tests), \
         or run ./scripts/test.sh, or set SHARDNS_BIN"
    )
}

/// Removes ANSI colour escapes (`ESC [ ... letter`) that a log formatter may emit.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses `... listening on PROTO ADDR ...` out of one log line.
pub fn parse_listening(line: &str, proto: &str) -> Option<SocketAddr> {
    let marker = format!("listening on {proto} ");
    let rest = &line[line.find(&marker)? + marker.len()..];
    let token = rest.split_whitespace().next()?;
    token.trim_end_matches([',', ';']).parse().ok()
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    /// Reader threads still running (0 = both pipes closed).
    open: usize,
}

type SharedLog = Arc<(Mutex<LogState>, Condvar)>;

fn spawn_reader(log: SharedLog, pipe: impl Read + Send + 'static) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let reader = BufReader::new(pipe);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            let (m, cv) = &*log;
            m.lock().unwrap().lines.push(text.trim_end().to_string());
            cv.notify_all();
        }
        let (m, cv) = &*log;
        m.lock().unwrap().open -= 1;
        cv.notify_all();
    })
}

/// Starts one reader thread each on `child`'s piped stderr and stdout, both collecting into
/// one shared log.
fn capture_output(child: &mut Child) -> (SharedLog, Vec<JoinHandle<()>>) {
    let log: SharedLog = Arc::new((
        Mutex::new(LogState {
            lines: Vec::new(),
            open: 2,
        }),
        Condvar::new(),
    ));
    let readers = vec![
        spawn_reader(log.clone(), child.stderr.take().expect("piped stderr")),
        spawn_reader(log.clone(), child.stdout.take().expect("piped stdout")),
    ];
    (log, readers)
}

/// How a shardns process ended.
#[derive(Debug)]
pub struct ShardnsExit {
    pub status: ExitStatus,
    /// Collected stderr + stdout lines.
    pub log: String,
}

/// A running shardns.
#[derive(Debug)]
pub struct Shardns {
    child: Option<Child>,
    log: SharedLog,
    readers: Vec<JoinHandle<()>>,
    udp: SocketAddr,
    tcp: SocketAddr,
    dir: TempDir,
}

impl Shardns {
    /// Writes `corefile` to `<tmp>/Corefile` and runs `shardns --conf <tmp>/Corefile ARGS`,
    /// waiting for its listening lines.
    /// [`Shardns::start`] with the Corefile `corefile(port)` names for an HTTP endpoint
    /// (metrics), `port` free on 127.0.0.1 (up to 3 tries, should another process take it
    /// first). Returns shardns and the endpoint's address; panics if every try failed.
    pub fn start_with_http(
        corefile: impl Fn(u16) -> String,
        args: &[&str],
    ) -> (Shardns, SocketAddr) {
        let mut last_error = None;
        for _ in 0..3 {
            let port = crate::unbound::free_port().expect("a free port");
            match Shardns::start(&corefile(port), args) {
                Ok(shardns) => return (shardns, SocketAddr::from(([127, 0, 0, 1], port))),
                Err(error) => last_error = Some(error),
            }
        }
        panic!("starting shardns: {:#}", last_error.expect("three tries"));
    }

    pub fn start(corefile: &str, args: &[&str]) -> Result<Shardns> {
        let dir = TempDir::new("sd")?;
        let conf = dir.join("Corefile");
        std::fs::write(&conf, corefile)?;
        let mut full: Vec<String> = vec!["--conf".into(), conf.display().to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        Shardns::start_in(dir, &Command::new(shardns_binary()?), &full, None)
    }

    /// Runs `PROGRAM ARGS` (the caller's command: shardns itself, or a wrapper that execs it,
    /// e.g. `unshare`), waiting for the listening lines. `shards` overrides the number of
    /// per-shard lines to wait for (default: the `--shards` argument, else 1).
    pub fn start_in(
        dir: TempDir,
        program: &Command,
        args: &[String],
        shards: Option<usize>,
    ) -> Result<Shardns> {
        let shards = shards.unwrap_or_else(|| {
            args.iter()
                .position(|a| a == "--shards")
                .and_then(|i| args.get(i + 1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        });
        let mut cmd = Command::new(program.get_program());
        cmd.args(program.get_args()).args(args);
        // The harness needs the info-level `listening on` lines whatever the caller's RUST_LOG.
        cmd.env_remove("RUST_LOG");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let (log, readers) = capture_output(&mut child);
        let mut s = Shardns {
            child: Some(child),
            log,
            readers,
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            dir,
        };
        let (udp, tcp) = s
            .wait_listening(shards, START_TIMEOUT)
            .with_context(|| format!("starting {cmd:?}"))?;
        s.udp = udp;
        s.tcp = tcp;
        Ok(s)
    }

    /// Waits for `shards` "listening on udp" lines and at least one "listening on tcp" line
    /// (then up to 1 s more for `shards` of them), all on one address.
    fn wait_listening(
        &mut self,
        shards: usize,
        timeout: Duration,
    ) -> Result<(SocketAddr, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let mut tcp_grace: Option<Instant> = None;
        loop {
            let (udp, tcp) = {
                let st = self.log.0.lock().unwrap();
                let udp: Vec<SocketAddr> = st
                    .lines
                    .iter()
                    .filter_map(|l| parse_listening(l, "udp"))
                    .collect();
                let tcp: Vec<SocketAddr> = st
                    .lines
                    .iter()
                    .filter_map(|l| parse_listening(l, "tcp"))
                    .collect();
                (udp, tcp)
            };
            if udp.len() >= shards && !tcp.is_empty() {
                let grace =
                    *tcp_grace.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                if tcp.len() >= shards || Instant::now() >= grace {
                    if udp.iter().any(|a| *a != udp[0]) || tcp.iter().any(|a| *a != tcp[0]) {
                        bail!(
                            "shards listen on different addresses: udp {udp:?} tcp {tcp:?}\n{}",
                            self.log_text()
                        );
                    }
                    return Ok((udp[0], tcp[0]));
                }
            }
            if let Some(status) = self.child.as_mut().expect("child").try_wait()? {
                self.join_readers(Duration::from_secs(2));
                bail!(
                    "shardns exited with {status} before listening:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "shardns did not log {shards}× 'listening on udp' and 'listening on tcp' within {timeout:?} \
                     (got udp {udp:?}, tcp {tcp:?}):\n{}",
                    self.log_text()
                );
            }
            let (m, cv) = &*self.log;
            let guard = m.lock().unwrap();
            let _ = cv.wait_timeout(guard, Duration::from_millis(50)).unwrap();
        }
    }

    /// The UDP listening address (all shards share it).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The TCP listening address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every line logged so far (stderr and stdout, ANSI escapes removed).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    /// Under `--supervise`: the pid of the last worker the supervisor says serves.
    pub fn serving_worker(&self) -> Option<u32> {
        self.log_text()
            .lines()
            .filter(|line| {
                line.contains("supervisor::workers: worker ") && line.ends_with(" serves")
            })
            .filter_map(|line| {
                line.split("worker ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .next_back()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::from("--- shardns log ---\n");
        for l in self.log_lines() {
            s.push_str(&l);
            s.push('\n');
        }
        s
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_alive(&mut self) {
        let st = self
            .child
            .as_mut()
            .expect("child")
            .try_wait()
            .expect("try_wait");
        if let Some(status) = st {
            self.join_readers(Duration::from_secs(2));
            panic!(
                "shardns is no longer running: {status}\n{}",
                self.log_text()
            );
        }
    }

    fn join_readers(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m.lock().unwrap();
        while st.open > 0 && Instant::now() < deadline {
            st = cv.wait_timeout(st, Duration::from_millis(50)).unwrap().0;
        }
        let done = st.open == 0;
        drop(st);
        if done {
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
    }

    /// Sends SIGTERM and waits (≤ `timeout`) for the exit; SIGKILL after that.
    fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        if let Some(status) = child.try_wait()? {
            self.join_readers(Duration::from_secs(2));
            return Ok(status);
        }
        send_signal(child.id(), "TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.join_readers(Duration::from_secs(2));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_readers(Duration::from_secs(2));
                bail!("shardns did not exit within {timeout:?} of SIGTERM (killed)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (≤ `timeout`) for the process to exit by itself (e.g. after a hand-off); its
    /// status and log.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<(ExitStatus, String)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.join_readers(Duration::from_secs(2));
                return Ok((status, self.log_text()));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_readers(Duration::from_secs(2));
                bail!(
                    "shardns did not exit within {timeout:?} (killed):\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then asserts a clean exit (status 0) within [`STOP_TIMEOUT`]. Returns the log.
    pub fn stop(mut self) -> String {
        let result = self.terminate(STOP_TIMEOUT);
        let log = self.log_text();
        match result {
            Ok(status) => assert_eq!(
                status.code(),
                Some(0),
                "shardns exit status after SIGTERM: {status}\n{log}"
            ),
            Err(e) => panic!("{e:#}\n{log}"),
        }
        log
    }

    /// Runs shardns to completion (e.g. a config error or `--validate`), killing it after
    /// `timeout`. `Err` if it did not exit by itself in time.
    pub fn run_to_exit(args: &[String], timeout: Duration) -> Result<ShardnsExit> {
        let bin = shardns_binary()?;
        let mut child = Command::new(&bin)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let (log, readers) = capture_output(&mut child);
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in readers {
            let _ = r.join();
        }
        let text = log.0.lock().unwrap().lines.join("\n");
        match status {
            Some(status) => Ok(ShardnsExit { status, log: text }),
            None => {
                bail!("shardns {args:?} did not exit within {timeout:?} (killed); output:\n{text}")
            }
        }
    }
}

/// `kill -SIG PID` via the `kill` command (no libc, no unsafe).
pub fn send_signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed: {status}");
    }
    Ok(())
}

impl Drop for Shardns {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(3));
        }
    }
}
