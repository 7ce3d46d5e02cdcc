//! The DaemonSet's rolling update on one node, with the image and podman (root only; skipped
//! with the reason where podman cannot run): `maxSurge: 1, maxUnavailable: 0` starts the new
//! pod beside the old one, both on the host's network and both mounting the node's
//! /run/shardns; the new process takes the old one's sockets and cache over the hand-off
//! socket there. The containers run with `--restart always`, as the kubelet runs a pod's
//! container: a container whose process exits is started again.
//!
//! With `--handoff-linger` (the manifest's arguments) the old container stays up, serving
//! nothing, until it is stopped (the DaemonSet controller deletes the old pod: SIGTERM), then
//! exits 0; a steady load loses no query, the new container keeps the cache, and no container
//! is restarted; a worker killed in the new pod is restarted by its supervisor within the
//! container. Without it, the old container exits 0 after the hand-off, is restarted, and
//! its new process takes the sockets back from the new pod (the second test shows that).
//!
//! Traffic goes to 127.0.53.x only; every wait is bounded.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_e2e::load::{Load, warm};
use shardns_e2e::podman::{Container, Profile, Run, skip_reason};
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{TempDir, UdpClient, Unbound, wait_for, zone};

/// The node's hand-off directory, as the DaemonSet mounts it (a hostPath).
const HANDOFF_DIR: &str = "/run/shardns";

/// The DaemonSet's flags for upgrades and crashes (deploy/kubernetes/base/shardns.yaml).
const MANIFEST_FLAGS: &[&str] = &["--supervise", "--handoff-linger"];

/// How long each side waits for the other's log lines.
const LOG_WAIT: Duration = Duration::from_secs(20);

/// One node: its DNS address, the Corefile, and the host directory both pods mount at
/// /run/shardns.
struct Node {
    dns: SocketAddr,
    dir: TempDir,
}

impl Node {
    /// A node serving 127.0.53.`host`:53 (which must be free), forwarding to `unbound`.
    fn new(host: u8, unbound: &Unbound) -> Node {
        let address = Ipv4Addr::new(127, 0, 53, host);
        let dns = SocketAddr::from((address, 53));
        UdpSocket::bind(dns).unwrap_or_else(|error| panic!("{dns} (udp) is in use: {error}"));
        TcpListener::bind(dns).unwrap_or_else(|error| panic!("{dns} (tcp) is in use: {error}"));
        let dir = TempDir::new("upgrade-node").unwrap();
        std::fs::create_dir_all(dir.join("handoff")).unwrap();
        std::fs::write(
            dir.join("Corefile"),
            format!(
                ".:53 {{\n    bind {address}\n    cache 30\n    forward . {}\n    errors\n}}\n",
                unbound.addr()
            ),
        )
        .unwrap();
        Node { dns, dir }
    }

    /// A pod of the DaemonSet: the image with `--restart always`, the node's directories,
    /// the Corefile, and `extra` arguments. Returns once the container serves (its log says
    /// it started: a new pod's first answers may come from the old one).
    fn pod(&self, label: &str, extra: &[&str]) -> Container {
        let mut args: Vec<String> = [
            "--conf",
            "/etc/coredns/Corefile",
            "--shards",
            "2",
            "--handoff-socket",
            &format!("{HANDOFF_DIR}/handoff.sock"),
        ]
        .map(str::to_string)
        .to_vec();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let run = Run {
            label,
            profile: Profile::Default,
            network: "host".to_string(),
            options: vec![
                "--restart=always".to_string(),
                format!(
                    "--volume={}:/etc/coredns/Corefile:ro",
                    self.dir.join("Corefile").display()
                ),
                format!(
                    "--volume={}:{HANDOFF_DIR}",
                    self.dir.join("handoff").display()
                ),
            ],
            args,
        };
        let container = Container::run(run, TempDir::new("upgrade-pod").unwrap()).unwrap();
        container
            .wait_until("start", || container.logs().contains("started in"))
            .unwrap();
        container
    }
}

