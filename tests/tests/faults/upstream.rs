//! Faults of the upstream, played by the controllable [`TestUpstream`]: killed and
//! restarted, frozen, slowed beyond the attempt timeout, resetting connections, sending
//! garbage, wrong IDs, truncated TCP frames. Cached names must stay answered; misses get
//! SERVFAIL by the query deadline (or their answer); nothing is lost or wrong; the first
//! right answer comes soon after the upstream heals.

use std::time::Duration;

use shardns_e2e::upstream::zone;
use shardns_e2e::{Garbage, Shardns, TestUpstream, TruncateTcp, wait_for};

use crate::common::{self, Expect, Run, UNANSWERABLE, check_during};

/// How long each fault lasts: twice the attempt timeout.
const HOLD: Duration = Duration::from_secs(4);

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
        &shardns,
        mix,
        || inject(&upstream),
        HOLD,
        || heal(&upstream),
    );
    run.assert_common(&mut shardns);
    check_during(&run, expect, &shardns);
    (run, upstream, shardns)
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
