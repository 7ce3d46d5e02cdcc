//! The cache's rules (CoreDNS `cache` semantics, serve-stale, prefetch, eviction, coalescing
//! across shards), one scenario per rule, written as data: client queries, upstream replies,
//! time passing, and the expected answers with their TTLs. Virtual clock, no sockets.

mod common;

use std::time::Duration;

use common::{Ask, Cluster, Upstream, config_with, ttls};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shardns_shard::config::{CacheConfig, Prefetch, ServeStale};
use shardns_shard::engine::Coalesce;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// A client asks shard 0 for `name` type A.
    Ask(&'static str),
    /// The same, with query options.
    AskWith(&'static str, Ask),
    /// The oldest unanswered upstream query gets this reply.
    Reply(Upstream),
    /// The oldest unanswered upstream query is lost (no reply ever).
    Lose,
    /// Milliseconds pass.
    Wait(u64),
    /// The next client reply is this.
    Expect(Want),
    /// No client reply is waiting.
    Quiet,
    /// Upstream queries sent so far, in total.
    Sent(usize),
}
use Step::*;

/// What a client reply must show (`None`: not checked).
#[derive(Debug, Clone, Default)]
struct Want {
    rcode: Option<ResponseCode>,
    /// Every answer and authority TTL.
    ttl: Option<u32>,
    /// Number of answer records.
    answers: Option<usize>,
    aa: Option<bool>,
    ad: Option<bool>,
    /// The question name exactly as the client wrote it.
    name: Option<&'static str>,
    /// The first A record's address.
    addr: Option<[u8; 4]>,
}

/// An A answer with this TTL from the upstream (address 192.0.2.1).
fn a(ttl: u32) -> Upstream {
    a_at([192, 0, 2, 1], ttl)
}

fn a_at(addr: [u8; 4], ttl: u32) -> Upstream {
    Upstream {
        answers: vec![(addr, ttl)],
        ..Upstream::default()
    }
}

fn rcode(code: ResponseCode, soa: Option<u32>) -> Upstream {
    Upstream {
        rcode: Some(code),
        soa,
        ..Upstream::default()
    }
}

/// The first reply to a miss (relayed, AA clear) with this TTL.
fn relayed(ttl: u32) -> Want {
    Want {
        rcode: Some(ResponseCode::NoError),
        ttl: Some(ttl),
        aa: Some(false),
        ..Want::default()
    }
}

/// A reply from the cache (AA set) with this TTL.
fn hit(ttl: u32) -> Want {
    Want {
        rcode: Some(ResponseCode::NoError),
        ttl: Some(ttl),
        aa: Some(true),
        ..Want::default()
    }
}

fn code(code: ResponseCode) -> Want {
    Want {
        rcode: Some(code),
        ..Want::default()
    }
}

fn secs(s: u64) -> Step {
    Wait(s * 1000)
}

fn check(step: usize, reply: &Message, want: &Want) {
    let at = format!("step {step}: {reply:?}");
    if let Some(rcode) = want.rcode {
        assert_eq!(reply.response_code(), rcode, "rcode, {at}");
    }
    if let Some(ttl) = want.ttl {
        let got = ttls(reply);
        assert!(!got.is_empty(), "records expected, {at}");
        assert!(got.iter().all(|&t| t == ttl), "TTLs {got:?} != {ttl}, {at}");
    }
    if let Some(n) = want.answers {
        assert_eq!(reply.answers().len(), n, "answers, {at}");
    }
    if let Some(aa) = want.aa {
        assert_eq!(reply.authoritative(), aa, "AA, {at}");
    }
    if let Some(ad) = want.ad {
        assert_eq!(reply.authentic_data(), ad, "AD, {at}");
    }
    if let Some(name) = want.name {
        assert_eq!(reply.queries()[0].name().to_ascii(), name, "question, {at}");
    }
    if let Some(addr) = want.addr {
        match reply.answers().first().map(|r| r.data()) {
            Some(RData::A(a)) => assert_eq!(a.0.octets(), addr, "address, {at}"),
            other => panic!("expected an A record, got {other:?}, {at}"),
        }
    }
}

/// Runs `steps` on a one-shard cluster with `cache`.
fn run(cache: CacheConfig, steps: &[Step]) -> Cluster {
    let mut cluster = Cluster::new(1, config_with(Some(cache)));
    play(&mut cluster, steps);
    cluster
}

fn play(cluster: &mut Cluster, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Ask(name) => {
                cluster.ask_on(0, name, RecordType::A, Ask::default());
            }
            AskWith(name, ask) => {
                cluster.ask_on(0, name, RecordType::A, *ask);
            }
            Reply(up) => cluster.answer(up),
            Lose => {
                cluster.lose();
            }
            Wait(ms) => cluster.wait(Duration::from_millis(*ms)),
            Expect(want) => {
                let reply = cluster
                    .replies
                    .pop_front()
                    .unwrap_or_else(|| panic!("step {i}: no reply (expected {want:?})"))
                    .2;
                check(i, &reply, want);
            }
            Quiet => assert!(
                cluster.replies.is_empty(),
                "step {i}: unexpected reply {:?}",
                cluster.replies
            ),
            Sent(n) => assert_eq!(cluster.upstream_sent(), *n, "step {i}: upstream queries"),
        }
    }
}

