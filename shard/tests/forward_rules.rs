//! The upstream path's rules (CoreDNS `forward` options: health checks, policy, failfast,
//! max_concurrent, next, except, prefer_udp, expire; metrics), one scenario each, on a virtual
//! clock with the engines of `common::Rig`.

mod common;

use std::time::Duration;

use common::{Ask, Rig, Upstream, config_forward, ttls};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use shardns_shard::config::{ForwardConfig, Policy};
use shardns_shard::{Bound, Protocol};
use shardns_wire::Rcode;

fn a(ttl: u32) -> Upstream {
    Upstream {
        answers: vec![([192, 0, 2, 1], ttl)],
        ..Upstream::default()
    }
}

fn rig(upstreams: usize, forward: ForwardConfig) -> Rig {
    Rig::new(1, config_forward(None, upstreams, forward))
}

fn ask(rig: &mut Rig, name: &str) {
    rig.ask_on(0, name, RecordType::A, Ask::default());
}

fn sequential(max_fails: u32) -> ForwardConfig {
    ForwardConfig {
        policy: Policy::Sequential,
        max_fails,
        ..ForwardConfig::default()
    }
}

/// The upstream the next unanswered query went to.
fn next_upstream(rig: &Rig) -> u16 {
    rig.upstream
        .front()
        .expect("an upstream query")
        .link
        .upstream
}

#[test]
fn failed_probes_take_an_upstream_down_and_an_answered_probe_brings_it_back() {
    let mut c = rig(2, sequential(1));
    ask(&mut c, "one.example.");
    assert_eq!(next_upstream(&c), 0);
    c.lose();
    c.wait(Duration::from_secs(2));
    // The timeout started probing upstream 0; the query moved on to upstream 1.
    assert_eq!(next_upstream(&c), 1);
    c.answer(&a(60));
    assert_eq!(c.next_reply().response_code(), ResponseCode::NoError);
    assert_eq!(c.probes.len(), 1);
    assert_eq!(c.probes[0].link.upstream, 0);
    // Two probes go unanswered (1 s each, 0.5 s apart): more than max_fails = 1.
    c.probes.clear();
    c.wait(Duration::from_millis(1500));
    assert_eq!(c.probes.len(), 1, "second probe after the interval");
    c.probes.clear();
    c.wait(Duration::from_secs(1));
    let stats = &c.engines[0].stats().upstreams[0];
    assert_eq!(stats.healthcheck_failures.get(), 2);
    // Down: a new query goes straight to upstream 1.
    ask(&mut c, "two.example.");
    assert_eq!(next_upstream(&c), 1);
    c.answer(&a(60));
    c.next_reply();
    // The next probe is answered: upstream 0 is back first in line.
    c.wait(Duration::from_millis(500));
    c.answer_probe();
    ask(&mut c, "three.example.");
    assert_eq!(next_upstream(&c), 0);
}

/// Takes every upstream of `c` down: a refused exchange on each, then their probes lost.
fn all_down(c: &mut Rig, upstreams: usize) {
    ask(c, "down.example.");
    for _ in 0..2 * upstreams {
        c.refuse();
    }
    assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
    for _ in 0..3 {
        c.probes.clear();
        c.wait(Duration::from_millis(1500));
    }
    for u in 0..upstreams {
        assert!(c.engines[0].stats().upstreams[u].healthcheck_failures.get() >= 2);
    }
}

#[test]
fn with_failfast_every_upstream_down_means_servfail_at_once() {
    let mut c = rig(
        2,
        ForwardConfig {
            failfast: true,
            max_fails: 1,
            ..ForwardConfig::default()
        },
    );
    all_down(&mut c, 2);
    let sent = c.upstream_sent();
    ask(&mut c, "x.example.");
    assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
    assert_eq!(c.upstream_sent(), sent, "nothing sent upstream");
    assert!(c.engines[0].stats().healthcheck_broken.get() >= 1);
}

#[test]
fn without_failfast_one_upstream_is_tried_once_and_servfail_comes_within_the_attempt_timeout() {
    let mut c = rig(2, sequential(1));
    all_down(&mut c, 2);
    let sent = c.upstream_sent();
    ask(&mut c, "x.example.");
    assert_eq!(c.upstream_sent(), sent + 1);
    c.lose();
    c.wait(Duration::from_millis(1999));
    assert!(c.replies.is_empty());
    c.wait(Duration::from_millis(1));
    assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
    assert_eq!(c.upstream_sent(), sent + 1, "one attempt only");
}

