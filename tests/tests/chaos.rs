//! A chaos soak: a supervised shardns (two shards, a hand-off socket) under a mixed load —
//! names it has cached and unique names that miss — while faults follow one another every
//! few seconds, at random from a fixed seed: the worker killed (SIGKILL), an upgrade by a new
//! supervisor, the upstream (a real Unbound) frozen (SIGSTOP) or killed and restarted, and the
//! Corefile replaced by a broken one and reloaded, then restored.
//!
//! At the end every query is answered right or accounted for by the fault that made it
//! unanswerable: SERVFAIL only for a name that missed while the upstream was away; no
//! answer only for a query sent before a worker was killed (one per client at most); never a
//! wrong answer. The worker's memory stays bounded.
//!
//! It runs `SHARDNS_CHAOS_SECS` seconds (default 40); `scripts/chaos-soak.sh` runs it for
//! ten minutes. Traffic goes to 127.0.0.1 only; every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shardns_e2e::load::{corefile, warm};
use shardns_e2e::process::rss_kib;
use shardns_e2e::rng::Rng;
use shardns_e2e::shardns::send_signal;
use shardns_e2e::{Shardns, TempDir, Unbound, build_query, wait_for, zone};

/// Load clients, one query at a time each.
const CLIENTS: usize = 4;
/// How long a client waits for an answer: more than the query timeout below.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);
/// shardns's `--query-timeout`: a miss the upstream cannot answer is SERVFAIL after this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// After the upstream is back: time for health checks and new connections.
const UPSTREAM_SETTLE: Duration = Duration::from_secs(3);
/// The supervisor restarts at once up to 3 deaths a minute; kills are kept this far apart.
const KILL_SPACING: Duration = Duration::from_secs(21);
/// The share of queries (per mille) for unique names, each a miss answered NXDOMAIN.
const MISS_PER_MILLE: u64 = 300;
/// The worker's resident memory may not exceed this (MiB).
const RSS_BOUND_MIB: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Right,
    ServFail,
    Wrong,
    Lost,
}

/// One query of the load.
#[derive(Debug, Clone, Copy)]
struct Record {
    sent: Instant,
    /// A unique name (a miss), else a cached one.
    miss: bool,
    outcome: Outcome,
}

/// One client: a query at a time until `stop`, every one recorded.
fn client(server: SocketAddr, index: usize, stop: &AtomicBool) -> Vec<Record> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(server).expect("connect");
    socket
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .expect("timeout");
    let mut rng = Rng(0xc4a0_5000 + index as u64);
    let mut records = Vec::new();
    let mut buf = [0u8; 1500];
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let miss = (rng.below(1000) as u64) < MISS_PER_MILLE;
        let host = rng.below(usize::from(zone::HOSTS)) as u8;
        let name = if miss {
            format!("u{index}x{n}.{}", zone::ZONE)
        } else {
            zone::host(host)
        };
        let id = (n as u16) ^ ((index as u16) << 13);
        let query = build_query(&name, RecordType::A, id);
        let sent = Instant::now();
        socket.send(&query).expect("send");
        let reply = loop {
            match socket.recv(&mut buf) {
                Ok(len) => match Message::from_vec(&buf[..len]) {
                    Ok(message) if message.id() == id => break Some(message),
                    _ => continue,
                },
                Err(_) => break None,
            }
        };
        let outcome = match reply {
            None => Outcome::Lost,
            Some(reply) if reply.response_code() == ResponseCode::ServFail => Outcome::ServFail,
            Some(reply) if miss => {
                if reply.response_code() == ResponseCode::NXDomain && reply.answers().is_empty() {
                    Outcome::Right
                } else {
                    Outcome::Wrong
                }
            }
            Some(reply) => {
                let right = reply.response_code() == ResponseCode::NoError
                    && reply
                        .answers()
                        .iter()
                        .any(|r| r.data() == &RData::A(zone::host_a(host).into()));
                if right {
                    Outcome::Right
                } else {
                    Outcome::Wrong
                }
            }
        };
        records.push(Record {
            sent,
            miss,
            outcome,
        });
        thread::sleep(Duration::from_millis(2));
    }
    records
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillWorker,
    Upgrade,
    FreezeUpstream,
    KillUpstream,
    BrokenCorefile,
}

