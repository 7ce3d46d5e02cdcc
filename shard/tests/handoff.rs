//! The cache's part of a hand-off: what one process's shards export, another process's shards
//! (another number of them, another hash seed) import, each keeping what it owns, with the
//! lifetime the entries had left. Virtual clock, no sockets.

mod common;

use std::time::Duration;

use common::scenario::{a, cache, check, hit, relayed};
use common::{Ask, Rig, config_with};
use hickory_proto::op::{MessageType, OpCode};
use hickory_proto::rr::RecordType;
use shardns_shard::{Coalesce, ImportReport};

const NAMES: usize = 20;

fn name(i: usize) -> String {
    format!("n{i}.example.")
}

/// A group of `shards` whose caches hold the `NAMES` names, answered with TTL 300 and then
/// left for 10 s.
fn filled(shards: usize) -> Rig {
    let mut rig = Rig::new(shards, config_with(Some(cache(None))));
    for i in 0..NAMES {
        rig.ask_on(i % shards, &name(i), RecordType::A, Ask::default());
        rig.settle();
        rig.answer(&a(300));
        check(i, &rig.next_reply(), &relayed(300));
    }
    rig.wait(Duration::from_secs(10));
    rig
}

fn export(rig: &mut Rig) -> Vec<Vec<u8>> {
    let now = rig.now;
    rig.engines
        .iter_mut()
        .flat_map(|engine| engine.export_cache(now))
        .collect()
}

fn import(rig: &mut Rig, chunks: &[Vec<u8>]) -> ImportReport {
    let now = rig.now;
    let mut total = ImportReport::default();
    for engine in &mut rig.engines {
        for chunk in chunks {
            let report = engine.import_cache(now, chunk);
            total.stored += report.stored;
            total.others += report.others;
            total.dropped += report.dropped;
        }
    }
    total
}

#[test]
fn the_new_process_answers_from_the_old_ones_cache_with_the_lifetime_left() {
    let mut old = filled(2);
    let chunks = export(&mut old);
    // Each entry once: the copies a requesting shard holds are left out.
    let mut new = Rig::with_mode(3, config_with(Some(cache(None))), Coalesce::Across);
    let report = import(&mut new, &chunks);
    assert_eq!(
        report,
        ImportReport {
            stored: NAMES,
            others: 2 * NAMES,
            dropped: 0,
        }
    );
    // Later in the new process: hits on each name's owner, the TTL counting on from 290
    // (another shard gets the owner's copy, with the same TTL).
    new.wait(Duration::from_secs(5));
    for i in 0..NAMES {
        let owner = new.owner_of(&name(i));
        new.ask_on(owner, &name(i), RecordType::A, Ask::default());
        check(i, &new.next_reply(), &hit(285));
        new.ask_on((owner + 1) % 3, &name(i), RecordType::A, Ask::default());
        new.settle();
        check(i, &new.next_reply(), &relayed(285));
    }
    assert_eq!(new.upstream_sent(), 0, "no miss reached the upstream");
}

#[test]
fn within_every_shard_exports_and_imports_its_own_copies() {
    let mut old = Rig::with_mode(2, config_with(Some(cache(None))), Coalesce::Within);
    for i in 0..4 {
        old.ask_on(i % 2, &name(i), RecordType::A, Ask::default());
        old.answer(&a(60));
        check(i, &old.next_reply(), &relayed(60));
    }
    let chunks = export(&mut old);
    let mut new = Rig::with_mode(2, config_with(Some(cache(None))), Coalesce::Within);
    let report = import(&mut new, &chunks);
    assert_eq!(report.stored, 8, "both shards keep all 4: {report:?}");
    for i in 0..4 {
        new.ask_on((i + 1) % 2, &name(i), RecordType::A, Ask::default());
        check(i, &new.next_reply(), &hit(60));
    }
}

#[test]
fn expired_entries_stay_behind_and_bad_bytes_store_nothing() {
    let mut old = filled(1);
    old.wait(Duration::from_secs(300));
    assert!(export(&mut old).is_empty(), "nothing fresh to carry");

    let mut old = filled(1);
    let chunks = export(&mut old);
    let chunk = &chunks[0];
    let mut new = Rig::one(config_with(Some(cache(None))));
    let now = new.now;
    // Cut anywhere, flipped bytes, random bytes: no panic, and nothing but whole entries.
    for cut in (0..chunk.len()).step_by(7) {
        let report = new.engines[0].import_cache(now, &chunk[..cut]);
        assert!(report.stored <= NAMES);
    }
    let mut noise = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..2_000 {
        let mut bytes = chunk.clone();
        for _ in 0..4 {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let at = (noise as usize) % bytes.len();
            bytes[at] = (noise >> 32) as u8;
        }
        let _ = new.engines[0].import_cache(now, &bytes);
        let random: Vec<u8> = (0..200).map(|i| (noise >> (i % 56)) as u8).collect();
        let _ = new.engines[0].import_cache(now, &random);
    }
    // A block of another zone takes nothing.
    let mut other = config_with(Some(cache(None)));
    other.servers[0].zone = common::wire_name("example.");
    other.servers[0].zone_text = "example.".to_string();
    let mut elsewhere = Rig::one(other);
    let now = elsewhere.now;
    let report = elsewhere.engines[0].import_cache(now, chunk);
    assert_eq!((report.stored, report.dropped), (0, NAMES));
}

/// An entry whose message is not a reply to a standard query (QR clear, another opcode) is
/// not stored: a hit serves the stored header as it is (found by the engine fuzz target: a
/// damaged hand-off chunk made a hit answer without QR and with opcode 11).
#[test]
fn entries_that_are_not_replies_to_a_standard_query_are_dropped() {
    let mut old = filled(1);
    let chunks = export(&mut old);
    // The first entry: zone (2 + 1 bytes for the root), kind, flags, lifetime (4), keepttl,
    // ext RCODE, message length (2), then the message; its flags word at 2..4.
    let flags = 2 + 1 + 1 + 1 + 4 + 1 + 1 + 2 + 2;
    for damage in [0x80u8, 0x58] {
        let mut chunk = chunks[0].clone();
        chunk[flags] ^= damage;
        let mut new = Rig::one(config_with(Some(cache(None))));
        let now = new.now;
        let report = new.engines[0].import_cache(now, &chunk);
        assert_eq!(
            (report.stored, report.dropped),
            (NAMES - 1, 1),
            "{damage:#x}"
        );
        // The dropped one is a miss; the others are hits.
        for i in 0..NAMES {
            new.ask_on(0, &name(i), RecordType::A, Ask::default());
        }
        assert_eq!(new.upstream.len(), 1, "{damage:#x}: one miss");
        let replies = new.take_replies();
        assert_eq!(replies.len(), NAMES - 1);
        for (_, reply) in replies {
            assert_eq!(
                (reply.message_type(), reply.op_code()),
                (MessageType::Response, OpCode::Query)
            );
        }
    }
}
