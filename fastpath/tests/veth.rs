//! The fast path on a veth pair between a "pod" and a "node" network namespace (root only,
//! built with the `bpf` feature; skipped with the reason otherwise):
//!
//! - namespace `node`: the node-local IP 169.254.20.10 on `lo`, `veth-node` 10.0.0.1/24 with
//!   the fast path on its ingress, and a real Unbound on 169.254.20.10:53 (the socket path);
//! - namespace `pod`: `veth-pod` 10.0.0.2/24, default route via the node.
//!
//! `iptables -I INPUT -p udp --dport 53 -j DROP` in the node blocks the socket path, so what
//! still answers is the program.

#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, ensure};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use shardns_e2e::client::{
    UdpClient, header_of, query_message, query_message_plain, wire_question,
};
use shardns_e2e::netns::{Namespace, skip_reason};
use shardns_e2e::node::NamespaceUnbound;
use shardns_e2e::process::run_with_deadline;
use shardns_fastpath::{
    Answer, AnswerKey, Fastpath, Lifetime, OBJECT, QueryBits, Stats, boot_time_ns,
};

const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
/// The server block number the test gives LOCAL_IP:53.
const BLOCK: u8 = 7;
const NODE_VETH_IP: &str = "10.0.0.1";
const ZONE: &str = "fastpath.test.";
/// What Unbound (the socket path) answers for CACHED; the map's entries say 192.0.2.1/2.
const UNBOUND_RECORDS: &[&str] = &[
    "cached.fastpath.test. 30 IN A 192.0.2.99",
    "other.fastpath.test. 30 IN A 192.0.2.98",
    "multi.fastpath.test. 30 IN A 192.0.2.11",
    "multi.fastpath.test. 30 IN A 192.0.2.12",
    "multi.fastpath.test. 30 IN A 192.0.2.13",
    "alias.fastpath.test. 30 IN CNAME cached.fastpath.test.",
];
const CACHED: &str = "cached.fastpath.test.";
const CACHED_MIXED: &str = "CaChEd.FastPATH.tesT.";
/// How long a query that must go unanswered is given (answers take well under 1 ms here).
const SILENCE: Duration = Duration::from_millis(300);
const REPLY: Duration = Duration::from_secs(2);

/// The two namespaces, the veth pair, Unbound, and the loaded (not yet attached) program.
struct Node {
    node: Namespace,
    pod: Namespace,
    _unbound: NamespaceUnbound,
    fastpath: Fastpath,
}

