//! Network namespaces a test creates for itself (root only), so that node setup (addresses,
//! iptables rules) and traffic to non-loopback addresses such as 169.254.20.10 happen where
//! nothing else lives: the namespace is deleted when dropped, also when the test fails.
//!
//! Code runs inside one with [`Namespace::run`]: a thread that joins the namespace and hands
//! the closure an [`Inside`], the proof the clients ([`crate::UdpClient::inside`],
//! [`crate::TcpClient::inside`], [`crate::metrics::http_inside`]) ask for before sending to an
//! address that is not loopback. Processes run inside with [`Namespace::command`].

use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Why the root-only tests cannot run here (not root, or one of `programs` is missing: a
/// name must answer `--version`, a path must exist), or `None` when they can.
pub fn skip_reason(programs: &[&str]) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown");
    if effective_uid != "0" {
        return Some(format!("not root (effective uid {effective_uid})"));
    }
    for program in std::iter::once(&"ip").chain(programs) {
        if program.starts_with('/') {
            if !std::path::Path::new(program).exists() {
                return Some(format!("{program} is missing"));
            }
            continue;
        }
        let runs = Command::new(program)
            .arg(if *program == "ip" { "-V" } else { "--version" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            return Some(format!("{program} is missing"));
        }
    }
    None
}

/// A network namespace made for one test, with its loopback up.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

/// Proof that the calling thread is inside a namespace a test created (see the module).
#[derive(Debug)]
pub struct Inside {
    _private: (),
}

impl Namespace {
    /// `ip netns add shardns-e2e-PID-N-LABEL`, then `lo` up.
    pub fn create(label: &str) -> Result<Namespace> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "shardns-e2e-{}-{}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let namespace = Namespace { name };
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut line = vec!["-n", self.name.as_str()];
        line.extend_from_slice(args);
        run("ip", &line)
    }

    /// Puts each of `ips` (IPv4) on the namespace's `lo` as a /32: the node's local IPs
    /// (this kernel has no dummy link type) and the addresses of the servers it runs.
    pub fn add_local_ips(&self, ips: &[&str]) -> Result<()> {
        for ip in ips {
            self.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        }
        Ok(())
    }

    /// Joins this namespace (a node) to `pod` as a pod's veth joins its node: a veth pair,
    /// `node_end` here with `10.0.N.1/24` and `veth-pod` in `pod` with `10.0.N.2/24`, both up,
    /// and the pod's default route via the node's end. `Ok(false)` where the kernel has no
    /// veth link type (nothing was made).
    pub fn link_pod(&self, node_end: &str, pod: &Namespace, n: u8) -> Result<bool> {
        let made = Command::new("ip")
            .args(["link", "add", node_end, "netns", &self.name, "type", "veth"])
            .args(["peer", "name", "veth-pod", "netns", &pod.name])
            .status()
            .is_ok_and(|status| status.success());
        if !made {
            return Ok(false);
        }
        let (node_ip, pod_ip) = (format!("10.0.{n}.1"), format!("10.0.{n}.2"));
        self.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", node_end])?;
        self.ip(&["link", "set", node_end, "up"])?;
        pod.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "veth-pod"])?;
        pod.ip(&["link", "set", "veth-pod", "up"])?;
        pod.ip(&["route", "add", "default", "via", &node_ip])?;
        Ok(true)
    }

    /// node-cache's rules in this namespace as `save` (`iptables-save`, `iptables-nft-save`,
    /// `iptables-legacy-save`) prints them: the lines carrying node-cache's comment.
    pub fn node_cache_rules(&self, save: &str) -> Result<Vec<String>> {
        Ok(self
            .exec(save, &[])?
            .lines()
            .filter(|line| line.contains("NodeLocal DNS Cache"))
            .map(str::to_string)
            .collect())
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`, which
    /// execs it: the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace to completion; its stdout, or an error with
    /// its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        checked(program, args, output)
    }

    /// Runs `work` on a thread inside the namespace and returns its result.
    pub fn run<T: Send>(&self, work: impl FnOnce(&Inside) -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("joining {path}: {e}"));
                    work(&Inside { _private: () })
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(error) = run("ip", &["netns", "del", &self.name]) {
            eprintln!(
                "could not delete network namespace {}: {error:#}",
                self.name
            );
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    checked(program, args, output)
}

fn checked(program: &str, args: &[&str], output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{program} {args:?}: {}{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