fn cache(ttl: Option<u32>) -> CacheConfig {
    CacheConfig::with_ttl(ttl)
}

fn stale(max_secs: u64, verify: bool) -> CacheConfig {
    CacheConfig {
        serve_stale: Some(ServeStale {
            max_stale: Duration::from_secs(max_secs),
            verify,
        }),
        ..cache(None)
    }
}

#[test]
fn ttl_is_capped_at_the_maximum_on_the_first_reply_and_on_hits() {
    run(
        cache(Some(30)),
        &[
            Ask("www.example."),
            Quiet,
            Reply(a(3600)),
            Expect(relayed(30)),
            Ask("www.example."),
            Expect(hit(30)),
            Sent(1),
        ],
    );
}

#[test]
fn ttl_is_the_minimum_over_all_records() {
    let two = Upstream {
        answers: vec![([192, 0, 2, 1], 300), ([192, 0, 2, 2], 50)],
        soa: Some(900),
        ..Upstream::default()
    };
    run(
        cache(None),
        &[
            Ask("www.example."),
            Reply(two),
            Expect(relayed(50)),
            Ask("www.example."),
            Expect(hit(50)),
        ],
    );
}

#[test]
fn ttl_is_raised_to_the_minimum_ttl() {
    run(
        cache(None),
        &[
            Ask("www.example."),
            Reply(a(2)),
            Expect(relayed(5)),
            secs(4),
            Ask("www.example."),
            Expect(hit(1)),
            Sent(1),
        ],
    );
    let zero = CacheConfig {
        success: shardns_shard::config::CacheSection {
            min_ttl: 0,
            ..cache(None).success
        },
        ..cache(None)
    };
    // MINTTL 0 and an upstream TTL of 0: relayed, not cached.
    run(
        zero,
        &[
            Ask("www.example."),
            Reply(a(0)),
            Expect(relayed(0)),
            Ask("www.example."),
            Sent(2),
        ],
    );
}

#[test]
fn a_reply_without_records_lives_for_the_minimum_ttl() {
    let empty = Upstream::default();
    run(
        cache(None),
        &[
            Ask("empty.example."),
            Reply(empty),
            Expect(Want {
                answers: Some(0),
                ..code(ResponseCode::NoError)
            }),
            secs(4),
            Ask("empty.example."),
            Expect(Want {
                answers: Some(0),
                aa: Some(true),
                ..code(ResponseCode::NoError)
            }),
            Sent(1),
            secs(1),
            Ask("empty.example."),
            Sent(2),
        ],
    );
}

