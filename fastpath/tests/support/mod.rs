//! The topology of the fast path's tests: a "pod" and a "node" network namespace joined by a
//! veth pair (root only, built with the `bpf` feature; `Node::start` prints why not and gives
//! `None` otherwise):
//!
//! - namespace `node`: the node-local IP 169.254.20.10 on `lo`, `veth-node` 10.0.0.1/24 (the
//!   fast path goes on its ingress), and a real Unbound on 169.254.20.10:53 (the socket path);
//! - namespace `pod`: `veth-pod` 10.0.0.2/24, default route via the node.
//!
//! IPv6 beside it (addresses without DAD): the node has LOCAL_IP6 on `lo` and fd00:1::1/64 on
//! `veth-node`, the pod fd00:1::2/64 and a default route via the node; the program serves
//! [LOCAL_IP6]:53 as block 7 too. Unbound listens on IPv4 only.
//!
//! `iptables -I INPUT -p udp --dport 53 -j DROP` in the node blocks the socket path, so what
//! still answers is the program. Also: queries and replies built with hickory-proto, and the
//! checks of a reply from the map's entry.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, ensure};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use shardns_e2e::client::{
    UdpClient, header_of, query_message, query_message_plain, wire_question,
};
use shardns_e2e::netns::{Namespace, skip_reason};
use shardns_e2e::node::NamespaceUnbound;
use shardns_e2e::process::run_with_deadline;
use shardns_fastpath::{Answer, AnswerKey, Fastpath, Lifetime, OBJECT, QueryBits};

pub const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
/// The node-local IPv6 address (on the node's `lo`), served as block BLOCK too.
pub const LOCAL_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 0x10);
pub const NODE_VETH_IP6: &str = "fd00:1::1";
/// The server block number the test gives LOCAL_IP:53.
pub const BLOCK: u8 = 7;
pub const NODE_VETH_IP: &str = "10.0.0.1";
pub const ZONE: &str = "fastpath.test.";
/// What Unbound (the socket path) answers for CACHED; the map's entries say 192.0.2.1/2.
pub const UNBOUND_RECORDS: &[&str] = &[
    "cached.fastpath.test. 30 IN A 192.0.2.99",
    "other.fastpath.test. 30 IN A 192.0.2.98",
    "multi.fastpath.test. 30 IN A 192.0.2.11",
    "multi.fastpath.test. 30 IN A 192.0.2.12",
    "multi.fastpath.test. 30 IN A 192.0.2.13",
    "alias.fastpath.test. 30 IN CNAME cached.fastpath.test.",
];
pub const CACHED: &str = "cached.fastpath.test.";
pub const CACHED_MIXED: &str = "CaChEd.FastPATH.tesT.";
/// How long a query that must go unanswered is given (answers take well under 1 ms here).
pub const SILENCE: Duration = Duration::from_millis(300);
pub const REPLY: Duration = Duration::from_secs(2);

/// The two namespaces, the veth pair, Unbound, and the loaded (not yet attached) program.
pub struct Node {
    pub node: Namespace,
    pub pod: Namespace,
    pub _unbound: NamespaceUnbound,
    pub fastpath: Fastpath,
}

