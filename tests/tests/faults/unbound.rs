//! Faults of a real upstream, Unbound: killed (SIGKILL) then restarted on the same port,
//! frozen (SIGSTOP, then SIGCONT), and killed with `serve_stale` in the cache block and
//! entries that expire during the fault (the cached names are then answered stale).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use shardns_e2e::load::Kind;
use shardns_e2e::metrics::{family_sum, scrape};
use shardns_e2e::shardns::send_signal;
use shardns_e2e::unbound::free_port;
use shardns_e2e::{Shardns, Unbound, zone};

use crate::common::{self, Run, UNANSWERABLE, check_during};

/// How long each fault lasts.
const HOLD: Duration = Duration::from_secs(4);
/// How long Unbound stays frozen: longer than a query's two attempts (2 s each), so that
/// those sent early in the freeze meet it for their whole life (later ones are answered when
/// Unbound resumes and reads its backlog).
const FROZEN: Duration = Duration::from_secs(6);

fn hits() -> Vec<(String, std::net::Ipv4Addr)> {
    (0..zone::HOSTS)
        .map(|n| (zone::host(n), zone::host_a(n)))
        .collect()
}

/// One block forwarding to `unbound` over TCP (as node-local-dns forwards the cluster zone),
/// with `cache` and the extra `lines`.
fn corefile(unbound: &Unbound, cache: &str, lines: &str) -> String {
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    {cache}\n    forward . {} {{\n        force_tcp\n    }}\n    errors\n{lines}}}\n",
        unbound.addr()
    )
}

/// Runs the load against shardns over `unbound` through `inject` … `heal`.
fn unbound_fault(
    name: &'static str,
    hold: Duration,
    unbound: &Mutex<Unbound>,
    shardns: &mut Shardns,
    inject: impl FnOnce(&mut Unbound),
    heal: impl FnOnce(&mut Unbound),
) -> Run {
    let mix = common::mix(hits(), zone::ZONE);
    let run = common::run(
        name,
        shardns,
        mix,
        || inject(&mut unbound.lock().unwrap()),
        hold,
        || heal(&mut unbound.lock().unwrap()),
    );
    run.assert_common(shardns);
    run
}

fn restart(unbound: &mut Unbound) {
    unbound.restart().expect("Unbound back on its port");
}

#[test]
fn unbound_killed_then_restarted() {
    let unbound = Unbound::start().expect("unbound");
    let mut shardns =
        Shardns::start(&corefile(&unbound, "cache 30", ""), &["--shards", "2"]).expect("shardns");
    let unbound = Mutex::new(unbound);
    let run = unbound_fault(
        "unbound_killed_then_restarted",
        HOLD,
        &unbound,
        &mut shardns,
        |unbound| unbound.kill().expect("SIGKILL"),
        restart,
    );
    check_during(&run, UNANSWERABLE, &shardns);
    let unbound = unbound.into_inner().unwrap();
    assert!(
        unbound.tcp_queries() > 0,
        "the restarted Unbound was asked over TCP"
    );
    shardns.stop();
}

#[test]
fn unbound_frozen() {
    let unbound = Unbound::start().expect("unbound");
    let mut shardns =
        Shardns::start(&corefile(&unbound, "cache 30", ""), &["--shards", "2"]).expect("shardns");
    let pid = unbound.pid();
    let unbound = Mutex::new(unbound);
    let run = unbound_fault(
        "unbound_frozen",
        FROZEN,
        &unbound,
        &mut shardns,
        |_| send_signal(pid, "STOP").expect("SIGSTOP"),
        |_| send_signal(pid, "CONT").expect("SIGCONT"),
    );
    check_during(&run, UNANSWERABLE, &shardns);
    shardns.stop();
}

/// Cached entries live 1 s (`cache 1`), so every cached name expires during the fault:
/// with `serve_stale` they are answered from the expired entries while Unbound is dead, and
/// the misses get SERVFAIL.
#[test]
fn unbound_killed_with_serve_stale() {
    let unbound = Unbound::start().expect("unbound");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let cache = "cache 1 {\n        serve_stale 1h\n    }";
    let corefile = corefile(&unbound, cache, &format!("    prometheus {metrics}\n"));
    let mut shardns = Shardns::start(&corefile, &["--shards", "2"]).expect("shardns");
    let stale = |page: &str| family_sum(page, "coredns_cache_served_stale_total");
    let unbound = Mutex::new(unbound);
    let counted = Mutex::new((0, 0));
    let run = unbound_fault(
        "unbound_killed_with_serve_stale",
        HOLD,
        &unbound,
        &mut shardns,
        |unbound| {
            counted.lock().unwrap().0 = stale(&scrape(metrics));
            unbound.kill().expect("SIGKILL");
        },
        |unbound| {
            counted.lock().unwrap().1 = stale(&scrape(metrics));
            restart(unbound);
        },
    );
    check_during(&run, UNANSWERABLE, &shardns);
    let (before, during) = counted.into_inner().unwrap();
    assert!(
        during > before,
        "no stale answer during the fault ({before} → {during})"
    );
    let hits = run.during(Kind::Hit, Duration::ZERO);
    eprintln!(
        "fault={}: cached names answered stale during the fault: {hits:?}",
        run.name
    );
    shardns.stop();
}
