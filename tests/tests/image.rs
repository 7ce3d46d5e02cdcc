//! The container image, run for real with podman (root only; skipped with the reason where
//! podman cannot run), as the DaemonSet runs it: `--read-only`, `--cap-drop ALL` plus
//! NET_ADMIN and NET_BIND_SERVICE, a memory limit (see shardns_e2e::podman).
//!
//! On the host's network, serving a read-only Corefile on port 53 of its own loopback
//! address (127.0.53.x) and forwarding to a loopback Unbound: under podman's default seccomp
//! profile io_uring_setup fails with ENOSYS, and `--io auto` falls back to epoll, says so in
//! its log and in `shardns_shard_info`, and answers; under deploy/seccomp/shardns.json it runs
//! io_uring; `podman stop` (SIGTERM) ends it with status 0 within the grace period.
//!
//! In a network namespace the test creates (`--network ns:`), with node-cache's stock
//! arguments: the image's own iptables installs node-cache's rules, with the nft backend
//! (`iptables`, the default) and with the legacy one (PATH starting with
//! /usr/lib/shardns/iptables-legacy, and NET_RAW, which iptables-legacy needs), answers on
//! the link-local IP, and removes the rules on `podman stop`. With `--iptables=auto` (the
//! DaemonSet's) and no PATH change, the rules land in the backend whose mangle table holds
//! kubelet's KUBE-IPTABLES-HINT chain, even when the other holds more rules; without NET_RAW
//! the legacy tables cannot be read, and the log names NET_RAW.
//!
//! Without podman: the shipped seccomp profile is checked to be this machine's default plus
//! io_uring (scripts/seccomp-profile.py), and the Dockerfile's runtime stage to be
//! deploy/podman/Containerfile's.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_e2e::metrics::{family_sum, scrape, value};
use shardns_e2e::netns::Namespace;
use shardns_e2e::node::{NamespaceUnbound, node_cache_inputs};
use shardns_e2e::podman::{
    Container, DEFAULT_PROFILE, Profile, Run, output_of, podman, repository, skip_reason,
};
use shardns_e2e::{TempDir, UdpClient, Unbound, wait_for, zone};

/// `podman stop`'s grace period before SIGKILL (the DaemonSet's is longer).
const STOP_GRACE_SECONDS: u64 = 10;

/// A container serving 127.0.53.`host`:53 on the host's network, its metrics on port 9153
/// of the same address.
#[derive(Debug)]
struct Served {
    container: Container,
    dns: SocketAddr,
    metrics: SocketAddr,
}

/// Runs the image on the host's network with `--io auto --shards 2`, serving a read-only
/// Corefile: 127.0.53.`host`:53 (which must be free), a cache, forwarding to `unbound`,
/// metrics on 127.0.53.`host`:9153. Returns once it has answered a query.
fn serve(label: &str, host: u8, profile: Profile, unbound: &Unbound) -> Served {
    let address = Ipv4Addr::new(127, 0, 53, host);
    let dns = SocketAddr::from((address, 53));
    let metrics = SocketAddr::from((address, 9153));
    for addr in [dns, metrics] {
        UdpSocket::bind(addr).unwrap_or_else(|error| panic!("{addr} (udp) is in use: {error}"));
        TcpListener::bind(addr).unwrap_or_else(|error| panic!("{addr} (tcp) is in use: {error}"));
    }
    let dir = TempDir::new("ctr").unwrap();
    let corefile = dir.join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            ".:53 {{\n    bind {address}\n    cache 30\n    forward . {}\n    errors\n    \
             prometheus {metrics}\n}}\n",
            unbound.addr()
        ),
    )
    .unwrap();
    let run = Run {
        label,
        profile,
        network: "host".to_string(),
        options: vec![format!(
            "--volume={}:/etc/coredns/Corefile:ro",
            corefile.display()
        )],
        args: [
            "--conf",
            "/etc/coredns/Corefile",
            "--io",
            "auto",
            "--shards",
            "2",
        ]
        .map(str::to_string)
        .to_vec(),
    };
    let container = Container::run(run, dir).expect("podman run");
    let client = UdpClient::new(dns).unwrap();
    container
        .wait_until("first answer", || {
            client
                .query(zone::DUAL, RecordType::AAAA)
                .is_ok_and(|reply| reply.response_code() == ResponseCode::NoError)
        })
        .unwrap();
    Served {
        container,
        dns,
        metrics,
    }
}