impl Node {
    /// The topology, or `None` (with the reason printed) where it cannot be built.
    fn start(label: &str) -> Option<Node> {
        if OBJECT.is_none() {
            eprintln!(
                "skipped: built without the bpf feature (cargo test -p shardns-fastpath --features bpf)"
            );
            return None;
        }
        if let Some(reason) = skip_reason(&["iptables", "/usr/bin/dig", "/usr/sbin/unbound"]) {
            eprintln!("skipped: {reason}");
            return None;
        }
        let node = Namespace::create(&format!("fp-node-{label}")).unwrap();
        let pod = Namespace::create(&format!("fp-pod-{label}")).unwrap();
        let veth = std::process::Command::new("ip")
            .args(["link", "add", "veth-node", "netns", node.name()])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                "veth-pod",
                "netns",
                pod.name(),
            ])
            .status()
            .is_ok_and(|status| status.success());
        if !veth {
            eprintln!("skipped: this kernel has no veth link type");
            return None;
        }
        node.ip(&["addr", "add", &format!("{LOCAL_IP}/32"), "dev", "lo"])
            .unwrap();
        node.ip(&["addr", "add", "10.0.0.1/24", "dev", "veth-node"])
            .unwrap();
        node.ip(&["link", "set", "veth-node", "up"]).unwrap();
        pod.ip(&["addr", "add", "10.0.0.2/24", "dev", "veth-pod"])
            .unwrap();
        pod.ip(&["link", "set", "veth-pod", "up"]).unwrap();
        pod.ip(&["route", "add", "default", "via", NODE_VETH_IP])
            .unwrap();
        let unbound = NamespaceUnbound::start(
            &node,
            SocketAddr::new(IpAddr::V4(LOCAL_IP), 53),
            true,
            ZONE,
            UNBOUND_RECORDS,
        )
        .unwrap();
        let mut fastpath = Fastpath::load().expect("loading the program");
        fastpath
            .serve(SocketAddrV4::new(LOCAL_IP, 53), BLOCK)
            .unwrap();
        Some(Node {
            node,
            pod,
            _unbound: unbound,
            fastpath,
        })
    }

    fn attach(&mut self) {
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.attach("veth-node"))
            .expect("attaching to veth-node");
    }

    /// Attaches as on kernels before 6.6 (clsact and a netlink filter) with `netlink`.
    fn attach_by(&mut self, netlink: bool) {
        if !netlink {
            return self.attach();
        }
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.attach_netlink("veth-node"))
            .expect("attaching to veth-node through netlink");
    }

    fn detach(&mut self) {
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.detach("veth-node"))
            .expect("detaching from veth-node");
    }

    /// Blocks (or unblocks) the socket path: UDP port 53 dropped at the node's INPUT.
    fn block_sockets(&self, blocked: bool) {
        let verb = if blocked { "-I" } else { "-D" };
        self.node
            .exec(
                "iptables",
                &[verb, "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
            )
            .unwrap();
    }

    /// Sends `query` from the pod to `server`; the reply, or `None` within `timeout`.
    fn ask_at(&self, server: SocketAddr, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        self.pod.run(|inside| {
            UdpClient::inside(inside, server)
                .and_then(|client| client.exchange_raw(query, timeout))
                .unwrap()
        })
    }

    fn ask(&self, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        self.ask_at(SocketAddr::new(IpAddr::V4(LOCAL_IP), 53), query, timeout)
    }

    /// `dig` from the pod with `options`; its output, or an error when nothing answered.
    fn dig(&self, options: &[&str], name: &str) -> Result<String> {
        let mut command = self.pod.command("dig");
        command
            .args(["-r", &format!("@{LOCAL_IP}"), "+tries=1", "+time=1"])
            .args(options)
            .args([name, "A"]);
        run_with_deadline(&mut command, Duration::from_secs(5), "dig")
    }
}

/// A plain query (no OPT record) in wire form, RD set, for `name` as written.
fn plain(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    in_case_of(name, query_message_plain(name, rtype, id).to_vec().unwrap())
}

/// An EDNS query (OPT advertising 1232, no options) in wire form, for `name` as written.
fn edns(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    in_case_of(name, query_message(name, rtype, id).to_vec().unwrap())
}

/// `query` with its question's name in `name`'s case: hickory-proto writes names lower-cased.
fn in_case_of(name: &str, mut query: Vec<u8>) -> Vec<u8> {
    let wire = wire_name(name);
    assert!(query[12..12 + wire.len()].eq_ignore_ascii_case(&wire));
    query[12..12 + wire.len()].copy_from_slice(&wire);
    query
}

