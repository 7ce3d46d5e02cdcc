//! The in-kernel fast path run by shardns itself (the `fastpath` directive), as root in
//! network namespaces: a "pod" and a "node" joined by a veth pair, shardns in the node on
//! 169.254.20.10 with a real Unbound behind it, `fastpath veth-node*` in the block.
//!
//! - Names hit once through the sockets (asked twice) are published: with the socket path blocked by
//!   `iptables -I INPUT -p udp --dport 53 -j DROP` in the node, they are still answered (the
//!   client's ID and case, the records the socket path gave), while a name not cached, or a
//!   query with bits never asked through the sockets (EDNS), gets nothing.
//! - The fast path's hits are counted: `shardns_fastpath_hits_total`, `..._entries`,
//!   `..._interfaces`, and `coredns_cache_hits_total` grows by them.
//! - An interface that appears later (a new pod's veth) is attached within seconds.
//! - An entry whose lifetime ends leaves the map.
//! - After SIGTERM the program is gone from every interface: nothing answers.
//!
//! Skipped, with the reason, where not root, without the tools, or when the binary was built
//! without the program (`--features shardns-fastpath/bpf`, as scripts/test.sh builds it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use shardns_e2e::client::{UdpClient, header_of, new_id, query_message, query_message_plain};
use shardns_e2e::metrics::{family_sum, scrape};
use shardns_e2e::netns::{Namespace, skip_reason};
use shardns_e2e::node::{NamespaceUnbound, NodeCache};
use shardns_e2e::shardns::send_signal;
use shardns_e2e::wait_for;

const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
const ZONE: &str = "fastpath.test.";
const RECORDS: &[&str] = &[
    "cached.fastpath.test. 30 IN A 192.0.2.1",
    "other.fastpath.test. 30 IN A 192.0.2.2",
    "late.fastpath.test. 30 IN A 192.0.2.3",
    "short.fastpath.test. 1 IN A 192.0.2.4",
    "multi.fastpath.test. 30 IN A 192.0.2.11",
    "multi.fastpath.test. 30 IN A 192.0.2.12",
    "multi.fastpath.test. 30 IN A 192.0.2.13",
    "alias.fastpath.test. 30 IN CNAME cached.fastpath.test.",
    "text.fastpath.test. 30 IN TXT \\\"hello\\\" \\\"world\\\"",
];
const SILENCE: Duration = Duration::from_millis(400);
const REPLY: Duration = Duration::from_secs(2);

/// A veth pair `node_end` (in `node`, 10.0.N.1/24) and `veth-pod` (in a new pod namespace,
/// 10.0.N.2/24, default route via the node); `None` where the kernel has no veth.
fn new_pod(node: &Namespace, node_end: &str, n: u8) -> Option<Namespace> {
    let pod = Namespace::create(&format!("fp-pod{n}")).unwrap();
    node.link_pod(node_end, &pod, n).unwrap().then_some(pod)
}

/// A client socket in `pod` for LOCAL_IP:53. Its source port stays the same, so its queries
/// reach the same shard (SO_REUSEPORT hashes the 4-tuple): the hit that publishes an entry
/// must be one shard's.
fn client(pod: &Namespace) -> UdpClient {
    let server = SocketAddr::new(IpAddr::V4(LOCAL_IP), 53);
    pod.run(|inside| UdpClient::inside(inside, server).unwrap())
}

/// A query for `name` as written (case kept in the wire bytes), with or without EDNS; the
/// reply's bytes, if any within `timeout`.
fn ask(client: &UdpClient, name: &str, edns: bool, timeout: Duration) -> (u16, Option<Vec<u8>>) {
    ask_type(client, name, RecordType::A, edns, timeout)
}

/// [`ask`] for `rtype`.
fn ask_type(
    client: &UdpClient,
    name: &str,
    rtype: RecordType,
    edns: bool,
    timeout: Duration,
) -> (u16, Option<Vec<u8>>) {
    let id = new_id();
    let message = if edns {
        query_message(name, rtype, id)
    } else {
        query_message_plain(name, rtype, id)
    };
    let mut bytes = message.to_vec().unwrap();
    // hickory writes names lower-cased: put the case back.
    let mut at = 13;
    for label in name.trim_end_matches('.').split('.') {
        bytes[at..at + label.len()].copy_from_slice(label.as_bytes());
        at += label.len() + 1;
    }
    // Port unreachable (nothing listening, no program) is no answer too.
    (id, client.exchange_raw(&bytes, timeout).ok().flatten())
}

