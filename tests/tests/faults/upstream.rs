//! Faults of the upstream, played by the controllable [`TestUpstream`]: killed and
//! restarted, frozen, slowed beyond the attempt timeout, resetting connections, sending
//! garbage, wrong IDs, truncated TCP frames. Cached names must stay answered; misses get
//! SERVFAIL by the query deadline (or their answer); nothing is lost or wrong; the first
//! right answer comes soon after the upstream heals.

use std::time::Duration;

use shardns_e2e::load::{Kind, Outcome};
use shardns_e2e::upstream::zone;
use shardns_e2e::{Garbage, Shardns, TestUpstream, TruncateTcp, wait_for};

use crate::common::{self, Run};

/// How long each fault lasts: twice the attempt timeout.
const HOLD: Duration = Duration::from_secs(4);
/// The query deadline of the default configuration: a SERVFAIL comes by then.
const QUERY_DEADLINE: Duration = Duration::from_secs(5);

/// The Corefile: one block forwarding everything to `upstream` with the `forward` block's
/// `options` (lines), and `cache`.
fn corefile(upstream: &TestUpstream, options: &[&str], cache: &str) -> String {
    let block: String = options.iter().map(|o| format!("        {o}\n")).collect();
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    {cache}\n    forward . {} {{\n{block}    }}\n    errors\n}}\n",
        upstream.addr()
    )
}

fn hits() -> Vec<(String, std::net::Ipv4Addr)> {
    (0..16).map(|n| (zone::host(n), zone::host_a(n))).collect()
}

/// What the clients must see during a fault.
#[derive(Debug, Clone, Copy)]
struct Expect {
    /// Misses sent during the fault got SERVFAIL (at least one).
    servfail: bool,
    /// Misses sent during the fault may have been answered right (the upstream answered
    /// some, late or on a retry).
    some_right: bool,
}

/// The upstream cannot answer: every miss during the fault gets SERVFAIL.
const UNANSWERABLE: Expect = Expect {
    servfail: true,
    some_right: false,
};

/// Starts a [`TestUpstream`] and shardns (2 shards) over it, runs the load through
/// `inject` … `heal`, and checks the common goals and `expect`.
fn upstream_fault(
    name: &'static str,
    tcp: bool,
    inject: impl FnOnce(&TestUpstream),
    heal: impl FnOnce(&TestUpstream),
    expect: Expect,
) -> (Run, TestUpstream, Shardns) {
    let options: &[&str] = if tcp { &["force_tcp"] } else { &[] };
    fault_with(name, options, "cache 30", inject, heal, expect)
}

/// [`upstream_fault`] with the `forward` block's `options` and the `cache` line.
fn fault_with(
    name: &'static str,
    options: &[&str],
    cache: &str,
    inject: impl FnOnce(&TestUpstream),
    heal: impl FnOnce(&TestUpstream),
    expect: Expect,
) -> (Run, TestUpstream, Shardns) {
    let upstream = TestUpstream::start().expect("test upstream");
    let mut shardns =
        Shardns::start(&corefile(&upstream, options, cache), &["--shards", "2"]).expect("shardns");
    let mix = common::mix(hits(), zone::ZONE);
    let run = common::run(
        name,
        &mut shardns,
        mix,
        || inject(&upstream),
        HOLD,
        || heal(&upstream),
    );
    run.assert_common(&shardns);
    check_during(&run, expect, &shardns);
    (run, upstream, shardns)
}

/// Hits unaffected; misses as `expect` says, each SERVFAIL by the query deadline.
fn check_during(run: &Run, expect: Expect, shardns: &Shardns) {
    let hits = run.during(Kind::Hit, Duration::ZERO);
    assert_eq!(
        hits.answered, hits.sent,
        "{}: cached names during the fault: {hits:?}",
        run.name
    );
    // Misses sent once the fault was in place (a query under way at its start may still have
    // been answered).
    let settled = run.from + Duration::from_millis(200);
    let misses = run
        .record
        .seen_where(|e| e.kind == Kind::Miss && e.sent >= settled && e.sent < run.to);
    assert!(misses.sent > 0, "{}: no miss during the fault", run.name);
    if expect.servfail {
        assert!(
            misses.servfail > 0,
            "{}: misses during: {misses:?}",
            run.name
        );
    }
    if !expect.some_right {
        // Those answered before the upstream healed.
        let answered = run
            .record
            .seen_where(|e| e.kind == Kind::Miss && e.sent >= settled && e.done() < run.to);
        assert_eq!(
            answered.answered, 0,
            "{}: answered while the upstream could not: {answered:?}",
            run.name
        );
    }
    let slowest_servfail = run
        .record
        .events
        .iter()
        .filter(|e| e.outcome == Outcome::ServFail)
        .map(|e| e.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_servfail <= QUERY_DEADLINE + Duration::from_millis(500),
        "{}: a SERVFAIL took {slowest_servfail:?}\n{}",
        run.name,
        shardns.log_text()
    );
    eprintln!(
        "fault={}: misses during the fault: {misses:?}; slowest SERVFAIL {} ms",
        run.name,
        slowest_servfail.as_millis()
    );
}

fn stop_listening(upstream: &TestUpstream) {
    upstream.stop_listening();
}

