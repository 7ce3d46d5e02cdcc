//! shardns as a drop-in for NodeLocal DNSCache, end to end, in a network namespace the test
//! creates (root only; skipped with the reason otherwise): the stock node-local-dns Corefile
//! template and the stock container arguments, plus `-basecorefile`, `-kubednscm`,
//! `-setupinterface=false -syncinterval 2`; the local IPs on the namespace's `lo` (this
//! kernel has no dummy link type); real Unbound servers as kube-dns (TCP only), as the
//! node's nameserver and as a stub domain's server; real iptables.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use shardns_e2e::metrics::{get_inside, promtool_accepts, value};
use shardns_e2e::netns::{Inside, Namespace, skip_reason};
use shardns_e2e::node::{NamespaceUnbound, NodeCache, lookup, node_cache_inputs};
use shardns_e2e::{TempDir, wait_for};

const LINK_LOCAL: &str = "169.254.20.10";
const CLUSTER_IP: &str = "10.96.0.10";
/// `$KUBE_DNS_UPSTREAM_SERVICE_HOST`: kube-dns behind the `kube-dns-upstream` Service.
const KUBE_DNS: &str = "10.96.0.20";
/// The nameserver the kube-dns ConfigMap's `upstreamNameservers` names.
const NAMESERVER: &str = "10.96.0.40";
/// The stub domain's server, added to the ConfigMap during the test.
const STUB: &str = "10.96.0.30";

const CLUSTER_NAME: &str = "kubernetes.default.svc.cluster.local.";
const EXTERNAL_NAME: &str = "www.example.org.";
const STUB_NAME: &str = "db.acme.local.";

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// node-cache's rules present in the namespace: `iptables-save` lines with their comments.
fn rules(namespace: &Namespace) -> Vec<String> {
    namespace
        .node_cache_rules("iptables-save")
        .expect("iptables-save")
}

