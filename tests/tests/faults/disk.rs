//! A full disk under node-local mode, which writes the Corefile it makes from the template to
//! `-conf` and its pidfile to `-pidfile`: both on a small tmpfs the test mounts in its temp
//! directory and fills with a file (root only; skipped with the reason otherwise, and always
//! unmounted). node-local mode runs here on loopback without the interface or the rules
//! (`-setupinterface=false -setupiptables=false`).
//!
//! What an operator expects, and what these tests hold shardns to:
//! - at start-up, a Corefile that cannot be written is served from memory: the error names
//!   the file and is counted (`coredns_nodecache_setup_errors_total{errortype="configmap"}`),
//!   the `reload` directive does not fail on the missing file, and the file is written once
//!   there is room (within a poll, 10 s);
//! - a pidfile that cannot be written is logged, leaves no empty file behind, and does not
//!   stop serving (it is not written later, as in CoreDNS);
//! - a template change that cannot be written is applied all the same (from memory), counted,
//!   leaves the old file whole, and is written once there is room.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shardns_e2e::metrics::{scrape, value};
use shardns_e2e::unbound::free_port;
use shardns_e2e::upstream::zone;
use shardns_e2e::{Shardns, TempDir, TestUpstream, shardns_binary, wait_for};

use crate::common;

/// How long a Corefile waiting to be written may take once there is room: the watch polls
/// every 10 s.
const WRITTEN_WITHIN: Duration = Duration::from_secs(15);
const SETUP_ERRORS: &str = "coredns_nodecache_setup_errors_total{errortype=\"configmap\"}";

