//! What a node's DNS does when every shardns process is killed (SIGKILL: nothing runs, no
//! rule is removed), with node-cache's rules and with the fail-open ones
//! (`--fail-open-rules`), in a simulated node (root only; skipped with the reason otherwise):
//!
//! - namespace `node`: the local IPs 169.254.20.10 and 10.96.0.10 on `lo`; the cluster DNS (a
//!   real Unbound) at 10.244.0.5; kube-proxy's DNAT of 10.96.0.10:53 to it (nat PREROUTING
//!   and OUTPUT); shardns with the stock template and arguments;
//! - namespace `pod`: a pod behind a veth pair, querying 10.96.0.10.
//!
//! Measured: of the queries a pod sends after the kill, how many are answered; the same for
//! a host-network client (the node itself).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use shardns_e2e::netns::{Inside, Namespace, skip_reason};
use shardns_e2e::node::{NamespaceUnbound, NodeCache, lookup, node_cache_inputs};
use shardns_e2e::{TempDir, wait_for};

const LINK_LOCAL: &str = "169.254.20.10";
const CLUSTER_IP: &str = "10.96.0.10";
const CLUSTER_DNS: &str = "10.244.0.5";
const NAME: &str = "kubernetes.default.svc.cluster.local.";
/// Queries sent after the kill, one every 100 ms, each given 500 ms.
const AFTER_KILL: usize = 20;

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// How many of `AFTER_KILL` queries to the cluster DNS IP are answered right, from inside.
fn answered_after(inside: &Inside) -> usize {
    let mut answered = 0;
    for _ in 0..AFTER_KILL {
        let started = Instant::now();
        if let Ok((ResponseCode::NoError, addresses)) =
            lookup(inside, at(CLUSTER_IP, 53), NAME, false)
            && addresses == ["10.96.0.1"]
        {
            answered += 1;
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
    }
    answered
}

/// (answered for the pod, answered for the host) after shardns is killed, with `rules`.
fn after_a_kill(fail_open: bool) -> Option<(usize, usize)> {
    if let Some(reason) = skip_reason(&["iptables", "/usr/sbin/unbound"]) {
        eprintln!("skipped: {reason}");
        return None;
    }
    let node = Namespace::create("fo-node").unwrap();
    let pod = Namespace::create("fo-pod").unwrap();
    if !node.link_pod("veth-node", &pod, 0).unwrap() {
        eprintln!("skipped: this kernel has no veth link type");
        return None;
    }
    node.add_local_ips(&[LINK_LOCAL, CLUSTER_IP, CLUSTER_DNS])
        .unwrap();
    // kube-proxy's DNAT of the cluster DNS IP.
    for chain in ["PREROUTING", "OUTPUT"] {
        for protocol in ["udp", "tcp"] {
            node.exec(
                "iptables",
                &[
                    "-t",
                    "nat",
                    "-A",
                    chain,
                    "-d",
                    CLUSTER_IP,
                    "-p",
                    protocol,
                    "--dport",
                    "53",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &format!("{CLUSTER_DNS}:53"),
                ],
            )
            .unwrap();
        }
    }
    let _cluster_dns = NamespaceUnbound::cluster_dns(&node, at(CLUSTER_DNS, 53), true).unwrap();
    let dir = TempDir::new("failopen").unwrap();
    node_cache_inputs(&dir, Some(CLUSTER_DNS)).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = [
        "-localip",
        &format!("{LINK_LOCAL},{CLUSTER_IP}"),
        "-conf",
        &path("Corefile"),
        "-upstreamsvc",
        "kube-dns-upstream",
        "-basecorefile",
        &path("coredns/Corefile.base"),
        "-kubednscm",
        &path("kube-dns"),
        "-setupinterface=false",
        "--resolv-conf",
        &path("resolv.conf"),
        "--handoff-socket",
        &path("handoff.sock"),
        "--shards",
        "1",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    if fail_open {
        args.push("--fail-open-rules".to_string());
    }
    let mut shardns = NodeCache::start(
        &node,
        &args,
        &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", CLUSTER_DNS)],
        &dir.join("shardns.log"),
    )
    .unwrap();
    // Served by shardns while it runs, for the pod and the host.
    for namespace in [&pod, &node] {
        namespace.run(|inside| {
            let served = wait_for(Duration::from_secs(5), || {
                lookup(inside, at(CLUSTER_IP, 53), NAME, false)
                    .ok()
                    .filter(|(_, addresses)| addresses == &["10.96.0.1"])
            });
            assert!(served.is_some(), "{}", shardns.log_text());
        });
    }
    shardns.stop("KILL", Duration::from_secs(5)).unwrap();
    let pod_answered = pod.run(answered_after);
    let host_answered = node.run(answered_after);
    Some((pod_answered, host_answered))
}

#[test]
fn node_cache_rules_black_hole_the_node_after_a_kill() {
    let Some((pod, host)) = after_a_kill(false) else {
        return;
    };
    eprintln!(
        "node-cache's rules: after SIGKILL, pod {pod}/{AFTER_KILL} answered, host {host}/{AFTER_KILL}"
    );
    assert_eq!(
        (pod, host),
        (0, 0),
        "every query lost until shardns returns"
    );
}

#[test]
fn fail_open_rules_send_pods_to_the_cluster_dns_after_a_kill() {
    let Some((pod, host)) = after_a_kill(true) else {
        return;
    };
    eprintln!(
        "fail-open rules: after SIGKILL, pod {pod}/{AFTER_KILL} answered, host {host}/{AFTER_KILL}"
    );
    assert_eq!(pod, AFTER_KILL, "every pod query reaches the cluster DNS");
    assert_eq!(
        host, 0,
        "host-network clients still depend on shardns (no socket match in OUTPUT)"
    );
}