/// Queries answered from the cache and from the upstream: a name twice (a miss, then a hit)
/// and a missing name twice (NXDOMAIN, then the cached denial); the misses reach `unbound`
/// once each, the hits do not, and the cache's counters say so.
fn answers_hits_and_misses(served: &Served, unbound: &Unbound) {
    let before = scrape(served.metrics);
    let client = UdpClient::new(served.dns).expect("UDP client");
    let name = zone::host(7);
    for (query, rcode) in [
        (name.as_str(), ResponseCode::NoError),
        (name.as_str(), ResponseCode::NoError),
        (zone::MISSING, ResponseCode::NXDomain),
        (zone::MISSING, ResponseCode::NXDomain),
    ] {
        let reply = client.query(query, RecordType::A).expect("a reply");
        assert_eq!(reply.response_code(), rcode, "{query}: {reply}");
    }
    let a = reply_addresses(&client, &name);
    assert_eq!(a, vec![zone::host_a(7)]);
    assert_eq!(unbound.queries_for(&name, Some(RecordType::A)), 1);
    assert_eq!(unbound.queries_for(zone::MISSING, Some(RecordType::A)), 1);
    let counted = |page: &str| {
        (
            family_sum(page, "coredns_cache_hits_total"),
            family_sum(page, "coredns_cache_misses_total"),
        )
    };
    let (hits, misses) = counted(&before);
    // 3 hits (the repeated name, the cached denial, the address check) and 2 misses.
    let expected = (hits + 3, misses + 2);
    let page = wait_for(Duration::from_secs(3), || {
        let page = scrape(served.metrics);
        (counted(&page) == expected).then_some(page)
    });
    assert!(
        page.is_some(),
        "hits and misses not {expected:?}:\n{}",
        scrape(served.metrics)
    );
}

/// The A records of a (cached) reply for `name`.
fn reply_addresses(client: &UdpClient, name: &str) -> Vec<Ipv4Addr> {
    let reply = client.query(name, RecordType::A).expect("a reply");
    reply
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Both shards run `driver` (and no shard another one), per `shardns_shard_info`.
fn assert_driver(served: &Served, driver: &str) {
    let page = scrape(served.metrics);
    for shard in 0..2 {
        let series = format!("shardns_shard_info{{io=\"{driver}\",shard=\"{shard}\"}}");
        assert_eq!(value(&page, &series), Some(1), "{series}:\n{page}");
    }
    assert_eq!(family_sum(&page, "shardns_shard_info"), 2, "{page}");
}

/// The image under `profile` on 127.0.53.`host`: the I/O driver it reports in its log and
/// on /metrics, and its answers.
fn serves_under(profile: Profile, label: &str, host: u8) {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let served = serve(label, host, profile, &unbound);
    let logs = served.container.logs();
    let driver = match profile {
        Profile::Default => "epoll",
        Profile::Shardns => "io_uring",
    };
    for shard in 0..2 {
        // podman's default answers io_uring_setup with ENOSYS (its defaultErrnoRet, 38).
        let fallback = format!(
            "shard {shard}: io_uring unavailable (io_uring_setup: Function not implemented \
             (os error 38)); using epoll"
        );
        assert_eq!(
            logs.contains(&fallback),
            profile == Profile::Default,
            "{fallback:?} in:\n{logs}"
        );
        let listening = format!("listening on udp {} (shard {shard}, {driver})", served.dns);
        assert!(logs.contains(&listening), "no {listening:?} in:\n{logs}");
    }
    assert_driver(&served, driver);
    answers_hits_and_misses(&served, &unbound);
    let memory = served.container.memory_usage().expect("podman stats");
    eprintln!("memory ({driver}): {memory}");
}

#[test]
fn default_profile_falls_back_to_epoll() {
    serves_under(Profile::Default, "epoll", 1);
}

#[test]
fn shardns_profile_runs_io_uring() {
    serves_under(Profile::Shardns, "uring", 2);
}

#[test]
fn podman_stop_ends_it_cleanly() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let unbound = Unbound::start().expect("starting Unbound");
    let served = serve("stop", 3, Profile::Default, &unbound);
    let stopped = served
        .container
        .stop(STOP_GRACE_SECONDS)
        .expect("podman stop");
    let logs = served.container.logs();
    assert_eq!(stopped.exit_code, "0", "{logs}");
    assert!(
        stopped.took < Duration::from_secs(STOP_GRACE_SECONDS),
        "podman stop took {:?}:\n{logs}",
        stopped.took
    );
    assert!(logs.contains("stopped in "), "{logs}");
    eprintln!("podman stop took {} ms", stopped.took.as_millis());
}