#[test]
fn remaining_ttl_counts_whole_seconds_and_a_fresh_entry_never_shows_zero() {
    run(
        cache(None),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            Wait(999),
            Ask("www.example."),
            Expect(hit(10)),
            Wait(8_000),
            Ask("www.example."),
            Expect(hit(2)),
            Wait(1_000),
            Ask("www.example."),
            Expect(hit(1)),
            Wait(1),
            Ask("www.example."),
            Quiet,
            Sent(2),
        ],
    );
}

#[test]
fn hits_ignore_letter_case_and_echo_the_clients_question() {
    run(
        cache(None),
        &[
            Ask("www.Example."),
            Reply(a(60)),
            Expect(Want {
                name: Some("www.Example."),
                ..relayed(60)
            }),
            Ask("WWW.EXAMPLE."),
            Expect(Want {
                name: Some("WWW.EXAMPLE."),
                ..hit(60)
            }),
            Ask("wWw.eXaMpLe."),
            Expect(Want {
                name: Some("wWw.eXaMpLe."),
                ..hit(60)
            }),
            Sent(1),
        ],
    );
}

#[test]
fn do_and_cd_bits_keep_separate_entries() {
    let dnssec = Ask {
        dnssec_ok: true,
        ..Ask::default()
    };
    let cd = Ask {
        checking_disabled: true,
        ..Ask::default()
    };
    run(
        cache(None),
        &[
            Ask("www.example."),
            Reply(a_at([192, 0, 2, 1], 60)),
            Expect(relayed(60)),
            AskWith("www.example.", dnssec),
            Sent(2),
            Reply(a_at([192, 0, 2, 2], 60)),
            Expect(Want {
                addr: Some([192, 0, 2, 2]),
                ..relayed(60)
            }),
            AskWith("www.example.", cd),
            Sent(3),
            Reply(a_at([192, 0, 2, 3], 60)),
            Expect(Want {
                addr: Some([192, 0, 2, 3]),
                ..relayed(60)
            }),
            AskWith("www.example.", dnssec),
            Expect(Want {
                addr: Some([192, 0, 2, 2]),
                ..hit(60)
            }),
            AskWith("www.example.", cd),
            Expect(Want {
                addr: Some([192, 0, 2, 3]),
                ..hit(60)
            }),
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 1]),
                ..hit(60)
            }),
            // The EDNS buffer size is not part of the key.
            AskWith(
                "www.example.",
                Ask {
                    edns: true,
                    ..Ask::default()
                },
            ),
            Expect(Want {
                addr: Some([192, 0, 2, 1]),
                ..hit(60)
            }),
            Sent(3),
        ],
    );
}

#[test]
fn ad_is_cleared_unless_the_client_asked_with_ad_or_do() {
    let signed = Upstream {
        authentic_data: true,
        ..a(60)
    };
    run(
        cache(None),
        &[
            AskWith(
                "www.example.",
                Ask {
                    authentic_data: true,
                    ..Ask::default()
                },
            ),
            Reply(signed),
            Expect(Want {
                ad: Some(true),
                ..relayed(60)
            }),
            Ask("www.example."),
            Expect(Want {
                ad: Some(false),
                ..hit(60)
            }),
            AskWith(
                "www.example.",
                Ask {
                    authentic_data: true,
                    ..Ask::default()
                },
            ),
            Expect(Want {
                ad: Some(true),
                ..hit(60)
            }),
            Sent(1),
        ],
    );
}

