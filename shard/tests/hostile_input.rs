//! Hostile input from the network, as property tests on the engine.
//!
//! Upstream replies: a reply with the right ID and question (so it
//! gets past the matching and into the record walk, the TTL and SOA rules and the cache) is
//! mutated: bytes overwritten after the question or anywhere past the ID, cut short, random
//! bytes appended, section counts changed. Whatever the bytes:
//!
//! - the engine does not panic;
//! - the client gets exactly one reply, by the 5 s query deadline at the latest, carrying its
//!   ID, QR and its question as asked (case preserved), which shardns's own parser accepts;
//! - a name cached before is still answered from the cache, unharmed, without an upstream
//!   query, and so is the mutated name if it was cached.
//!
//! Client queries, over UDP and TCP, damaged the same way anywhere (header included):
//!
//! - no panic;
//! - dropped without a reply only when RFC 1035 says so: shorter than a header, or a response
//!   (QR set);
//! - otherwise one reply, at once or once the upstream answered, with the client's ID and QR
//!   set, that shardns's header parser accepts;
//! - the cache is unharmed.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::{Ask, Rig, Upstream, client, config_with, query, reply};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use proptest::prelude::*;
use shardns_shard::config::{CacheConfig, ServeStale};
use shardns_shard::{Outcome, Protocol};

/// The name cached before the hostile reply, and its address.
const GOOD: &str = "good.example.";
const GOOD_A: [u8; 4] = [192, 0, 2, 1];

/// One engine on a virtual clock, caching for 30 s (with serve-stale or not).
fn rig(serve_stale: bool) -> Rig {
    let mut cache = CacheConfig::with_ttl(Some(30));
    if serve_stale {
        cache.serve_stale = Some(ServeStale {
            max_stale: Duration::from_secs(3600),
            verify: false,
        });
    }
    Rig::one(config_with(Some(cache)))
}

/// How the upstream's reply is damaged.
#[derive(Debug, Clone)]
struct Damage {
    /// Overwrites: (position, byte). Positions are taken past the question (or, with
    /// `anywhere`, past the ID) modulo the room there.
    edits: Vec<(usize, u8)>,
    anywhere: bool,
    /// Cut to this length (modulo the length, after the edits).
    cut: Option<usize>,
    /// Appended after the cut.
    tail: Vec<u8>,
    /// New ANCOUNT, NSCOUNT, ARCOUNT.
    counts: Option<(u16, u16, u16)>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.3, any::<usize>()),
        prop::collection::vec(any::<u8>(), 0..4).prop_flat_map(|short| {
            prop_oneof![
                4 => Just(Vec::new()),
                1 => Just(short),
                1 => prop::collection::vec(any::<u8>(), 0..64),
            ]
        }),
        prop::option::weighted(0.2, (0u16..6, 0u16..6, 0u16..4)),
    )
        .prop_map(|(edits, anywhere, cut, tail, counts)| Damage {
            edits,
            anywhere,
            cut,
            tail,
            counts,
        })
}

/// What the intact reply would have said.
fn upstream() -> impl Strategy<Value = Upstream> {
    (
        prop::sample::select(vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::ServFail,
            ResponseCode::Refused,
        ]),
        prop::collection::vec((any::<[u8; 4]>(), 0u32..100_000), 0..4),
        prop::option::of(0u32..100_000),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(
            |(rcode, answers, soa, truncated, authentic_data)| Upstream {
                rcode: Some(rcode),
                answers,
                soa,
                truncated,
                authentic_data,
            },
        )
}

fn apply(bytes: &mut Vec<u8>, question_end: usize, damage: &Damage) {
    let from = if damage.anywhere { 2 } else { question_end };
    damage_from(bytes, from, damage);
}

/// Applies `damage` with edits at or past `from`.
fn damage_from(bytes: &mut Vec<u8>, from: usize, damage: &Damage) {
    if bytes.len() > from {
        for &(at, value) in &damage.edits {
            let at = from + at % (bytes.len() - from);
            bytes[at] = value;
        }
    }
    if let Some((an, ns, ar)) = damage.counts {
        bytes[6..8].copy_from_slice(&an.to_be_bytes());
        bytes[8..10].copy_from_slice(&ns.to_be_bytes());
        bytes[10..12].copy_from_slice(&ar.to_be_bytes());
    }
    if let Some(cut) = damage.cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes.extend_from_slice(&damage.tail);
}

/// The client's reply: its ID, QR, and its question as asked; parsed by shardns's parser.
fn check_reply(reply: &[u8], asked: &[u8]) -> Result<(), TestCaseError> {
    let got = shardns_wire::Message::parse(reply)
        .map_err(|e| TestCaseError::fail(format!("reply does not parse: {e:?} {reply:?}")))?;
    let want = shardns_wire::Message::parse(asked).unwrap();
    prop_assert_eq!(got.header.id, want.header.id);
    prop_assert!(got.header.qr());
    prop_assert_eq!(got.question, want.question);
    Ok(())
}