/// A wire name from its text (a fully qualified name without escapes), in its case.
fn wire_name(name: &str) -> Vec<u8> {
    let mut wire = Vec::new();
    for label in name.split('.').filter(|label| !label.is_empty()) {
        wire.push(u8::try_from(label.len()).unwrap());
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    wire
}

/// The reply a cache would give to a plain query for `name` A: two A records (192.0.2.1 and
/// .2, TTL 300), built with hickory-proto; RA set, RD left to the client.
fn two_addresses(name: &str) -> Vec<u8> {
    addresses_of(name, &[1, 2])
}

/// A reply for `name` A with a record 192.0.2.N (TTL 300) for each N of `lasts`.
fn addresses_of(name: &str, lasts: &[u8]) -> Vec<u8> {
    let owner = Name::from_str(name).unwrap();
    let mut message = Message::new();
    message
        .set_id(0)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_available(true)
        .add_query(Query::query(owner.clone(), RecordType::A));
    for &last in lasts {
        message.add_answer(Record::from_rdata(
            owner.clone(),
            300,
            RData::A(A::new(192, 0, 2, last)),
        ));
    }
    message.to_vec().unwrap()
}

/// [`two_addresses`] with a 600-byte TXT record in the additional section: over the 512
/// bytes of a plain query.
fn with_a_big_text(name: &str) -> Vec<u8> {
    let mut message = Message::from_vec(&two_addresses(name)).unwrap();
    let text = TXT::new(vec!["x".repeat(200); 3]);
    message.add_additional(Record::from_rdata(
        Name::from_str(name).unwrap(),
        300,
        RData::TXT(text),
    ));
    let bytes = message.to_vec().unwrap();
    assert!(bytes.len() > 600);
    bytes
}

fn plain_key(name: &str, rtype: RecordType) -> AnswerKey {
    AnswerKey::new(BLOCK, &wire_name(name), rtype.into(), QueryBits::default()).unwrap()
}

fn addresses(reply: &[u8]) -> Vec<String> {
    let message = Message::from_vec(reply).unwrap();
    message
        .answers()
        .iter()
        .map(|record| record.data().to_string())
        .collect()
}

/// Checks that `reply` answers `query` from the map's entry for CACHED (two_addresses).
fn check_fast_reply(query: &[u8], reply: &[u8]) -> Result<()> {
    let (asked, got) = (header_of(query).unwrap(), header_of(reply).unwrap());
    ensure!(
        got.id == asked.id,
        "ID {:#06x}, asked {:#06x}",
        got.id,
        asked.id
    );
    ensure!(got.qr && got.ra && got.rcode == 0, "flags {got:?}");
    ensure!(
        got.rd == asked.rd,
        "RD {} for a query with RD {}",
        got.rd,
        asked.rd
    );
    let cd = |packet: &[u8]| packet[3] & 0x10 != 0;
    ensure!(
        cd(reply) == cd(query),
        "CD {} for CD {}",
        cd(reply),
        cd(query)
    );
    ensure!(
        wire_question(reply) == wire_question(query),
        "question {:?}, asked {:?}",
        wire_question(reply),
        wire_question(query)
    );
    ensure!((got.qdcount, got.ancount, got.nscount, got.arcount) == (1, 2, 0, 0));
    ensure!(
        addresses(reply) == ["192.0.2.1", "192.0.2.2"],
        "answers {:?}",
        addresses(reply)
    );
    Ok(())
}

#[test]
fn a_hit_is_answered_in_the_kernel_with_the_clients_id_and_case() {
    let Some(mut node) = Node::start("hit") else {
        return;
    };
    node.attach();
    node.fastpath
        .insert(
            &plain_key(CACHED, RecordType::A),
            &Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap(),
        )
        .unwrap();
    // dig sets AD by default: its plain query's key has the AD bit.
    let dig_key = AnswerKey::new(
        BLOCK,
        &wire_name(CACHED),
        RecordType::A.into(),
        QueryBits {
            authentic_data: true,
            ..QueryBits::default()
        },
    )
    .unwrap();
    let dig_answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&dig_key, &dig_answer).unwrap();
    node.block_sockets(true);

    for (id, name) in [
        (0x1234, CACHED_MIXED),
        (0xbeef, CACHED),
        (7, "CACHED.FASTPATH.TEST."),
    ] {
        let query = plain(name, RecordType::A, id);
        assert_eq!(&query[12..12 + name.len() + 1], &wire_name(name)[..]);
        let reply = node
            .ask(&query, REPLY)
            .unwrap_or_else(|| panic!("no answer for {name} with the socket path blocked"));
        check_fast_reply(&query, &reply).unwrap();
    }
    // RD and CD come from the query.
    let mut query = query_message_plain(CACHED_MIXED, RecordType::A, 99);
    query.set_recursion_desired(false);
    let query = in_case_of(CACHED_MIXED, query.to_vec().unwrap());
    let reply = node.ask(&query, REPLY).expect("no answer for RD=0");
    check_fast_reply(&query, &reply).unwrap();
    // CD is part of the key: no answer until there is an entry with it.
    let mut query = query_message_plain(CACHED_MIXED, RecordType::A, 100);
    query.set_checking_disabled(true);
    let query = in_case_of(CACHED_MIXED, query.to_vec().unwrap());
    assert_eq!(
        node.ask(&query, SILENCE),
        None,
        "CD=1 answered from a CD=0 entry"
    );
    let cd_key = AnswerKey::new(
        BLOCK,
        &wire_name(CACHED),
        RecordType::A.into(),
        QueryBits {
            checking_disabled: true,
            ..QueryBits::default()
        },
    )
    .unwrap();
    node.fastpath.insert(&cd_key, &dig_answer).unwrap();
    let reply = node.ask(&query, REPLY).expect("no answer for CD=1");
    check_fast_reply(&query, &reply).unwrap();

    let output = node.dig(&["+noedns"], "cAcHeD.fastpath.test").unwrap();
    assert!(output.contains("status: NOERROR"), "{output}");
    assert!(
        output.contains("cAcHeD.fastpath.test.\t300\tIN\tA\t192.0.2.1")
            && output.contains("192.0.2.2"),
        "{output}"
    );
    // dig's AD bit is part of the key: without the AD entry, nothing answers it.
    assert!(node.fastpath.remove(&dig_key).unwrap());
    let unanswered = node.dig(&["+noedns"], "cAcHeD.fastpath.test");
    assert!(unanswered.is_err(), "AD=1 answered: {unanswered:?}");
}

