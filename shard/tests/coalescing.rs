//! Misses across shards: a key's owner shard resolves it for the whole group (one upstream
//! query however many shards and clients miss it), answers later misses from its cache,
//! serves its stale entries to the others, and a shard whose owner is silent answers
//! SERVFAIL itself. Virtual clock, no sockets.

mod common;

use std::time::Duration;

use common::scenario::{Want, a, a_at, cache, check, code, hit, prefetch, relayed, stale};
use common::{Ask, Rig, config_with};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_shard::Coalesce;

#[test]
fn a_thousand_concurrent_misses_on_all_shards_make_one_upstream_query() {
    let mut rig = Rig::new(4, config_with(Some(cache(None))));
    for i in 0..1000 {
        rig.ask_on(i % 4, "hot.example.", RecordType::A, Ask::default());
    }
    assert_eq!(rig.upstream_sent(), 1);
    assert!(rig.replies.is_empty());
    rig.answer(&a(60));
    assert_eq!(rig.replies.len(), 1000);
    let mut per_shard = [0; 4];
    for reply in rig.replies.drain(..) {
        per_shard[reply.shard] += 1;
        check(0, &reply.message(), &relayed(60));
    }
    assert_eq!(per_shard, [250; 4]);
    // Every shard now answers from its own cache.
    for shard in 0..4 {
        rig.ask_on(shard, "hot.example.", RecordType::A, Ask::default());
        check(shard, &rig.next_reply(), &hit(60));
    }
    assert_eq!(rig.upstream_sent(), 1);
    let coalesced: u64 = rig.engines.iter().map(|e| e.stats().coalesced.get()).sum();
    assert!(coalesced >= 996, "coalesced {coalesced}");
}

#[test]
fn a_later_miss_on_another_shard_is_answered_from_the_owners_cache() {
    let mut rig = Rig::new(2, config_with(Some(cache(None))));
    let owner = rig.owner_of("www.example.");
    let other = 1 - owner;
    rig.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    rig.answer(&a(60));
    check(0, &rig.next_reply(), &relayed(60));
    rig.wait(Duration::from_secs(5));
    rig.ask_on(other, "www.example.", RecordType::A, Ask::default());
    // The owner's entry, with its remaining lifetime; no upstream query.
    check(1, &rig.next_reply(), &relayed(55));
    assert_eq!(rig.upstream_sent(), 1);
    rig.ask_on(other, "www.example.", RecordType::A, Ask::default());
    check(2, &rig.next_reply(), &hit(55));
}

#[test]
fn within_mode_resolves_each_shards_misses_itself() {
    let mut rig = Rig::with_mode(2, config_with(Some(cache(None))), Coalesce::Within);
    for shard in [0, 1, 0, 1] {
        rig.ask_on(shard, "hot.example.", RecordType::A, Ask::default());
    }
    assert_eq!(rig.upstream_sent(), 2);
}

#[test]
fn a_silent_owner_means_servfail_after_the_overall_deadline() {
    let mut rig = Rig::new(2, config_with(Some(cache(None))));
    let owner = rig.owner_of("www.example.");
    rig.unreachable = Some(owner);
    rig.ask_on(1 - owner, "www.example.", RecordType::A, Ask::default());
    assert_eq!(rig.upstream_sent(), 0);
    rig.wait(Duration::from_millis(5_900));
    assert!(rig.replies.is_empty());
    rig.wait(Duration::from_millis(200));
    check(0, &rig.next_reply(), &code(ResponseCode::ServFail));
}

#[test]
fn the_owners_stale_entry_serves_other_shards_while_the_upstream_is_down() {
    let mut rig = Rig::new(2, config_with(Some(stale(3600, false))));
    let owner = rig.owner_of("www.example.");
    let other = 1 - owner;
    rig.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    rig.answer(&a(10));
    rig.next_reply();
    rig.wait(Duration::from_secs(20));
    // The other shard never held the entry; the owner serves it stale and refreshes.
    rig.ask_on(other, "www.example.", RecordType::A, Ask::default());
    check(0, &rig.next_reply(), &hit(30));
    assert_eq!(rig.upstream_sent(), 2);
    rig.lose();
    rig.wait(Duration::from_secs(6));
    rig.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    check(1, &rig.next_reply(), &hit(30));
}

#[test]
fn prefetch_on_several_shards_is_one_upstream_query() {
    let mut rig = Rig::new(2, config_with(Some(prefetch(1, 50))));
    for shard in [0, 1] {
        rig.ask_on(shard, "www.example.", RecordType::A, Ask::default());
    }
    rig.answer(&a(100));
    rig.replies.clear();
    rig.wait(Duration::from_secs(60));
    for shard in [0, 1, 0, 1] {
        rig.ask_on(shard, "www.example.", RecordType::A, Ask::default());
    }
    assert_eq!(rig.upstream_sent(), 2, "one miss and one refresh");
    rig.answer(&a_at([192, 0, 2, 8], 100));
    rig.replies.clear();
    for shard in [0, 1] {
        rig.ask_on(shard, "www.example.", RecordType::A, Ask::default());
        check(
            shard,
            &rig.next_reply(),
            &Want {
                addr: Some([192, 0, 2, 8]),
                ..hit(100)
            },
        );
    }
}
