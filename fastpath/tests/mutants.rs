//! The program answers exactly the queries it claims to: mutants of a hit (bit flips, cut or
//! lengthened packets; a seeded sequence) are sent from the pod with the socket path
//! blocked, and each is answered if and only if an independent oracle — shardns-wire's parser
//! and the rules in docs/FASTPATH.md — says it is a query for an entry's key; every answer
//! is the entry's, with the mutant's ID and question. See `support` for the topology.

#![forbid(unsafe_code)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use shardns_e2e::client::UdpClient;
use shardns_e2e::rng::Rng;
use shardns_fastpath::{Answer, AnswerKey, Lifetime, QueryBits};
use shardns_wire::Message;
use support::*;

/// Mutants sent.
const MUTANTS: usize = 300;
/// How long a mutant the oracle says is not answered is given before the next is sent (a
/// late answer would still be caught: it carries an earlier mutant's ID and question).
const QUIET: Duration = Duration::from_millis(20);

/// Whether the program must answer `query`, with entries for CACHED A in BLOCK for a plain
/// query and for an EDNS query without DO (no CD, no AD).
fn answerable(query: &[u8]) -> bool {
    let Ok(message) = Message::parse(query) else {
        return false;
    };
    let header = &message.header;
    // QR, opcode, AA, TC, Z, RCODE must be 0; CD and AD are in the key (no entry has them);
    // RD and RA may be anything.
    const QR: u16 = 0x8000;
    const OPCODE: u16 = 0x7800;
    const AA: u16 = 0x0400;
    const TC: u16 = 0x0200;
    const Z: u16 = 0x0040;
    const AD: u16 = 0x0020;
    const CD: u16 = 0x0010;
    const RCODE: u16 = 0x000f;
    if header.flags & (QR | OPCODE | AA | TC | Z | AD | CD | RCODE) != 0 {
        return false;
    }
    if header.ancount != 0 || header.nscount != 0 || header.arcount > 1 {
        return false;
    }
    if message.records.end != query.len() {
        return false; // bytes after the last record
    }
    if header.arcount == 1 {
        // Only an OPT record, root owner, no options, version 0, extended RCODE 0, no DO.
        let Some(edns) = &message.edns else {
            return false;
        };
        if query[edns.record.start] != 0
            || !edns.options.is_empty()
            || edns.version != 0
            || edns.ext_rcode != 0
            || edns.dnssec_ok
        {
            return false;
        }
    }
    let question = message.question;
    question.qclass == 1
        && question.qtype == u16::from(RecordType::A)
        && question.name.eq_ignore_ascii_case(&wire_name(CACHED))
}

/// A mutant of `query`: 1 to 3 bit flips, each bit 5 (the case bit of a letter) in the
/// name, any bit of the header's flags and counts, or any bit anywhere; and sometimes 1 to
/// 3 bytes cut or added.
fn mutant(rng: &mut Rng, query: &[u8]) -> Vec<u8> {
    let name_len = wire_name(CACHED).len();
    let mut bytes = query.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(3) {
            0 => bytes[12 + rng.below(name_len)] ^= 0x20,
            1 => bytes[2 + rng.below(10)] ^= 1 << rng.below(8), // flags and counts
            _ => {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
    }
    match rng.below(8) {
        0 => bytes.truncate(bytes.len() - 1 - rng.below(3)),
        1 => bytes.extend(rng.bytes(1, 3)),
        _ => {}
    }
    bytes
}

#[test]
fn only_queries_for_an_entry_are_answered() {
    let Some(mut node) = Node::start("mutants") else {
        return;
    };
    node.attach();
    let answer = Answer::new(&two_addresses(CACHED), Lifetime::from_now(300).unwrap()).unwrap();
    for edns in [false, true] {
        let bits = QueryBits {
            edns,
            ..QueryBits::default()
        };
        let key = AnswerKey::new(BLOCK, &wire_name(CACHED), RecordType::A.into(), bits).unwrap();
        node.fastpath.insert(&key, &answer).unwrap();
    }
    node.block_sockets(true);
    let originals = [
        plain(CACHED_MIXED, RecordType::A, 0x1111),
        edns(CACHED_MIXED, RecordType::A, 0x2222),
    ];
    let mut rng = Rng(0x5eed_fa57);
    let (mut answered, mut expected) = (0, 0);
    node.pod.run(|inside| {
        let server = SocketAddr::new(IpAddr::V4(LOCAL_IP), 53);
        let client = UdpClient::inside(inside, server).unwrap();
        for original in &originals {
            assert!(answerable(original), "the oracle refuses the original");
        }
        for index in 0..MUTANTS {
            let query = mutant(&mut rng, &originals[index % 2]);
            let must = answerable(&query);
            expected += usize::from(must);
            client.send_raw(&query).unwrap();
            let reply = client.recv_raw(if must { REPLY } else { QUIET }).unwrap();
            match (must, reply) {
                (true, Some(reply)) => {
                    check_fast_reply(&query, &reply)
                        .unwrap_or_else(|e| panic!("mutant {index} {query:?}: {e:#}"));
                    answered += 1;
                }
                (false, None) => {}
                (true, None) => panic!("mutant {index} not answered: {query:?}"),
                (false, Some(reply)) => {
                    panic!("mutant {index} answered: {query:?}\nreply {reply:?}")
                }
            }
        }
        // Late answers to the last mutants.
        assert_eq!(client.recv_raw(SILENCE).unwrap(), None, "a late answer");
    });
    assert_eq!(answered, expected);
    // The sequence is fixed: enough of both kinds to mean something.
    assert!(
        (20..=MUTANTS - 100).contains(&expected),
        "{expected} answerable"
    );
    eprintln!("{expected} of {MUTANTS} mutants answerable, all answered right; the rest not");
}