#[test]
fn misses_and_removed_entries_are_left_to_the_socket_path() {
    let Some(mut node) = Node::start("miss") else {
        return;
    };
    node.attach();
    let key = plain_key(CACHED, RecordType::A);
    let answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&key, &answer).unwrap();
    node.block_sockets(true);
    let hit = plain(CACHED_MIXED, RecordType::A, 1);
    assert!(node.ask(&hit, REPLY).is_some(), "the entry does not answer");

    let unanswered = [
        (
            "a name not in the map",
            plain("other.fastpath.test.", RecordType::A, 2),
        ),
        ("another type", plain(CACHED, RecordType::AAAA, 3)),
        (
            "an EDNS query (no entry for its key)",
            edns(CACHED, RecordType::A, 4),
        ),
    ];
    for (what, query) in &unanswered {
        assert_eq!(node.ask(query, SILENCE), None, "{what} was answered");
    }
    // EDNS and DO are part of the key.
    let edns_bits = QueryBits {
        edns: true,
        ..QueryBits::default()
    };
    let edns_key =
        AnswerKey::new(BLOCK, &wire_name(CACHED), RecordType::A.into(), edns_bits).unwrap();
    node.fastpath.insert(&edns_key, &answer).unwrap();
    assert!(node.ask(&edns(CACHED, RecordType::A, 5), REPLY).is_some());
    let mut dnssec_ok = query_message(CACHED, RecordType::A, 6);
    dnssec_ok
        .extensions_mut()
        .as_mut()
        .unwrap()
        .set_dnssec_ok(true);
    let dnssec_ok = dnssec_ok.to_vec().unwrap();
    assert_eq!(
        node.ask(&dnssec_ok, SILENCE),
        None,
        "DO=1 answered from a DO=0 entry"
    );
    node.fastpath.remove(&edns_key).unwrap();
    // An address the program does not serve (the veth's own), and a port, with the entry
    // present (UDP to 5353 dropped too, so no port unreachable comes back).
    let other_address = SocketAddr::new(IpAddr::V4(NODE_VETH_IP.parse().unwrap()), 53);
    assert_eq!(node.ask_at(other_address, &hit, SILENCE), None);
    let drop_5353 = ["INPUT", "-p", "udp", "--dport", "5353", "-j", "DROP"];
    node.node
        .exec("iptables", &[&["-I"], &drop_5353[..]].concat())
        .unwrap();
    let other_port = SocketAddr::new(IpAddr::V4(LOCAL_IP), 5353);
    assert_eq!(node.ask_at(other_port, &hit, SILENCE), None);
    // Two server blocks: the veth's address served as another block, with its own
    // answer for the same name; each address answers from its block's entry.
    let veth_53 = SocketAddrV4::new(NODE_VETH_IP.parse().unwrap(), 53);
    node.fastpath.serve(veth_53, BLOCK + 1).unwrap();
    let other_block = AnswerKey::new(
        BLOCK + 1,
        &wire_name(CACHED),
        RecordType::A.into(),
        QueryBits::default(),
    )
    .unwrap();
    let other_answer = addresses_of(CACHED, &[77]);
    let other_answer = Answer::new(&other_answer, Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&other_block, &other_answer).unwrap();
    let reply = node.ask_at(SocketAddr::V4(veth_53), &hit, REPLY);
    assert_eq!(
        addresses(&reply.expect("block 2 does not answer")),
        ["192.0.2.77"]
    );
    let reply = node.ask(&hit, REPLY).expect("block 1 does not answer");
    assert_eq!(addresses(&reply), ["192.0.2.1", "192.0.2.2"]);
    node.fastpath.unserve(veth_53).unwrap();
    assert_eq!(node.ask_at(SocketAddr::V4(veth_53), &hit, SILENCE), None);

    // An entry whose answer is over the 512-byte limit of a plain query: the socket path
    // truncates, so the program passes.
    let big = with_a_big_text(CACHED);
    node.fastpath
        .insert(
            &key,
            &Answer::new(&big, Lifetime::from_now(300).unwrap()).unwrap(),
        )
        .unwrap();
    assert_eq!(
        node.ask(&hit, SILENCE),
        None,
        "an oversized answer was sent"
    );

    // An expired entry passes.
    let expired = Lifetime {
        stored_ns: boot_time_ns().unwrap() - 10_000_000_000,
        ttl: 5,
        keep_ttls: false,
    };
    let expired = Answer::new(&two_addresses(CACHED), expired).unwrap();
    node.fastpath.insert(&key, &expired).unwrap();
    assert_eq!(node.ask(&hit, SILENCE), None, "an expired entry answered");

    node.fastpath.insert(&key, &answer).unwrap();
    assert!(
        node.ask(&hit, REPLY).is_some(),
        "the entry put back does not answer"
    );
    assert!(node.fastpath.remove(&key).unwrap());
    assert!(!node.fastpath.remove(&key).unwrap());
    assert_eq!(node.ask(&hit, SILENCE), None, "a removed entry answered");

    // Unblocked, the socket path (Unbound) answers what the program passed.
    node.block_sockets(false);
    let reply = node
        .ask(&hit, REPLY)
        .expect("the socket path does not answer");
    assert_eq!(addresses(&reply), ["192.0.2.99"]);
}

