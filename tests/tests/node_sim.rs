//! `scripts/node-sim.sh` end to end (root only; skipped with the reason otherwise): the script
//! brings up its three namespaces (a pod whose resolver is the kube-dns ClusterIP, a node with
//! kube-proxy's DNAT and shardns run with node-cache's stock arguments and template, an
//! Unbound upstream), and the tests drive it, each step with a deadline:
//!
//! - the pod's queries (`dig`, and `getent ahosts`: getaddrinfo through resolv.conf's search
//!   path) are answered by shardns (its counters rise, the upstream sees a name once), with
//!   no conntrack entry in the node; cluster.local misses reach the upstream over TCP; once
//!   shardns is stopped the same queries go through kube-proxy's DNAT and conntrack has
//!   entries for them (the control: what the first assertion would see without shardns);
//! - a graceful stop (SIGTERM) while the pod queries back to back, from new source ports and
//!   from one kept port, and resolves with getaddrinfo: no query fails.
//!
//! `down` runs when a test ends, also when it fails; the tests check it leaves nothing.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shardns_e2e::metrics::value;
use shardns_e2e::netns::skip_reason;
use shardns_e2e::process::run_with_deadline;
use shardns_e2e::{TempDir, shardns_binary};

/// The topology's addresses and names (scripts/node-sim.sh).
const POD_IP: &str = "10.244.1.2";
const COREDNS_IP: &str = "10.244.2.2";
const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local";

/// One simulation at a time: both tests query back to back and time answers.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The script's simulation, with its own namespace prefix and state directory; `down` on drop.
struct Sim {
    prefix: String,
    state: TempDir,
    binary: PathBuf,
    up: bool,
}

impl Sim {
    /// `node-sim.sh up` (≤ 60 s), or `None` when these tests cannot run here.
    fn up(label: &str) -> Option<Sim> {
        let needed = [
            "iptables",
            "conntrack",
            "getent",
            "/usr/bin/dig",
            "/usr/sbin/unbound",
            "/usr/sbin/unbound-control",
        ];
        if let Some(reason) = skip_reason(&needed) {
            eprintln!("skipped: {reason}");
            return None;
        }
        let mut sim = Sim {
            prefix: format!("shardns-sim-e2e-{}-{label}", std::process::id()),
            state: TempDir::new("nodesim").unwrap(),
            binary: shardns_binary().unwrap(),
            up: false,
        };
        let out = sim.run(&["up"], Duration::from_secs(60)).unwrap();
        eprintln!("{out}");
        sim.up = true;
        Some(sim)
    }

    /// `node-sim.sh ARGS` with this simulation's prefix and state, within `timeout`.
    fn run(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/node-sim.sh");
        let mut command = Command::new(script);
        command
            .args(args)
            .env("NODE_SIM_PREFIX", &self.prefix)
            .env("NODE_SIM_DIR", self.state.path())
            .env("SHARDNS_BIN", &self.binary);
        run_with_deadline(&mut command, timeout, "scripts/node-sim.sh")
    }

    /// A command in the pod's namespace (≤ 10 s).
    fn pod(&self, args: &[&str]) -> Result<String> {
        let mut line = vec!["pod"];
        line.extend_from_slice(args);
        self.run(&line, Duration::from_secs(10))
    }

    /// `dig NAME` from the pod (UDP, through resolv.conf), or over TCP; its A records.
    fn dig(&self, name: &str, tcp: bool) -> Result<Vec<String>> {
        let protocol = if tcp { "+tcp" } else { "+notcp" };
        let out = self.pod(&[
            "dig",
            "+tries=1",
            "+timeout=2",
            protocol,
            "+short",
            name,
            "A",
        ])?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// `getent ahosts NAME` from the pod (getaddrinfo, with the search path): the addresses.
    fn getent(&self, name: &str) -> Result<Vec<String>> {
        let out = self.pod(&["getent", "ahosts", name])?;
        let mut addresses: Vec<String> = out
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_string)
            .collect();
        addresses.dedup();
        Ok(addresses)
    }

    /// The upstream's query counts: (UDP, TCP).
    fn upstream_counts(&self) -> Result<(u64, u64)> {
        let out = self.run(&["upstream-stats"], Duration::from_secs(10))?;
        let field = |name: &str| -> Result<u64> {
            out.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .context("no such count")?
                .parse()
                .with_context(|| format!("{name} in {out}"))
        };
        Ok((field("udp=")?, field("tcp=")?))
    }