fn start_listening(upstream: &TestUpstream) {
    upstream.start_listening().expect("listening again");
}

fn reset(upstream: &TestUpstream) {
    upstream.reset_behaviour();
}

#[test]
fn upstream_killed_then_restarted_udp() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_killed_then_restarted_udp",
        false,
        stop_listening,
        start_listening,
        UNANSWERABLE,
    );
    assert!(upstream.udp_queries() > 0);
    shardns.stop();
}

#[test]
fn upstream_killed_then_restarted_tcp() {
    let upstream_accepted = std::sync::Mutex::new(0);
    let (_, upstream, shardns) = upstream_fault(
        "upstream_killed_then_restarted_tcp",
        true,
        |upstream| {
            *upstream_accepted.lock().unwrap() = upstream.tcp_connections_accepted();
            upstream.stop_listening();
        },
        start_listening,
        UNANSWERABLE,
    );
    // The connections closed with the upstream were opened again.
    let before = *upstream_accepted.lock().unwrap();
    assert!(
        upstream.tcp_connections_accepted() > before,
        "no connection after the restart"
    );
    assert!(upstream.tcp_connections_open() > 0);
    shardns.stop();
}

#[test]
fn upstream_frozen_tcp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_frozen_tcp",
        true,
        |upstream| {
            upstream.drop_queries(true);
        },
        reset,
        UNANSWERABLE,
    );
    shardns.stop();
}

/// The health probes time out too while the upstream is frozen (over TCP with `force_tcp`).
/// Once it answers again and the load stops, every connection closes after `expire`: a
/// probe that timed out used to keep its connection counted busy forever.
#[test]
fn upstream_frozen_tcp_connections_close_when_idle() {
    let (_, upstream, shardns) = fault_with(
        "upstream_frozen_tcp_connections_close_when_idle",
        &["force_tcp", "expire 1s"],
        "cache 30",
        |upstream| {
            upstream.drop_queries(true);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.health_probes() > 0, "probes were sent");
    let closed = wait_for(Duration::from_secs(5), || {
        (upstream.tcp_connections_open() == 0).then_some(())
    });
    assert!(
        closed.is_some(),
        "{} connections still open 5 s after the load stopped\n{}",
        upstream.tcp_connections_open(),
        shardns.log_text()
    );
    shardns.stop();
}

#[test]
fn upstream_frozen_udp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_frozen_udp",
        false,
        |upstream| {
            upstream.drop_queries(true);
        },
        reset,
        UNANSWERABLE,
    );
    shardns.stop();
}

#[test]
fn upstream_slowed_to_3s_tcp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_slowed_to_3s_tcp",
        true,
        |upstream| {
            upstream.delay(Duration::from_secs(3));
        },
        reset,
        Expect {
            servfail: false,
            some_right: true,
        },
    );
    shardns.stop();
}

#[test]
fn upstream_slowed_to_3s_udp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_slowed_to_3s_udp",
        false,
        |upstream| {
            upstream.delay(Duration::from_secs(3));
        },
        reset,
        Expect {
            servfail: false,
            some_right: true,
        },
    );
    shardns.stop();
}

#[test]
fn upstream_resetting_connections() {
    let (_, _, shardns) = upstream_fault(
        "upstream_resetting_connections",
        true,
        |upstream| {
            upstream.reset_connections(true);
        },
        reset,
        UNANSWERABLE,
    );
    shardns.stop();
}

#[test]
fn upstream_garbage_udp() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_garbage_udp",
        false,
        |upstream| {
            upstream.garbage(Garbage::Framed);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.garbled() > 0);
    shardns.stop();
}

#[test]
fn upstream_garbage_tcp_framed() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_garbage_tcp_framed",
        true,
        |upstream| {
            upstream.garbage(Garbage::Framed);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.garbled() > 0);
    shardns.stop();
}

#[test]
fn upstream_garbage_tcp_unframed() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_garbage_tcp_unframed",
        true,
        |upstream| {
            upstream.garbage(Garbage::Unframed);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.garbled() > 0);
    shardns.stop();
}

#[test]
fn upstream_wrong_ids_udp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_wrong_ids_udp",
        false,
        |upstream| {
            upstream.wrong_id(true);
        },
        reset,
        UNANSWERABLE,
    );
    shardns.stop();
}

#[test]
fn upstream_wrong_ids_tcp() {
    let (_, _, shardns) = upstream_fault(
        "upstream_wrong_ids_tcp",
        true,
        |upstream| {
            upstream.wrong_id(true);
        },
        reset,
        UNANSWERABLE,
    );
    shardns.stop();
}

#[test]
fn upstream_truncated_tcp_frames_then_close() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_truncated_tcp_frames_then_close",
        true,
        |upstream| {
            upstream.truncate_tcp(TruncateTcp::ThenClose);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.garbled() > 0);
    shardns.stop();
}

#[test]
fn upstream_truncated_tcp_frames_then_silence() {
    let (_, upstream, shardns) = upstream_fault(
        "upstream_truncated_tcp_frames_then_silence",
        true,
        |upstream| {
            upstream.truncate_tcp(TruncateTcp::ThenSilence);
        },
        reset,
        UNANSWERABLE,
    );
    assert!(upstream.garbled() > 0);
    shardns.stop();
}
