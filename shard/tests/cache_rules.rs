//! The cache's rules (CoreDNS `cache` semantics, serve-stale, prefetch, eviction, reloads),
//! one scenario per rule, written as data: client queries, upstream replies, time passing,
//! and the expected answers with their TTLs. Virtual clock, no sockets. Misses across shards
//! are in `coalescing.rs`.

mod common;

use std::time::Duration;

use common::scenario::{Want, a, a_at, cache, check, code, hit, prefetch, rcode, relayed, stale};
use common::{Ask, Rig, Upstream, config_with};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_shard::config::CacheConfig;

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

fn secs(s: u64) -> Step {
    Wait(s * 1000)
}

/// Runs `steps` on a one-engine rig with `cache`.
fn run(cache: CacheConfig, steps: &[Step]) -> Rig {
    let mut rig = Rig::new(1, config_with(Some(cache)));
    play(&mut rig, steps);
    rig
}

fn play(rig: &mut Rig, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Ask(name) => {
                rig.ask_on(0, name, RecordType::A, Ask::default());
            }
            AskWith(name, ask) => {
                rig.ask_on(0, name, RecordType::A, *ask);
            }
            Reply(up) => rig.answer(up),
            Lose => {
                rig.lose();
            }
            Wait(ms) => rig.wait(Duration::from_millis(*ms)),
            Expect(want) => {
                let reply = rig
                    .replies
                    .pop_front()
                    .unwrap_or_else(|| panic!("step {i}: no reply (expected {want:?})"))
                    .message();
                check(i, &reply, want);
            }
            Quiet => assert!(
                rig.replies.is_empty(),
                "step {i}: unexpected reply {:?}",
                rig.replies
            ),
            Sent(n) => assert_eq!(rig.upstream_sent(), *n, "step {i}: upstream queries"),
        }
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
        zones: vec![common::wire_name("rig.local.")],
        ..cache(None)
    };
    run(
        zoned,
        &[
            Ask("svc.rig.local."),
            Reply(a(60)),
            Expect(relayed(60)),
            Ask("svc.rig.local."),
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
    let mut rig = Rig::new(1, config_with(Some(capacity(10))));
    for i in 0..500 {
        let name = format!("n{i}.test.");
        rig.ask_on(0, &name, RecordType::A, Ask::default());
        let up = if i % 3 == 0 {
            rcode(ResponseCode::NXDomain, Some(60))
        } else {
            a(300)
        };
        rig.answer(&up);
        rig.replies.clear();
        let cache = rig.engines[0].cache(0).unwrap();
        assert!(cache.len() <= 10 + 9984, "entries {}", cache.len());
        let success = rig.engines[0].stats().servers[0].entries[0].get();
        assert!(success <= 10, "success entries {success}");
    }
    let stats = &rig.engines[0].stats().servers[0];
    assert_eq!(stats.entries[0].get(), 10);
    assert!(
        stats.evictions[0].get() >= 300,
        "{}",
        stats.evictions[0].get()
    );
}

#[test]
fn a_reload_keeps_the_cache_and_in_flight_queries() {
    let mut rig = Rig::new(1, config_with(Some(cache(None))));
    rig.ask_on(0, "www.example.", RecordType::A, Ask::default());
    rig.answer(&a(300));
    check(0, &rig.next_reply(), &relayed(300));
    rig.ask_on(0, "pending.example.", RecordType::A, Ask::default());
    assert_eq!(rig.upstream.len(), 1);

    // New options and a new upstream address: same blocks, same listeners.
    let mut next = config_with(Some(CacheConfig {
        keepttl: true,
        ..cache(Some(60))
    }));
    next.upstreams[0].addr = "127.0.0.1:2053".parse().unwrap();
    let now = rig.now;
    rig.engines[0]
        .reconfigure(now, std::sync::Arc::new(next))
        .expect("same blocks reload");
    rig.settle();
    // The in-flight query went again, to the new upstream; the old attempt is void.
    assert_eq!(rig.upstream_sent(), 3);
    rig.lose();
    rig.answer(&a(30));
    check(1, &rig.next_reply(), &relayed(30));
    // The entry cached before the reload is still a hit.
    rig.wait(Duration::from_secs(10));
    rig.ask_on(0, "www.example.", RecordType::A, Ask::default());
    check(2, &rig.next_reply(), &hit(290));
    assert_eq!(rig.upstream_sent(), 3);

    // Changing the blocks needs a restart.
    let mut other = config_with(Some(cache(None)));
    other.servers[0].zone = common::wire_name("example.");
    let now = rig.now;
    assert!(
        rig.engines[0]
            .reconfigure(now, std::sync::Arc::new(other))
            .is_err()
    );
    rig.ask_on(0, "www.example.", RecordType::A, Ask::default());
    check(3, &rig.next_reply(), &hit(290));
}

/// The root block of `config_with` plus a stub domain `acme.local.` forwarding to its own
/// upstream (127.0.0.1:3053), both on the one address: a stub domain added to the kube-dns
/// ConfigMap.
fn with_stub_domain(cache_config: Option<CacheConfig>) -> shardns_shard::Config {
    use shardns_shard::config::{ForwardConfig, UpstreamConfig};
    let mut config = config_with(cache_config);
    let mut stub = config.servers[0].clone();
    stub.zone = common::wire_name("acme.local.");
    stub.zone_text = "acme.local.".to_string();
    stub.cache = Some(cache(None));
    stub.forward = Some(ForwardConfig {
        from: common::wire_name("acme.local."),
        upstreams: vec![1],
        ..ForwardConfig::default()
    });
    config.servers.push(stub);
    config.upstreams.push(UpstreamConfig {
        addr: "127.0.0.1:3053".parse().unwrap(),
    });
    config.listeners[0].servers.push(1);
    config
}

#[test]
fn a_reload_adds_and_retires_server_blocks_keeping_the_others() {
    use std::sync::Arc;

    use shardns_shard::ShardStats;

    let start = config_with(Some(cache(None)));
    let mut rig = Rig::new(2, start.clone());
    // Counters with room for blocks a reload adds, as the process makes them.
    rig.engines = rig
        .engines
        .drain(..)
        .map(|engine| engine.with_stats(Arc::new(ShardStats::with_room(&start, 4, 4))))
        .collect();
    rig.ask_on(0, "www.example.", RecordType::A, Ask::default());
    rig.answer(&a(300));
    check(0, &rig.next_reply(), &relayed(300));

    // A stub domain added: its names go to its upstream, the rest is as before.
    let added = Arc::new(with_stub_domain(Some(cache(None))).aligned_to(&start));
    let now = rig.now;
    for engine in &mut rig.engines {
        engine
            .reconfigure(now, Arc::clone(&added))
            .expect("a block added");
    }
    rig.ask_on(1, "db.acme.local.", RecordType::A, Ask::default());
    rig.settle();
    let addr = rig.upstream.front().expect("an upstream query").addr;
    assert_eq!(
        addr,
        "127.0.0.1:3053".parse().unwrap(),
        "the stub's upstream"
    );
    rig.answer(&a(60));
    check(1, &rig.next_reply(), &relayed(60));
    rig.ask_on(0, "www.example.", RecordType::A, Ask::default());
    check(2, &rig.next_reply(), &hit(300));

    // Retired again: its names go to the root block's upstream; the root's cache stays.
    let retired = Arc::new(config_with(Some(cache(None))).aligned_to(&added));
    assert_eq!(retired.servers.len(), 2, "the stub's index is kept");
    let now = rig.now;
    for engine in &mut rig.engines {
        engine
            .reconfigure(now, Arc::clone(&retired))
            .expect("a block retired");
    }
    rig.ask_on(0, "db.acme.local.", RecordType::A, Ask::default());
    rig.settle();
    let (_, addr, _) = rig.upstream_query();
    assert_eq!(
        addr,
        "127.0.0.1:1053".parse().unwrap(),
        "the root's upstream"
    );
    rig.ask_on(1, "www.example.", RecordType::A, Ask::default());
    check(3, &rig.next_reply(), &hit(300));

    // More blocks than the counters have room for: a restart is needed.
    let mut crowded = with_stub_domain(None);
    for zone in ["b.local.", "c.local.", "d.local."] {
        let mut block = crowded.servers[1].clone();
        block.zone = common::wire_name(zone);
        block.zone_text = zone.to_string();
        crowded.listeners[0].servers.push(crowded.servers.len());
        crowded.servers.push(block);
    }
    let crowded = Arc::new(crowded.aligned_to(&retired));
    assert_eq!(crowded.servers.len(), 5);
    let now = rig.now;
    assert!(rig.engines[0].reconfigure(now, crowded).is_err());
}

#[test]
fn a_reload_with_a_smaller_capacity_evicts_the_coldest() {
    let mut rig = Rig::new(1, config_with(Some(capacity(4))));
    for name in ["a.test.", "b.test.", "c.test.", "d.test."] {
        rig.ask_on(0, name, RecordType::A, Ask::default());
        rig.answer(&a(300));
    }
    for name in ["b.test.", "d.test."] {
        rig.ask_on(0, name, RecordType::A, Ask::default());
    }
    rig.replies.clear();
    let now = rig.now;
    rig.engines[0]
        .reconfigure(now, std::sync::Arc::new(config_with(Some(capacity(2)))))
        .unwrap();
    assert_eq!(rig.engines[0].cache(0).unwrap().len(), 2);
    for name in ["b.test.", "d.test."] {
        rig.ask_on(0, name, RecordType::A, Ask::default());
        check(0, &rig.next_reply(), &hit(300));
    }
    assert_eq!(rig.upstream_sent(), 4);
}