    /// The node's conntrack entries for the pod's queries to the ClusterIP's port 53.
    fn conntrack(&self) -> Result<Vec<String>> {
        let out = self.run(&["conntrack"], Duration::from_secs(10))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// What shardns counted at the ClusterIP (`coredns_dns_requests_total` there, all zones).
    fn served_at_cluster_ip(&self) -> Result<u64> {
        let page = self.run(
            &["metrics", "^coredns_dns_requests_total"],
            Duration::from_secs(10),
        )?;
        let mut total = 0;
        for line in page.lines() {
            if line.starts_with("coredns_dns_requests_total{")
                && line.contains("server=\"dns://10.96.0.10:53\"")
            {
                let (series, _) = line.rsplit_once(' ').context("a sample")?;
                total += value(&page, series).context("its value")?;
            }
        }
        Ok(total)
    }

    /// `probe SECONDS STOP_AT [PORT]`: the figures, and the script's whole output.
    fn probe(&self, args: &[&str]) -> Result<(Probe, String)> {
        let mut line = vec!["probe"];
        line.extend_from_slice(args);
        let out = self.run(&line, Duration::from_secs(90))?;
        let last = out.lines().last().unwrap_or_default();
        let field = |name: &str| -> Result<u64> {
            last.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .with_context(|| format!("no {name} in {out}"))?
                .parse()
                .with_context(|| format!("{name} in {out}"))
        };
        let probe = Probe {
            sent: field("sent=")?,
            answered: field("answered=")?,
            lost: field("lost=")?,
            max_ms: field("max_ms=")?,
        };
        Ok((probe, out))
    }

    /// `down`, then nothing of the simulation is left.
    fn down(mut self) {
        self.up = false;
        self.run(&["down"], Duration::from_secs(60)).unwrap();
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let namespaces = String::from_utf8_lossy(&namespaces.stdout);
        assert!(!namespaces.contains(&self.prefix), "{namespaces}");
        assert!(!PathBuf::from(format!("/etc/netns/{}-pod", self.prefix)).exists());
        assert!(
            !self.state.path().exists()
                || std::fs::read_dir(self.state.path())
                    .unwrap()
                    .next()
                    .is_none(),
            "left in the state directory"
        );
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.up
            && let Err(error) = self.run(&["down"], Duration::from_secs(60))
        {
            eprintln!("node-sim.sh down: {error:#}");
        }
    }
}

/// What `node-sim.sh probe` counted.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent: u64,
    answered: u64,
    lost: u64,
    max_ms: u64,
}

#[test]
fn pod_queries_are_answered_by_shardns_without_conntrack_and_misses_go_over_tcp() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sim) = Sim::up("serve") else {
        return;
    };
    let served_before = sim.served_at_cluster_ip().unwrap();
    let (udp, tcp) = sim.upstream_counts().unwrap();

    // A cluster.local miss: one query to the upstream, over TCP (the template's force_tcp).
    assert_eq!(
        sim.dig("web.default.svc.cluster.local", false).unwrap(),
        ["10.96.0.80"]
    );
    assert_eq!(sim.upstream_counts().unwrap(), (udp, tcp + 1));
    // The same name again: answered from shardns's cache, the upstream sees nothing.
    assert_eq!(
        sim.dig("web.default.svc.cluster.local", false).unwrap(),
        ["10.96.0.80"]
    );
    assert_eq!(sim.upstream_counts().unwrap(), (udp, tcp + 1));
    // getaddrinfo with the search path (ndots:5: the suffixes are tried first, all in
    // cluster.local, so all over TCP upstream).
    assert_eq!(sim.getent("kubernetes.default").unwrap(), ["10.96.0.1"]);
    let (udp_now, tcp_now) = sim.upstream_counts().unwrap();
    assert_eq!(udp_now, udp, "cluster.local misses never go over UDP");
    assert!(tcp_now > tcp + 1, "{tcp_now}");

    // An external name: the template's `.` block forwards with the client's protocol.
    assert_eq!(sim.dig("example.org", false).unwrap(), ["192.0.2.1"]);
    assert_eq!(sim.upstream_counts().unwrap(), (udp + 1, tcp_now));
    assert_eq!(sim.dig("www.example.org", true).unwrap(), ["192.0.2.80"]);
    assert_eq!(sim.getent("www.example.org").unwrap(), ["192.0.2.80"]);

    // Every query reached shardns at the ClusterIP, and none left a conntrack entry.
    let served = sim.served_at_cluster_ip().unwrap() - served_before;
    assert!(
        served >= 6,
        "shardns counted {served} queries at 10.96.0.10"
    );
    let entries = sim.conntrack().unwrap();
    assert_eq!(entries, Vec::<String>::new(), "NOTRACK: nothing tracked");

    // The control: without shardns the same queries go through kube-proxy's DNAT to the
    // upstream, over UDP, and conntrack has an entry for each.
    let out = sim.run(&["stop-shardns"], Duration::from_secs(20)).unwrap();
    eprintln!("{out}");
    let (udp, tcp) = sim.upstream_counts().unwrap();
    assert_eq!(sim.dig(CLUSTER_NAME, false).unwrap(), ["10.96.0.1"]);
    assert_eq!(sim.getent("www.example.org").unwrap(), ["192.0.2.80"]);
    let (udp_after, tcp_after) = sim.upstream_counts().unwrap();
    assert!(udp_after > udp, "the upstream answered the pod itself");
    assert_eq!(tcp_after, tcp);
    assert_eq!(sim.dig(CLUSTER_NAME, true).unwrap(), ["10.96.0.1"]);
    assert_eq!(sim.upstream_counts().unwrap(), (udp_after, tcp + 1));
    let entries = sim.conntrack().unwrap();
    assert!(
        entries.len() >= 2
            && entries
                .iter()
                .all(|entry| entry.contains(&format!("src={COREDNS_IP} dst={POD_IP} sport=53"))),
        "{entries:#?}"
    );
    sim.down();
}