#[test]
fn negative_answers_take_the_soa_ttl_capped_for_denial() {
    run(
        cache(None),
        &[
            Ask("gone.example."),
            Reply(rcode(ResponseCode::NXDomain, Some(60))),
            Expect(Want {
                ttl: Some(60),
                aa: Some(false),
                ..code(ResponseCode::NXDomain)
            }),
            secs(10),
            Ask("gone.example."),
            Expect(Want {
                ttl: Some(50),
                aa: Some(true),
                ..code(ResponseCode::NXDomain)
            }),
            // NODATA: NOERROR, no answers, an SOA.
            Ask("nodata.example."),
            Reply(rcode(ResponseCode::NoError, Some(20))),
            Expect(Want {
                ttl: Some(20),
                answers: Some(0),
                ..code(ResponseCode::NoError)
            }),
            Ask("nodata.example."),
            Expect(Want {
                ttl: Some(20),
                aa: Some(true),
                ..code(ResponseCode::NoError)
            }),
            // The denial maximum is 1800 s by default.
            Ask("long.example."),
            Reply(rcode(ResponseCode::NXDomain, Some(7200))),
            Expect(Want {
                ttl: Some(1800),
                ..code(ResponseCode::NXDomain)
            }),
            Sent(3),
        ],
    );
}

#[test]
fn servfail_is_cached_for_the_servfail_duration_only() {
    run(
        cache(None),
        &[
            Ask("broken.example."),
            Reply(rcode(ResponseCode::ServFail, None)),
            Expect(code(ResponseCode::ServFail)),
            secs(4),
            Ask("broken.example."),
            Expect(Want {
                aa: Some(true),
                ..code(ResponseCode::ServFail)
            }),
            Sent(1),
            secs(1),
            Ask("broken.example."),
            Sent(2),
            Reply(rcode(ResponseCode::NotImp, None)),
            Expect(code(ResponseCode::NotImp)),
            Ask("broken.example."),
            Expect(code(ResponseCode::NotImp)),
            Sent(2),
        ],
    );
    let off = CacheConfig {
        servfail_ttl: 0,
        ..cache(None)
    };
    run(
        off,
        &[
            Ask("broken.example."),
            Reply(rcode(ResponseCode::ServFail, None)),
            Expect(code(ResponseCode::ServFail)),
            Ask("broken.example."),
            Sent(2),
        ],
    );
}

#[test]
fn refused_formerr_notauth_truncated_and_odd_nxdomains_are_relayed_not_cached() {
    let cases = [
        rcode(ResponseCode::Refused, None),
        rcode(ResponseCode::FormErr, None),
        rcode(ResponseCode::NotAuth, None),
        rcode(ResponseCode::NXDomain, None),
        Upstream {
            rcode: Some(ResponseCode::NXDomain),
            soa: Some(60),
            ..a(60)
        },
        Upstream {
            truncated: true,
            ..a(60)
        },
    ];
    for up in cases {
        let want = up.rcode.unwrap_or(ResponseCode::NoError);
        run(
            cache(None),
            &[
                Ask("x.example."),
                Reply(up.clone()),
                Expect(code(want)),
                Ask("x.example."),
                Sent(2),
                Reply(up),
                Expect(Want {
                    aa: Some(false),
                    ..code(want)
                }),
            ],
        );
    }
}

#[test]
fn keepttl_relays_and_serves_the_upstream_ttls_but_still_expires() {
    let keep = CacheConfig {
        keepttl: true,
        ..cache(Some(30))
    };
    run(
        keep,
        &[
            Ask("www.example."),
            Reply(a(100)),
            Expect(relayed(100)),
            secs(20),
            Ask("www.example."),
            Expect(hit(100)),
            secs(10),
            Ask("www.example."),
            Sent(2),
        ],
    );
}

#[test]
fn disable_keeps_one_kind_out_of_the_cache_for_its_zones() {
    let example = common::wire_name("example.");
    let no_success = CacheConfig {
        disable_success: vec![example.clone()],
        ..cache(None)
    };
    run(
        no_success,
        &[
            Ask("www.example."),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("www.example."),
            Sent(2),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("gone.example."),
            Reply(rcode(ResponseCode::NXDomain, Some(60))),
            Expect(code(ResponseCode::NXDomain)),
            Ask("gone.example."),
            Expect(Want {
                aa: Some(true),
                ..code(ResponseCode::NXDomain)
            }),
            // Outside the disabled zone, success is cached.
            Ask("www.example.org."),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("www.example.org."),
            Expect(hit(60)),
            Sent(4),
        ],
    );
    let no_denial = CacheConfig {
        disable_denial: vec![example],
        ..cache(None)
    };
    run(
        no_denial,
        &[
            Ask("gone.example."),
            Reply(rcode(ResponseCode::NXDomain, Some(60))),
            Expect(code(ResponseCode::NXDomain)),
            Ask("gone.example."),
            Sent(2),
        ],
    );
}

