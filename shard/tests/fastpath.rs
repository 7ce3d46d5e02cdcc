//! Publication of hot entries to the in-kernel fast path (`shardns_shard::fastpath`), on a
//! virtual clock: what is published, when, rendered how; what is withdrawn on eviction and
//! reload; what a block without `fastpath`, a TCP client or a full channel does. An entry is
//! published on its first UDP hit on a shard (`PUBLISH_AFTER`): asked twice, a name is hot.

#![forbid(unsafe_code)]

mod common;

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use common::{Ask, Rig, Upstream, client, config_with, query};
use hickory_proto::rr::RecordType;
use std::time::Duration;

use shardns_shard::config::{CacheConfig, Prefetch};
use shardns_shard::fastpath::{HotEntry, KernelHit, Publication, ReplyBits, publication_channel};
use shardns_shard::{Config, FastpathConfig, Protocol, RestartNeeded};

fn fastpath_config(capacity: usize) -> Config {
    let mut cache = CacheConfig::with_ttl(Some(30));
    cache.success.capacity = capacity;
    let mut config = config_with(Some(cache));
    config.servers[0].fastpath = Some(FastpathConfig {
        interfaces: vec!["veth*".into()],
        force: false,
    });
    config
}

/// One engine publishing into a channel of `capacity`.
fn rig(config: Config, capacity: usize) -> (Rig, Receiver<Publication>) {
    let mut rig = Rig::one(config);
    let (publisher, receiver) = publication_channel(capacity);
    let engines = std::mem::take(&mut rig.engines);
    rig.engines = engines
        .into_iter()
        .map(|engine| engine.with_publisher(publisher.clone()))
        .collect();
    (rig, receiver)
}

/// Resolves `name` (A, one record, TTL 300) so that it is cached.
fn cache(rig: &mut Rig, name: &str) {
    rig.ask_on(0, name, RecordType::A, Ask::default());
    rig.answer(&Upstream {
        answers: vec![([192, 0, 2, 1], 300)],
        ..Upstream::default()
    });
    rig.replies.clear();
}

/// A UDP hit on `name` with `ask`: the reply's bytes.
fn hit(rig: &mut Rig, name: &str, ask: Ask) -> Vec<u8> {
    let outcome = rig.ask_on(0, name, RecordType::A, ask);
    assert!(
        matches!(outcome, shardns_shard::Outcome::Reply(_)),
        "{name} is a hit"
    );
    rig.replies.pop_back().unwrap().bytes
}

fn inserted(receiver: &Receiver<Publication>) -> HotEntry {
    match receiver.try_recv() {
        Ok(Publication::Insert(hot)) => hot,
        other => panic!("expected an insert, got {other:?}"),
    }
}

/// The socket path's reply with the ID zeroed and RD cleared: what `render` makes.
fn as_rendered(mut reply: Vec<u8>) -> Vec<u8> {
    reply[0..2].copy_from_slice(&[0, 0]);
    reply[2] &= !0x01;
    reply
}

#[test]
fn hot_entries_are_published_once_per_combination() {
    let (mut rig, receiver) = rig(fastpath_config(100), 16);
    cache(&mut rig, "a.example.");
    assert!(receiver.try_recv().is_err(), "a miss publishes nothing");
    // The first hit: asked twice, the name is hot.
    let reply = hit(&mut rig, "A.Example.", Ask::default());
    let hot = inserted(&receiver);
    assert_eq!((hot.shard(), hot.server(), hot.qtype()), (0, 0, 1));
    assert_eq!(hot.qname(), b"\x01a\x07example\x00");
    assert!(hot.is_success() && !hot.keeps_ttls());
    assert_eq!(hot.ttl(), 30);
    let plain = ReplyBits {
        edns: false,
        dnssec_ok: false,
        checking_disabled: false,
        authentic_data: false,
    };
    assert_eq!(hot.combinations().collect::<Vec<_>>(), vec![plain]);
    // The clock has not moved: the socket path's TTLs are the whole lifetime too. The
    // rendered question is lowercase; the client's was not.
    let mut expected = as_rendered(reply);
    expected[12..23].copy_from_slice(b"\x01a\x07example\x00");
    assert_eq!(hot.render(plain), expected);
    assert!(hot.expires_at() > hot.stored_at());

    hit(&mut rig, "a.example.", Ask::default());
    assert!(receiver.try_recv().is_err(), "published once");
    // Another combination: EDNS (and AD, as dig asks).
    let ask = Ask {
        edns: true,
        authentic_data: true,
        ..Ask::default()
    };
    let reply = hit(&mut rig, "a.example.", ask);
    let hot = inserted(&receiver);
    let bits = ReplyBits {
        edns: true,
        authentic_data: true,
        ..plain
    };
    assert_eq!(hot.combinations().collect::<Vec<_>>(), vec![bits]);
    assert_eq!(hot.render(bits), as_rendered(reply));
    hit(&mut rig, "a.example.", ask);
    assert!(receiver.try_recv().is_err());
    // TCP hits are not the fast path's.
    let mut tcp = client(7);
    tcp.protocol = Protocol::Tcp;
    let ask = Ask {
        edns: true,
        ..Ask::default()
    };
    for id in 0..3 {
        rig.send_on(0, tcp, &query(900 + id, "a.example.", RecordType::A, ask));
    }
    assert!(receiver.try_recv().is_err(), "TCP hits publish nothing");
    assert_eq!(rig.engines[0].stats().fastpath_published.get(), 2);
}