#[test]
fn detaching_restores_the_socket_path() {
    detach_and_drop("detach", false);
}

/// As [`detaching_restores_the_socket_path`], attached as on kernels before 6.6: the
/// `clsact` qdisc and a netlink filter (what aya does there).
#[test]
fn detaching_restores_the_socket_path_through_netlink() {
    detach_and_drop("detach-nl", true);
}

fn detach_and_drop(label: &str, netlink: bool) {
    let Some(mut node) = Node::start(label) else {
        return;
    };
    let key = plain_key(CACHED, RecordType::A);
    let answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&key, &answer).unwrap();
    let query = plain(CACHED_MIXED, RecordType::A, 5);
    let asked = |node: &Node| addresses(&node.ask(&query, REPLY).expect("no answer"));

    assert_eq!(asked(&node), ["192.0.2.99"], "before attaching: Unbound");
    node.attach_by(netlink);
    assert_eq!(
        node.fastpath.interfaces().collect::<Vec<_>>(),
        ["veth-node"]
    );
    assert_eq!(
        asked(&node),
        ["192.0.2.1", "192.0.2.2"],
        "attached: the map"
    );
    node.detach();
    assert_eq!(node.fastpath.interfaces().count(), 0);
    assert_eq!(asked(&node), ["192.0.2.99"], "detached: Unbound again");
    node.block_sockets(true);
    assert_eq!(
        node.ask(&query, SILENCE),
        None,
        "detached, blocked: nothing"
    );
    node.block_sockets(false);

    // Dropping the loader detaches too.
    node.attach_by(netlink);
    assert_eq!(
        asked(&node),
        ["192.0.2.1", "192.0.2.2"],
        "attached again: the map"
    );
    let Node {
        node: node_ns,
        pod,
        _unbound,
        fastpath,
    } = node;
    drop(fastpath);
    let after = Node {
        node: node_ns,
        pod,
        _unbound,
        fastpath: Fastpath::load().unwrap(),
    };
    assert_eq!(asked(&after), ["192.0.2.99"], "after the drop: Unbound");
}

