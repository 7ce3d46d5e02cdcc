//! The servers under test and their upstream: configuration files, pinned start-up, warm-up,
//! and guards that stop every child when `compare` ends, however it ends.
//!
//! Children run as `setpriv --pdeathsig KILL -- taskset -c CPU PROGRAM ...` (both exec, so
//! the child's pid is the server's): the kernel pins every thread the server will ever make,
//! and kills the server if `compare` itself dies without running its destructors. Each child
//! is also held by a [`Guard`] that stops it on drop (error paths, ctrl-c).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::dns;

/// The 8 names of `scripts/bench-hit.sh`: 5 "external", 3 cluster-internal.
pub const NAMES: [&str; 8] = [
    "www.example.com",
    "api.example.org",
    "cdn.example.net",
    "mail.example.com",
    "static.example.org",
    "kubernetes.default.svc.cluster.local",
    "kube-dns.kube-system.svc.cluster.local",
    "web.prod.svc.cluster.local",
];

/// A child process that is stopped (SIGTERM, then SIGKILL after 2 s) when dropped.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Child,
    exited: bool,
}

impl Guard {
    /// Takes charge of `child`.
    pub fn new(name: &str, child: Child) -> Guard {
        Guard {
            name: name.to_owned(),
            child,
            exited: false,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => {
                self.exited = true;
                bail!("{} exited: {status}", self.name)
            }
            None => Ok(()),
        }
    }

    /// Waits for the child to exit (it was told to), killing it after `patience`.
    pub fn wait_for_exit(&mut self, patience: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                self.exited = true;
                return self
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if let Err(e) = self.wait_for_exit(Duration::from_secs(2)) {
            tracing::warn!("stopping {}: {e:#}", self.name);
        }
    }
}

fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// The first `program` on PATH.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A command that runs `program` with all its threads on `cpu` and dies with this process.
pub fn pinned(cpu: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut prefix: Vec<String> = Vec::new();
    if on_path("setpriv") {
        prefix.extend(["setpriv", "--pdeathsig", "KILL", "--"].map(String::from));
    }
    if on_path("taskset") {
        prefix.extend(["taskset".to_owned(), "-c".to_owned(), cpu.to_string()]);
    }
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
    }
}

/// Pins every thread of `pid` to `cpu` (a check after start-up, and the only pinning when
/// `taskset` is missing).
pub fn pin_threads(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        sched_setaffinity(Pid::from_raw(tid), &set)
            .with_context(|| format!("pinning thread {tid}"))?;
    }
    Ok(())
}

/// A loopback port that is free for both UDP and TCP right now.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port found")
}

/// What a server is, for the ratio columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// shardns itself.
    Shardns,
    /// A peer server (dnsdist, Unbound, dnsmasq).
    Peer,
    /// The reflector: the kernel's floor.
    Reflector,
}

/// How to start one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Row label.
    pub label: String,
    /// For the ratio columns.
    pub role: Role,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Files to write first: (path, contents).
    pub files: Vec<(PathBuf, String)>,
    /// Whether replies carry answer records (all but the reflector).
    pub answers: bool,
}

/// A running, warmed server.
#[derive(Debug)]
pub struct Server {
    /// How it was started.
    pub spec: Spec,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process (stopped on drop).
    pub guard: Guard,
}