/// A fault and when it was in effect.
#[derive(Debug, Clone, Copy)]
struct Window {
    fault: Fault,
    start: Instant,
    /// When it struck: for a worker kill, when `kill` returned (the signal delivered).
    struck: Instant,
    end: Instant,
}

fn supervised(unbound: &Unbound, socket: &str) -> Shardns {
    Shardns::start(
        &corefile(unbound),
        &[
            "--supervise",
            "--shards",
            "2",
            "--handoff-socket",
            socket,
            "--query-timeout",
            "2s",
            "--upstream-timeout",
            "1s",
        ],
    )
    .expect("supervised shardns")
}

/// Why a record that is not right is allowed, if it is.
fn account(record: &Record, windows: &[Window], lost_per_kill: &mut [usize]) -> bool {
    match record.outcome {
        Outcome::Right => true,
        Outcome::Wrong => false,
        Outcome::ServFail => {
            record.miss
                && windows.iter().any(|w| {
                    matches!(w.fault, Fault::FreezeUpstream | Fault::KillUpstream)
                        && record.sent + QUERY_TIMEOUT + Duration::from_secs(1) >= w.start
                        && record.sent <= w.end + UPSTREAM_SETTLE
                })
        }
        Outcome::Lost => {
            // Taken by a worker that was then killed: sent before the kill, within a
            // client's wait of it. One per client and kill at most.
            let kill = windows.iter().position(|w| {
                w.fault == Fault::KillWorker
                    && record.sent <= w.struck
                    && record.sent + CLIENT_TIMEOUT >= w.start
            });
            match kill {
                Some(k) if lost_per_kill[k] < CLIENTS => {
                    lost_per_kill[k] += 1;
                    true
                }
                _ => false,
            }
        }
    }
}