#[test]
fn names_outside_the_cache_zones_are_forwarded_uncached() {
    let zoned = CacheConfig {
        zones: vec![common::wire_name("cluster.local.")],
        ..cache(None)
    };
    run(
        zoned,
        &[
            Ask("svc.cluster.local."),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("svc.cluster.local."),
            Expect(hit(60)),
            Ask("www.example."),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("www.example."),
            Sent(3),
        ],
    );
}

#[test]
fn serve_stale_immediate_answers_stale_at_once_and_refreshes_once() {
    run(
        stale(3600, false),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            secs(11),
            Ask("www.example."),
            Expect(hit(30)),
            Sent(2),
            // A second stale hit while the refresh is in flight starts no other.
            Ask("www.example."),
            Expect(hit(30)),
            Sent(2),
            Reply(a_at([192, 0, 2, 9], 10)),
            Quiet,
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 9]),
                ..hit(10)
            }),
            Sent(2),
        ],
    );
}

#[test]
fn serve_stale_stops_after_its_duration() {
    run(
        stale(60, false),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            Wait(69_000),
            Ask("www.example."),
            Expect(hit(30)),
            Lose,
            secs(2),
            Ask("www.example."),
            Quiet,
            Sent(3),
        ],
    );
}

#[test]
fn an_upstream_failure_never_replaces_a_usable_stale_entry() {
    run(
        stale(3600, false),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            secs(11),
            Ask("www.example."),
            Expect(hit(30)),
            Reply(rcode(ResponseCode::ServFail, None)),
            Quiet,
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 1]),
                ..hit(30)
            }),
            Sent(2),
        ],
    );
}

#[test]
fn serve_stale_verify_asks_upstream_first_and_falls_back_on_failure() {
    run(
        stale(3600, true),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            secs(11),
            Ask("www.example."),
            Quiet,
            Reply(rcode(ResponseCode::ServFail, None)),
            Expect(hit(30)),
            Ask("www.example."),
            Quiet,
            Reply(a_at([192, 0, 2, 7], 10)),
            Expect(Want {
                addr: Some([192, 0, 2, 7]),
                ..relayed(10)
            }),
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 7]),
                ..hit(10)
            }),
            Sent(3),
        ],
    );
}

#[test]
fn serve_stale_verify_falls_back_when_the_upstream_times_out() {
    run(
        stale(3600, true),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            secs(11),
            Ask("www.example."),
            Lose,
            // RFC 8767's client timer: 1.8 s, not the whole upstream timeout.
            Wait(1_799),
            Quiet,
            Wait(1),
            Expect(hit(30)),
            // The upstream query goes on (second attempt) and refreshes the entry.
            Wait(200),
            Sent(3),
            Reply(a_at([192, 0, 2, 4], 10)),
            Quiet,
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 4]),
                ..hit(10)
            }),
        ],
    );
}

#[test]
fn without_serve_stale_an_expired_entry_is_a_miss() {
    run(
        cache(None),
        &[
            Ask("www.example."),
            Reply(a(10)),
            Expect(relayed(10)),
            secs(11),
            Ask("www.example."),
            Quiet,
            Reply(rcode(ResponseCode::ServFail, None)),
            Expect(code(ResponseCode::ServFail)),
        ],
    );
}

fn prefetch(amount: u32, percentage: u8) -> CacheConfig {
    CacheConfig {
        prefetch: Some(Prefetch {
            amount,
            window: Duration::from_secs(60),
            percentage,
        }),
        ..cache(None)
    }
}