#[test]
fn a_block_without_fastpath_publishes_nothing() {
    let mut config = fastpath_config(100);
    config.servers[0].fastpath = None;
    let (mut rig, receiver) = rig(config, 16);
    cache(&mut rig, "a.example.");
    for _ in 0..5 {
        hit(&mut rig, "a.example.", Ask::default());
    }
    assert!(receiver.try_recv().is_err());
    // And an engine with no publisher ignores `fastpath`.
    let mut rig = Rig::one(fastpath_config(100));
    cache(&mut rig, "a.example.");
    for _ in 0..5 {
        hit(&mut rig, "a.example.", Ask::default());
    }
    assert_eq!(rig.engines[0].stats().fastpath_published.get(), 0);
}

#[test]
fn evicted_entries_are_withdrawn() {
    // Room for one positive answer: once a has expired (30 s), caching b evicts it.
    let (mut rig, receiver) = rig(fastpath_config(1), 16);
    cache(&mut rig, "a.example.");
    hit(&mut rig, "a.example.", Ask::default());
    hit(&mut rig, "a.example.", Ask::default());
    inserted(&receiver);
    rig.wait(Duration::from_secs(31));
    cache(&mut rig, "b.example.");
    match receiver.try_recv() {
        Ok(Publication::Remove(hot)) => {
            assert_eq!(hot.qname(), b"\x01a\x07example\x00");
            assert_eq!(hot.combinations().count(), 1);
        }
        other => panic!("expected a removal, got {other:?}"),
    }
    // An entry never published is evicted silently.
    cache(&mut rig, "c.example.");
    assert!(receiver.try_recv().is_err());
}

#[test]
fn a_reload_withdraws_everything_and_entries_publish_again() {
    let config = fastpath_config(100);
    let (mut rig, receiver) = rig(config.clone(), 16);
    cache(&mut rig, "a.example.");
    hit(&mut rig, "a.example.", Ask::default());
    hit(&mut rig, "a.example.", Ask::default());
    inserted(&receiver);
    let now = rig.now;
    rig.engines[0]
        .reconfigure(now, Arc::new(config.clone()))
        .unwrap();
    assert!(matches!(
        receiver.try_recv(),
        Ok(Publication::Reset { shard: 0 })
    ));
    hit(&mut rig, "a.example.", Ask::default());
    inserted(&receiver);
    hit(&mut rig, "a.example.", Ask::default());
    assert!(receiver.try_recv().is_err(), "published again once");
    // The directive itself cannot change on a reload.
    let mut other = config.clone();
    other.servers[0].fastpath = None;
    assert_eq!(config.check_reload(&other), Err(RestartNeeded::Fastpath));
    let mut more = config.clone();
    more.servers[0]
        .fastpath
        .as_mut()
        .unwrap()
        .interfaces
        .push("lo".into());
    assert_eq!(config.check_reload(&more), Err(RestartNeeded::Fastpath));
    assert_eq!(config.check_reload(&config), Ok(()));
}

#[test]
fn a_full_channel_drops_and_counts() {
    let (mut rig, receiver) = rig(fastpath_config(100), 1);
    for name in ["a.example.", "b.example."] {
        cache(&mut rig, name);
        hit(&mut rig, name, Ask::default());
        hit(&mut rig, name, Ask::default());
    }
    let stats = rig.engines[0].stats();
    assert_eq!(stats.fastpath_published.get(), 1);
    assert_eq!(stats.fastpath_dropped.get(), 1);
    assert_eq!(inserted(&receiver).qname(), b"\x01a\x07example\x00");
    assert!(receiver.try_recv().is_err());
}

/// With `prefetch 2 1m 50%`: hits the kernel answered, reported back, count towards it like
/// socket hits; the refreshed answer is published again at once.
#[test]
fn kernel_hits_count_towards_prefetch_and_the_refresh_is_published_again() {
    let with_prefetch = |prefetch: bool| {
        let mut config = fastpath_config(100);
        config.servers[0].cache.as_mut().unwrap().prefetch = prefetch.then_some(Prefetch {
            amount: 2,
            window: Duration::from_secs(60),
            percentage: 50,
        });
        config
    };
    let kernel_hits = |hits: u32| {
        vec![KernelHit {
            server: 0,
            qname: b"\x01a\x07example\x00".to_vec(),
            qtype: 1,
            dnssec_ok: false,
            checking_disabled: false,
            hits,
        }]
    };
    for (prefetch, reported, refreshed) in [(true, 5, true), (true, 0, false), (false, 5, false)] {
        let (mut rig, receiver) = rig(with_prefetch(prefetch), 16);
        cache(&mut rig, "a.example.");
        let first = {
            hit(&mut rig, "a.example.", Ask::default());
            inserted(&receiver)
        };
        hit(&mut rig, "a.example.", Ask::default());
        // 20 s of the 30 s lifetime gone: inside prefetch's last 50 %. The two socket hits
        // were 20 s ago, in the same window.
        rig.wait(Duration::from_secs(20));
        let sent = rig.upstream_sent();
        let now = rig.now;
        rig.engines[0].kernel_hits(now, &kernel_hits(reported));
        rig.settle();
        assert_eq!(
            rig.upstream_sent() > sent,
            refreshed,
            "prefetch {prefetch}, {reported} kernel hits"
        );
        if !refreshed {
            assert!(receiver.try_recv().is_err());
            continue;
        }
        rig.answer(&Upstream {
            answers: vec![([192, 0, 2, 1], 300)],
            ..Upstream::default()
        });
        let again = inserted(&receiver);
        assert_eq!(again.qname(), first.qname());
        assert!(
            again.stored_at() > first.stored_at(),
            "the refreshed answer"
        );
        assert_eq!(
            again.combinations().collect::<Vec<_>>(),
            first.combinations().collect::<Vec<_>>()
        );
        assert_eq!(rig.engines[0].stats().servers[0].prefetch.get(), 1);
    }
}