impl Node {
    /// The topology, or `None` (with the reason printed) where it cannot be built.
    pub fn start(label: &str) -> Option<Node> {
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
        if !node.link_pod("veth-node", &pod, 0).unwrap() {
            eprintln!("skipped: this kernel has no veth link type");
            return None;
        }
        node.ip(&["addr", "add", &format!("{LOCAL_IP}/32"), "dev", "lo"])
            .unwrap();
        node.ip(&[
            "addr",
            "add",
            &format!("{LOCAL_IP6}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .unwrap();
        node.ip(&["addr", "add", "fd00:1::1/64", "dev", "veth-node", "nodad"])
            .unwrap();
        pod.ip(&["addr", "add", "fd00:1::2/64", "dev", "veth-pod", "nodad"])
            .unwrap();
        pod.ip(&["-6", "route", "add", "default", "via", NODE_VETH_IP6])
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
        fastpath
            .serve(SocketAddrV6::new(LOCAL_IP6, 53, 0, 0), BLOCK)
            .unwrap();
        Some(Node {
            node,
            pod,
            _unbound: unbound,
            fastpath,
        })
    }

    pub fn attach(&mut self) {
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.attach("veth-node"))
            .expect("attaching to veth-node");
    }

    /// Attaches as on kernels before 6.6 (clsact and a netlink filter) with `netlink`.
    pub fn attach_by(&mut self, netlink: bool) {
        if !netlink {
            return self.attach();
        }
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.attach_netlink("veth-node"))
            .expect("attaching to veth-node through netlink");
    }

    pub fn detach(&mut self) {
        let fastpath = &mut self.fastpath;
        self.node
            .run(|_| fastpath.detach("veth-node"))
            .expect("detaching from veth-node");
    }

    /// Blocks (or unblocks) the socket path: UDP port 53 dropped at the node's INPUT.
    pub fn block_sockets(&self, blocked: bool) {
        let verb = if blocked { "-I" } else { "-D" };
        self.node
            .exec(
                "iptables",
                &[verb, "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"],
            )
            .unwrap();
    }

    /// Sends `query` from the pod to `server`; the reply, or `None` within `timeout`.
    pub fn ask_at(&self, server: SocketAddr, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        self.pod.run(|inside| {
            UdpClient::inside(inside, server)
                .and_then(|client| client.exchange_raw(query, timeout))
                .unwrap()
        })
    }

    pub fn ask(&self, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        self.ask_at(SocketAddr::new(IpAddr::V4(LOCAL_IP), 53), query, timeout)
    }

    /// Sends `query` from the pod to [LOCAL_IP6]:53; the reply, or `None` within `timeout`.
    pub fn ask6(&self, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        self.ask_at(SocketAddr::new(IpAddr::V6(LOCAL_IP6), 53), query, timeout)
    }

    /// `dig` from the pod with `options`; its output, or an error when nothing answered.
    pub fn dig(&self, options: &[&str], name: &str) -> Result<String> {
        let mut command = self.pod.command("dig");
        command
            .args(["-r", "+tries=1", "+time=1"])
            .args(options)
            .args([name, "A"]);
        if !options.iter().any(|option| option.starts_with('@')) {
            command.arg(format!("@{LOCAL_IP}"));
        }
        run_with_deadline(&mut command, Duration::from_secs(5), "dig")
    }
}

/// A plain query (no OPT record) in wire form, RD set, for `name` as written.
pub fn plain(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    in_case_of(name, query_message_plain(name, rtype, id).to_vec().unwrap())
}

/// An EDNS query (OPT advertising 1232, no options) in wire form, for `name` as written.
pub fn edns(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    in_case_of(name, query_message(name, rtype, id).to_vec().unwrap())
}

/// `query` (an EDNS query whose OPT record, with no option, ends it) with a COOKIE option
/// holding an 8-byte client cookie, as dig and BIND send.
pub fn with_cookie(mut query: Vec<u8>) -> Vec<u8> {
    let opt = query.len() - 11;
    assert_eq!(
        &query[opt..opt + 3],
        &[0, 0, 41],
        "no OPT record at the end"
    );
    assert_eq!(&query[opt + 9..], &[0, 0], "the OPT record has options");
    query[opt + 10] = 12;
    query.extend_from_slice(&[0, 10, 0, 8, 0xc0, 0x0c, 0x1e, 0x55, 0xa1, 0x7e, 0xd0, 0x0d]);
    query
}

/// `query` with its question's name in `name`'s case: hickory-proto writes names lower-cased.
pub fn in_case_of(name: &str, mut query: Vec<u8>) -> Vec<u8> {
    let wire = wire_name(name);
    assert!(query[12..12 + wire.len()].eq_ignore_ascii_case(&wire));
    query[12..12 + wire.len()].copy_from_slice(&wire);
    query
}

/// A wire name from its text (a fully qualified name without escapes), in its case.
pub fn wire_name(name: &str) -> Vec<u8> {
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
pub fn two_addresses(name: &str) -> Vec<u8> {
    addresses_of(name, &[1, 2])
}

/// A reply for `name` A with a record 192.0.2.N (TTL 300) for each N of `lasts`.
pub fn addresses_of(name: &str, lasts: &[u8]) -> Vec<u8> {
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

/// `response` with an OPT record (payload 1232, no DO), as the socket path answers EDNS.
pub fn with_opt(response: &[u8]) -> Vec<u8> {
    let mut message = Message::from_vec(response).unwrap();
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(0);
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// [`two_addresses`] with a 600-byte TXT record in the additional section: over the 512
/// bytes of a plain query.
pub fn with_a_big_text(name: &str) -> Vec<u8> {
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

pub fn plain_key(name: &str, rtype: RecordType) -> AnswerKey {
    AnswerKey::new(BLOCK, &wire_name(name), rtype.into(), QueryBits::default()).unwrap()
}

pub fn addresses(reply: &[u8]) -> Vec<String> {
    let message = Message::from_vec(reply).unwrap();
    message
        .answers()
        .iter()
        .map(|record| record.data().to_string())
        .collect()
}

/// Checks that `reply` answers `query` from the map's entry for CACHED (two_addresses).
pub fn check_fast_reply(query: &[u8], reply: &[u8]) -> Result<()> {
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

/// `reply` as the socket path would send it to `query`: the query's ID and question bytes.
pub fn rendered_for(reply: &[u8], query: &[u8]) -> Vec<u8> {
    let question = wire_question(query).unwrap();
    let mut out = reply.to_vec();
    out[..2].copy_from_slice(&query[..2]);
    out[12..12 + question.len()].copy_from_slice(question);
    out
}

/// A reply with each section's records sorted: Unbound rotates the order of an RRset's
/// records from one reply to the next (`rrset-roundrobin`).
pub fn sorted_sections(reply: &[u8]) -> Message {
    let mut message = Message::from_vec(reply).unwrap();
    let mut answers = message.take_answers();
    answers.sort_by_key(|record| record.to_bytes().unwrap());
    message.insert_answers(answers);
    message
}

/// One case of the differential test: a name (its case as sent), a type, whether the query
/// has EDNS, and whether it carries a client cookie.
pub type Case = (&'static str, RecordType, bool, bool);

/// The differential test: for each case, an entry made of Unbound's reply to a lower-cased
/// query with another ID, then the same query answered by Unbound (the socket path) and by
/// the program through `fast` (which returns `None` when nothing answered). The program's
/// reply is the stored reply byte for byte with the client's ID and question, and says what
/// Unbound says to the query itself (the order of an RRset's records aside). Query IDs start
/// at `first_id`.
pub fn answers_as_the_socket_path(
    node: &mut Node,
    cases: &[Case],
    first_id: u16,
    fast: impl Fn(&Node, &[u8]) -> Option<Vec<u8>>,
) {
    for (index, &(name, rtype, with_edns, cookie)) in cases.iter().enumerate() {
        let build = |name: &str, rtype, id| match (with_edns, cookie) {
            (false, _) => plain(name, rtype, id),
            (true, false) => edns(name, rtype, id),
            (true, true) => with_cookie(edns(name, rtype, id)),
        };
        let id = first_id + index as u16;
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
        let what = format!("{name} {rtype} (EDNS {with_edns}, cookie {cookie})");
        let fast =
            fast(node, &query).unwrap_or_else(|| panic!("{what}: no answer from the program"));
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

/// Whether dig's `output` has the answer `NAME TTL IN A ADDRESS` for an entry stored for
/// 300 s: TTL 300, or less by the seconds a slow run took since the entry was stored.
pub fn dig_answers(output: &str, name: &str, address: &str) -> bool {
    output.lines().any(|line| {
        let fields: Vec<&str> = line.split('\t').collect();
        matches!(fields.as_slice(), [n, ttl, "IN", "A", a]
            if *n == name && *a == address
                && ttl.parse::<u32>().is_ok_and(|ttl| (295..=300).contains(&ttl)))
    })
}
