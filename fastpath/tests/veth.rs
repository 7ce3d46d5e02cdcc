//! The fast path on a veth pair (see `support`): hits, misses, detaching, other programs.

#![forbid(unsafe_code)]

mod support;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use hickory_proto::rr::RecordType;
use shardns_e2e::client::{query_message, query_message_plain};
use shardns_fastpath::{Answer, AnswerKey, Fastpath, Lifetime, QueryBits, boot_time_ns};
use support::*;

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
        dig_answers(&output, "cAcHeD.fastpath.test.", "192.0.2.1") && output.contains("192.0.2.2"),
        "{output}"
    );
    // dig's default query: EDNS, AD and a client cookie.
    let dig_edns_key = AnswerKey::new(
        BLOCK,
        &wire_name(CACHED),
        RecordType::A.into(),
        QueryBits {
            edns: true,
            authentic_data: true,
            ..QueryBits::default()
        },
    )
    .unwrap();
    let edns_answer = with_opt(&two_addresses(CACHED));
    let edns_answer = Answer::new(&edns_answer, Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&dig_edns_key, &edns_answer).unwrap();
    let output = node.dig(&[], "CACHED.fastpath.test").unwrap();
    assert!(
        dig_answers(&output, "CACHED.fastpath.test.", "192.0.2.1")
            && output.contains("; EDNS: version: 0, flags:; udp: 1232"),
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
    // A client cookie is answered (the socket path ignores options); another option beside
    // it is not, nor a longer (server) cookie.
    let cookie = with_cookie(edns(CACHED_MIXED, RecordType::A, 9));
    assert!(node.ask(&cookie, REPLY).is_some(), "a client cookie passed");
    let mut padded = cookie.clone();
    let rdlength = padded.len() - 12 - 1;
    padded[rdlength] = 16;
    padded.extend_from_slice(&[0, 12, 0, 0]);
    assert_eq!(
        node.ask(&padded, SILENCE),
        None,
        "cookie and padding answered"
    );
    let mut server_cookie = cookie.clone();
    server_cookie[rdlength] = 28;
    server_cookie[rdlength + 4] = 24;
    server_cookie.extend_from_slice(&[0x5e; 16]);
    assert_eq!(
        node.ask(&server_cookie, SILENCE),
        None,
        "a server cookie answered"
    );
    // Twelve option bytes, but a 4-byte cookie and a padding option.
    let mut short_cookie = cookie.clone();
    short_cookie[rdlength + 4] = 4;
    let end = short_cookie.len();
    short_cookie[end - 4..].copy_from_slice(&[0, 12, 0, 0]);
    assert_eq!(
        node.ask(&short_cookie, SILENCE),
        None,
        "a 4-byte cookie answered"
    );
    // An EDNS query saying ARCOUNT 2 (its OPT record is all there is).
    let mut two_additional = edns(CACHED, RecordType::A, 8);
    two_additional[11] = 2;
    assert_eq!(
        node.ask(&two_additional, SILENCE),
        None,
        "ARCOUNT 2 answered"
    );
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

#[test]
fn an_interface_with_another_program_is_refused_unless_told() {
    let Some(node) = Node::start("cni") else {
        return;
    };
    let programs = node
        .node
        .run(|_| Fastpath::tcx_programs("veth-node"))
        .unwrap();
    assert!(programs.is_empty(), "{programs:?}");
    // A program standing for a CNI's, attached first.
    let object = shardns_fastpath::STAND_IN_OBJECT.expect("built with the bpf feature");
    let mut cni = aya::Ebpf::load(object).expect("the stand-in object loads");
    let program: &mut aya::programs::SchedClassifier = cni
        .program_mut("cni_stand_in")
        .expect("the stand-in program")
        .try_into()
        .unwrap();
    program.load().expect("the stand-in verifies");
    node.node
        .run(|_| program.attach("veth-node", aya::programs::TcAttachType::Ingress))
        .expect("the stand-in attaches");
    let mut ours = Fastpath::load().unwrap();
    match node.node.run(|_| ours.attach("veth-node")) {
        Err(shardns_fastpath::Error::Occupied {
            interface,
            programs,
        }) => {
            assert_eq!(interface, "veth-node");
            assert_eq!(programs, ["cni_stand_in"]);
        }
        other => panic!("attached beside another program: {other:?}"),
    }
    assert_eq!(ours.interfaces().count(), 0);
    node.node
        .run(|_| ours.attach_anyway("veth-node"))
        .expect("attach_anyway");
    assert_eq!(ours.interfaces().collect::<Vec<_>>(), ["veth-node"]);
    drop(ours);
    // The same as a legacy tc filter (clsact, netlink: Calico's eBPF dataplane, Cilium
    // before tcx), and as an XDP program.
    drop(cni);
    for how in ["filter", "xdp"] {
        let mut cni = aya::Ebpf::load(object).expect("the stand-in object loads");
        let mut filter_link = None;
        let expected = if how == "filter" {
            let program: &mut aya::programs::SchedClassifier =
                cni.program_mut("cni_stand_in").unwrap().try_into().unwrap();
            program.load().unwrap();
            let link = node
                .node
                .run(|_| {
                    let _ = aya::programs::tc::qdisc_add_clsact("veth-node");
                    program.attach_with_options(
                        "veth-node",
                        aya::programs::TcAttachType::Ingress,
                        aya::programs::tc::TcAttachOptions::Netlink(Default::default()),
                    )
                })
                .expect("the stand-in attaches as a filter");
            filter_link = Some(link);
            "cni_stand_in"
        } else {
            let program: &mut aya::programs::Xdp =
                cni.program_mut("xdp_stand_in").unwrap().try_into().unwrap();
            program.load().unwrap();
            node.node
                .run(|_| program.attach("veth-node", aya::programs::xdp::XdpMode::Skb))
                .expect("the stand-in attaches as XDP");
            "xdp xdp_stand_in"
        };
        let listed = node
            .node
            .run(|_| Fastpath::other_programs("veth-node"))
            .unwrap();
        assert_eq!(listed, [expected], "{how}");
        let mut ours = Fastpath::load().unwrap();
        match node.node.run(|_| ours.attach("veth-node")) {
            Err(shardns_fastpath::Error::Occupied { programs, .. }) => {
                assert_eq!(programs, [expected], "{how}");
            }
            other => panic!("attached beside a {how} program: {other:?}"),
        }
        if let Some(link) = filter_link {
            // A netlink filter outlives its program's descriptors: detach it.
            let program: &mut aya::programs::SchedClassifier =
                cni.program_mut("cni_stand_in").unwrap().try_into().unwrap();
            node.node.run(|_| program.detach(link)).unwrap();
        }
        drop(cni);
        let listed = node
            .node
            .run(|_| Fastpath::other_programs("veth-node"))
            .unwrap();
        assert!(listed.is_empty(), "{how} stand-in gone: {listed:?}");
    }
    // Another shardns's program (an upgrade's successor attaching beside its predecessor)
    // is not a CNI's: a second loader attaches without force, beside the first (tcx), and
    // beside a first attached as a filter.
    let mut ours = Fastpath::load().unwrap();
    node.node.run(|_| ours.attach("veth-node")).unwrap();
    let mut successor = Fastpath::load().unwrap();
    node.node
        .run(|_| successor.attach("veth-node"))
        .expect("attached beside another shardns");
    let programs = node
        .node
        .run(|_| Fastpath::tcx_programs("veth-node"))
        .unwrap();
    // The kernel keeps 15 bytes of a program's name.
    assert_eq!(programs, ["shardns_fastpat", "shardns_fastpat"]);
    let mut filtered = Fastpath::load().unwrap();
    node.node
        .run(|_| filtered.attach_netlink("veth-node"))
        .unwrap();
    let mut third = Fastpath::load().unwrap();
    node.node
        .run(|_| third.attach("veth-node"))
        .expect("attached beside another shardns's filter");
}

/// A process killed while attached through netlink (kernels before 6.6) leaves its filter,
/// which keeps answering from its map; `remove_leftovers` takes it away.
#[test]
fn a_killed_processs_netlink_filter_is_removed() {
    let Some(mut node) = Node::start("leftover") else {
        return;
    };
    let key = plain_key(CACHED, RecordType::A);
    let answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    node.fastpath.insert(&key, &answer).unwrap();
    let query = plain(CACHED_MIXED, RecordType::A, 21);
    let asked = |node: &Node| addresses(&node.ask(&query, REPLY).expect("no answer"));
    let removed = node.node.run(|_| Fastpath::remove_leftovers("veth-node"));
    assert!(!removed.unwrap(), "a leftover before anything was attached");

    node.attach_by(true);
    assert_eq!(asked(&node), ["192.0.2.1", "192.0.2.2"]);
    // "Killed": the loader is never dropped, so it never detaches.
    let fresh = Fastpath::load().unwrap();
    std::mem::forget(std::mem::replace(&mut node.fastpath, fresh));
    assert_eq!(
        asked(&node),
        ["192.0.2.1", "192.0.2.2"],
        "the leftover filter answers"
    );
    let removed = node.node.run(|_| Fastpath::remove_leftovers("veth-node"));
    assert!(removed.unwrap(), "no leftover found");
    assert_eq!(asked(&node), ["192.0.2.99"], "Unbound again");
    let removed = node.node.run(|_| Fastpath::remove_leftovers("veth-node"));
    assert!(!removed.unwrap(), "a leftover after removing them");
}