/// Replaces the kube-dns ConfigMap directory's contents at once, as kubelet does: a new
/// timestamped directory, `..data` swapped to it, one symlink per key.
fn publish_configmap(directory: &Path, version: u32, files: &[(&str, &str)]) {
    let data = format!("..v{version}");
    std::fs::create_dir_all(directory.join(&data)).unwrap();
    for (name, text) in files {
        std::fs::write(directory.join(&data).join(name), text).unwrap();
    }
    let _ = std::fs::remove_file(directory.join("..data_tmp"));
    symlink(&data, directory.join("..data_tmp")).unwrap();
    std::fs::rename(directory.join("..data_tmp"), directory.join("..data")).unwrap();
    for (name, _) in files {
        let link = directory.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// The value of `series` on the `/metrics` page at `addr`.
fn metric(inside: &Inside, addr: SocketAddr, series: &str) -> Option<u64> {
    let (status, page) = get_inside(inside, addr, "/metrics");
    assert_eq!(status, 200, "{page}");
    value(&page, series)
}

#[test]
fn stock_corefile_and_arguments_set_up_serve_and_tear_down_the_node() {
    if let Some(reason) = skip_reason(&["iptables", "iptables-save", "/usr/sbin/unbound"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let namespace = Namespace::create("nodelocal").unwrap();
    namespace
        .add_local_ips(&[LINK_LOCAL, CLUSTER_IP, KUBE_DNS, NAMESERVER, STUB])
        .unwrap();
    // kube-dns answers over TCP only: what it answers came over TCP.
    let kube_dns = NamespaceUnbound::cluster_dns(&namespace, at(KUBE_DNS, 53), false).unwrap();
    let nameserver = NamespaceUnbound::start(
        &namespace,
        at(NAMESERVER, 53),
        true,
        "example.org.",
        &["www.example.org. 300 IN A 192.0.2.80"],
    )
    .unwrap();
    let stub = NamespaceUnbound::start(
        &namespace,
        at(STUB, 53),
        true,
        "acme.local.",
        &["db.acme.local. 300 IN A 192.0.2.99"],
    )
    .unwrap();

    let dir = TempDir::new("node").unwrap();
    node_cache_inputs(&dir, None).unwrap();
    let configmap = dir.join("kube-dns");
    publish_configmap(
        &configmap,
        1,
        &[("upstreamNameservers", &format!("[\"{NAMESERVER}\"]"))],
    );
    // Never used (the ConfigMap names the upstream), but not this machine's resolv.conf.
    std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let conf = dir.join("Corefile");
    let pidfile = dir.join("node-cache.pid");
    // The stock container arguments, then the test's.
    let args: Vec<String> = [
        "-localip",
        &format!("{LINK_LOCAL},{CLUSTER_IP}"),
        "-conf",
        &conf.display().to_string(),
        "-upstreamsvc",
        "kube-dns-upstream",
        "-pidfile",
        &pidfile.display().to_string(),
        "-basecorefile",
        &dir.join("coredns/Corefile.base").display().to_string(),
        "-kubednscm",
        &configmap.display().to_string(),
        "-setupinterface=false",
        "-syncinterval",
        "2",
        "--resolv-conf",
        &dir.join("resolv.conf").display().to_string(),
        "--handoff-socket",
        &dir.join("handoff.sock").display().to_string(),
        "--shards",
        "2",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    // kube-dns paused: no upstream of the cluster zone can answer yet.
    kube_dns.pause(true).unwrap();
    let started = Instant::now();
    let log_path = dir.join("shardns.log");
    let mut node = NodeCache::start(
        &namespace,
        &args,
        &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS)],
        &log_path,
    )
    .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The Corefile node-cache would write, and the pidfile.
    let written = std::fs::read_to_string(&conf).unwrap();
    assert!(
        written.contains(&format!("forward . {KUBE_DNS} {{")),
        "{written}"
    );
    assert!(
        written.contains(&format!("forward . {NAMESERVER}\n")),
        "{written}"
    );
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        node.pid().to_string()
    );

    // Every rule, once, with its comment: 12 per local IP.
    let installed = rules(&namespace);
    assert_eq!(installed.len(), 24, "{installed:#?}\n{}", log());
    for ip in [LINK_LOCAL, CLUSTER_IP] {
        assert_eq!(
            installed.iter().filter(|rule| rule.contains(ip)).count(),
            12,
            "{ip}: {installed:#?}"
        );
    }
    let skip = installed
        .iter()
        .filter(|rule| rule.contains("\"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK"))
        .count();
    let allow = installed
        .iter()
        .filter(|rule| rule.contains("\"NodeLocal DNS Cache: allow DNS traffic\" -j ACCEPT"))
        .count();
    assert_eq!((skip, allow), (16, 8), "{installed:#?}");

    let health = at(LINK_LOCAL, 8080);
    namespace.run(|inside| {
        // Live, not ready: the cluster zone's upstream has not answered.
        assert_eq!(
            get_inside(inside, health, "/health"),
            (200, "OK".to_string())
        );
        let (status, reason) = get_inside(inside, health, "/ready");
        assert_eq!(status, 503, "{reason}");
        assert_eq!(
            reason,
            format!("no upstream of zone cluster.local. has answered yet ({KUBE_DNS}:53)")
        );
    });
    // kube-dns back: /ready turns 200 with no client traffic (its own query wakes it).
    kube_dns.pause(false).unwrap();
    namespace.run(|inside| {
        let ready = wait_for(Duration::from_secs(10), || {
            let (status, _) = get_inside(inside, health, "/ready");
            (status == 200).then_some(())
        });
        assert!(ready.is_some(), "not ready within 10 s:\n{}", log());
    });
    eprintln!("ready {} ms after start", started.elapsed().as_millis());

    // Queries to both IPs, over UDP and TCP: cluster names to kube-dns (over TCP, the only way
    // it answers), external names to the ConfigMap's nameserver.
    namespace.run(|inside| {
        for ip in [LINK_LOCAL, CLUSTER_IP] {
            for tcp in [false, true] {
                let server = at(ip, 53);
                let cluster = lookup(inside, server, CLUSTER_NAME, tcp).unwrap();
                assert_eq!(
                    cluster,
                    (ResponseCode::NoError, vec!["10.96.0.1".to_string()])
                );
                let external = lookup(inside, server, EXTERNAL_NAME, tcp).unwrap();
                assert_eq!(
                    external,
                    (ResponseCode::NoError, vec!["192.0.2.80".to_string()])
                );
            }
        }
    });
    assert!(
        kube_dns.queries_for(CLUSTER_NAME) >= 1,
        "{}",
        kube_dns.logs()
    );
    assert_eq!(kube_dns.queries_for(EXTERNAL_NAME), 0);
    assert!(nameserver.queries_for(EXTERNAL_NAME) >= 1);

    // The metrics: CoreDNS's names on the prometheus port, node-cache's setup errors on both
    // that and node-cache's own port.
    namespace.run(|inside| {
        let coredns = at("127.0.0.1", 9253);
        let own = at("127.0.0.1", 9353);
        let zero = "coredns_nodecache_setup_errors_total{errortype=\"iptables\"}";
        assert_eq!(metric(inside, coredns, zero), Some(0));
        assert_eq!(metric(inside, own, zero), Some(0));
        let requests = metric(
            inside,
            coredns,
            "coredns_dns_requests_total{family=\"1\",proto=\"udp\",server=\"dns://169.254.20.10:53\",type=\"A\",view=\"\",zone=\"cluster.local.\"}",
        );
        assert!(requests.is_some_and(|count| count >= 1), "{requests:?}");
        let (_, page) = get_inside(inside, own, "/metrics");
        promtool_accepts(&page);
    });

    // A rule deleted by hand comes back within the sync interval; a copy added goes.
    let deleted = installed
        .iter()
        .find(|rule| rule.starts_with(&format!("-A PREROUTING -d {LINK_LOCAL}/32 -p udp")))
        .expect("the raw PREROUTING udp rule")
        .clone();
    let delete: Vec<&str> = std::iter::once("-t")
        .chain(["raw", "-D"])
        .chain(shell_words(&deleted[3..]))
        .collect();
    namespace.exec("iptables", &delete).unwrap();
    let copied = installed
        .iter()
        .find(|rule| rule.starts_with(&format!("-A INPUT -d {CLUSTER_IP}/32 -p tcp")))
        .expect("the filter INPUT tcp rule")
        .clone();
    let insert: Vec<&str> = std::iter::once("-I")
        .chain(shell_words(&copied[3..]))
        .collect();
    namespace.exec("iptables", &insert).unwrap();
    assert_eq!(rules(&namespace).len(), 24, "one gone, one copy");
    let healed = wait_for(Duration::from_secs(8), || {
        let now = rules(&namespace);
        let count = |rule: &String| now.iter().filter(|line| *line == rule).count();
        (now.len() == 24 && count(&deleted) == 1 && count(&copied) == 1).then_some(())
    });
    assert!(healed.is_some(), "{:#?}\n{}", rules(&namespace), log());

    // A stub domain added to the ConfigMap is served within the poll (10 s) and a reload.
    namespace.run(|inside| {
        let (rcode, _) = lookup(inside, at(LINK_LOCAL, 53), STUB_NAME, false).unwrap();
        assert_eq!(
            rcode,
            ResponseCode::Refused,
            "the node's nameserver does not know it"
        );
    });
    publish_configmap(
        &configmap,
        2,
        &[
            ("upstreamNameservers", &format!("[\"{NAMESERVER}\"]")),
            ("stubDomains", &format!("{{\"acme.local\": [\"{STUB}\"]}}")),
        ],
    );
    namespace.run(|inside| {
        let served = wait_for(Duration::from_secs(25), || {
            let reply = lookup(inside, at(CLUSTER_IP, 53), STUB_NAME, false).ok()?;
            (reply.1 == ["192.0.2.99"]).then_some(())
        });
        assert!(served.is_some(), "stub domain not served:\n{}", log());
    });
    assert!(stub.queries_for(STUB_NAME) >= 1);

    // A broken ConfigMap update is refused, counted, and changes nothing served.
    publish_configmap(
        &configmap,
        3,
        &[
            ("upstreamNameservers", &format!("[\"{NAMESERVER}\"]")),
            ("stubDomains", "{\"acme.local\": "),
        ],
    );
    namespace.run(|inside| {
        let series = "coredns_nodecache_setup_errors_total{errortype=\"configmap\"}";
        let counted = wait_for(Duration::from_secs(25), || {
            (metric(inside, at("127.0.0.1", 9253), series)? == 1).then_some(())
        });
        assert!(counted.is_some(), "not counted:\n{}", log());
        let reply = lookup(inside, at(LINK_LOCAL, 53), STUB_NAME, true).unwrap();
        assert_eq!(reply.1, ["192.0.2.99"], "the stub domain stays");
    });
    assert!(log().contains("keeping the current ConfigMap"), "{}", log());

    // SIGTERM: every rule removed, the pidfile too, exit 0, with the times logged.
    let status = node.stop("TERM", Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", log());
    assert_eq!(rules(&namespace), Vec::<String>::new(), "{}", log());
    assert!(!pidfile.exists());
    let text = log();
    assert!(text.contains("iptables rules removed in"), "{text}");
    assert!(text.contains("stopped in"), "{text}");
    drop((kube_dns, nameserver, stub));
}

/// The words of an `iptables-save` rule, quotes removed (its comments are quoted).
fn shell_words(rule: &str) -> impl Iterator<Item = &str> {
    let mut words = Vec::new();
    let mut rest = rule.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            words.push(&quoted[..end]);
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
    }
    words.into_iter()
}

#[test]
fn skipteardown_leaves_the_rules_in_place() {
    if let Some(reason) = skip_reason(&["iptables", "iptables-save", "/usr/sbin/unbound"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let namespace = Namespace::create("skipteardown").unwrap();
    namespace
        .add_local_ips(&[LINK_LOCAL, CLUSTER_IP, KUBE_DNS])
        .unwrap();
    let _kube_dns = NamespaceUnbound::cluster_dns(&namespace, at(KUBE_DNS, 53), true).unwrap();
    let dir = TempDir::new("skip").unwrap();
    node_cache_inputs(&dir, Some(KUBE_DNS)).unwrap();
    let args: Vec<String> = [
        "-localip",
        &format!("{LINK_LOCAL},{CLUSTER_IP}"),
        "-conf",
        &dir.join("Corefile").display().to_string(),
        "-upstreamsvc",
        "kube-dns-upstream",
        "-basecorefile",
        &dir.join("coredns/Corefile.base").display().to_string(),
        "-kubednscm",
        &dir.join("kube-dns").display().to_string(),
        "-setupinterface=false",
        "-skipteardown",
        "--resolv-conf",
        &dir.join("resolv.conf").display().to_string(),
        "--handoff-socket",
        &dir.join("handoff.sock").display().to_string(),
        "--shards",
        "1",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let log_path = dir.join("shardns.log");
    let mut node = NodeCache::start(
        &namespace,
        &args,
        &[("KUBE_DNS_UPSTREAM_SERVICE_HOST", KUBE_DNS)],
        &log_path,
    )
    .unwrap();
    assert_eq!(rules(&namespace).len(), 24);
    let status = node.stop("TERM", Duration::from_secs(10)).unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(rules(&namespace).len(), 24, "left in place:\n{log}");
    assert!(
        log.contains("-skipteardown: leaving the rules and the interface in place"),
        "{log}"
    );
}
