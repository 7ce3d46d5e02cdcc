//! The Corefile replaced by a broken one under load, read by a SIGUSR1 reload and by the
//! `reload` directive: every reload is refused, logged and counted, and the running
//! configuration keeps serving without a query lost.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use shardns_e2e::metrics::{scrape, value};
use shardns_e2e::shardns::send_signal;
use shardns_e2e::unbound::free_port;
use shardns_e2e::upstream::zone;
use shardns_e2e::{Shardns, TestUpstream, wait_for};

use crate::common::{self, Run};

/// Broken Corefiles, each with what makes it so.
const BROKEN: [(&str, &str); 6] = [
    (
        "a block never closed",
        ".:0 {\n    bind 127.0.0.1\n    cache 30\n",
    ),
    (
        "an unknown directive",
        ".:0 {\n    bind 127.0.0.1\n    frobnicate\n}\n",
    ),
    ("a bad value", ".:0 {\n    bind 127.0.0.1\n    cache 0\n}\n"),
    ("an empty file", ""),
    ("binary junk", "\u{0}\u{1}\u{2}\u{fffd}{{{\n"),
    (
        "another listening address",
        ".:0 {\n    bind 127.0.0.2\n}\n",
    ),
];

/// One block forwarding to `upstream`, with metrics at `metrics` and the `extra` lines.
fn corefile(upstream: &TestUpstream, metrics: SocketAddr, extra: &str) -> String {
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {}\n    errors\n    \
         prometheus {metrics}\n{extra}}}\n",
        upstream.addr()
    )
}

/// Lines of the log containing `needle`.
fn count(shardns: &Shardns, needle: &str) -> usize {
    shardns
        .log_lines()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// Waits (≤ 10 s) until the log holds more than `seen` lines containing `needle`.
fn wait_log(shardns: &Shardns, needle: &str, seen: usize) -> bool {
    wait_for(Duration::from_secs(10), || {
        (count(shardns, needle) > seen).then_some(())
    })
    .is_some()
}

fn start(extra: &str) -> (TestUpstream, Shardns, SocketAddr) {
    let upstream = TestUpstream::start().expect("test upstream");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let shardns =
        Shardns::start(&corefile(&upstream, metrics, extra), &["--shards", "2"]).expect("shardns");
    (upstream, shardns, metrics)
}

fn mix() -> shardns_e2e::load::Mix {
    common::mix(
        (0..16).map(|n| (zone::host(n), zone::host_a(n))).collect(),
        zone::ZONE,
    )
}

/// Everything the load sent during the fault was answered right (no SERVFAIL either).
fn assert_unaffected(run: &Run) {
    let seen = run.record.seen();
    assert_eq!(seen.answered, seen.sent, "{}: {seen:?}", run.name);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("writing the Corefile");
}

/// Each broken Corefile written in turn, each followed by SIGUSR1: each reload fails, is
/// counted in `coredns_reload_failed_total`, and the load sees nothing; then the good one
/// back and a SIGUSR1 that finds it unchanged.
#[test]
fn broken_corefile_on_sigusr1() {
    const NAME: &str = "broken_corefile_on_sigusr1";
    let (upstream, mut shardns, metrics) = start("");
    let good = corefile(&upstream, metrics, "");
    let path = shardns.dir().join("Corefile");
    let pid = shardns.pid();
    let refused = Mutex::new(Vec::new());
    let run = common::run(
        NAME,
        &shardns,
        mix(),
        || {
            for (what, text) in BROKEN {
                let failed = count(&shardns, "reload failed");
                write(&path, text);
                send_signal(pid, "USR1").expect("SIGUSR1");
                if !wait_log(&shardns, "reload failed", failed) {
                    refused.lock().unwrap().push(what);
                }
            }
            // The file gone altogether.
            let failed = count(&shardns, "reload failed");
            std::fs::remove_file(&path).expect("removing the Corefile");
            send_signal(pid, "USR1").expect("SIGUSR1");
            if !wait_log(&shardns, "reload failed", failed) {
                refused.lock().unwrap().push("no file");
            }
        },
        Duration::from_millis(500),
        || {
            let unchanged = count(&shardns, "the configuration is unchanged");
            write(&path, &good);
            send_signal(pid, "USR1").expect("SIGUSR1");
            assert!(
                wait_log(&shardns, "the configuration is unchanged", unchanged),
                "{}",
                shardns.log_text()
            );
        },
    );
    run.assert_common(&mut shardns);
    assert_unaffected(&run);
    let not_refused = refused.into_inner().unwrap();
    assert!(
        not_refused.is_empty(),
        "{NAME}: no reload failure logged for {not_refused:?}\n{}",
        shardns.log_text()
    );
    let failures = value(&scrape(metrics), "coredns_reload_failed_total");
    assert_eq!(failures, Some(BROKEN.len() as u64 + 1));
    assert_eq!(count(&shardns, "configuration reloaded"), 0);
    shardns.stop();
}

/// With `reload 2s 1s`, a broken Corefile left in place for two checks and more: each check
/// fails, the load sees nothing; the good one back is taken as unchanged.
#[test]
fn broken_corefile_with_the_reload_directive() {
    const NAME: &str = "broken_corefile_with_the_reload_directive";
    let reload = "    reload 2s 1s\n";
    let (upstream, mut shardns, metrics) = start(reload);
    let good = corefile(&upstream, metrics, reload);
    let path = shardns.dir().join("Corefile");
    // A Corefile cut short, as an editor writing in place might leave it for a moment.
    let cut = &good[..good.len() / 2];
    let failed_before = Mutex::new(0);
    let run = common::run_until(
        NAME,
        &shardns,
        mix(),
        || {
            *failed_before.lock().unwrap() = count(&shardns, "reload failed");
            write(&path, cut);
        },
        Duration::from_secs(12),
        || count(&shardns, "reload failed") >= *failed_before.lock().unwrap() + 2,
        || write(&path, &good),
    );
    run.assert_common(&mut shardns);
    assert_unaffected(&run);
    let failures = value(&scrape(metrics), "coredns_reload_failed_total").unwrap_or(0);
    assert!(failures >= 2, "{NAME}: {failures} reload failures counted");
    // The good Corefile back: the next checks find nothing to do.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&shardns, "configuration reloaded"), 0);
    let after = value(&scrape(metrics), "coredns_reload_failed_total").unwrap_or(0);
    assert_eq!(
        after, failures,
        "{NAME}: the good Corefile failed to reload"
    );
    shardns.stop();
}
