//! Unit tests of the packet cache's eviction: which entry goes when a kind is full (dead,
//! then expired but still servable, then not hit since the scan last passed it, oldest
//! first), the second chance of hit entries, the capacity bound, a smaller capacity on
//! reload, and the eviction queue's own memory. Time is the engine clock (nanoseconds).

use std::time::Duration;

use shardns_wire::{Key, KeyFlags, Message};

use super::{Kind, Lookup, PacketCache};
use crate::config::{CacheConfig, ServeStale};
use crate::question::LowerQuestion;

const SECOND: u64 = 1_000_000_000;

/// A cache policy holding `capacity` entries of each kind.
fn policy(capacity: usize, serve_stale: Option<u64>) -> CacheConfig {
    let mut policy = CacheConfig::with_ttl(None);
    policy.success.capacity = capacity;
    policy.denial.capacity = capacity;
    policy.serve_stale = serve_stale.map(|seconds| ServeStale {
        max_stale: Duration::from_secs(seconds),
        verify: false,
    });
    policy
}

fn cache(policy: CacheConfig) -> PacketCache {
    PacketCache::new(policy, b"\0", 1, Duration::from_secs(6))
}

/// `label.test.` as a question.
fn question(label: &str) -> LowerQuestion {
    let mut name = vec![label.len() as u8];
    name.extend_from_slice(label.as_bytes());
    name.extend_from_slice(b"\x04test\x00");
    let key = Key::from_parts(&name, 1, 1, KeyFlags::default());
    LowerQuestion::of_key(&key, key.hash_seeded(9))
}