/// `reply` as the socket path would send it to `query`: the query's ID and question bytes.
fn rendered_for(reply: &[u8], query: &[u8]) -> Vec<u8> {
    let question = wire_question(query).unwrap();
    let mut out = reply.to_vec();
    out[..2].copy_from_slice(&query[..2]);
    out[12..12 + question.len()].copy_from_slice(question);
    out
}

/// A reply with each section's records sorted: Unbound rotates the order of an RRset's
/// records from one reply to the next (`rrset-roundrobin`).
fn sorted_sections(reply: &[u8]) -> Message {
    let mut message = Message::from_vec(reply).unwrap();
    let mut answers = message.take_answers();
    answers.sort_by_key(|record| record.to_bytes().unwrap());
    message.insert_answers(answers);
    message
}

/// The same query answered by Unbound (the socket path) and by the program from an entry
/// made of Unbound's own reply to an earlier query: the program's reply is that reply byte
/// for byte with the client's ID and question, and says what Unbound says to the query
/// itself (the same header, question and records; the order of an RRset's records aside),
/// for mixed case, with and without EDNS, several answer shapes.
#[test]
fn the_answer_is_the_socket_paths() {
    let Some(mut node) = Node::start("diff") else {
        return;
    };
    node.attach();
    let cases: &[(&str, RecordType, bool)] = &[
        ("MuLtI.fastpath.TEST.", RecordType::A, false),
        ("multi.fastpath.test.", RecordType::A, true),
        ("AliaS.FastPath.Test.", RecordType::A, false),
        ("alias.fastpath.test.", RecordType::A, true),
        ("cached.FASTPATH.test.", RecordType::AAAA, false), // NODATA: SOA in authority
        ("NoSuch.fastpath.test.", RecordType::A, true),     // NXDOMAIN
        ("other.fastpath.test.", RecordType::TXT, true),
    ];
    for (index, &(name, rtype, with_edns)) in cases.iter().enumerate() {
        let build = if with_edns { edns } else { plain };
        let id = 0x4000 + index as u16;
        // Warm: the socket path's reply to a lower-cased query with another ID.
        let warm_query = build(&name.to_ascii_lowercase(), rtype, id ^ 0xff);
        let warm = node
            .ask(&warm_query, REPLY)
            .expect("Unbound does not answer");
        let bits = QueryBits {
            edns: with_edns,
            ..QueryBits::default()
        };
        let key = AnswerKey::new(BLOCK, &wire_name(name), rtype.into(), bits).unwrap();
        // The reference: the socket path's reply to the query itself.
        let query = build(name, rtype, id);
        let socket = node.ask(&query, REPLY).expect("Unbound does not answer");
        // Unbound's TTLs as they are (local data does not decay): `keepttl`.
        let lifetime = Lifetime {
            keep_ttls: true,
            ..Lifetime::from_now(60).unwrap()
        };
        node.fastpath
            .insert(&key, &Answer::new(&warm, lifetime).unwrap())
            .unwrap();
        node.block_sockets(true);
        let fast = node.ask(&query, REPLY);
        node.block_sockets(false);
        let fast = fast.unwrap_or_else(|| panic!("{name} {rtype}: no answer from the program"));
        let what = format!("{name} {rtype} (EDNS {with_edns})");
        assert_eq!(
            fast,
            rendered_for(&warm, &query),
            "{what}: not the stored reply"
        );
        assert_eq!(
            sorted_sections(&fast),
            sorted_sections(&socket),
            "{what}: not what the socket path says"
        );
        assert_eq!(
            wire_question(&fast),
            wire_question(&query),
            "{what}: question"
        );
        if name.starts_with("NoSuch") {
            assert_eq!(
                Message::from_vec(&fast).unwrap().response_code(),
                ResponseCode::NXDomain
            );
        }
        node.fastpath.remove(&key).unwrap();
    }
}

/// The TTLs of a reply's answer records.
fn answer_ttls(reply: &[u8]) -> Vec<u32> {
    let message = Message::from_vec(reply).unwrap();
    message.answers().iter().map(Record::ttl).collect()
}

