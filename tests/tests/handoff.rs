//! Upgrades without loss: a new shardns started with the same `--handoff-socket` takes the
//! running one's sockets and cache; the old one answers what it took and exits 0. Under a
//! steady UDP load through 5 successive upgrades every query is answered, and the cache goes
//! along (the upstream is not asked again for what was cached).
//!
//! Traffic goes to 127.0.0.1 only; every wait is bounded.

use std::thread;
use std::time::Duration;

use shardns_e2e::load::{Load, corefile, warm};
use shardns_e2e::{Shardns, TempDir, Unbound};

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
