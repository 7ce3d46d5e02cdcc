//! What the fast path's replies say: the socket path's bytes (against Unbound), TTLs decayed
//! as the socket path renders them, and the counters (see `support` for the topology).

#![forbid(unsafe_code)]

mod support;

use hickory_proto::op::Message;
use hickory_proto::rr::{Record, RecordType};
use shardns_fastpath::{Answer, Lifetime, Stats, boot_time_ns};
use support::*;

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
    // (name, type, EDNS, a client cookie)
    let cases: &[Case] = &[
        ("MuLtI.fastpath.TEST.", RecordType::A, false, false),
        ("multi.fastpath.test.", RecordType::A, true, false),
        ("MULTI.fastpath.test.", RecordType::A, true, true),
        ("AliaS.FastPath.Test.", RecordType::A, false, false),
        ("alias.fastpath.test.", RecordType::A, true, false),
        ("cached.FASTPATH.test.", RecordType::AAAA, false, false), // NODATA: SOA in authority
        ("NoSuch.fastpath.test.", RecordType::A, true, false),     // NXDOMAIN
        ("nosuch.FASTPATH.test.", RecordType::A, true, true),
        ("other.fastpath.test.", RecordType::TXT, true, false),
    ];
    answers_as_the_socket_path(&mut node, cases, 0x4000, |node, query| {
        node.block_sockets(true);
        let fast = node.ask(query, REPLY);
        node.block_sockets(false);
        fast
    });
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

    // The entry's own count: the two hits (replacing it kept the count).
    assert_eq!(node.fastpath.hits(&key).unwrap(), Some(2));
    assert!(node.fastpath.remove(&key).unwrap());
    assert_eq!(node.fastpath.hits(&key).unwrap(), None);
    // Another entry takes the freed slot and counts from 0.
    let other = plain_key("other.fastpath.test.", RecordType::A);
    let answer = Answer::new(
        &two_addresses("other.fastpath.test."),
        Lifetime::from_now(60).unwrap(),
    )
    .unwrap();
    node.fastpath.insert(&other, &answer).unwrap();
    assert_eq!(node.fastpath.hits(&other).unwrap(), Some(0));
    let query = plain("Other.fastpath.test.", RecordType::A, 13);
    assert!(node.ask(&query, REPLY).is_some());
    assert_eq!(node.fastpath.hits(&other).unwrap(), Some(1));
}