/// `getent ahosts` from the pod, one after another until `until`: (sent, failed, longest).
fn getaddrinfo_loop(sim: &Sim, until: Instant) -> (u64, u64, Duration) {
    let (mut sent, mut failed, mut longest) = (0, 0, Duration::ZERO);
    while Instant::now() < until {
        let started = Instant::now();
        sent += 1;
        match sim.getent("kubernetes.default") {
            Ok(addresses) if addresses == ["10.96.0.1"] => {
                longest = longest.max(started.elapsed());
            }
            other => {
                failed += 1;
                eprintln!("getaddrinfo failed: {other:?}");
            }
        }
    }
    (sent, failed, longest)
}

#[test]
fn a_graceful_stop_returns_the_pod_to_the_dnat_path_without_a_failed_query() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sim) = Sim::up("stop") else {
        return;
    };
    // Each dig from a new source port (as glibc), and getaddrinfo alongside; then from one
    // kept source port (as a resolver library that keeps its socket).
    for (round, port) in [("new ports", None), ("one port", Some("40053"))] {
        let until = Instant::now() + Duration::from_secs(5);
        let (probe, getaddrinfo) = std::thread::scope(|scope| {
            let getaddrinfo = scope.spawn(|| getaddrinfo_loop(&sim, until));
            let mut args = vec!["5", "2"];
            args.extend(port);
            let probe = sim.probe(&args);
            (probe, getaddrinfo.join().unwrap())
        });
        let (probe, out) = probe.unwrap();
        let (gai_sent, gai_failed, gai_longest) = getaddrinfo;
        eprintln!(
            "{round}: dig sent={} answered={} lost={} max_ms={}; getaddrinfo sent={gai_sent} \
             failed={gai_failed} longest={} ms\n{out}",
            probe.sent,
            probe.answered,
            probe.lost,
            probe.max_ms,
            gai_longest.as_millis()
        );
        assert!(out.contains("exited"), "shardns was stopped: {out}");
        assert!(probe.sent >= 20, "{probe:?}");
        assert_eq!((probe.lost, probe.answered), (0, probe.sent), "{out}");
        assert!(gai_sent >= 5, "{gai_sent}");
        assert_eq!(gai_failed, 0);
        // The pod is on the DNAT path now.
        assert!(!sim.conntrack().unwrap().is_empty());
        if port.is_none() {
            let out = sim
                .run(&["start-shardns"], Duration::from_secs(20))
                .unwrap();
            eprintln!("{out}");
        }
    }
    sim.down();
}

/// `dig` from the pod for a name the upstream does not have, given `timeout_s`: its status
/// and how long it took.
fn miss_status(sim: &Sim, name: &str, timeout_s: u64) -> Result<(String, Duration)> {
    let timeout = format!("+timeout={timeout_s}");
    let started = Instant::now();
    let out = sim.run(
        &["pod", "dig", "+tries=1", &timeout, name, "A"],
        Duration::from_secs(timeout_s + 5),
    )?;
    let status = shardns_e2e::dig_status(&out).context("no status")?;
    Ok((status.to_string(), started.elapsed()))
}

#[test]
fn misses_in_flight_when_the_stop_begins_are_still_answered() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sim) = Sim::up("inflight") else {
        return;
    };
    // The upstream stalls: the pod's misses wait in shardns when SIGTERM comes, and the
    // upstream answers only after the rules are gone (they take a few hundred ms).
    sim.run(&["upstream-pause"], Duration::from_secs(10))
        .unwrap();
    let results = std::thread::scope(|scope| {
        let queries: Vec<_> = (0..4)
            .map(|n| {
                let sim = &sim;
                let name = format!("gone-{n}.default.svc.cluster.local");
                scope.spawn(move || miss_status(sim, &name, 8))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let stop = scope.spawn(|| sim.run(&["stop-shardns"], Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(1500));
        sim.run(&["upstream-resume"], Duration::from_secs(10))
            .unwrap();
        let out = stop.join().unwrap().unwrap();
        eprintln!("{out}");
        queries
            .into_iter()
            .map(|query| query.join().unwrap())
            .collect::<Vec<_>>()
    });
    let answered: Vec<_> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .filter(|(status, _)| status == "NXDOMAIN")
        .collect();
    let longest = answered.iter().map(|(_, took)| *took).max();
    eprintln!(
        "misses in flight at SIGTERM: {} sent, {} answered, longest {longest:?}",
        results.len(),
        answered.len()
    );
    assert_eq!(answered.len(), results.len(), "{results:?}");
    sim.down();
}
