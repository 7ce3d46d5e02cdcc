//! `shardns --supervise`: a worker killed with SIGKILL under load is restarted on the same
//! sockets, and the queries sent meanwhile wait in the kernel and are answered; a supervised
//! shardns is upgraded by another one without losing a query.
//!
//! Traffic goes to 127.0.0.1 only; every wait is bounded.

use std::thread;
use std::time::{Duration, Instant};

use shardns_e2e::load::{CLIENTS, Load, corefile, warm};
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{Shardns, TempDir, Unbound, wait_for};

fn supervised(unbound: &Unbound, socket: &str) -> Shardns {
    Shardns::start(
        &corefile(unbound),
        &["--supervise", "--shards", "2", "--handoff-socket", socket],
    )
    .expect("supervised shardns")
}

#[test]
fn a_killed_worker_is_restarted_on_the_same_sockets() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("supervise").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let shardns = supervised(&unbound, &socket);
    let server = shardns.udp_addr();
    let first = wait_for(Duration::from_secs(5), || shardns.serving_worker()).expect("a worker");
    warm(server);
    let load = Load::start(server);
    thread::sleep(Duration::from_millis(500));
    let mut worker = first;
    let mut gaps = Vec::new();
    for kill in 0..3 {
        let killed = Instant::now();
        send_signal(worker, "KILL").unwrap();
        let next = wait_for(Duration::from_secs(5), || {
            shardns.serving_worker().filter(|&pid| pid != worker)
        })
        .unwrap_or_else(|| panic!("kill {kill}: no new worker:\n{}", shardns.log_text()));
        gaps.push(killed.elapsed());
        worker = next;
        thread::sleep(Duration::from_millis(500));
    }
    let seen = load.stop();
    eprintln!("{seen:?}; killed to serving again: {gaps:?}");
    // About 1,000 queries a second on an idle machine; far fewer on a loaded one.
    assert!(seen.sent > 300, "the load ran: {seen:?}");
    assert_eq!(seen.wrong, 0, "{seen:?}");
    assert_eq!(seen.answered + seen.lost, seen.sent);
    // At most the queries each killed worker had read and not answered yet: one per client.
    assert!(seen.lost <= 3 * CLIENTS as u64, "{seen:?}");
    assert!(
        gaps.iter().all(|gap| *gap < Duration::from_secs(2)),
        "{gaps:?}"
    );
    let log = shardns.log_text();
    assert_eq!(
        log.matches("restarting in 0 ms on the same sockets")
            .count(),
        3,
        "{log}"
    );
    shardns.stop();
}

#[test]
fn a_supervised_shardns_is_upgraded_by_another_without_loss() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("supervise-upgrade").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let old = supervised(&unbound, &socket);
    let server = old.udp_addr();
    let old_worker = wait_for(Duration::from_secs(5), || old.serving_worker()).expect("worker");
    warm(server);
    let upstream_before = unbound.total_queries();
    let load = Load::start(server);
    thread::sleep(Duration::from_millis(500));
    let new = supervised(&unbound, &socket);
    assert_eq!(new.udp_addr(), server);
    let (status, log) = old
        .wait_exit(Duration::from_secs(15))
        .expect("the old one leaves");
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains(&format!("worker {old_worker} was taken over")),
        "{log}"
    );
    thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    eprintln!("{seen:?}");
    assert_eq!(seen.answered, seen.sent, "{seen:?}");
    assert_eq!(
        unbound.total_queries(),
        upstream_before,
        "the cache went along"
    );
    new.stop();
}

/// `--handoff-linger` with `--supervise` (a pod's PID 1): the old supervisor, its worker
/// taken over, stays until SIGTERM (its worker does not linger: the supervisor must see it
/// leave), then exits 0 and leaves the new one serving.
#[test]
fn a_lingering_supervisor_waits_for_sigterm_after_its_worker_was_taken_over() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("supervise-linger").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let lingering = || {
        Shardns::start(
            &corefile(&unbound),
            &[
                "--supervise",
                "--shards",
                "2",
                "--handoff-socket",
                &socket,
                "--handoff-linger",
            ],
        )
        .expect("supervised shardns")
    };
    let mut old = lingering();
    let server = old.udp_addr();
    let old_worker = wait_for(Duration::from_secs(5), || old.serving_worker()).expect("worker");
    warm(server);
    let new = lingering();
    let taken_over = format!("worker {old_worker} was taken over");
    wait_for(Duration::from_secs(15), || {
        let log = old.log_text();
        (log.contains(&taken_over) && log.contains("lingering until SIGTERM")).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", old.log_text()));
    thread::sleep(Duration::from_secs(1));
    old.assert_alive();
    let load = Load::start(server);
    thread::sleep(Duration::from_millis(300));
    old.stop();
    thread::sleep(Duration::from_millis(300));
    let seen = load.stop();
    assert!(seen.sent > 30, "the load ran: {seen:?}");
    assert_eq!(seen.answered, seen.sent, "{seen:?}");
    new.stop();
}