#[test]
fn prefetch_refreshes_a_popular_entry_once_before_it_expires() {
    run(
        prefetch(2, 50),
        &[
            Ask("www.example."),
            Reply(a(100)),
            Expect(relayed(100)),
            secs(10),
            Ask("www.example."),
            Expect(hit(90)),
            secs(40),
            // Remaining 50 s <= 50 % of 100 s, second hit in the window: refresh.
            Ask("www.example."),
            Expect(hit(50)),
            Sent(2),
            Ask("www.example."),
            Expect(hit(50)),
            Sent(2),
            Reply(a_at([192, 0, 2, 5], 100)),
            Quiet,
            secs(1),
            Ask("www.example."),
            Expect(Want {
                addr: Some([192, 0, 2, 5]),
                ..hit(99)
            }),
            Sent(2),
        ],
    );
}

#[test]
fn prefetch_leaves_unpopular_entries_alone() {
    run(
        prefetch(3, 50),
        &[
            Ask("www.example."),
            Reply(a(100)),
            Expect(relayed(100)),
            secs(60),
            Ask("www.example."),
            Expect(hit(40)),
            secs(20),
            Ask("www.example."),
            Expect(hit(20)),
            Sent(1),
        ],
    );
}

fn capacity(success: usize) -> CacheConfig {
    let base = cache(None);
    CacheConfig {
        success: shardns_shard::config::CacheSection {
            capacity: success,
            ..base.success
        },
        ..base
    }
}