#[test]
fn policies_order_the_upstreams() {
    let firsts = |policy: Policy, queries: usize| {
        let mut c = rig(
            3,
            ForwardConfig {
                policy,
                ..ForwardConfig::default()
            },
        );
        (0..queries)
            .map(|i| {
                ask(&mut c, &format!("q{i}.example."));
                let u = next_upstream(&c);
                c.answer(&a(60));
                u
            })
            .collect::<Vec<u16>>()
    };
    assert_eq!(firsts(Policy::Sequential, 4), vec![0, 0, 0, 0]);
    assert_eq!(firsts(Policy::RoundRobin, 6), vec![0, 1, 2, 0, 1, 2]);
    let random = firsts(Policy::Random, 60);
    for u in 0..3 {
        let n = random.iter().filter(|&&x| x == u).count();
        assert!((8..=32).contains(&n), "upstream {u} first {n} times of 60");
    }
}

#[test]
fn max_concurrent_refuses_beyond_the_limit_and_counts_it() {
    let mut c = rig(
        1,
        ForwardConfig {
            max_concurrent: Some(2),
            ..ForwardConfig::default()
        },
    );
    ask(&mut c, "a.example.");
    ask(&mut c, "b.example.");
    ask(&mut c, "c.example.");
    let refused = c.next_reply();
    assert_eq!(refused.response_code(), ResponseCode::Refused);
    assert_eq!(refused.queries()[0].name().to_ascii(), "c.example.");
    assert_eq!(c.engines[0].stats().max_concurrent_rejects.get(), 1);
    // A client joining a query in flight is not a new one.
    ask(&mut c, "a.example.");
    assert!(c.replies.is_empty());
    c.answer(&a(60));
    assert_eq!(c.replies.len(), 2);
    c.replies.clear();
    ask(&mut c, "c.example.");
    assert!(c.replies.is_empty(), "room again");
    assert_eq!(c.upstream.len(), 2);
}

#[test]
fn next_rcodes_are_not_relayed() {
    let mut c = rig(
        1,
        ForwardConfig {
            next: vec![Rcode::NXDOMAIN],
            ..ForwardConfig::default()
        },
    );
    ask(&mut c, "gone.example.");
    c.answer(&Upstream {
        rcode: Some(ResponseCode::NXDomain),
        soa: Some(60),
        ..Upstream::default()
    });
    assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
    ask(&mut c, "www.example.");
    c.answer(&a(60));
    assert_eq!(c.next_reply().response_code(), ResponseCode::NoError);
}

#[test]
fn except_names_are_not_forwarded() {
    let mut c = rig(
        1,
        ForwardConfig {
            except: vec![common::wire_name("internal.example.")],
            ..ForwardConfig::default()
        },
    );
    ask(&mut c, "db.internal.example.");
    assert_eq!(c.next_reply().response_code(), ResponseCode::Refused);
    assert_eq!(c.upstream_sent(), 0);
    ask(&mut c, "www.example.");
    assert_eq!(c.upstream_sent(), 1);
}

#[test]
fn prefer_udp_asks_again_over_tcp_when_truncated() {
    let mut c = rig(
        1,
        ForwardConfig {
            prefer_udp: true,
            ..ForwardConfig::default()
        },
    );
    ask(&mut c, "big.example.");
    assert_eq!(c.upstream[0].link.protocol, Protocol::Udp);
    c.answer(&Upstream {
        truncated: true,
        ..Upstream::default()
    });
    assert!(c.replies.is_empty());
    assert_eq!(c.upstream.len(), 1);
    assert_eq!(c.upstream[0].link.protocol, Protocol::Tcp);
    c.answer(&a(60));
    let reply = c.next_reply();
    assert!(!reply.truncated());
    assert_eq!(ttls(&reply), vec![60]);
}