const LINK_LOCAL: &str = "169.254.20.10";
const CLUSTER_IP: &str = "10.96.0.10";
/// kube-dns behind the `kube-dns-upstream` Service (`$KUBE_DNS_UPSTREAM_SERVICE_HOST`).
const KUBE_DNS: &str = "10.96.0.20";
const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local.";
/// node-cache's 12 rules per local IP, for the link-local IP and the ClusterIP.
const RULES: usize = 24;

/// An iptables backend, by this machine's programs (the test's view of the namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    /// This machine's program of the backend: `iptables-nft`, `iptables-legacy-save`, ...
    fn program(self, suffix: &str) -> String {
        match self {
            Backend::Nft => format!("iptables-nft{suffix}"),
            Backend::Legacy => format!("iptables-legacy{suffix}"),
        }
    }

    fn other(self) -> Backend {
        match self {
            Backend::Nft => Backend::Legacy,
            Backend::Legacy => Backend::Nft,
        }
    }
}

/// How one node test sets up its namespace and runs the image.
#[derive(Debug)]
struct NodeCase {
    label: &'static str,
    /// kubelet's hint chain, `KUBE-IPTABLES-HINT`, is created in this backend's mangle table
    /// of the namespace before shardns starts.
    hint: Option<Backend>,
    /// The other backend holds this many unrelated rules (filter INPUT), so that counting
    /// rules would choose it: only the hint can lead to the right backend.
    decoys: usize,
    /// `--iptables=VALUE`, or the default (the image's `iptables`, nft).
    iptables: Option<&'static str>,
    /// PATH starts with /usr/lib/shardns/iptables-legacy (the image's plain names are then
    /// the legacy backend).
    legacy_path: bool,
    /// NET_RAW, which iptables-legacy needs, beside NET_ADMIN and NET_BIND_SERVICE.
    net_raw: bool,
    /// Where the rules must land.
    expect: Backend,
    /// Words the log must hold.
    log: &'static [&'static str],
}

/// node-cache's rules in `namespace`'s tables of `backend` (this machine's `*-save`).
fn rules(namespace: &Namespace, backend: Backend) -> usize {
    let save = backend.program("-save");
    namespace
        .node_cache_rules(&save)
        .unwrap_or_else(|error| panic!("{save}: {error:#}"))
        .len()
}

