//! A real Unbound (`/usr/sbin/unbound`, Debian package `unbound`) answering only from local
//! data, on an ephemeral 127.0.0.1 port, killed on drop.
//!
//! It never recurses: `local-zone: "." refuse` answers every name outside the fixture zones
//! with REFUSED, so it sends no query anywhere. Queries it received are counted two ways:
//! `unbound-control stats_noreset` over a Unix control socket (totals, split by TCP), and
//! `log-queries` lines in its log file (per name).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::rr::RecordType;

use crate::client::{UdpClient, query_message};
use crate::process::run_with_deadline;
use crate::tempdir::TempDir;

/// The data Unbound serves.
pub mod zone {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const ZONE: &str = "example.test.";
    /// SOA of `example.test.`: record TTL 3600, MINIMUM 60 (Unbound sends the SOA of negative
    /// answers with TTL = min(TTL, MINIMUM) = 60).
    pub const SOA: &str =
        "example.test. 3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60";
    pub const NEG_TTL: u32 = 60;
    /// TTL of every positive record.
    pub const TTL: u32 = 300;

    /// A only (AAAA → NODATA).
    pub const WWW: &str = "www.example.test.";
    pub const WWW_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    /// A and AAAA.
    pub const DUAL: &str = "dual.example.test.";
    pub const DUAL_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    pub const DUAL_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
    /// AAAA only.
    pub const V6: &str = "v6.example.test.";
    pub const V6_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x30);
    /// Two A records.
    pub const MULTI: &str = "multi.example.test.";
    pub const MULTI_A: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 41), Ipv4Addr::new(192, 0, 2, 42)];
    /// `hostN.example.test.` A 192.0.2.(100+N), N in 0..HOSTS: distinct names for tests that
    /// need fresh cache misses.
    pub const HOSTS: u8 = 20;
    pub fn host(n: u8) -> String {
        format!("host{n}.example.test.")
    }
    pub fn host_a(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 100 + n)
    }
    /// `bigN.example.test.` (N in 0..BIG_NAMES): BIG_COUNT A records 198.51.100.1.. each, a
    /// reply of about 680 bytes: more than 512 (truncated over UDP without EDNS).
    pub const BIG_NAMES: u8 = 4;
    pub const BIG_COUNT: u8 = 40;
    pub fn big(n: u8) -> String {
        format!("big{n}.example.test.")
    }
    pub fn big_a(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, 1 + i)
    }
    /// Does not exist (NXDOMAIN with the SOA).
    pub const MISSING: &str = "missing.example.test.";

    /// A Kubernetes-looking zone.
    pub const KUBE_DNS: &str = "kube-dns.kube-system.svc.cluster.local.";
    pub const KUBE_DNS_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
}

/// A running Unbound.
#[derive(Debug)]
pub struct Unbound {
    child: Child,
    addr: SocketAddr,
    conf: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

const UNBOUND: &str = "/usr/sbin/unbound";
const UNBOUND_CONTROL: &str = "/usr/sbin/unbound-control";

fn tool(path: &str, name: &str) -> Result<String> {
    if Path::new(path).exists() {
        return Ok(path.to_string());
    }
    // Not at the Debian path: accept it from $PATH.
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.exists())
        })
        .unwrap_or(None);
    found.map(|p| p.display().to_string()).ok_or_else(|| {
        anyhow!("{name} not found (expected {path}): install the Debian packages `unbound dnsutils`, or run ./scripts/test.sh")
    })
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

fn config(dir: &Path, port: u16) -> String {
    use zone::*;
    let d = dir.display();
    let mut data = vec![
        SOA.to_string(),
        format!("{WWW} {TTL} IN A {WWW_A}"),
        format!("{DUAL} {TTL} IN A {DUAL_A}"),
        format!("{DUAL} {TTL} IN AAAA {DUAL_AAAA}"),
        format!("{V6} {TTL} IN AAAA {V6_AAAA}"),
        format!("{MULTI} {TTL} IN A {}", MULTI_A[0]),
        format!("{MULTI} {TTL} IN A {}", MULTI_A[1]),
    ];
    for n in 0..HOSTS {
        data.push(format!("{} {TTL} IN A {}", host(n), host_a(n)));
    }
    for n in 0..BIG_NAMES {
        for i in 0..BIG_COUNT {
            data.push(format!("{} {TTL} IN A {}", big(n), big_a(i)));
        }
    }
    let mut s = format!(
        r#"server:
    interface: 127.0.0.1@{port}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: "{d}/unbound.log"
    use-syslog: no
    log-queries: yes
    log-time-ascii: yes
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    incoming-num-tcp: 64
    tcp-idle-timeout: 30000
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    prefetch: no
    minimal-responses: yes
    statistics-interval: 0
    statistics-cumulative: no
    extended-statistics: yes
    local-zone: "." refuse
    local-zone: "example.test." static
    local-zone: "svc.cluster.local." static
    local-data: "svc.cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"
    local-data: "{KUBE_DNS} 30 IN A {KUBE_DNS_A}"
"#
    );
    for line in data {
        s.push_str(&format!("    local-data: \"{line}\"\n"));
    }
    s.push_str(&format!(
        "remote-control:\n    control-enable: yes\n    control-interface: \"{d}/ctl.sock\"\n    control-use-cert: no\n"
    ));
    s
}

