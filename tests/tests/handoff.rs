//! Upgrades without loss: a new shardns started with the same `--handoff-socket` takes the
//! running one's sockets and cache; the old one answers what it took and exits 0. Under a
//! steady UDP load through 5 successive upgrades every query is answered, and the cache goes
//! along (the upstream is not asked again for what was cached).
//!
//! Traffic goes to 127.0.0.1 only; every wait is bounded.

use std::thread;
use std::time::Duration;

use shardns_e2e::load::{Load, corefile, warm};
use shardns_e2e::{Shardns, TempDir, Unbound, wait_for};

const UPGRADES: usize = 5;

fn start(unbound: &Unbound, socket: &str) -> Shardns {
    Shardns::start(
        &corefile(unbound),
        &["--shards", "2", "--handoff-socket", socket],
    )
    .expect("shardns")
}

#[test]
fn five_upgrades_under_load_lose_no_query_and_keep_the_cache() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("handoff").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let mut running = start(&unbound, &socket);
    let server = running.udp_addr();
    // Every host cached before the load starts.
    warm(server);
    let upstream_before = unbound.total_queries();

    let load = Load::start(server);
    thread::sleep(Duration::from_millis(500));
    for upgrade in 0..UPGRADES {
        let old_pid = running.pid();
        let next = start(&unbound, &socket);
        assert_eq!(next.udp_addr(), server, "the same sockets, the same port");
        let (status, log) = running
            .wait_exit(Duration::from_secs(15))
            .expect("the old process leaves by itself");
        assert!(status.success(), "upgrade {upgrade}: {status}\n{log}");
        assert!(
            log.contains(&format!("handed over to process {}", next.pid())),
            "upgrade {upgrade}:\n{log}"
        );
        let next_log = next.log_text();
        assert!(
            next_log.contains(&format!("taking over from process {old_pid}")),
            "{next_log}"
        );
        running = next;
        thread::sleep(Duration::from_millis(500));
    }
    let seen = load.stop();
    eprintln!("{seen:?}");
    // About 1,000 queries a second on an idle machine; far fewer on a loaded one.
    assert!(seen.sent > 300, "the load ran: {seen:?}");
    assert_eq!(
        seen.answered, seen.sent,
        "every query answered right: {seen:?}"
    );
    // The cache went along: the cached hosts were not asked for again.
    let upstream_after = unbound.total_queries();
    assert_eq!(
        upstream_after, upstream_before,
        "upstream queries during the upgrades"
    );
    running.stop();
}

#[test]
fn nobody_on_the_socket_means_a_normal_start_and_the_socket_is_removed_at_exit() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("handoff-alone").unwrap();
    let path = dir.join("run/handoff.sock");
    // A stale file from a process that is gone.
    std::fs::create_dir_all(dir.join("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let socket = path.display().to_string();
    let alone = start(&unbound, &socket);
    let listening = shardns_e2e::wait_for(Duration::from_secs(5), || {
        alone.log_text().contains("hand-off socket:").then_some(())
    });
    assert!(listening.is_some(), "{}", alone.log_text());
    assert!(!alone.log_text().contains("taking over"));
    assert!(path.exists());
    alone.stop();
    assert!(!path.exists(), "removed at a normal exit");
}

/// `--handoff-linger`, as a pod's container needs: the old process hands over, then stays
/// (serving nothing) until SIGTERM instead of exiting, so the kubelet does not restart it;
/// its SIGTERM then ends it with status 0 and leaves the successor, its sockets and its
/// hand-off socket alone.
#[test]
fn a_lingering_predecessor_waits_for_sigterm_and_leaves_the_successor_alone() {
    let unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("handoff-linger").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let corefile = corefile(&unbound);
    let lingering = |corefile: &str| {
        Shardns::start(
            corefile,
            &[
                "--shards",
                "2",
                "--handoff-socket",
                &socket,
                "--handoff-linger",
            ],
        )
        .expect("shardns")
    };
    let mut old = lingering(&corefile);
    let server = old.udp_addr();
    warm(server);
    let new = lingering(&corefile);
    let handed_over = format!("handed over to process {}", new.pid());
    let lingers = |process: &Shardns, handed_over: &str| {
        wait_for(Duration::from_secs(15), || {
            let log = process.log_text();
            (log.contains(handed_over) && log.contains("lingering until SIGTERM")).then_some(())
        })
        .is_some()
    };
    assert!(lingers(&old, &handed_over), "{}", old.log_text());
    // Still there a while later: without the flag it has exited 0 by now.
    thread::sleep(Duration::from_secs(1));
    old.assert_alive();

    let load = Load::start(server);
    thread::sleep(Duration::from_millis(500));
    let log = old.stop();
    thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    assert!(seen.sent > 50, "the load ran: {seen:?}");
    assert_eq!(seen.answered, seen.sent, "{seen:?}\n{log}");

    // The successor's hand-off socket is still there: a third process takes over from it.
    let third = Shardns::start(&corefile, &["--shards", "2", "--handoff-socket", &socket])
        .expect("shardns");
    let handed_over = format!("handed over to process {}", third.pid());
    assert!(lingers(&new, &handed_over), "{}", new.log_text());
    let new_pid = new.pid();
    new.stop();
    let third_log = third.stop();
    assert!(
        third_log.contains(&format!("taking over from process {new_pid}")),
        "{third_log}"
    );
}