/// How many times podman restarted `container` (the kubelet's restart count).
fn restarts(container: &Container) -> u64 {
    container
        .inspect("{{.RestartCount}}")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// Waits until `container`'s log has every one of `lines`.
fn logged(container: &Container, lines: &[&str]) -> bool {
    wait_for(LOG_WAIT, || {
        let log = container.logs();
        lines.iter().all(|line| log.contains(line)).then_some(())
    })
    .is_some()
}

#[test]
fn a_rolling_update_with_linger_loses_no_query_and_restarts_no_container() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("unbound");
    let node = Node::new(61, &unbound);
    // The DaemonSet's flags: a supervisor as the container's PID 1, lingering after a
    // hand-off. Both pods' supervisors are PID 1 in their own PID namespaces.
    let old = node.pod("old-linger", MANIFEST_FLAGS);
    warm(node.dns);
    let upstream_before = unbound.total_queries();
    let load = Load::start(node.dns);
    thread::sleep(Duration::from_millis(500));

    // The surge pod: it takes over, the old one lingers.
    let new = node.pod("new-linger", MANIFEST_FLAGS);
    assert!(
        logged(&old, &["was taken over", "lingering until SIGTERM"]),
        "{}",
        old.logs()
    );
    assert!(
        logged(&new, &["taking over from process"]),
        "{}",
        new.logs()
    );
    // Time for a restart to happen if the old process had exited.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(old.inspect("{{.State.Status}}").unwrap(), "running");
    assert_eq!(restarts(&old), 0, "{}", old.logs());

    // The controller deletes the old pod once the new one is ready.
    let stopped = old.stop(10).unwrap();
    assert_eq!(stopped.exit_code, "0", "{}", old.logs());
    eprintln!("old pod stopped in {} ms", stopped.took.as_millis());
    thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    eprintln!("{seen:?}");
    assert!(seen.sent > 100, "the load ran: {seen:?}");
    assert_eq!(
        seen.answered, seen.sent,
        "every query answered right: {seen:?}"
    );
    assert_eq!(
        unbound.total_queries(),
        upstream_before,
        "the cache went to the new pod"
    );
    assert_eq!(restarts(&new), 0, "{}", new.logs());

    // A crash in the new pod: its worker killed; the supervisor restarts it on the same
    // sockets, within the container.
    let worker = worker_of(&new).expect("the new pod's worker");
    let load = Load::start(node.dns);
    thread::sleep(Duration::from_millis(500));
    send_signal(worker, "KILL").unwrap();
    let restarted = wait_for(LOG_WAIT, || worker_of(&new).filter(|pid| *pid != worker));
    assert!(restarted.is_some(), "no new worker:\n{}", new.logs());
    thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    eprintln!("after the worker's kill: {seen:?}");
    // A query the killed worker had read is lost: at most one per client.
    assert!(
        seen.lost <= 4 && seen.wrong == 0 && seen.servfail == 0,
        "{seen:?}"
    );
    assert_eq!(restarts(&new), 0, "the container was not restarted");
    let client = UdpClient::new(node.dns).unwrap();
    let reply = client.query(zone::DUAL, RecordType::A).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    let stopped = new.stop(10).unwrap();
    assert_eq!(stopped.exit_code, "0", "{}", new.logs());
}

/// The host PID of the supervisor's worker in `container` (the child of its PID 1).
fn worker_of(container: &Container) -> Option<u32> {
    let supervisor = container.inspect("{{.State.Pid}}").ok()?;
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Why the manifest passes `--handoff-linger`: without it the old container exits 0 after
/// the hand-off, the restart policy starts it again, and the restarted process takes the
/// sockets back from the new pod, which then exits and is restarted in turn.
#[test]
fn without_linger_the_restarted_old_container_takes_the_sockets_back() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("unbound");
    let node = Node::new(62, &unbound);
    let old = node.pod("old-exit", &[]);
    let new = node.pod("new-exit", &[]);
    assert!(
        wait_for(LOG_WAIT, || (restarts(&old) > 0).then_some(())).is_some(),
        "the old container was not restarted:\n{}",
        old.logs()
    );
    assert!(
        logged(&new, &["handed over to process"]),
        "the restarted old container did not take the sockets back:\n{}",
        new.logs()
    );
}