/// A reply with its ID and TTL fields zeroed, and the TTLs.
fn without_ttls(reply: &[u8]) -> (Vec<u8>, Vec<u32>) {
    let mut offsets = Vec::new();
    shardns_wire::Message::parse_with(reply, |at| offsets.push(at)).expect("the reply parses");
    let mut bytes = reply.to_vec();
    bytes[..2].fill(0);
    let ttls = offsets
        .iter()
        .map(|&at| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()))
        .collect();
    for at in offsets {
        bytes[at..at + 4].fill(0);
    }
    (bytes, ttls)
}

/// The A records of a reply.
fn addresses(reply: &[u8]) -> Vec<String> {
    let message = Message::from_vec(reply).expect("the reply parses");
    message
        .answers()
        .iter()
        .filter_map(|record| record.data().ip_addr().map(|ip| ip.to_string()))
        .collect()
}

/// What a test runs: the namespaces, Unbound, shardns with `fastpath veth-node*`.
struct Setup {
    node: Namespace,
    pod: Namespace,
    _unbound: NamespaceUnbound,
    shardns: NodeCache,
    corefile: std::path::PathBuf,
    /// shardns's arguments (the same hand-off socket for a successor).
    args: Vec<String>,
    dir: shardns_e2e::TempDir,
}

/// The topology and shardns, or `None` (the reason printed) where it cannot run.
fn start(label: &str) -> Option<Setup> {
    start_with(label, "veth-node*", false)
}

/// [`start_with`], running `before` on the node once the namespaces are up and before
/// shardns starts.
fn start_after(label: &str, before: impl FnOnce(&Namespace)) -> Option<Setup> {
    start_inner(label, "veth-node*", false, before)
}

/// The node's IPv6 address for the `ipv6` setups (on its `lo`), and the veth's network.
const LOCAL_IP6: &str = "fd00:20::10";

/// [`start`] with the fast path on `interfaces`; with `ipv6`, the node serves [`LOCAL_IP6`]
/// too, and the pod reaches it over IPv6 (fd00:1::2 → fd00:1::1).
fn start_with(label: &str, interfaces: &str, ipv6: bool) -> Option<Setup> {
    start_inner(label, interfaces, ipv6, |_| {})
}

fn start_inner(
    label: &str,
    interfaces: &str,
    ipv6: bool,
    before: impl FnOnce(&Namespace),
) -> Option<Setup> {
    if let Some(reason) = skip_reason(&["iptables", "/usr/sbin/unbound"]) {
        eprintln!("skipped: {reason}");
        return None;
    }
    let node = Namespace::create(&format!("fp-node-{label}")).unwrap();
    let Some(pod) = new_pod(&node, "veth-node", 1) else {
        eprintln!("skipped: this kernel has no veth link type");
        return None;
    };
    node.add_local_ips(&[&LOCAL_IP.to_string()]).unwrap();
    let mut binds = LOCAL_IP.to_string();
    if ipv6 {
        let local = format!("{LOCAL_IP6}/128");
        node.ip(&["addr", "add", &local, "dev", "lo", "nodad"])
            .unwrap();
        node.ip(&["addr", "add", "fd00:1::1/64", "dev", "veth-node", "nodad"])
            .unwrap();
        pod.ip(&["addr", "add", "fd00:1::2/64", "dev", "veth-pod", "nodad"])
            .unwrap();
        pod.ip(&["-6", "route", "add", "default", "via", "fd00:1::1"])
            .unwrap();
        binds = format!("{binds} {LOCAL_IP6}");
    }
    let upstream = SocketAddr::from(([127, 0, 0, 1], 53));
    let unbound = NamespaceUnbound::start(&node, upstream, true, ZONE, RECORDS).unwrap();
    let dir = shardns_e2e::TempDir::new("fastpath").unwrap();
    let corefile = dir.join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            "{ZONE}:53 {{\n    bind {binds}\n    cache {{\n        success 9984 30 1\n    }}\n    \
             forward . {upstream}\n    fastpath {interfaces}\n    prometheus 127.0.0.1:9253\n}}\n"
        ),
    )
    .unwrap();
    let handoff = dir.join("handoff.sock");
    let args: Vec<String> = [
        "--conf",
        corefile.to_str().unwrap(),
        "--shards",
        "2",
        "--handoff-socket",
        handoff.to_str().unwrap(),
        "-v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    before(&node);
    let shardns = NodeCache::start(&node, &args, &[], &dir.join("log")).unwrap();
    let log = shardns.log_text();
    if log.contains("without the bpf feature") {
        eprintln!("skipped: the shardns binary was built without the fast path's program");
        return None;
    }
    for interface in interfaces.split(' ') {
        let interface = interface.trim_end_matches('*');
        assert!(
            log.contains(&format!("fastpath: attached to {interface}")),
            "{log}"
        );
    }
    Some(Setup {
        node,
        pod,
        _unbound: unbound,
        shardns,
        corefile,
        args,
        dir,
    })
}