/// Fills the cache with `names` (TTL `ttl` each).
fn fill(names: &[&'static str], ttl: u32) -> Vec<Step> {
    names
        .iter()
        .flat_map(|&n| [Ask(n), Reply(a(ttl)), Expect(relayed(ttl))])
        .collect()
}

#[test]
fn eviction_spares_entries_that_were_hit() {
    let mut steps = fill(&["a.test.", "b.test.", "c.test.", "d.test."], 300);
    steps.extend([
        Ask("a.test."),
        Expect(hit(300)),
        Ask("b.test."),
        Expect(hit(300)),
        Ask("c.test."),
        Expect(hit(300)),
    ]);
    steps.extend(fill(&["e.test."], 300));
    steps.extend([
        Sent(5),
        Ask("a.test."),
        Expect(hit(300)),
        Ask("b.test."),
        Expect(hit(300)),
        Ask("c.test."),
        Expect(hit(300)),
        Ask("e.test."),
        Expect(hit(300)),
        Ask("d.test."),
        Quiet,
        Sent(6),
    ]);
    run(capacity(4), &steps);
}

#[test]
fn eviction_takes_an_expired_entry_before_a_cold_fresh_one() {
    let mut steps = fill(&["a.test."], 300);
    steps.extend(fill(&["b.test."], 10));
    steps.extend(fill(&["c.test."], 300));
    steps.extend([secs(20)]);
    steps.extend(fill(&["d.test."], 300));
    steps.extend([
        Ask("a.test."),
        Expect(hit(280)),
        Ask("c.test."),
        Expect(hit(280)),
        Ask("d.test."),
        Expect(hit(300)),
        Sent(4),
    ]);
    run(capacity(3), &steps);
}

#[test]
fn memory_stays_bounded_by_capacity_whatever_the_mix() {
    let mut cluster = Cluster::new(1, config_with(Some(capacity(10))));
    for i in 0..500 {
        let name = format!("n{i}.test.");
        cluster.ask_on(0, &name, RecordType::A, Ask::default());
        let up = if i % 3 == 0 {
            rcode(ResponseCode::NXDomain, Some(60))
        } else {
            a(300)
        };
        cluster.answer(&up);
        cluster.replies.clear();
        let cache = cluster.engines[0].cache(0).unwrap();
        assert!(cache.len() <= 10 + 9984, "entries {}", cache.len());
        assert!(cache.len_of(shardns_shard::cache::Kind::Success) <= 10);
    }
    let stats = &cluster.engines[0].stats().servers[0];
    assert_eq!(stats.entries[0].get(), 10);
    assert!(
        stats.evictions[0].get() >= 300,
        "{}",
        stats.evictions[0].get()
    );
}

#[test]
fn a_thousand_concurrent_misses_on_all_shards_make_one_upstream_query() {
    let mut cluster = Cluster::new(4, config_with(Some(cache(None))));
    for i in 0..1000 {
        cluster.ask_on(i % 4, "hot.example.", RecordType::A, Ask::default());
    }
    assert_eq!(cluster.upstream_sent(), 1);
    assert!(cluster.replies.is_empty());
    cluster.answer(&a(60));
    assert_eq!(cluster.replies.len(), 1000);
    let mut per_shard = [0; 4];
    for (shard, _, reply) in cluster.replies.drain(..) {
        per_shard[shard] += 1;
        check(0, &reply, &relayed(60));
    }
    assert_eq!(per_shard, [250; 4]);
    // Every shard now answers from its own cache.
    for shard in 0..4 {
        cluster.ask_on(shard, "hot.example.", RecordType::A, Ask::default());
        check(shard, &cluster.next_reply(), &hit(60));
    }
    assert_eq!(cluster.upstream_sent(), 1);
    let coalesced: u64 = cluster
        .engines
        .iter()
        .map(|e| e.stats().coalesced.get())
        .sum();
    assert!(coalesced >= 996, "coalesced {coalesced}");
}

#[test]
fn a_later_miss_on_another_shard_is_answered_from_the_owners_cache() {
    let mut cluster = Cluster::new(2, config_with(Some(cache(None))));
    let owner = cluster.owner_of("www.example.");
    let other = 1 - owner;
    cluster.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    cluster.answer(&a(60));
    check(0, &cluster.next_reply(), &relayed(60));
    cluster.wait(Duration::from_secs(5));
    cluster.ask_on(other, "www.example.", RecordType::A, Ask::default());
    // The owner's entry, with its remaining lifetime; no upstream query.
    check(1, &cluster.next_reply(), &relayed(55));
    assert_eq!(cluster.upstream_sent(), 1);
    cluster.ask_on(other, "www.example.", RecordType::A, Ask::default());
    check(2, &cluster.next_reply(), &hit(55));
}

#[test]
fn within_mode_resolves_each_shards_misses_itself() {
    let mut cluster = Cluster::with_mode(2, config_with(Some(cache(None))), Coalesce::Within);
    for shard in [0, 1, 0, 1] {
        cluster.ask_on(shard, "hot.example.", RecordType::A, Ask::default());
    }
    assert_eq!(cluster.upstream_sent(), 2);
}

#[test]
fn a_silent_owner_means_servfail_after_the_overall_deadline() {
    let mut cluster = Cluster::new(2, config_with(Some(cache(None))));
    let owner = cluster.owner_of("www.example.");
    cluster.unreachable = Some(owner);
    cluster.ask_on(1 - owner, "www.example.", RecordType::A, Ask::default());
    assert_eq!(cluster.upstream_sent(), 0);
    cluster.wait(Duration::from_millis(5_900));
    assert!(cluster.replies.is_empty());
    cluster.wait(Duration::from_millis(200));
    check(0, &cluster.next_reply(), &code(ResponseCode::ServFail));
}

#[test]
fn the_owners_stale_entry_serves_other_shards_while_the_upstream_is_down() {
    let mut cluster = Cluster::new(2, config_with(Some(stale(3600, false))));
    let owner = cluster.owner_of("www.example.");
    let other = 1 - owner;
    cluster.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    cluster.answer(&a(10));
    cluster.next_reply();
    cluster.wait(Duration::from_secs(20));
    // The other shard never held the entry; the owner serves it stale and refreshes.
    cluster.ask_on(other, "www.example.", RecordType::A, Ask::default());
    check(0, &cluster.next_reply(), &hit(30));
    assert_eq!(cluster.upstream_sent(), 2);
    cluster.lose();
    cluster.wait(Duration::from_secs(6));
    cluster.ask_on(owner, "www.example.", RecordType::A, Ask::default());
    check(1, &cluster.next_reply(), &hit(30));
}

#[test]
fn prefetch_on_several_shards_is_one_upstream_query() {
    let mut cluster = Cluster::new(2, config_with(Some(prefetch(1, 50))));
    for shard in [0, 1] {
        cluster.ask_on(shard, "www.example.", RecordType::A, Ask::default());
    }
    cluster.answer(&a(100));
    cluster.replies.clear();
    cluster.wait(Duration::from_secs(60));
    for shard in [0, 1, 0, 1] {
        cluster.ask_on(shard, "www.example.", RecordType::A, Ask::default());
    }
    assert_eq!(cluster.upstream_sent(), 2, "one miss and one refresh");
    cluster.answer(&a_at([192, 0, 2, 8], 100));
    cluster.replies.clear();
    for shard in [0, 1] {
        cluster.ask_on(shard, "www.example.", RecordType::A, Ask::default());
        check(
            shard,
            &cluster.next_reply(),
            &Want {
                addr: Some([192, 0, 2, 8]),
                ..hit(100)
            },
        );
    }
}

#[test]
fn a_reload_keeps_the_cache_and_in_flight_queries() {
    let mut cluster = Cluster::new(1, config_with(Some(cache(None))));
    cluster.ask_on(0, "www.example.", RecordType::A, Ask::default());
    cluster.answer(&a(300));
    check(0, &cluster.next_reply(), &relayed(300));
    cluster.ask_on(0, "pending.example.", RecordType::A, Ask::default());
    assert_eq!(cluster.upstream.len(), 1);

    // New options and a new upstream address: same blocks, same listeners.
    let mut next = config_with(Some(CacheConfig {
        keepttl: true,
        ..cache(Some(60))
    }));
    next.upstreams[0].addr = "127.0.0.1:2053".parse().unwrap();
    let now = cluster.now;
    cluster.engines[0]
        .reconfigure(now, std::sync::Arc::new(next))
        .expect("same blocks reload");
    cluster.settle();
    // The in-flight query went again, to the new upstream; the old attempt is void.
    assert_eq!(cluster.upstream_sent(), 3);
    cluster.lose();
    cluster.answer(&a(30));
    check(1, &cluster.next_reply(), &relayed(30));
    // The entry cached before the reload is still a hit.
    cluster.wait(Duration::from_secs(10));
    cluster.ask_on(0, "www.example.", RecordType::A, Ask::default());
    check(2, &cluster.next_reply(), &hit(290));
    assert_eq!(cluster.upstream_sent(), 3);

    // Changing the blocks needs a restart.
    let mut other = config_with(Some(cache(None)));
    other.servers[0].zone = common::wire_name("example.");
    let now = cluster.now;
    assert!(
        cluster.engines[0]
            .reconfigure(now, std::sync::Arc::new(other))
            .is_err()
    );
    cluster.ask_on(0, "www.example.", RecordType::A, Ask::default());
    check(3, &cluster.next_reply(), &hit(290));
}

#[test]
fn a_reload_with_a_smaller_capacity_evicts_the_coldest() {
    let mut cluster = Cluster::new(1, config_with(Some(capacity(4))));
    for name in ["a.test.", "b.test.", "c.test.", "d.test."] {
        cluster.ask_on(0, name, RecordType::A, Ask::default());
        cluster.answer(&a(300));
    }
    for name in ["b.test.", "d.test."] {
        cluster.ask_on(0, name, RecordType::A, Ask::default());
    }
    cluster.replies.clear();
    let now = cluster.now;
    cluster.engines[0]
        .reconfigure(now, std::sync::Arc::new(config_with(Some(capacity(2)))))
        .unwrap();
    assert_eq!(cluster.engines[0].cache(0).unwrap().len(), 2);
    for name in ["b.test.", "d.test."] {
        cluster.ask_on(0, name, RecordType::A, Ask::default());
        check(0, &cluster.next_reply(), &hit(300));
    }
    assert_eq!(cluster.upstream_sent(), 4);
}