/// A tmpfs of 64 KiB mounted on a directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts it on `path` (created), or says why it cannot.
    fn mount(path: &Path) -> Result<Tmpfs, String> {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap_or("unknown");
        if uid != "0" {
            return Err(format!("not root (effective uid {uid})"));
        }
        fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "shardns-e2e-full"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Fills it with one file until the kernel says there is no room (bounded: 64 KiB).
    fn fill(&self) {
        let mut file = fs::File::create(self.join("filler")).expect("the filler");
        let block = [0u8; 4096];
        for _ in 0..64 {
            match file.write(&block) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => return,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        match file.write(&block).and_then(|_| file.sync_all()) {
            Err(e) if e.raw_os_error() == Some(28) => {}
            other => panic!("the tmpfs is not full: {other:?}"),
        }
    }

    /// Room again.
    fn free(&self) {
        fs::remove_file(self.join("filler")).expect("removing the filler");
    }

    /// The names in it.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.path)
            .expect("listing the tmpfs")
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Node-local mode's files: the template's directory, the ConfigMap's (empty), resolv.conf,
/// and the tmpfs for `-conf` and `-pidfile`.
struct Node {
    tmpfs: Tmpfs,
    template: PathBuf,
    metrics: SocketAddr,
    /// Declared last: removed after the tmpfs is unmounted.
    dir: TempDir,
}

impl Node {
    /// Mounts the tmpfs, or says why it cannot.
    fn new() -> Result<Node, String> {
        let dir = TempDir::new("disk").map_err(|e| e.to_string())?;
        let tmpfs = Tmpfs::mount(&dir.join("full"))?;
        fs::create_dir_all(dir.join("coredns")).unwrap();
        fs::create_dir_all(dir.join("kube-dns")).unwrap();
        fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        Ok(Node {
            template: dir.join("coredns/Corefile.base"),
            tmpfs,
            metrics,
            dir,
        })
    }

    /// Writes the template: one block on loopback forwarding to `upstream`, with the stock
    /// template's `reload` (here every 2 s) and metrics.
    fn template(&self, upstream: &TestUpstream) {
        let text = format!(
            ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    reload 2s 1s\n    \
             forward . {}\n    errors\n    prometheus {}\n}}\n",
            upstream.addr(),
            self.metrics
        );
        // Replaced at once, as kubelet updates a mounted ConfigMap.
        let temporary = self.dir.join("coredns/.Corefile.base.tmp");
        fs::write(&temporary, text).unwrap();
        fs::rename(&temporary, &self.template).unwrap();
    }

    fn conf(&self) -> PathBuf {
        self.tmpfs.join("Corefile")
    }

    fn pidfile(&self) -> PathBuf {
        self.tmpfs.join("node-cache.pid")
    }

    /// shardns in node-local mode (2 shards), `-conf` and `-pidfile` on the tmpfs.
    fn start(&self) -> Shardns {
        let mut program = Command::new("env");
        program
            .arg("KUBE_DNS_SERVICE_HOST=127.0.0.1")
            .arg(shardns_binary().unwrap());
        let args: Vec<String> = [
            "-localip",
            "127.0.0.1",
            "-conf",
            &self.conf().display().to_string(),
            "-pidfile",
            &self.pidfile().display().to_string(),
            "-basecorefile",
            &self.template.display().to_string(),
            "-kubednscm",
            &self.dir.join("kube-dns").display().to_string(),
            "-setupinterface=false",
            "-setupiptables=false",
            "-metrics-listen-address",
            &format!("127.0.0.1:{}", free_port().unwrap()),
            "--resolv-conf",
            &self.dir.join("resolv.conf").display().to_string(),
            "--handoff-socket",
            &self.dir.join("handoff.sock").display().to_string(),
            "--shards",
            "2",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let dir = TempDir::new("sd-node").unwrap();
        Shardns::start_in(dir, &program, &args, Some(2)).expect("shardns in node-local mode")
    }

    fn setup_errors(&self) -> u64 {
        value(&scrape(self.metrics), SETUP_ERRORS).unwrap_or(0)
    }
}

fn mix() -> shardns_e2e::load::Mix {
    common::mix(
        (0..16).map(|n| (zone::host(n), zone::host_a(n))).collect(),
        zone::ZONE,
    )
}

fn count(shardns: &Shardns, needle: &str) -> usize {
    shardns
        .log_lines()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// Waits (≤ [`WRITTEN_WITHIN`]) until the Corefile on the tmpfs forwards to `upstream`;
/// how long it took.
fn wait_written(node: &Node, upstream: &TestUpstream) -> Option<Duration> {
    let started = Instant::now();
    let forward = format!("forward . {}\n", upstream.addr());
    wait_for(WRITTEN_WITHIN, || {
        let text = fs::read_to_string(node.conf()).ok()?;
        text.contains(&forward).then(|| started.elapsed())
    })
}

/// The disk full before start-up: shardns serves the Corefile from memory (the error names
/// the file and is counted), writes no pidfile and leaves nothing on the disk, its `reload`
/// checks do not fail; once there is room the Corefile is written.
#[test]
fn disk_full_at_start_up() {
    const NAME: &str = "disk_full_at_start_up";
    let node = match Node::new() {
        Ok(node) => node,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let upstream = TestUpstream::start().expect("test upstream");
    node.template(&upstream);
    node.tmpfs.fill();
    let mut shardns = node.start();
    let conf = node.conf().display().to_string();
    let pidfile = node.pidfile().display().to_string();
    assert_eq!(
        count(&shardns, &format!("cannot write the Corefile {conf}")),
        1,
        "{}",
        shardns.log_text()
    );
    // Written (or not) once serving, after the listening lines.
    let logged = wait_for(Duration::from_secs(5), || {
        (count(&shardns, &format!("cannot write the pidfile {pidfile}")) == 1).then_some(())
    });
    assert!(logged.is_some(), "{}", shardns.log_text());
    assert_eq!(node.setup_errors(), 1);
    assert_eq!(node.tmpfs.names(), ["filler"], "nothing half-written");
    let written = Mutex::new(None);
    let run = common::run(
        NAME,
        &shardns,
        mix(),
        || {},
        // Two `reload` checks and more (every 2 s ± 1 s) with the file missing.
        Duration::from_secs(5),
        || {
            node.tmpfs.free();
            *written.lock().unwrap() = Some(Instant::now());
        },
    );
    run.assert_common(&mut shardns);
    let seen = run.record.seen();
    assert_eq!(seen.answered, seen.sent, "{seen:?}");
    let freed = written.into_inner().unwrap().expect("freed");
    let took = wait_written(&node, &upstream).map(|_| freed.elapsed());
    eprintln!(
        "fault={NAME}: the Corefile written {} ms after the disk had room",
        took.map_or_else(|| "never".to_string(), |t| t.as_millis().to_string())
    );
    assert!(took.is_some(), "{}", shardns.log_text());
    assert_eq!(
        count(&shardns, "reload failed"),
        0,
        "{}",
        shardns.log_text()
    );
    // The pidfile is not written later; the Corefile now is, and stays at the exit.
    assert!(!node.pidfile().exists());
    shardns.stop();
    assert!(node.conf().exists());
}

/// The disk fills while shardns runs, then the template changes to another upstream: the
/// change is applied from memory (the new upstream asked), counted, the old file left
/// whole; once there is room the new Corefile is written.
#[test]
fn disk_full_on_a_template_change() {
    const NAME: &str = "disk_full_on_a_template_change";
    let node = match Node::new() {
        Ok(node) => node,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let first = TestUpstream::start().expect("test upstream");
    let second = TestUpstream::start().expect("test upstream");
    node.template(&first);
    let mut shardns = node.start();
    let pid = wait_for(Duration::from_secs(5), || {
        fs::read_to_string(node.pidfile()).ok()
    })
    .expect("the pidfile");
    assert_eq!(pid.trim(), shardns.pid().to_string());
    let old = fs::read_to_string(node.conf()).expect("the Corefile");
    assert_eq!(node.setup_errors(), 0);
    let changed = Mutex::new(None);
    let applied = Mutex::new(None);
    let kept = Mutex::new(None);
    let run = common::run_until(
        NAME,
        &shardns,
        mix(),
        || {
            node.tmpfs.fill();
            node.template(&second);
            *changed.lock().unwrap() = Some(Instant::now());
        },
        // The watch polls every 10 s.
        Duration::from_secs(15),
        || {
            let asked = second.queries() > 0;
            if asked {
                applied.lock().unwrap().get_or_insert_with(Instant::now);
            }
            asked
        },
        || {
            *kept.lock().unwrap() = fs::read_to_string(node.conf()).ok();
            node.tmpfs.free();
        },
    );
    run.assert_common(&mut shardns);
    let seen = run.record.seen();
    assert_eq!(seen.answered, seen.sent, "{seen:?}");
    let changed = changed.into_inner().unwrap().expect("changed");
    let applied = applied
        .into_inner()
        .unwrap()
        .unwrap_or_else(|| panic!("the new upstream was never asked:\n{}", shardns.log_text()));
    eprintln!(
        "fault={NAME}: the change applied from memory {} ms after the template changed",
        (applied - changed).as_millis()
    );
    assert_eq!(
        kept.into_inner().unwrap().as_deref(),
        Some(old.as_str()),
        "the old Corefile left whole while the disk was full"
    );
    assert!(count(&shardns, "Corefile not updated") >= 1);
    assert!(node.setup_errors() >= 1);
    let took = wait_written(&node, &second);
    assert!(took.is_some(), "{}", shardns.log_text());
    eprintln!(
        "fault={NAME}: the new Corefile written {} ms after the disk had room",
        took.unwrap().as_millis()
    );
    assert_ne!(fs::read_to_string(node.conf()).unwrap(), old);
    assert_eq!(
        fs::read_to_string(node.pidfile()).unwrap(),
        pid,
        "untouched"
    );
    assert_eq!(
        count(&shardns, "reload failed"),
        0,
        "{}",
        shardns.log_text()
    );
    shardns.stop();
}