/// The retry over TCP keeps the resolution's identity: a client on another shard, waiting on
/// the key's owner, gets the whole answer at once (not SERVFAIL when its wait runs out), and
/// a client joining after the switch shares the retry.
#[test]
fn prefer_udp_over_tcp_still_answers_the_shards_waiting_on_the_owner() {
    let forward = ForwardConfig {
        prefer_udp: true,
        ..ForwardConfig::default()
    };
    let mut c = Rig::new(2, config_forward(None, 1, forward));
    let owner = c.owner_of("big.example.");
    let other = 1 - owner;
    c.ask_on(other, "big.example.", RecordType::A, Ask::default());
    assert_eq!(c.upstream[0].shard, owner);
    c.answer(&Upstream {
        truncated: true,
        ..Upstream::default()
    });
    assert_eq!(c.upstream[0].link.protocol, Protocol::Tcp);
    c.ask_on(owner, "big.example.", RecordType::A, Ask::default());
    assert_eq!(c.upstream.len(), 1, "the owner's client joined the retry");
    c.answer(&a(60));
    assert_eq!(c.replies.len(), 2, "both clients answered at once");
    for reply in c.replies.drain(..) {
        let reply = reply.message();
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert_eq!(ttls(&reply), vec![60]);
    }
    assert_eq!(c.upstream_sent(), 2);
}

#[test]
fn idle_connections_close_after_expire_and_metrics_follow_the_pool() {
    let mut c = rig(
        1,
        ForwardConfig {
            force_tcp: true,
            expire: Duration::from_secs(3),
            ..ForwardConfig::default()
        },
    );
    ask(&mut c, "a.example.");
    c.wait(Duration::from_millis(30));
    c.answer(&a(60));
    ask(&mut c, "b.example.");
    c.answer(&a(60));
    let stats = &c.engines[0].stats().upstreams[0];
    assert_eq!(stats.conn_cache_misses[1].get(), 1, "one connection made");
    assert_eq!(stats.conn_cache_hits[1].get(), 1, "then reused");
    assert_eq!(stats.open_connections.get(), 1);
    assert_eq!(stats.inflight.get(), 0);
    // The first exchange took 30 ms: in the 0.032 s bucket of NOERROR.
    assert_eq!(stats.durations[0].buckets[7].get(), 1);
    assert_eq!(stats.durations[0].count(), 2);
    c.wait(Duration::from_millis(2999));
    assert!(c.closed.is_empty());
    c.wait(Duration::from_millis(1));
    assert_eq!(c.closed.len(), 1);
}

#[test]
fn waiting_clients_are_capped_per_shard() {
    let mut config = config_forward(None, 1, ForwardConfig::default());
    config.limits.max_waiters = 3;
    let mut c = Rig::new(1, config);
    for _ in 0..5 {
        ask(&mut c, "hot.example.");
    }
    // Two over the cap were refused at once; the three waiting get the answer.
    assert_eq!(c.replies.len(), 2);
    assert!(
        c.replies
            .iter()
            .all(|r| r.message().response_code() == ResponseCode::Refused)
    );
    c.replies.clear();
    c.answer(&a(60));
    assert_eq!(c.replies.len(), 3);
    assert!(
        c.replies
            .iter()
            .all(|r| r.message().response_code() == ResponseCode::NoError)
    );
    c.replies.clear();
    // The count went back down: room again.
    for _ in 0..3 {
        ask(&mut c, "other.example.");
    }
    assert!(c.replies.is_empty());
    let bounds = &c.engines[0].stats().bounds;
    assert_eq!(bounds.get(Bound::WaitingClients), 2);
    assert_eq!(bounds.get(Bound::PendingQueries), 0);
}