/// Writes the spec's files, starts it on `cpu` with its output in `log`, waits until it
/// answers every name (which also warms its cache) and pins all its threads.
pub fn start(spec: Spec, addr: SocketAddr, cpu: usize, log: &Path) -> anyhow::Result<Server> {
    for (path, text) in &spec.files {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let out = std::fs::File::create(log)?;
    let child = pinned(cpu, &spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let mut guard = Guard::new(&spec.label, child);
    let log_tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    };
    let warm = (|| {
        for (i, name) in NAMES.iter().enumerate() {
            let patience = Duration::from_secs(if i == 0 { 15 } else { 3 });
            dns::wait_answer(addr, name, spec.answers, patience, || guard.check_alive())?;
        }
        pin_threads(guard.pid(), cpu)
    })();
    warm.map_err(|e| anyhow!("{e:#}; log: {}", log_tail()))?;
    Ok(Server { spec, addr, guard })
}

/// The upstream: Unbound serving the names from static local data, refusing everything
/// else, never recursing (as in `scripts/bench-hit.sh`).
pub fn unbound_upstream_conf(port: u16, work: &Path) -> String {
    let mut c = unbound_common(port, &work.join("unbound-upstream.pid"));
    c += "  # Never recurse: every name outside the static zones is refused locally.\n";
    c += "  local-zone: \".\" refuse\n";
    for zone in [
        "example.com",
        "example.org",
        "example.net",
        "svc.cluster.local",
    ] {
        c += &format!("  local-zone: \"{zone}.\" static\n");
    }
    for (i, name) in NAMES.iter().enumerate() {
        c += &format!("  local-data: \"{name}. 3600 IN A 192.0.2.{}\"\n", i + 1);
    }
    c
}

/// Unbound as a caching forwarder to the upstream only. No `local-zone: "."` here (it would
/// answer before forwarding); `do-not-query-localhost: no` lets it forward to loopback, and
/// `outgoing-interface: 127.0.0.1` with `do-ip6: no` makes the kernel refuse any query to a
/// non-loopback address, so it can reach nothing but the upstream.
pub fn unbound_forwarder_conf(port: u16, upstream: u16, work: &Path) -> String {
    let mut c = unbound_common(port, &work.join("unbound-peer.pid"));
    c += "  outgoing-interface: 127.0.0.1\n  do-ip6: no\n  prefetch: no\n";
    c += &format!(
        "forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.1@{upstream}\n  forward-first: no\n"
    );
    c
}

fn unbound_common(port: u16, pidfile: &Path) -> String {
    format!(
        "server:\n  interface: 127.0.0.1@{port}\n  do-not-query-localhost: no\n  chroot: \"\"\n  \
         username: \"\"\n  pidfile: \"{}\"\n  use-syslog: no\n  verbosity: 0\n  num-threads: 1\n  \
         access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n",
        pidfile.display()
    )
}

/// dnsdist with a packet cache in front of the upstream; security polling off.
pub fn dnsdist_conf(port: u16, upstream: u16) -> String {
    format!(
        "setLocal(\"127.0.0.1:{port}\")\n\
         newServer({{address=\"127.0.0.1:{upstream}\", checkName=\"{}.\"}})\n\
         pc = newPacketCache(10000, {{maxTTL=86400, minTTL=0}})\n\
         getPool(\"\"):setCache(pc)\n\
         setSecurityPollSuffix(\"\")\n",
        NAMES[0]
    )
}

/// dnsmasq's arguments: foreground, loopback only, no resolv.conf, the upstream only.
pub fn dnsmasq_args(port: u16, upstream: u16) -> Vec<String> {
    [
        "-k",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--port",
        &port.to_string(),
        "--listen-address",
        "127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--server",
        &format!("127.0.0.1#{upstream}"),
        // dnsmasq 2.90 takes this option's value only after `=`.
        "--cache-size=10000",
    ]
    .map(String::from)
    .to_vec()
}

/// shardns's Corefile: a cache forwarding to the upstream over TCP.
pub fn shardns_corefile(port: u16, upstream: u16) -> String {
    format!(
        ".:{port} {{\n    bind 127.0.0.1\n    cache 30\n    forward . 127.0.0.1:{upstream} {{\n        \
         force_tcp\n    }}\n}}\n"
    )
}

/// The first line of `program ARGS` output (stdout or stderr), for version reports.
pub fn version_line(program: &Path, args: &[&str], keep: impl Fn(&str) -> bool) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| keep(l))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_refuses_everything_else_and_serves_the_names() {
        let c = unbound_upstream_conf(5300, Path::new("/w"));
        assert!(c.contains("interface: 127.0.0.1@5300\n"));
        assert!(c.contains("local-zone: \".\" refuse\n"));
        assert!(c.contains("local-data: \"web.prod.svc.cluster.local. 3600 IN A 192.0.2.8\""));
        assert!(!c.contains("forward-zone"));
    }

    #[test]
    fn forwarder_reaches_only_the_loopback_upstream() {
        let c = unbound_forwarder_conf(5301, 5300, Path::new("/w"));
        assert!(c.contains("interface: 127.0.0.1@5301\n"));
        assert!(c.contains("do-not-query-localhost: no\n"));
        assert!(c.contains("outgoing-interface: 127.0.0.1\n"));
        assert!(c.contains("forward-addr: 127.0.0.1@5300\n"));
        assert!(
            !c.contains("local-zone"),
            "a local zone would answer before forwarding"
        );
        assert_eq!(c.matches("forward-addr").count(), 1);
    }

    #[test]
    fn dnsdist_has_packet_cache_and_no_security_polling() {
        let c = dnsdist_conf(5302, 5300);
        assert!(c.contains("setLocal(\"127.0.0.1:5302\")"));
        assert!(c.contains("address=\"127.0.0.1:5300\""));
        assert!(c.contains("newPacketCache(10000"));
        assert!(c.contains("setSecurityPollSuffix(\"\")"));
    }

    #[test]
    fn dnsmasq_uses_only_the_upstream() {
        let a = dnsmasq_args(5303, 5300).join(" ");
        assert!(a.contains("--port 5303 --listen-address 127.0.0.1 --bind-interfaces --no-resolv"));
        assert!(a.contains("--server 127.0.0.1#5300 --cache-size=10000"));
        assert!(a.starts_with("-k "));
    }

    #[test]
    fn shardns_corefile_forwards_to_upstream() {
        let c = shardns_corefile(5304, 5300);
        assert!(c.starts_with(".:5304 {\n    bind 127.0.0.1\n"));
        assert!(c.contains("forward . 127.0.0.1:5300 {"));
    }

    #[test]
    fn guard_stops_its_child() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        drop(Guard::new("sleep", child));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        assert!(stat.is_err(), "child {pid} still exists");
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