/// shardns's metrics page, scraped in the node.
fn metrics(node: &Namespace) -> String {
    node.run(|_| scrape(SocketAddr::from(([127, 0, 0, 1], 9253))))
}

/// Waits (≤ 3 s) until the map holds `at_least` entries; panics with the page otherwise.
fn wait_published(node: &Namespace, at_least: u64) {
    let published = wait_for(Duration::from_secs(3), || {
        (family_sum(&metrics(node), "shardns_fastpath_entries") >= at_least).then_some(())
    });
    assert!(published.is_some(), "{}", metrics(node));
}

/// The socket path blocked in the node: what still answers is the program.
fn block_sockets(node: &Namespace) {
    node.exec(
        "iptables",
        &["-I", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
    )
    .unwrap();
}

#[test]
fn shardns_publishes_hot_entries_and_the_kernel_answers_them() {
    let Some(Setup {
        node,
        pod: pod_ns,
        _unbound,
        mut shardns,
        // Kept to the end: it holds the log and the Corefile.
        dir: _dir,
        ..
    }) = start("main")
    else {
        return;
    };
    let pod = client(&pod_ns);
    let metrics = || metrics(&node);

    // A socket hit after the miss publishes the entry; the socket path's answer, kept.
    let (_, first) = ask(&pod, "cached.fastpath.test.", false, REPLY);
    assert_eq!(addresses(&first.unwrap()), ["192.0.2.1"]);
    for _ in 0..2 {
        let (_, hit) = ask(&pod, "cached.fastpath.test.", false, REPLY);
        assert!(hit.is_some());
    }
    ask(&pod, "other.fastpath.test.", false, REPLY); // cached, hit never
    wait_published(&node, 1);

    block_sockets(&node);
    let (id, reply) = ask(&pod, "CaChEd.FastPath.TEST.", false, REPLY);
    let reply = reply.expect("the fast path answers with the socket path blocked");
    assert_eq!(header_of(&reply).unwrap().id, id);
    assert_eq!(&reply[13..19], b"CaChEd", "the client's case");
    assert_eq!(addresses(&reply), ["192.0.2.1"]);
    // Not published: a name hit never, a name not cached, bits never asked (EDNS).
    for (name, edns) in [
        ("other.fastpath.test.", false),
        ("late.fastpath.test.", false),
        ("cached.fastpath.test.", true),
    ] {
        let (_, reply) = ask(&pod, name, edns, SILENCE);
        assert_eq!(
            reply, None,
            "{name} (EDNS {edns}) answered with the sockets blocked"
        );
    }
    // Counted: the program's hits, in CoreDNS's family too.
    let counted = wait_for(Duration::from_secs(3), || {
        let page = metrics();
        (family_sum(&page, "shardns_fastpath_hits_total") >= 1
            && family_sum(&page, "coredns_cache_hits_total") >= 3)
            .then_some(page)
    });
    let page = counted.expect("fast-path hits counted");
    assert_eq!(
        family_sum(&page, "shardns_fastpath_interfaces"),
        1,
        "{page}"
    );
    assert!(
        family_sum(&page, "shardns_fastpath_published_total") >= 1,
        "{page}"
    );

    // Pods that appear later: each veth is attached as rtnetlink announces it, well within
    // the one-second rescan (40-120 ms seen; without the events, three attaches under 500 ms
    // each would happen by chance one time in eight).
    let mut late = Vec::new();
    let mut waits = Vec::new();
    for n in 2..5u8 {
        let name = format!("veth-node{n}");
        let created = Instant::now();
        let Some(late_ns) = new_pod(&node, &name, n) else {
            panic!("another veth pair");
        };
        let attached = wait_for(Duration::from_secs(5), || {
            shardns
                .log_text()
                .contains(&format!("fastpath: attached to {name}"))
                .then_some(())
        });
        assert!(attached.is_some(), "{}", shardns.log_text());
        waits.push(created.elapsed());
        late.push(late_ns);
    }
    eprintln!("attached after {waits:?}");
    assert!(
        waits.iter().all(|wait| *wait < Duration::from_millis(500)),
        "attached only at the rescans: {waits:?}"
    );
    let late = client(&late[0]);
    let (_, reply) = ask(&late, "cached.fastpath.test.", false, REPLY);
    assert_eq!(
        addresses(&reply.expect("answered in the kernel")),
        ["192.0.2.1"]
    );

    // An entry whose lifetime (1 s) ends leaves the map.
    node.exec(
        "iptables",
        &["-D", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
    )
    .unwrap();
    let entries = family_sum(&metrics(), "shardns_fastpath_entries");
    for _ in 0..3 {
        ask(&pod, "short.fastpath.test.", false, REPLY);
    }
    let grew = wait_for(Duration::from_secs(2), || {
        (family_sum(&metrics(), "shardns_fastpath_entries") > entries).then_some(())
    });
    let started = Instant::now();
    let shrank = wait_for(Duration::from_secs(5), || {
        (family_sum(&metrics(), "shardns_fastpath_entries") <= entries).then_some(())
    });
    assert!(
        grew.is_some() && shrank.is_some(),
        "short lived entry published then removed (after {:?})\n{}",
        started.elapsed(),
        metrics()
    );

    // Stopped: detached everywhere, so nothing answers any more.
    let status = shardns.stop("TERM", Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{}", shardns.log_text());
    assert!(
        shardns
            .log_text()
            .contains("fastpath: detached from 4 interfaces")
    );
    let (_, reply) = ask(&pod, "cached.fastpath.test.", false, SILENCE);
    assert_eq!(reply, None, "answered after shardns stopped");
}

/// The same query stream through the socket path and then through the fast path: mixed case,
/// EDNS and not, positive answers of one and three records, a CNAME chain, TXT, NODATA and
/// NXDOMAIN. Each fast-path answer is the socket path's byte for byte but for the ID and the
/// TTLs, which are at most 5 s below (the time passed between them, on a slow machine). Then a reload withdraws every
/// entry, and hits publish them again.
#[test]
fn the_fast_paths_answers_are_the_socket_paths() {
    let Some(setup) = start("diff") else {
        return;
    };
    let pod = client(&setup.pod);
    let cases = [
        ("CaChEd.FastPath.TEST.", RecordType::A),
        ("multi.FASTPATH.test.", RecordType::A),
        ("Alias.fastpath.test.", RecordType::A),
        ("text.fastpath.test.", RecordType::TXT),
        ("cached.fastpath.TEST.", RecordType::AAAA),
        ("NoSuch.fastpath.test.", RecordType::A),
    ];
    let mut socket = Vec::new();
    for (name, rtype) in cases {
        for edns in [false, true] {
            // A miss, then a hit on the same shard (one source port): the hit's reply is the
            // socket path's, and the entry is published on it.
            let mut last = None;
            for _ in 0..2 {
                let (_, reply) = ask_type(&pod, name, rtype, edns, REPLY);
                last = reply;
            }
            socket.push((name, rtype, edns, last.expect("answered")));
        }
    }
    let metrics = || metrics(&setup.node);
    wait_published(&setup.node, socket.len() as u64);
    block_sockets(&setup.node);
    for (name, rtype, edns, expected) in &socket {
        let (id, reply) = ask_type(&pod, name, *rtype, *edns, REPLY);
        let reply = reply.unwrap_or_else(|| panic!("{name} {rtype} (EDNS {edns}): no answer"));
        assert_eq!(header_of(&reply).unwrap().id, id);
        let (got, got_ttls) = without_ttls(&reply);
        let (want, want_ttls) = without_ttls(expected);
        assert_eq!(got, want, "{name} {rtype} (EDNS {edns})");
        for (got, want) in got_ttls.iter().zip(&want_ttls) {
            assert!(
                got <= want && want - got <= 5,
                "{name} {rtype}: TTL {got}, the socket path said {want}"
            );
        }
    }
    let counted = wait_for(Duration::from_secs(3), || {
        (family_sum(&metrics(), "shardns_fastpath_hits_total") >= socket.len() as u64).then_some(())
    });
    assert!(counted.is_some(), "{}", metrics());

    // A reload (a changed Corefile, SIGUSR1) withdraws every entry: with the sockets still
    // blocked nothing answers; unblocked, a hit publishes again.
    let text = std::fs::read_to_string(&setup.corefile).unwrap();
    std::fs::write(&setup.corefile, text.replace("9984 30 1", "9984 29 1")).unwrap();
    send_signal(setup.shardns.pid(), "USR1").unwrap();
    let withdrawn = wait_for(Duration::from_secs(5), || {
        (family_sum(&metrics(), "shardns_fastpath_entries") == 0).then_some(())
    });
    assert!(withdrawn.is_some(), "{}", metrics());
    let (_, reply) = ask(&pod, "cached.fastpath.test.", false, SILENCE);
    assert_eq!(reply, None, "answered from a withdrawn entry");
    setup
        .node
        .exec(
            "iptables",
            &["-D", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
        )
        .unwrap();
    for _ in 0..2 {
        assert!(ask(&pod, "cached.fastpath.test.", false, REPLY).1.is_some());
    }
    let republished = wait_for(Duration::from_secs(3), || {
        (family_sum(&metrics(), "shardns_fastpath_entries") == 1).then_some(())
    });
    assert!(republished.is_some(), "{}", metrics());
}

/// hostNetwork clients query through `lo`: with `fastpath lo`, a name hit from the
/// node itself is answered by the program on `lo` (the reply is redirected to `lo`'s egress
/// and comes back in to the client, passing the program as a packet to no served port) while
/// the socket path is blocked.
#[test]
fn host_network_clients_are_answered_on_lo() {
    let Some(setup) = start_with("lo", "lo veth-node*", false) else {
        return;
    };
    let server = SocketAddr::new(IpAddr::V4(LOCAL_IP), 53);
    let host = setup
        .node
        .run(|inside| UdpClient::inside(inside, server).unwrap());
    for _ in 0..3 {
        assert!(
            ask(&host, "cached.fastpath.test.", false, REPLY)
                .1
                .is_some()
        );
    }
    wait_published(&setup.node, 1);
    block_sockets(&setup.node);
    let (id, reply) = ask(&host, "CACHED.fastpath.test.", false, REPLY);
    let reply = reply.expect("answered on lo with the socket path blocked");
    assert_eq!(header_of(&reply).unwrap().id, id);
    assert_eq!(&reply[13..19], b"CACHED");
    assert_eq!(addresses(&reply), ["192.0.2.1"]);
    // The map is one for every interface: the pod is answered from the same entry.
    let pod = client(&setup.pod);
    let (_, reply) = ask(&pod, "cached.fastpath.test.", false, REPLY);
    assert_eq!(
        addresses(&reply.expect("answered on the veth")),
        ["192.0.2.1"]
    );
}

/// Over IPv6 (the program computes the whole UDP checksum, which the pod's stack verifies):
/// a name hit by the pod over IPv6 is answered by the program with the socket path
/// blocked (ip6tables), byte for byte the socket path's answer but for the ID and TTLs.
#[test]
fn ipv6_clients_are_answered_as_the_socket_path_answers() {
    if skip_reason(&["ip6tables"]).is_some() {
        eprintln!("skipped: no ip6tables");
        return;
    }
    let Some(setup) = start_with("v6", "veth-node*", true) else {
        return;
    };
    let server: SocketAddr = format!("[{LOCAL_IP6}]:53").parse().unwrap();
    let pod = setup
        .pod
        .run(|inside| UdpClient::inside(inside, server).unwrap());
    let mut socket = None;
    for _ in 0..3 {
        socket = ask(&pod, "MuLtI.fastpath.test.", true, REPLY).1;
    }
    let socket = socket.expect("answered over IPv6 by the socket path");
    wait_published(&setup.node, 1);
    setup
        .node
        .exec(
            "ip6tables",
            &["-I", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
        )
        .unwrap();
    let (id, reply) = ask(&pod, "MuLtI.fastpath.test.", true, REPLY);
    let reply = reply.expect("the program answers over IPv6 with the socket path blocked");
    assert_eq!(header_of(&reply).unwrap().id, id);
    let ((got, _), (want, _)) = (without_ttls(&reply), without_ttls(&socket));
    assert_eq!(got, want);
    assert_eq!(addresses(&reply).len(), 3);
}

/// An upgrade with the fast path on: a successor started on the same hand-off socket takes
/// the sockets and the cache, attaches its own program beside its predecessor's (another
/// shardns's program is no CNI's), and the predecessor detaches as it leaves. A pod asking
/// all along loses no query; afterwards the successor's own entries answer with the socket
/// path blocked.
#[test]
fn an_upgrade_loses_no_query_and_the_successor_takes_over_the_fast_path() {
    let Some(mut setup) = start("upgrade") else {
        return;
    };
    let pod = client(&setup.pod);
    for _ in 0..3 {
        assert!(ask(&pod, "cached.fastpath.test.", false, REPLY).1.is_some());
    }
    wait_published(&setup.node, 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let stop = std::sync::Arc::clone(&stop);
        let pod = client(&setup.pod);
        std::thread::spawn(move || {
            let (mut sent, mut answered) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                if ask(&pod, "cached.fastpath.test.", false, REPLY).1.is_some() {
                    answered += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (sent, answered)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let successor =
        NodeCache::start(&setup.node, &setup.args, &[], &setup.dir.join("log2")).unwrap();
    let status = setup.shardns.wait(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "{}", setup.shardns.log_text());
    let old_log = setup.shardns.log_text();
    assert!(
        old_log.contains("fastpath: detached from 1 interfaces"),
        "{old_log}"
    );
    let new_log = successor.log_text();
    assert!(new_log.contains("taking over from process"), "{new_log}");
    assert!(
        new_log.contains("fastpath: attached to veth-node"),
        "{new_log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, answered) = asking.join().unwrap();
    assert!(sent > 50, "the pod asked all along: {sent}");
    assert_eq!(answered, sent, "every query answered through the upgrade");
    // The successor's own entries: published by its shards, answered with the sockets
    // blocked.
    for _ in 0..2 {
        assert!(ask(&pod, "cached.fastpath.test.", false, REPLY).1.is_some());
    }
    wait_published(&setup.node, 1);
    block_sockets(&setup.node);
    let (_, reply) = ask(&pod, "CACHED.fastpath.test.", false, REPLY);
    assert_eq!(
        addresses(&reply.expect("the successor's program answers")),
        ["192.0.2.1"]
    );
    let mut successor = successor;
    assert!(
        successor
            .stop("TERM", Duration::from_secs(10))
            .unwrap()
            .success()
    );
}

/// A shardns killed on a kernel before 6.6 leaves its tc filter, which goes on answering from
/// a map nobody updates. Stood for here by a loader attached through netlink and never
/// dropped, answering a wrong address. A shardns starting cold (no predecessor to hand over)
/// removes it before attaching its own: afterwards the answer is the real one and no
/// filter of the program is left on the interface.
#[test]
fn a_cold_start_removes_the_filter_a_killed_shardns_left() {
    use shardns_fastpath::{Answer, AnswerKey, Fastpath, Lifetime, QueryBits};
    if shardns_fastpath::OBJECT.is_none() {
        eprintln!("skipped: built without the fast path's program");
        return;
    }
    let left_behind = |node: &Namespace| {
        let mut killed = Fastpath::load().unwrap();
        node.run(|_| killed.attach_netlink("veth-node")).unwrap();
        killed
            .serve(SocketAddr::new(IpAddr::V4(LOCAL_IP), 53), 0)
            .unwrap();
        // A stale answer: 192.0.2.250 where Unbound says 192.0.2.1.
        let mut stale = hickory_proto::op::Message::new();
        stale
            .set_message_type(hickory_proto::op::MessageType::Response)
            .add_query(hickory_proto::op::Query::query(
                "cached.fastpath.test.".parse().unwrap(),
                RecordType::A,
            ))
            .add_answer(hickory_proto::rr::Record::from_rdata(
                "cached.fastpath.test.".parse().unwrap(),
                300,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 250)),
            ));
        let bytes = stale.to_vec().unwrap();
        let key = AnswerKey::new(
            0,
            b"\x06cached\x08fastpath\x04test\x00",
            1,
            QueryBits::default(),
        )
        .unwrap();
        killed
            .insert(
                &key,
                &Answer::new(&bytes, Lifetime::from_now(300).unwrap()).unwrap(),
            )
            .unwrap();
        // Killed: never dropped, its filter stays.
        std::mem::forget(killed);
        let filters = node.run(|_| Fastpath::other_programs("veth-node")).unwrap();
        assert_eq!(filters, ["shardns_fastpath"]);
    };
    let Some(setup) = start_after("leftover", left_behind) else {
        return;
    };
    let log = setup.shardns.log_text();
    assert!(
        log.contains("removed the filter a killed shardns left on veth-node"),
        "{log}"
    );
    let filters = setup
        .node
        .run(|_| Fastpath::other_programs("veth-node"))
        .unwrap();
    assert!(filters.is_empty(), "{filters:?}");
    let pod = client(&setup.pod);
    let (_, reply) = ask(&pod, "cached.fastpath.test.", false, REPLY);
    assert_eq!(addresses(&reply.expect("answered")), ["192.0.2.1"]);
}