/// Stores an A answer for `label` living `ttl` seconds, at `now`.
fn store(cache: &mut PacketCache, now: u64, label: &str, ttl: u32) -> [u64; 2] {
    let question = question(label);
    let mut bytes = vec![0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    bytes.extend_from_slice(question.qname());
    bytes.extend_from_slice(&[0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1]);
    bytes.extend_from_slice(&ttl.to_be_bytes());
    bytes.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
    let mut offsets = Vec::new();
    let message = Message::parse_with(&bytes, |at| offsets.push(at)).expect("parses");
    let policy = cache.policy().clone();
    let (response, kind) =
        super::StoredResponse::from_upstream(&message, &offsets, Some(&policy), now);
    assert_eq!(kind, Some(Kind::Success));
    let report = cache.insert(now, &question, Kind::Success, response);
    assert!(report.inserted);
    report.evicted
}

/// A client hit on `label` at `now`, as the hot path makes it.
fn hit(cache: &mut PacketCache, now: u64, label: &str) {
    let question = question(label);
    let found = cache.lookup(now, &question.key(), question.hash(), None);
    assert!(matches!(found, Lookup::Fresh { .. }), "{label} fresh");
}

/// Which of `labels` the cache holds (fresh or not).
fn held(cache: &PacketCache, labels: &[&str]) -> Vec<String> {
    labels
        .iter()
        .filter(|label| {
            let question = question(label);
            let key = question.key();
            cache
                .table
                .find(question.hash(), |e| e.is(question.hash(), &key))
                .is_some()
        })
        .map(|label| label.to_string())
        .collect()
}

#[test]
fn an_entry_that_can_no_longer_be_served_goes_first() {
    let mut cache = cache(policy(4, None));
    for (label, ttl) in [("a", 300), ("b", 10), ("c", 300), ("d", 300)] {
        assert_eq!(store(&mut cache, 0, label, ttl), [0, 0]);
    }
    hit(&mut cache, SECOND, "a");
    // b expired (no serve_stale): dead, and evicted before a cold but fresh c or d.
    assert_eq!(store(&mut cache, 20 * SECOND, "e", 300), [1, 0]);
    let all = ["a", "b", "c", "d", "e"];
    assert_eq!(held(&cache, &all), ["a", "c", "d", "e"]);
}

#[test]
fn a_dead_entry_goes_before_a_stale_one_and_a_stale_one_before_a_fresh_one() {
    // serve_stale 60 s: b (10 s) is dead at 100 s, c (50 s) is stale but servable until 110 s.
    let mut cache = cache(policy(4, Some(60)));
    for (label, ttl) in [("a", 300), ("c", 50), ("b", 10), ("d", 300)] {
        store(&mut cache, 0, label, ttl);
    }
    store(&mut cache, 100 * SECOND, "e", 300);
    assert_eq!(
        held(&cache, &["a", "b", "c", "d", "e"]),
        ["a", "c", "d", "e"]
    );
    store(&mut cache, 101 * SECOND, "f", 300);
    assert_eq!(
        held(&cache, &["a", "c", "d", "e", "f"]),
        ["a", "d", "e", "f"],
        "the stale one before the cold fresh ones"
    );
}

#[test]
fn hit_entries_get_a_second_chance_and_lose_their_mark_when_passed() {
    let mut cache = cache(policy(4, None));
    for label in ["a", "b", "c", "d"] {
        store(&mut cache, 0, label, 300);
    }
    hit(&mut cache, SECOND, "a");
    hit(&mut cache, SECOND, "b");
    // a and b were hit: c, the oldest cold entry, goes; a and b lose their mark.
    store(&mut cache, 2 * SECOND, "e", 300);
    assert_eq!(
        held(&cache, &["a", "b", "c", "d", "e"]),
        ["a", "b", "d", "e"]
    );
    // Now d is the oldest cold one, ahead of a and b (passed, unmarked, at the back).
    store(&mut cache, 3 * SECOND, "f", 300);
    assert_eq!(
        held(&cache, &["a", "b", "d", "e", "f"]),
        ["a", "b", "e", "f"]
    );
    // The scan that passed a and b moved them behind e: e goes next, then a.
    store(&mut cache, 4 * SECOND, "g", 300);
    assert_eq!(
        held(&cache, &["a", "b", "e", "f", "g"]),
        ["a", "b", "f", "g"]
    );
    store(&mut cache, 5 * SECOND, "h", 300);
    assert_eq!(
        held(&cache, &["a", "b", "f", "g", "h"]),
        ["b", "f", "g", "h"]
    );
}

#[test]
fn a_kind_never_holds_more_than_its_capacity() {
    let mut cache = cache(policy(4, None));
    let mut evicted = 0;
    for i in 0..100u64 {
        let label = format!("n{i}");
        evicted += store(&mut cache, i * SECOND, &label, 30)[0];
        assert!(cache.len_of(Kind::Success) <= 4);
        if i % 3 == 0 {
            hit(&mut cache, i * SECOND, &label);
        }
    }
    assert_eq!((cache.len_of(Kind::Success), evicted), (4, 96));
    assert_eq!(cache.len_of(Kind::Denial), 0, "the other kind is untouched");
}

#[test]
fn a_smaller_capacity_on_reload_evicts_the_coldest_at_once() {
    let mut cache = cache(policy(4, None));
    for label in ["a", "b", "c", "d"] {
        store(&mut cache, 0, label, 300);
    }
    hit(&mut cache, SECOND, "b");
    hit(&mut cache, SECOND, "d");
    let report = cache.set_policy(2 * SECOND, policy(2, None), b"\0", 1);
    assert_eq!(report.evicted, [2, 0]);
    assert_eq!(held(&cache, &["a", "b", "c", "d"]), ["b", "d"]);
}

#[test]
fn replacing_entries_does_not_grow_the_eviction_queue() {
    let mut cache = cache(policy(4, None));
    for round in 0..10_000u64 {
        store(
            &mut cache,
            round,
            ["a", "b", "c", "d"][round as usize % 4],
            300,
        );
    }
    assert_eq!(cache.len_of(Kind::Success), 4);
    assert!(
        cache.order[0].len() <= 2 * 4 + 64 + 1,
        "{} queued",
        cache.order[0].len()
    );
}