#[test]
fn faults_under_load_lose_nothing_they_do_not_explain() {
    let secs: u64 = std::env::var("SHARDNS_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut unbound = Unbound::start().expect("unbound");
    let dir = TempDir::new("chaos").unwrap();
    let socket = dir.join("handoff.sock").display().to_string();
    let mut current = supervised(&unbound, &socket);
    let server = current.udp_addr();
    wait_for(Duration::from_secs(5), || current.serving_worker()).expect("a worker");
    warm(server);
    let first_worker = current.serving_worker().expect("a worker");
    let rss_start = rss_kib(first_worker).unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<Vec<Record>>> = (0..CLIENTS)
        .map(|index| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || client(server, index, &stop))
        })
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut rng = Rng(0x5eed_c4a0);
    let mut windows: Vec<Window> = Vec::new();
    let mut last_kill: Option<Instant> = None;
    let mut logs = String::new();
    let mut rss_peak = rss_start;
    while Instant::now() + Duration::from_secs(6) < deadline {
        thread::sleep(rng.millis(1_000, 3_000));
        let mut fault = match rng.below(5) {
            0 => Fault::KillWorker,
            1 => Fault::Upgrade,
            2 => Fault::FreezeUpstream,
            3 => Fault::KillUpstream,
            _ => Fault::BrokenCorefile,
        };
        if fault == Fault::KillWorker && last_kill.is_some_and(|t| t.elapsed() < KILL_SPACING) {
            fault = Fault::FreezeUpstream;
        }
        let start = Instant::now();
        let mut struck = start;
        match fault {
            Fault::KillWorker => {
                let worker = current.serving_worker().expect("a serving worker");
                rss_peak = rss_peak.max(rss_kib(worker).unwrap_or(0));
                send_signal(worker, "KILL").unwrap();
                struck = Instant::now();
                wait_for(Duration::from_secs(5), || {
                    current.serving_worker().filter(|&pid| pid != worker)
                })
                .unwrap_or_else(|| panic!("no new worker:\n{}", current.log_text()));
                last_kill = Some(start);
            }
            Fault::Upgrade => {
                if let Some(worker) = current.serving_worker() {
                    rss_peak = rss_peak.max(rss_kib(worker).unwrap_or(0));
                }
                let next = supervised(&unbound, &socket);
                let old = std::mem::replace(&mut current, next);
                let (status, log) = old
                    .wait_exit(Duration::from_secs(15))
                    .expect("the old supervisor exits");
                assert!(status.success(), "{status}:\n{log}");
                logs.push_str(&log);
                wait_for(Duration::from_secs(5), || current.serving_worker())
                    .expect("the new supervisor's worker");
                // A fresh supervisor has no restarts to count against.
                last_kill = None;
            }
            Fault::FreezeUpstream => {
                send_signal(unbound.pid(), "STOP").unwrap();
                thread::sleep(rng.millis(1_000, 4_000));
                send_signal(unbound.pid(), "CONT").unwrap();
            }
            Fault::KillUpstream => {
                unbound.kill().unwrap();
                thread::sleep(rng.millis(500, 3_000));
                unbound.restart().expect("Unbound again on its port");
            }
            Fault::BrokenCorefile => {
                let path = current.dir().join("Corefile");
                let good = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, ".:0 {\n    forward . {\n").unwrap();
                send_signal(current.pid(), "USR1").unwrap();
                thread::sleep(rng.millis(1_000, 3_000));
                std::fs::write(&path, good).unwrap();
                send_signal(current.pid(), "USR1").unwrap();
            }
        }
        windows.push(Window {
            fault,
            start,
            struck,
            end: Instant::now(),
        });
    }
    // Let the last fault's effects end before the load stops.
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let records: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("load client"))
        .collect();
    let worker = current.serving_worker().expect("a worker at the end");
    let rss_end = rss_kib(worker).unwrap_or(0);
    rss_peak = rss_peak.max(rss_end);
    logs.push_str(&current.log_text());
    current.stop();

    let mut lost_per_kill = vec![0; windows.len()];
    let count = |outcome| records.iter().filter(|r| r.outcome == outcome).count();
    let unexplained: Vec<&Record> = records
        .iter()
        .filter(|r| !account(r, &windows, &mut lost_per_kill))
        .collect();
    let of = |fault| windows.iter().filter(|w| w.fault == fault).count();
    eprintln!(
        "chaos: {secs} s, faults: {} worker kills, {} upgrades, {} upstream freezes, {} upstream \
         kills, {} broken Corefiles; queries: {} sent, {} right, {} SERVFAIL (misses while the \
         upstream was away), {} lost (taken by killed workers), {} wrong, {} unexplained; \
         worker RSS {} KiB at start, {} KiB at the end, {} KiB peak",
        of(Fault::KillWorker),
        of(Fault::Upgrade),
        of(Fault::FreezeUpstream),
        of(Fault::KillUpstream),
        of(Fault::BrokenCorefile),
        records.len(),
        count(Outcome::Right),
        count(Outcome::ServFail),
        count(Outcome::Lost),
        count(Outcome::Wrong),
        unexplained.len(),
        rss_start,
        rss_end,
        rss_peak,
    );
    assert!(windows.len() >= (secs as usize) / 10, "{windows:?}");
    assert!(
        records.len() > 1_000 * secs as usize / 10,
        "{}",
        records.len()
    );
    let at = |r: &&Record| (r.sent.duration_since(started), r.miss, r.outcome);
    assert!(
        unexplained.is_empty(),
        "{} unexplained (sent at, miss, outcome), the first ten: {:?}; faults: {:?}",
        unexplained.len(),
        unexplained.iter().take(10).map(at).collect::<Vec<_>>(),
        windows
            .iter()
            .map(|w| (
                w.fault,
                w.start.duration_since(started),
                w.end.duration_since(started)
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        rss_peak < RSS_BOUND_MIB * 1024,
        "worker RSS {rss_peak} KiB over {RSS_BOUND_MIB} MiB"
    );
    // Every broken Corefile was refused and the good one came back.
    assert!(
        logs.matches("reload failed").count() >= of(Fault::BrokenCorefile),
        "{logs}"
    );
}