impl Unbound {
    /// Starts Unbound on a free port and waits (≤ 5 s) until it answers; retries with a new
    /// port (≤ 5 times) if it exits, e.g. because the port was taken meanwhile.
    pub fn start() -> Result<Unbound> {
        let bin = tool(UNBOUND, "unbound")?;
        tool(UNBOUND_CONTROL, "unbound-control")?;
        let mut last_err = anyhow!("never tried");
        for _attempt in 0..5 {
            let dir = TempDir::new("ub")?;
            let port = free_port()?;
            let conf = dir.join("unbound.conf");
            std::fs::write(&conf, config(dir.path(), port))?;
            let stderr = dir.join("stderr.log");
            let child = Command::new(&bin)
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::from(File::create(&stderr)?))
                .stderr(Stdio::from(File::create(&stderr)?))
                .spawn()
                .with_context(|| format!("spawning {bin}"))?;
            let mut ub = Unbound {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                log: dir.join("unbound.log"),
                conf,
                stderr,
                dir,
            };
            match ub.wait_ready(Duration::from_secs(5)) {
                Ok(()) => {
                    // Fail early and clearly if the control channel does not work.
                    ub.stats().context("unbound-control stats_noreset")?;
                    return Ok(ub);
                }
                Err(e) => last_err = e, // `ub` is dropped (killed) here.
            }
        }
        Err(last_err.context("Unbound did not start after 5 attempts"))
    }

    /// Kills Unbound (SIGKILL) and waits for it to be gone: its port answers nothing.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts Unbound again on the same port and configuration (after [`Unbound::kill`])
    /// and waits (≤ 5 s) until it answers.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.kill()?;
        }
        let bin = tool(UNBOUND, "unbound")?;
        self.child = Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::from(File::create(&self.stderr)?))
            .stderr(Stdio::from(File::create(&self.stderr)?))
            .spawn()
            .with_context(|| format!("spawning {bin}"))?;
        self.wait_ready(Duration::from_secs(5))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = UdpClient::new(self.addr)?;
        let probe = query_message(zone::ZONE, RecordType::SOA, 0x1234).to_vec()?;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "unbound exited with {status} during start-up:\n{}",
                    self.logs()
                );
            }
            // ECONNREFUSED (not listening yet) and timeouts both mean "not yet".
            if let Ok(Some(_)) = client.exchange_raw(&probe, Duration::from_millis(200)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "unbound on {} did not answer within {timeout:?}:\n{}",
            self.addr,
            self.logs()
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process ID (to stop it with SIGSTOP: a black hole that accepts and never answers).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stderr and the log file, for failure messages.
    pub fn logs(&self) -> String {
        let a = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let b = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- unbound stderr ---\n{a}--- unbound log ---\n{b}")
    }

    /// `unbound-control stats_noreset` as `(key, value)` pairs.
    pub fn stats(&self) -> Result<Vec<(String, String)>> {
        let bin = tool(UNBOUND_CONTROL, "unbound-control")?;
        let text = run_with_deadline(
            Command::new(bin)
                .arg("-c")
                .arg(&self.conf)
                .arg("stats_noreset"),
            Duration::from_secs(5),
            "unbound-control",
        )?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    fn stat(&self, key: &str) -> Result<u64> {
        let stats = self.stats()?;
        let v = stats
            .iter()
            .find(|(k, _)| k == key)
            .ok_or_else(|| anyhow!("no {key} in unbound-control output"))?;
        v.1.parse().with_context(|| format!("{key}={}", v.1))
    }

    /// All queries Unbound received (UDP + TCP), `total.num.queries`.
    pub fn total_queries(&self) -> u64 {
        self.stat("total.num.queries")
            .expect("reading Unbound's query count")
    }

    /// Queries Unbound received over TCP, `num.query.tcp`.
    pub fn tcp_queries(&self) -> u64 {
        self.stat("num.query.tcp")
            .expect("reading Unbound's TCP query count")
    }

    /// How many queries for `name` (any case, any type unless given) Unbound has logged.
    /// Log lines look like `... info: 127.0.0.1 www.example.test. A IN`.
    pub fn queries_for(&self, name: &str, rtype: Option<RecordType>) -> usize {
        let name = name.to_ascii_lowercase();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(" info: "))
            .filter(|l| {
                let words: Vec<String> = l
                    .split_whitespace()
                    .map(|w| w.to_ascii_lowercase())
                    .collect();
                words
                    .iter()
                    .position(|w| *w == name)
                    .is_some_and(|i| match rtype {
                        None => true,
                        Some(t) => words
                            .get(i + 1)
                            .is_some_and(|w| w.eq_ignore_ascii_case(&t.to_string())),
                    })
            })
            .count()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
