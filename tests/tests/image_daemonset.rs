//! The DaemonSet's pod, run for real (root and podman; skipped with the reason otherwise):
//! the image with the container arguments, the Corefile, the volumes and the security
//! settings that deploy/kubernetes/base/shardns.yaml gives it after the stock install's sed,
//! in a network namespace of the test's standing in for the node (the addresses on its `lo`
//! and `-setupinterface=false` added: this kernel has no dummy link type).
//!
//! It serves the link-local IP and the kube-dns ClusterIP, forwarding the cluster zone to a
//! TCP-only Unbound as kube-dns; the rules are node-cache's in their fail-open form
//! (`--fail-open-rules`) in the nft tables (`--iptables=auto` on a node with no legacy rules);
//! the probes the manifest names answer 200; the metrics Service's two ports serve the
//! worker's page and the supervisor's (`--supervise`: PID 1 with a worker child); `podman
//! stop` ends it with status 0 within the pod's grace period and removes the rules.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde::Deserialize;
use serde_yaml::Value;
use shardns_e2e::metrics::{family_sum, get_inside};
use shardns_e2e::netns::Namespace;
use shardns_e2e::node::NamespaceUnbound;
use shardns_e2e::podman::{Container, Profile, Run, repository, skip_reason};
use shardns_e2e::{TempDir, UdpClient, wait_for};

const LINK_LOCAL: &str = "169.254.20.10";
const CLUSTER_IP: &str = "10.96.0.10";
const DOMAIN: &str = "cluster.local";
/// kube-dns behind the `kube-dns-upstream` Service (`$KUBE_DNS_UPSTREAM_SERVICE_HOST`).
const KUBE_DNS: &str = "10.96.0.20";
const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local.";
/// node-cache's 12 rules per local IP.
const RULES: usize = 24;

/// What the test takes from the manifest.
struct Pod {
    args: Vec<String>,
    /// The `node-local-dns` ConfigMap's Corefile (mounted as /etc/coredns/Corefile.base).
    corefile: String,
    /// (path, port) of the liveness and the readiness probe.
    probes: Vec<(String, u16)>,
    /// The metrics Service's target ports.
    metrics_ports: Vec<u16>,
    capabilities: Vec<String>,
    grace_seconds: u64,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default(),
    }
}

/// deploy/kubernetes/base/shardns.yaml after the documented sed (iptables mode).
fn daemonset_pod() -> Result<Pod> {
    let manifest =
        std::fs::read_to_string(repository().join("deploy/kubernetes/base/shardns.yaml"))?
            .replace("__PILLAR__LOCAL__DNS__", LINK_LOCAL)
            .replace("__PILLAR__DNS__DOMAIN__", DOMAIN)
            .replace("__PILLAR__DNS__SERVER__", CLUSTER_IP);
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&manifest)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()?;
    let object = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} {name}"))
    };
    let daemon_set = object("DaemonSet", "node-local-dns")?;
    let pod = &daemon_set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let list = |value: &Value| -> Vec<String> {
        value
            .as_sequence()
            .map(|items| items.iter().map(text).collect())
            .unwrap_or_default()
    };
    let probes = ["livenessProbe", "readinessProbe"]
        .iter()
        .map(|probe| {
            let get = &container[*probe]["httpGet"];
            Ok((text(&get["path"]), text(&get["port"]).parse()?))
        })
        .collect::<Result<_>>()?;
    let metrics_ports = object("Service", "node-local-dns")?["spec"]["ports"]
        .as_sequence()
        .context("the metrics Service's ports")?
        .iter()
        .map(|port| Ok(text(&port["targetPort"]).parse()?))
        .collect::<Result<_>>()?;
    Ok(Pod {
        args: list(&container["args"]),
        corefile: text(&object("ConfigMap", "node-local-dns")?["data"]["Corefile"]),
        probes,
        metrics_ports,
        capabilities: list(&container["securityContext"]["capabilities"]["add"]),
        grace_seconds: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
    })
}

/// The nft tables' node-cache rules in `namespace`, as `iptables-nft-save` prints them.
fn nft_rules(namespace: &Namespace) -> Vec<String> {
    namespace
        .node_cache_rules("iptables-nft-save")
        .expect("iptables-nft-save")
}

