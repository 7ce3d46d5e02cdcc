//! What the node-local tests run inside a [`Namespace`]: real Unbound servers standing in
//! for kube-dns and for the node's upstream nameservers, and shardns itself started with
//! node-cache's arguments; both killed on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::netns::{Inside, Namespace};
use crate::shardns::send_signal;
use crate::{TcpClient, TempDir, UdpClient, shardns_binary};

/// Lays out node-cache's inputs in `dir` as the DaemonSet mounts them: the stock template
/// at `coredns/Corefile.base` (the `node-local-dns` ConfigMap, `proxy/testdata`) and an empty
/// `kube-dns/` ConfigMap directory; with `nameserver`, a `resolv.conf` naming it.
pub fn node_cache_inputs(dir: &TempDir, nameserver: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(dir.join("coredns"))?;
    std::fs::create_dir_all(dir.join("kube-dns"))?;
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proxy/testdata/Corefile.base"
    );
    std::fs::copy(template, dir.join("coredns/Corefile.base"))
        .with_context(|| format!("copying {template}"))?;
    if let Some(nameserver) = nameserver {
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )?;
    }
    Ok(())
}

/// An Unbound answering from local data on one address of a namespace.
#[derive(Debug)]
pub struct NamespaceUnbound {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl NamespaceUnbound {
    /// Starts Unbound in `namespace` on `addr` (port 53 here, as real nameservers), answering
    /// `zone` (a static local zone: a SOA plus `records`, each `NAME TTL IN TYPE DATA`) and
    /// REFUSED to every other name. `udp: false` makes it TCP only, as a way to prove that
    /// what reaches it came over TCP. Waits until it answers (≤ 5 s).
    pub fn start(
        namespace: &Namespace,
        addr: SocketAddr,
        udp: bool,
        zone: &str,
        records: &[&str],
    ) -> Result<NamespaceUnbound> {
        let dir = TempDir::new("nsub")?;
        let d = dir.path().display();
        let ip = addr.ip();
        let port = addr.port();
        let udp = if udp { "yes" } else { "no" };
        let mut conf = format!(
            r#"server:
    interface: {ip}@{port}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: "{d}/unbound.log"
    use-syslog: no
    log-queries: yes
    verbosity: 1
    num-threads: 1
    do-ip4: yes
    do-ip6: no
    do-udp: {udp}
    do-tcp: yes
    access-control: 0.0.0.0/0 allow
    module-config: "iterator"
    minimal-responses: yes
    local-zone: "." refuse
    local-zone: "{zone}" static
    local-data: "{zone} 30 IN SOA ns.{zone} hostmaster.{zone} 1 7200 1800 86400 30"
"#
        );
        for record in records {
            conf.push_str(&format!("    local-data: \"{record}\"\n"));
        }
        let path = dir.join("unbound.conf");
        std::fs::write(&path, conf)?;
        let output = File::create(dir.join("stderr.log"))?;
        let child = namespace
            .command("/usr/sbin/unbound")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone()?))
            .stderr(Stdio::from(output))
            .spawn()
            .context("spawning unbound in the namespace")?;
        let mut unbound = NamespaceUnbound { child, addr, dir };
        let tcp_only = udp == "no";
        let answered = namespace.run(|inside| {
            crate::wait_for(Duration::from_secs(5), || {
                let reply = if tcp_only {
                    TcpClient::inside(inside, addr)
                        .and_then(|mut client| client.query(zone, RecordType::SOA))
                } else {
                    UdpClient::inside(inside, addr)
                        .and_then(|client| client.query(zone, RecordType::SOA))
                };
                reply.ok()
            })
        });
        if answered.is_none() {
            let _ = unbound.child.kill();
            bail!("unbound on {addr} did not answer:\n{}", unbound.logs());
        }
        Ok(unbound)
    }

    /// The cluster's DNS as the node-local tests need it (kube-dns, CoreDNS): Unbound on
    /// `addr` answering `cluster.local.` with `kubernetes.default.svc.cluster.local. A
    /// 10.96.0.1`; `udp: false` makes it TCP only (what node-cache forwards over).
    pub fn cluster_dns(
        namespace: &Namespace,
        addr: SocketAddr,
        udp: bool,
    ) -> Result<NamespaceUnbound> {
        NamespaceUnbound::start(
            namespace,
            addr,
            udp,
            "cluster.local.",
            &["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"],
        )
    }

    /// The queries it logged (`... info: CLIENT NAME TYPE IN`) for `name`.
    pub fn queries_for(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("unbound.log")).unwrap_or_default();
        let name = name.to_ascii_lowercase();
        log.lines()
            .filter(|line| line.contains(" info: "))
            .filter(|line| {
                line.split_whitespace()
                    .any(|word| word.eq_ignore_ascii_case(&name))
            })
            .count()
    }

    /// Its logs, for failure messages.
    pub fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let log = std::fs::read_to_string(self.dir.join("unbound.log")).unwrap_or_default();
        format!("--- unbound {} ---\n{stderr}{log}", self.addr)
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) it: stopped, it accepts and never answers.
    pub fn pause(&self, paused: bool) -> Result<()> {
        send_signal(self.child.id(), if paused { "STOP" } else { "CONT" })
    }
}

impl Drop for NamespaceUnbound {
    fn drop(&mut self) {
        let _ = send_signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// shardns running in a namespace, its output in a file.
#[derive(Debug)]
pub struct NodeCache {
    child: Option<Child>,
    log: PathBuf,
}

impl NodeCache {
    /// Runs `shardns ARGS` in `namespace` with `env` set, writing its output to `log`, and
    /// waits (≤ 10 s) until it logs `started in` (every phase of start-up done).
    pub fn start(
        namespace: &Namespace,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<NodeCache> {
        let output = File::create(log)?;
        let mut command: Command = namespace.command(&shardns_binary()?.display().to_string());
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone()?))
            .stderr(Stdio::from(output));
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().context("spawning shardns")?;
        let mut node = NodeCache {
            child: Some(child),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.log_text().contains("started in") {
            if let Some(status) = node.child_mut().try_wait()? {
                bail!("shardns exited with {status}:\n{}", node.log_text());
            }
            if Instant::now() >= deadline {
                bail!("shardns did not start within 10 s:\n{}", node.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(node)
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits (≤ `timeout`) for the exit.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> Result<ExitStatus> {
        send_signal(self.pid(), signal)?;
        self.wait(timeout)
    }

    /// Waits (≤ `timeout`) for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child_mut().kill();
                bail!(
                    "shardns did not exit within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeCache {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A query inside the namespace over UDP or TCP: the reply's RCODE and its A records.
pub fn lookup(
    inside: &Inside,
    server: SocketAddr,
    name: &str,
    tcp: bool,
) -> Result<(ResponseCode, Vec<String>)> {
    let reply = if tcp {
        TcpClient::inside(inside, server)?.query(name, RecordType::A)?
    } else {
        UdpClient::inside(inside, server)?.query(name, RecordType::A)?
    };
    let addresses = reply
        .answers()
        .iter()
        .filter(|record| record.record_type() == RecordType::A)
        .map(|record| record.data().to_string())
        .collect();
    Ok((reply.response_code(), addresses))
}
