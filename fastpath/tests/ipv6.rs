//! The fast path over IPv6 (see `support`: the pod asks [LOCAL_IP6]:53): hits with a UDP
//! checksum the pod's kernel verified, misses passed untouched, and the socket path's bytes.

#![forbid(unsafe_code)]

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use shardns_e2e::netns::Namespace;
use shardns_fastpath::{Answer, AnswerKey, Lifetime, QueryBits};
use support::*;

/// Turns off transmit checksum offload on the pod's veth (the ethtool ioctl, from Python: no
/// ethtool here), so its queries go out with a full checksum (CHECKSUM_NONE) and the reply
/// the program makes of one is verified by the pod's kernel on receipt: a datagram with a
/// bad UDP checksum is dropped there, and the client never sees it. (A stale checksum was
/// seen dropped with offload on too, on this 6.18 kernel; both ways are asked.)
fn full_checksums_from_the_pod(pod: &Namespace) {
    let script = r#"
import ctypes, fcntl, socket, struct
def ethtool(cmd, data=0):
    value = ctypes.create_string_buffer(struct.pack("II", cmd, data), 8)
    ifr = struct.pack("16sQ", b"veth-pod", ctypes.addressof(value)) + bytes(16)
    fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)
    return struct.unpack("II", value.raw)[1]
ethtool(0x17, 0)  # ETHTOOL_STXCSUM off
print(ethtool(0x16))  # ETHTOOL_GTXCSUM
"#;
    let output = pod.exec("python3", &["-c", script]).unwrap();
    assert_eq!(output.trim(), "0", "transmit checksumming still on");
}

/// A socket on [LOCAL_IP6]:53 in the node that never answers: what passes the program
/// arrives here (and no ICMP "port unreachable" reaches the client).
fn sink(node: &Node) -> UdpSocket {
    let socket = node.node.run(|_| {
        UdpSocket::bind(SocketAddr::from((LOCAL_IP6, 53))).expect("binding [LOCAL_IP6]:53")
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
}

fn received(sink: &UdpSocket) -> Option<Vec<u8>> {
    let mut buffer = [0u8; 2048];
    sink.recv_from(&mut buffer)
        .ok()
        .map(|(len, _)| buffer[..len].to_vec())
}

fn key_with(bits: QueryBits) -> AnswerKey {
    AnswerKey::new(BLOCK, &wire_name(CACHED), RecordType::A.into(), bits).unwrap()
}

#[test]
fn an_ipv6_hit_is_answered_with_a_checksum_the_pod_accepts() {
    let Some(mut node) = Node::start("hit6") else {
        return;
    };
    let sink = sink(&node);
    node.attach();
    let answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    let ad = QueryBits {
        authentic_data: true,
        ..QueryBits::default()
    };
    let dig_edns = QueryBits {
        edns: true,
        authentic_data: true,
        ..QueryBits::default()
    };
    node.fastpath
        .insert(&key_with(QueryBits::default()), &answer)
        .unwrap();
    node.fastpath.insert(&key_with(ad), &answer).unwrap();
    let edns_answer = Answer::new(
        &with_opt(&two_addresses(CACHED)),
        Lifetime::from_now(300).unwrap(),
    )
    .unwrap();
    node.fastpath
        .insert(&key_with(dig_edns), &edns_answer)
        .unwrap();

    // With the veth's checksum offload on (the default): the query leaves the pod's socket
    // as CHECKSUM_PARTIAL.
    let query = plain(CACHED, RecordType::A, 0x0ff1);
    let reply = node
        .ask6(&query, REPLY)
        .expect("no IPv6 answer, offload on");
    check_fast_reply(&query, &reply).unwrap();
    full_checksums_from_the_pod(&node.pod);
    // Odd and even name lengths: the appended answer starts at an odd offset for one.
    for (id, name) in [
        (0x1234, CACHED_MIXED),
        (0xbeef, CACHED),
        (7, "CACHED.FASTPATH.TEST."),
    ] {
        let query = plain(name, RecordType::A, id);
        let reply = node
            .ask6(&query, REPLY)
            .unwrap_or_else(|| panic!("no IPv6 answer for {name} (a bad checksum is dropped)"));
        check_fast_reply(&query, &reply).unwrap();
    }
    for options in [&["-6", "+noedns"][..], &["-6"][..]] {
        let mut options = options.to_vec();
        let server = format!("@{LOCAL_IP6}");
        options.push(&server);
        let output = node.dig(&options, "cAcHeD.fastpath.test").unwrap();
        assert!(output.contains("status: NOERROR"), "{output}");
        assert!(
            dig_answers(&output, "cAcHeD.fastpath.test.", "192.0.2.1")
                && output.contains("192.0.2.2"),
            "{output}"
        );
    }
    assert_eq!(received(&sink), None, "a hit reached the socket");
    assert_eq!(node.fastpath.stats().unwrap().hits, 6);
}

#[test]
fn an_ipv6_miss_passes_untouched() {
    let Some(mut node) = Node::start("miss6") else {
        return;
    };
    full_checksums_from_the_pod(&node.pod);
    let sink = sink(&node);
    node.attach();
    node.fastpath
        .insert(
            &key_with(QueryBits::default()),
            &Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap(),
        )
        .unwrap();
    for query in [
        plain("other.fastpath.test.", RecordType::A, 0x55),
        plain(CACHED, RecordType::AAAA, 0x56),
        edns(CACHED, RecordType::A, 0x57),
    ] {
        assert_eq!(node.ask6(&query, SILENCE), None, "a miss was answered");
        assert_eq!(
            received(&sink),
            Some(query),
            "the miss did not arrive as sent"
        );
    }
    // The hit still answers, so the misses were misses.
    let query = plain(CACHED, RecordType::A, 0x58);
    let reply = node.ask6(&query, REPLY).expect("no IPv6 answer");
    check_fast_reply(&query, &reply).unwrap();
}

/// The differential test of `replies.rs` over IPv6: an entry made of Unbound's reply (over
/// IPv4: it listens there only; the family does not change a DNS reply), and the program's
/// reply over IPv6 to a mixed-case query is that reply byte for byte with the client's ID and
/// question, and says what Unbound says to the same query.
#[test]
fn the_ipv6_answer_is_the_socket_paths() {
    let Some(mut node) = Node::start("diff6") else {
        return;
    };
    full_checksums_from_the_pod(&node.pod);
    let _sink = sink(&node);
    node.attach();
    // (name, type, EDNS, a client cookie)
    let cases: &[Case] = &[
        ("MuLtI.fastpath.TEST.", RecordType::A, false, false),
        ("MULTI.fastpath.test.", RecordType::A, true, true),
        ("AliaS.FastPath.Test.", RecordType::A, false, false),
        ("cached.FASTPATH.test.", RecordType::AAAA, false, false),
        ("NoSuch.fastpath.test.", RecordType::A, true, false),
        ("other.fastpath.test.", RecordType::TXT, true, false),
    ];
    answers_as_the_socket_path(&mut node, cases, 0x6000, |node, query| {
        node.ask6(query, REPLY)
    });
}