#[test]
fn the_daemonsets_pod_serves_the_node_as_the_manifest_says() {
    let tools = ["iptables-nft-save", "/usr/sbin/unbound"];
    if let Some(reason) = skip_reason().or_else(|| shardns_e2e::netns::skip_reason(&tools)) {
        eprintln!("skipped: {reason}");
        return;
    }
    let pod = daemonset_pod().expect("the manifest");
    // What Container::run grants (beside --cap-drop ALL and --read-only) is what the
    // manifest asks for, nothing more.
    assert_eq!(pod.capabilities, ["NET_ADMIN", "NET_BIND_SERVICE"]);

    let namespace = Namespace::create("daemonset").unwrap();
    namespace
        .add_local_ips(&[LINK_LOCAL, CLUSTER_IP, KUBE_DNS])
        .unwrap();
    let kube_dns = NamespaceUnbound::cluster_dns(
        &namespace,
        SocketAddr::new(KUBE_DNS.parse().unwrap(), 53),
        false,
    )
    .unwrap();
    // The pod's volumes: the ConfigMap, the optional kube-dns ConfigMap (absent), the
    // node's /run/shardns; /tmp is the tmpfs podman gives a --read-only container.
    let dir = TempDir::new("dsn").unwrap();
    for sub in ["coredns", "kube-dns", "handoff"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("coredns/Corefile.base"), &pod.corefile).unwrap();
    let options = vec![
        format!("--volume={}:/etc/coredns:ro", dir.join("coredns").display()),
        format!(
            "--volume={}:/etc/kube-dns:ro",
            dir.join("kube-dns").display()
        ),
        format!("--volume={}:/run/shardns", dir.join("handoff").display()),
        format!("--env=KUBE_DNS_UPSTREAM_SERVICE_HOST={KUBE_DNS}"),
    ];
    let mut args = pod.args.clone();
    args.push("-setupinterface=false".to_string());
    let run = Run {
        label: "daemonset",
        profile: Profile::Default,
        network: format!("ns:/run/netns/{}", namespace.name()),
        options,
        args,
    };
    let container = Container::run(run, dir).expect("podman run");

    namespace.run(|inside| {
        for ip in [LINK_LOCAL, CLUSTER_IP] {
            let server = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 53);
            let client = UdpClient::inside(inside, server).unwrap();
            container
                .wait_until(&format!("an answer on {ip}"), || {
                    client
                        .query(CLUSTER_NAME, RecordType::A)
                        .is_ok_and(|reply| {
                            reply.response_code() == ResponseCode::NoError
                                && !reply.answers().is_empty()
                        })
                })
                .unwrap();
        }
        // The probes, where the kubelet sends them (the host the manifest names).
        for (path, port) in &pod.probes {
            let addr = SocketAddr::new(LINK_LOCAL.parse().unwrap(), *port);
            let answered = wait_for(Duration::from_secs(10), || {
                let (status, _) = get_inside(inside, addr, path);
                (status == 200).then_some(())
            });
            assert!(
                answered.is_some(),
                "{path} on {addr}:\n{}",
                container.logs()
            );
        }
        // The metrics Service's ports: the worker's page, then the supervisor's.
        let page = |port: u16| {
            let (status, page) = get_inside(
                inside,
                SocketAddr::new(LINK_LOCAL.parse().unwrap(), port),
                "/metrics",
            );
            assert_eq!(status, 200, "port {port}: {page}");
            page
        };
        let [worker_port, supervisor_port] = pod.metrics_ports[..] else {
            panic!("metrics ports {:?}", pod.metrics_ports);
        };
        assert_eq!(family_sum(&page(worker_port), "shardns_shard_info"), 2);
        assert!(
            page(supervisor_port).contains("\nshardns_supervisor_worker_restarts_total 0\n"),
            "{}",
            page(supervisor_port)
        );
    });
    // The cluster zone went to kube-dns once; the second address was answered from the cache.
    assert_eq!(kube_dns.queries_for(CLUSTER_NAME), 1);

    let installed = wait_for(Duration::from_secs(10), || {
        let rules = nft_rules(&namespace);
        (rules.len() == RULES).then_some(rules)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", nft_rules(&namespace), container.logs()));
    // The fail-open form: the rules that skip conntrack for pods' queries (PREROUTING, to
    // port 53 of each local IP, UDP and TCP) match only while a socket is bound there.
    let pods: Vec<&String> = installed
        .iter()
        .filter(|rule| rule.starts_with("-A PREROUTING") && rule.contains("--dport 53 "))
        .collect();
    assert_eq!(pods.len(), 4, "{installed:#?}");
    assert!(
        pods.iter()
            .all(|rule| rule.contains("-m socket --nowildcard") && rule.ends_with("-j NOTRACK")),
        "{pods:#?}"
    );
    // --supervise: PID 1 is the supervisor, and the DNS work is its child's.
    let supervisor = container.inspect("{{.State.Pid}}").unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .unwrap_or_default();
    assert_eq!(
        children.split_whitespace().count(),
        1,
        "{}",
        container.logs()
    );

    let stopped = container.stop(pod.grace_seconds).expect("podman stop");
    let logs = container.logs();
    assert_eq!(stopped.exit_code, "0", "{logs}");
    assert!(
        stopped.took < Duration::from_secs(pod.grace_seconds),
        "{logs}"
    );
    assert!(nft_rules(&namespace).is_empty(), "{logs}");
}