#[test]
fn ttls_are_the_lifetime_left_and_the_counters_move() {
    let Some(mut node) = Node::start("ttl") else {
        return;
    };
    node.attach();
    node.block_sockets(true);
    let before = node.fastpath.stats().unwrap();
    let key = plain_key(CACHED, RecordType::A);
    // Stored 10.5 s ago for 120 s: every TTL says 110 (109 if the test took over 0.5 s).
    let lifetime = Lifetime {
        stored_ns: boot_time_ns().unwrap() - 10_500_000_000,
        ttl: 120,
        keep_ttls: false,
    };
    node.fastpath
        .insert(
            &key,
            &Answer::new(&two_addresses(CACHED), lifetime).unwrap(),
        )
        .unwrap();
    let query = plain(CACHED_MIXED, RecordType::A, 11);
    let reply = node.ask(&query, REPLY).expect("no answer");
    check_fast_reply(&query, &reply).unwrap();
    let ttls = answer_ttls(&reply);
    assert!(
        ttls == [110, 110] || ttls == [109, 109],
        "TTLs {ttls:?}, not 120 less 10 s"
    );
    // keepttl: the stored TTLs (300).
    let kept = Lifetime {
        keep_ttls: true,
        ..lifetime
    };
    node.fastpath
        .insert(&key, &Answer::new(&two_addresses(CACHED), kept).unwrap())
        .unwrap();
    let reply = node.ask(&query, REPLY).expect("no answer");
    assert_eq!(answer_ttls(&reply), [300, 300]);

    // One of each: a miss, an expired entry, an answer too big for a plain query.
    assert_eq!(
        node.ask(&plain("other.fastpath.test.", RecordType::A, 12), SILENCE),
        None
    );
    let expired = Lifetime {
        stored_ns: boot_time_ns().unwrap() - 10_000_000_000,
        ttl: 5,
        keep_ttls: false,
    };
    node.fastpath
        .insert(&key, &Answer::new(&two_addresses(CACHED), expired).unwrap())
        .unwrap();
    assert_eq!(node.ask(&query, SILENCE), None);
    let big = Answer::new(&with_a_big_text(CACHED), Lifetime::from_now(60).unwrap()).unwrap();
    node.fastpath.insert(&key, &big).unwrap();
    assert_eq!(node.ask(&query, SILENCE), None);

    let after = node.fastpath.stats().unwrap();
    let moved = Stats {
        hits: after.hits - before.hits,
        misses: after.misses - before.misses,
        expired: after.expired - before.expired,
        too_big: after.too_big - before.too_big,
        errors: after.errors - before.errors,
    };
    assert_eq!(
        moved,
        Stats {
            hits: 2,
            misses: 1,
            expired: 1,
            too_big: 1,
            errors: 0,
        }
    );
}

#[test]
fn an_interface_with_another_program_is_refused_unless_told() {
    let Some(mut node) = Node::start("cni") else {
        return;
    };
    let programs = node
        .node
        .run(|_| Fastpath::tcx_programs("veth-node"))
        .unwrap();
    assert!(programs.is_empty(), "{programs:?}");
    node.attach();
    // Another loader (standing for a CNI's program) finds ours there.
    let mut other = Fastpath::load().unwrap();
    let refused = node.node.run(|_| other.attach("veth-node"));
    match refused {
        Err(shardns_fastpath::Error::Occupied {
            interface,
            programs,
        }) => {
            assert_eq!(interface, "veth-node");
            // The kernel keeps 15 bytes of a program's name.
            assert_eq!(programs, ["shardns_fastpat"]);
        }
        other => panic!("attached beside another program: {other:?}"),
    }
    assert_eq!(other.interfaces().count(), 0);
    node.node
        .run(|_| other.attach_anyway("veth-node"))
        .expect("attach_anyway");
    assert_eq!(other.interfaces().collect::<Vec<_>>(), ["veth-node"]);
    let programs = node
        .node
        .run(|_| Fastpath::tcx_programs("veth-node"))
        .unwrap();
    assert_eq!(programs.len(), 2, "{programs:?}");
}