/// The first A record's address in `reply`.
fn first_a(reply: &[u8]) -> Option<[u8; 4]> {
    let m = Message::from_vec(reply).ok()?;
    m.answers().iter().find_map(|r| match r.data().ip_addr()? {
        std::net::IpAddr::V4(a) => Some(a.octets()),
        std::net::IpAddr::V6(_) => None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn damaged_replies_never_panic_or_harm_the_cache(
        up in upstream(),
        damage in damage(),
        serve_stale in any::<bool>(),
        name_case in any::<bool>(),
    ) {
        let mut rig = rig_with_good_name(serve_stale);

        // The damaged one.
        let name = if name_case { "Victim.Example." } else { "victim.example." };
        let asked = query(2, name, RecordType::A, Ask { edns: true, ..Ask::default() });
        let victim = client(4002);
        rig.send_on(0, victim, &asked);
        let sent = rig.upstream.pop_back().expect("a miss goes upstream");
        let (link, sent) = (sent.link, sent.payload);
        let question_end = shardns_wire::Message::parse(&sent).unwrap().question_end;
        let sent = Message::from_vec(&sent).unwrap();
        let mut bytes = reply(&sent, &up);
        apply(&mut bytes, question_end, &damage);
        rig.respond(link, &bytes);
        // Retries go unanswered: the deadline ends it.
        rig.wait(Duration::from_secs(6));
        prop_assert_eq!(rig.replies.len(), 1, "one reply to the client");
        let victim_reply = rig.replies.pop_back().unwrap();
        prop_assert_eq!(victim_reply.client, victim);
        check_reply(&victim_reply.bytes, &asked)?;

        // The cache is unharmed; the damaged name, if it was cached, is answered well too.
        good_name_still_cached(&mut rig)?;
        let asked = query(4, name, RecordType::A, Ask { edns: true, ..Ask::default() });
        rig.send_on(0, client(4004), &asked);
        if let Some(cached) = rig.replies.pop_back() {
            check_reply(&cached.bytes, &asked)?;
        }
    }
}

/// The good name is still cached and answered well.
fn good_name_still_cached(rig: &mut Rig) -> Result<(), TestCaseError> {
    rig.upstream.clear();
    rig.replies.clear();
    let again = query(3, GOOD, RecordType::A, Ask::default());
    rig.send_on(0, client(4003), &again);
    prop_assert!(rig.upstream.is_empty(), "the good name is still cached");
    prop_assert_eq!(rig.replies.len(), 1);
    let good_reply = rig.replies.pop_back().unwrap().bytes;
    check_reply(&good_reply, &again)?;
    prop_assert_eq!(first_a(&good_reply), Some(GOOD_A));
    Ok(())
}

/// A rig with the good name cached.
fn rig_with_good_name(serve_stale: bool) -> Rig {
    let mut rig = rig(serve_stale);
    let good = query(1, GOOD, RecordType::A, Ask::default());
    rig.send_on(0, client(4001), &good);
    let sent = rig.upstream.pop_back().expect("a miss goes upstream");
    let (link, sent) = (sent.link, sent.query());
    rig.respond(
        link,
        &reply(
            &sent,
            &Upstream {
                answers: vec![(GOOD_A, 300)],
                ..Upstream::default()
            },
        ),
    );
    rig.replies.clear();
    rig
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn damaged_queries_get_one_well_formed_reply_or_a_lawful_drop(
        damage in damage(),
        edns in any::<bool>(),
        dnssec_ok in any::<bool>(),
        rtype in prop::sample::select(vec![
            RecordType::A, RecordType::AAAA, RecordType::MX, RecordType::ANY, RecordType::NS,
        ]),
        tcp in any::<bool>(),
    ) {
        let mut rig = rig_with_good_name(false);
        let mut bytes = query(0x4242, "victim.example.", rtype, Ask {
            edns,
            dnssec_ok,
            ..Ask::default()
        });
        // Anywhere at all, the header included, unless the damage says past the question.
        let from = if damage.anywhere {
            shardns_wire::Message::parse(&bytes).unwrap().question_end
        } else {
            0
        };
        damage_from(&mut bytes, from, &damage);
        let mut victim = client(4002);
        if tcp {
            victim.protocol = Protocol::Tcp;
            victim.conn = 7;
        }
        let outcome = rig.send_on(0, victim, &bytes);
        if outcome == Outcome::Drop {
            prop_assert!(
                bytes.len() < 12 || bytes[2] & 0x80 != 0,
                "dropped without a reason: {bytes:?}"
            );
        }
        // Whatever went upstream is answered well.
        for sent in std::mem::take(&mut rig.upstream) {
            if let Ok(query) = Message::from_vec(&sent.payload) {
                let answer = reply(&query, &Upstream {
                    answers: vec![([192, 0, 2, 9], 60)],
                    ..Upstream::default()
                });
                rig.respond(sent.link, &answer);
            }
        }
        rig.wait(Duration::from_secs(6));
        if !matches!(outcome, Outcome::Drop) {
            prop_assert_eq!(rig.replies.len(), 1, "one reply to {:?}", bytes);
            let got = rig.replies.pop_back().unwrap();
            prop_assert_eq!(got.client, victim);
            let header = shardns_wire::Header::parse(&got.bytes)
                .map_err(|e| TestCaseError::fail(format!("reply header: {e:?}")))?;
            prop_assert_eq!(header.id, u16::from_be_bytes([bytes[0], bytes[1]]));
            prop_assert!(header.qr());
        } else {
            prop_assert!(rig.replies.is_empty());
        }
        good_name_still_cached(&mut rig)?;
    }
}