/// The image in a network namespace of the test's, with node-cache's stock arguments (the
/// interface left alone: this kernel has no dummy link type) and a TCP-only Unbound as
/// kube-dns: it installs node-cache's rules with the case's backend (and none with the
/// other), answers the cluster zone on the link-local IP, and on `podman stop` removes the
/// rules and exits 0. Each namespace has its own tables in both backends.
fn sets_up_the_node(case: NodeCase) {
    let tools = [
        "iptables-nft",
        "iptables-legacy",
        "iptables-nft-save",
        "iptables-legacy-save",
        "/usr/sbin/unbound",
    ];
    if let Some(reason) = skip_reason().or_else(|| shardns_e2e::netns::skip_reason(&tools)) {
        eprintln!("skipped: {reason}");
        return;
    }
    let namespace = Namespace::create(case.label).unwrap();
    namespace
        .add_local_ips(&[LINK_LOCAL, CLUSTER_IP, KUBE_DNS])
        .unwrap();
    // What kubelet and the rest of the node leave in the tables.
    if let Some(backend) = case.hint {
        let program = backend.program("");
        namespace
            .exec(&program, &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"])
            .unwrap_or_else(|error| panic!("{program}: {error:#}"));
        for index in 0..case.decoys {
            let source = format!("10.255.0.{index}/32");
            namespace
                .exec(
                    &backend.other().program(""),
                    &["-A", "INPUT", "-s", &source, "-j", "ACCEPT"],
                )
                .unwrap();
        }
    }
    let kube_dns = NamespaceUnbound::cluster_dns(
        &namespace,
        SocketAddr::new(KUBE_DNS.parse().unwrap(), 53),
        false,
    )
    .unwrap();
    let dir = TempDir::new("ctrn").unwrap();
    node_cache_inputs(&dir, None).unwrap();
    let mut options = vec![
        format!("--volume={}:/etc/coredns:ro", dir.join("coredns").display()),
        format!(
            "--volume={}:/etc/kube-dns:ro",
            dir.join("kube-dns").display()
        ),
        format!("--env=KUBE_DNS_UPSTREAM_SERVICE_HOST={KUBE_DNS}"),
    ];
    if case.legacy_path {
        options.push(
            "--env=PATH=/usr/lib/shardns/iptables-legacy:/usr/local/bin:/usr/sbin:/usr/bin"
                .to_string(),
        );
    }
    if case.net_raw {
        // iptables-legacy reads and writes the tables through a raw socket: without
        // NET_RAW it fails with "can't initialize iptables table `raw': Permission denied".
        options.push("--cap-add=NET_RAW".to_string());
    }
    // node-cache's stock container arguments (nodelocaldns.yaml), the interface aside.
    let mut args = [
        "-localip",
        &format!("{LINK_LOCAL},{CLUSTER_IP}"),
        "-conf",
        "/etc/Corefile",
        "-upstreamsvc",
        "kube-dns-upstream",
        "-setupinterface=false",
    ]
    .map(str::to_string)
    .to_vec();
    if let Some(mode) = case.iptables {
        args.push(format!("--iptables={mode}"));
    }
    let run = Run {
        label: case.label,
        profile: Profile::Default,
        network: format!("ns:/run/netns/{}", namespace.name()),
        options,
        args,
    };
    let container = Container::run(run, dir).expect("podman run");
    let server = SocketAddr::new(LINK_LOCAL.parse::<IpAddr>().unwrap(), 53);
    namespace.run(|inside| {
        let client = UdpClient::inside(inside, server).unwrap();
        container
            .wait_until("answer on the link-local IP", || {
                client
                    .query(CLUSTER_NAME, RecordType::A)
                    .is_ok_and(|reply| {
                        reply.response_code() == ResponseCode::NoError
                            && !reply.answers().is_empty()
                    })
            })
            .unwrap();
    });
    assert_eq!(kube_dns.queries_for(CLUSTER_NAME), 1);
    let used = case.expect;
    let installed = wait_for(Duration::from_secs(10), || {
        (rules(&namespace, used) == RULES).then_some(())
    });
    assert!(
        installed.is_some(),
        "{used:?}: {} rules, not {RULES}:\n{}",
        rules(&namespace, used),
        container.logs()
    );
    assert_eq!(rules(&namespace, used.other()), 0, "{:?}", used.other());
    let logs = container.logs();
    for words in case.log {
        assert!(logs.contains(words), "no {words:?} in the log:\n{logs}");
    }

    let stopped = container.stop(STOP_GRACE_SECONDS).expect("podman stop");
    let logs = container.logs();
    assert_eq!(stopped.exit_code, "0", "{logs}");
    assert_eq!(rules(&namespace, used), 0, "{logs}");
    assert!(logs.contains("iptables rules removed"), "{logs}");
}

/// The image's `iptables`, with nothing set: nft.
#[test]
fn sets_up_the_node_with_iptables_nft() {
    sets_up_the_node(NodeCase {
        label: "node-nft",
        hint: None,
        decoys: 0,
        iptables: None,
        legacy_path: false,
        net_raw: false,
        expect: Backend::Nft,
        log: &[],
    });
}

/// The manual way to legacy, for `--iptables=iptables` (the default): PATH and NET_RAW.
#[test]
fn sets_up_the_node_with_iptables_legacy() {
    sets_up_the_node(NodeCase {
        label: "node-legacy",
        hint: None,
        decoys: 0,
        iptables: None,
        legacy_path: true,
        net_raw: true,
        expect: Backend::Legacy,
        log: &[],
    });
}

/// `--iptables=auto` (the DaemonSet's) on a legacy node with the legacy overlay's NET_RAW:
/// kubelet's hint chain is in the legacy mangle table, while nft holds more rules.
#[test]
fn auto_finds_kubelets_hint_in_iptables_legacy() {
    sets_up_the_node(NodeCase {
        label: "auto-legacy",
        hint: Some(Backend::Legacy),
        decoys: 12,
        iptables: Some("auto"),
        legacy_path: false,
        net_raw: true,
        expect: Backend::Legacy,
        log: &[
            "--iptables=auto: using iptables-legacy because kubelet's KUBE-IPTABLES-HINT chain \
             is in iptables-legacy's mangle table",
        ],
    });
}

/// `--iptables=auto` on an nft node, with NET_RAW so that the legacy tables can be read:
/// the hint chain is in the nft mangle table, while legacy holds 12 rules (enough for the
/// rule count alone to choose legacy).
#[test]
fn auto_finds_kubelets_hint_in_iptables_nft() {
    sets_up_the_node(NodeCase {
        label: "auto-nft",
        hint: Some(Backend::Nft),
        decoys: 12,
        iptables: Some("auto"),
        legacy_path: false,
        net_raw: true,
        expect: Backend::Nft,
        log: &[
            "--iptables=auto: using iptables-nft because kubelet's KUBE-IPTABLES-HINT chain is \
             in iptables-nft's mangle table",
        ],
    });
}

/// `--iptables=auto` on a legacy node without NET_RAW (the base DaemonSet there): the legacy
/// tables cannot be read, so nft is used, and the log says NET_RAW is missing.
#[test]
fn auto_without_net_raw_names_it() {
    sets_up_the_node(NodeCase {
        label: "auto-noraw",
        hint: Some(Backend::Legacy),
        decoys: 0,
        iptables: Some("auto"),
        legacy_path: false,
        net_raw: false,
        expect: Backend::Nft,
        log: &[
            "the legacy tables could not be read",
            "Permission denied",
            "it needs the NET_RAW capability",
        ],
    });
}

/// deploy/seccomp/shardns.json is what scripts/seccomp-profile.py makes of this machine's
/// default profile: that default, resolved for the DaemonSet's capabilities, plus io_uring.
#[test]
fn seccomp_profile_is_the_default_plus_io_uring() {
    if !Path::new(DEFAULT_PROFILE).exists() {
        eprintln!(
            "skipped: {DEFAULT_PROFILE} is missing (Debian: golang-github-containers-common)"
        );
        return;
    }
    let root = repository();
    let mut generate = Command::new("python3");
    generate
        .arg(root.join("scripts/seccomp-profile.py"))
        .args(["--source", DEFAULT_PROFILE]);
    let generated = output_of(&mut generate).expect("scripts/seccomp-profile.py");
    let shipped = std::fs::read_to_string(root.join("deploy/seccomp/shardns.json"))
        .expect("deploy/seccomp/shardns.json");
    assert!(
        generated == shipped,
        "deploy/seccomp/shardns.json differs from scripts/seccomp-profile.py's output for \
         {DEFAULT_PROFILE}: regenerate it with `scripts/seccomp-profile.py --output \
         deploy/seccomp/shardns.json` and review the change"
    );
    // The io_uring calls are allowed, and the default does not allow them.
    let allowed = |text: &str| -> Vec<String> {
        let profile: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let mut names: Vec<String> = profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|rule| rule["names"].as_array().expect("names").clone())
            .filter_map(|name| name.as_str().map(str::to_string))
            .filter(|name| name.starts_with("io_uring"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        allowed(&shipped),
        ["io_uring_enter", "io_uring_register", "io_uring_setup"]
    );
    let default = std::fs::read_to_string(DEFAULT_PROFILE).expect(DEFAULT_PROFILE);
    assert!(allowed(&default).is_empty());
    // And it is the profile podman applies when none is named.
    if skip_reason().is_none() {
        let format = "{{.Host.Security.SECCOMPProfilePath}}";
        let used = output_of(&mut podman(&["info", "--format", format])).expect("podman info");
        assert_eq!(used.trim(), DEFAULT_PROFILE);
    }
}

/// The Dockerfile's runtime stage and deploy/podman/Containerfile (scripts/image.sh) say
/// the same after `FROM scratch`, but for where the root file system comes from; both lay
/// it out with scripts/rootfs.sh.
#[test]
fn dockerfile_runtime_stage_matches_containerfile() {
    let root = repository();
    let runtime = |path: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root.join(path)).expect(path);
        let stage = text
            .split("\nFROM scratch\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{path} has no FROM scratch stage"));
        stage
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .filter(|line| !line.starts_with("COPY "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        runtime("Dockerfile"),
        runtime("deploy/podman/Containerfile")
    );
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("scripts/rootfs.sh target/release/shardns /rootfs"));
    assert!(dockerfile.contains("COPY --from=build /rootfs /"));
    let image_script =
        std::fs::read_to_string(root.join("scripts/image.sh")).expect("scripts/image.sh");
    assert!(image_script.contains("scripts/rootfs.sh\" \"$binary\" \"$context/rootfs\""));
}