#[test]
fn pending_queries_are_capped_counted_and_logged_at_a_bounded_rate() {
    let ((), lines) = common::logs::capture(|| {
        let mut config = config_forward(None, 1, ForwardConfig::default());
        config.limits.max_pending = 2;
        let mut c = Rig::new(1, config);
        for name in ["a.example.", "b.example.", "c.example.", "d.example."] {
            ask(&mut c, name);
        }
        // Two over the cap, refused at once; the first is logged, the second only counted.
        assert_eq!(c.replies.len(), 2);
        assert!(
            c.replies
                .iter()
                .all(|r| r.message().response_code() == ResponseCode::Refused)
        );
        c.replies.clear();
        c.wait(Duration::from_secs(1));
        ask(&mut c, "e.example.");
        assert_eq!(c.replies.len(), 1, "still at the cap");
        c.replies.clear();
        // Ten seconds after the first line (a and b have timed out meanwhile), the next
        // time writes one with the count.
        c.wait(Duration::from_secs(10));
        c.replies.clear();
        for name in ["f.example.", "g.example.", "h.example."] {
            ask(&mut c, name);
        }
        assert_eq!(c.replies.len(), 1, "h refused");
        assert_eq!(c.engines[0].stats().bounds.get(Bound::PendingQueries), 4);
    });
    let bounds: Vec<&common::logs::Line> = lines
        .iter()
        .filter(|line| line.message.contains("pending upstream queries at the cap"))
        .collect();
    assert_eq!(bounds.len(), 2, "{lines:?}");
    assert!(bounds.iter().all(|line| line.level == tracing::Level::WARN));
    assert!(
        bounds[0].message.contains("(2); reached 0 more"),
        "{:?}",
        bounds[0]
    );
    assert!(
        bounds[1].message.contains("(2); reached 2 more"),
        "{:?}",
        bounds[1]
    );
}

/// A rig whose block logs failed queries (`errors`).
fn logging_rig(upstreams: usize, forward: ForwardConfig) -> Rig {
    let mut config = config_forward(None, upstreams, forward);
    config.servers[0].log_errors = true;
    Rig::new(1, config)
}

/// The messages logged with `target`.
fn messages(lines: &[common::logs::Line], target: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.target == target)
        .map(|line| line.message.clone())
        .collect()
}

#[test]
fn failed_queries_are_logged_as_coredns_does() {
    let ((), lines) = common::logs::capture(|| {
        let mut c = logging_rig(1, sequential(0));
        ask(&mut c, "slow.example.");
        c.lose();
        c.wait(Duration::from_secs(2));
        c.lose();
        c.wait(Duration::from_secs(2));
        assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
        c.ask_on(0, "down.example.", RecordType::AAAA, Ask::default());
        c.refuse();
        c.refuse();
        assert_eq!(c.next_reply().response_code(), ResponseCode::ServFail);
    });
    assert_eq!(
        messages(&lines, "plugin/errors"),
        [
            "2 slow.example. A: read udp 127.0.0.1:1053: i/o timeout",
            "2 down.example. AAAA: dial udp 127.0.0.1:1053: connect: connection refused",
        ]
    );
    assert!(
        lines
            .iter()
            .filter(|line| line.target == "plugin/errors")
            .all(|line| line.level == tracing::Level::ERROR)
    );
}

#[test]
fn the_errors_log_writes_ten_lines_a_second_and_counts_the_rest() {
    let ((), lines) = common::logs::capture(|| {
        let mut c = logging_rig(1, sequential(0));
        for i in 0..15 {
            ask(&mut c, &format!("n{i}.example."));
            c.refuse();
            c.refuse();
        }
        c.wait(Duration::from_secs(1));
        ask(&mut c, "late.example.");
        c.refuse();
        c.refuse();
        assert_eq!(c.replies.len(), 16, "every client got its SERVFAIL");
    });
    let logged = messages(&lines, "plugin/errors");
    assert_eq!(logged.len(), 12, "{logged:#?}");
    assert!(logged[9].starts_with("2 n9.example. A: "), "{logged:#?}");
    assert_eq!(
        logged[10],
        "5 more failed queries not logged (at most 10 a second)"
    );
    assert!(logged[11].starts_with("2 late.example. A: "), "{logged:#?}");
}

#[test]
fn an_upstream_going_down_and_coming_back_is_logged_once_each() {
    let ((), lines) = common::logs::capture(|| {
        let mut c = rig(2, sequential(1));
        ask(&mut c, "one.example.");
        c.lose();
        c.wait(Duration::from_secs(2));
        c.answer(&a(60));
        // Three probes go unanswered: down after the second, still down after the third.
        for _ in 0..3 {
            c.probes.clear();
            c.wait(Duration::from_millis(1500));
        }
        c.answer_probe();
    });
    let health: Vec<&str> = lines
        .iter()
        .filter(|line| line.message.starts_with("upstream "))
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(
        health,
        [
            "upstream 127.0.0.1:1053 is down: 2 health checks failed in a row",
            "upstream 127.0.0.1:1053 is up again",
        ]
    );
}
