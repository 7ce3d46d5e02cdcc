//! What every fault test shares: the load (cached hits beside fresh misses), the run (steady,
//! fault, healed, recovered), the memory check and the one line of figures each prints.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use shardns_e2e::load::{Kind, Load, Mix, Outcome, Record};
use shardns_e2e::process::{peak_rss_kib, rss_kib};
use shardns_e2e::{Shardns, build_query, new_id, wait_for};

/// The query deadline of the default configuration: a SERVFAIL comes by then.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(5);
/// How long the load runs before a fault, for a steady state (and the RSS taken then).
pub const STEADY: Duration = Duration::from_millis(1000);
/// How long the load runs on after the recovery.
pub const AFTER: Duration = Duration::from_millis(700);
/// Longest wait for the first right answer after a fault ends.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(12);
/// How long a load client waits for an answer: more than shardns's query deadline (5 s), so
/// that a SERVFAIL at the deadline counts as one, not as a lost query.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);
/// RSS may grow by this much over a fault, besides half of what it was (the cache fills with
/// the misses' negative answers; a leak of a reply per query would pass it).
pub const RSS_SLACK_KIB: u64 = 32 * 1024;

/// The load of the fault tests: 2 clients asking for `hits` (cached once warmed), each
/// pausing 4 ms after each answer, and 2 asking for a fresh name under `miss_zone` (a miss
/// each) every 10 ms whatever is answered.
pub fn mix(hits: Vec<(String, std::net::Ipv4Addr)>, miss_zone: &str) -> Mix {
    Mix {
        hits,
        hit_clients: 2,
        miss_zone: miss_zone.to_string(),
        miss_clients: 2,
        miss_interval: Some(Duration::from_millis(10)),
        timeout: CLIENT_TIMEOUT,
        pace: Duration::from_millis(4),
    }
}

/// Asks for each of `mix`'s hit names once (over one socket), so that the load's hits are
/// cache hits from the start. Panics if one is not answered within 3 s.
pub fn warm(server: SocketAddr, mix: &Mix) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    for name in mix.hit_names() {
        let id = new_id();
        socket.send(&build_query(name, RecordType::A, id)).unwrap();
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let len = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("warm-up answer for {name}: {e}"));
            if len >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                break;
            }
            assert!(Instant::now() < deadline, "warm-up answer for {name}");
        }
    }
}

/// One fault run: when it started and ended, what the load saw, the process's RSS.
#[derive(Debug)]
pub struct Run {
    pub name: &'static str,
    pub record: Record,
    /// The fault injected.
    pub from: Instant,
    /// The fault began to heal (just before the upstream was brought back or the attack
    /// stopped).
    pub to: Instant,
    /// From `to` to the first right answer to a query sent after it.
    pub recovery: Option<Duration>,
    pub rss_before: u64,
    pub rss_after: u64,
    /// The process's peak RSS by the end (`VmHWM`).
    pub rss_peak: u64,
}

impl Run {
    /// Prints the figures line (visible with --nocapture).
    pub fn print(&self) {
        let seen = self.record.seen();
        let recovery = self
            .recovery
            .map_or_else(|| "none".to_string(), |d| format!("{} ms", d.as_millis()));
        eprintln!(
            "fault={} load={:.0} q/s sent={} answered={} servfail={} wrong={} lost={} \
             recovery={} rss_before={} KiB rss_after={} KiB rss_peak={} KiB",
            self.name,
            self.record.rate(),
            seen.sent,
            seen.answered,
            seen.servfail,
            seen.wrong,
            seen.lost,
            recovery,
            self.rss_before,
            self.rss_after,
            self.rss_peak,
        );
    }

    /// The queries of `kind` sent during the fault (from `from` until `to` plus `tail`).
    pub fn during(&self, kind: Kind, tail: Duration) -> shardns_e2e::load::Seen {
        let (from, to) = (self.from, self.to + tail);
        self.record
            .seen_where(|e| e.kind == kind && e.sent >= from && e.sent < to)
    }

    /// Asserts the common goals: the process still running, nothing lost, no wrong answer, everything right before the
    /// fault and from one second after the recovery on, a recovery within
    /// [`RECOVERY_LIMIT`], and the RSS bound.
    pub fn assert_common(&self, shardns: &mut Shardns) {
        shardns.assert_alive();
        let seen = self.record.seen();
        let log = || shardns.log_text();
        assert!(seen.sent > 200, "{}: the load ran: {seen:?}", self.name);
        assert_eq!(
            seen.lost,
            0,
            "{}: lost queries: {seen:?}\n{}",
            self.name,
            log()
        );
        assert_eq!(
            seen.wrong,
            0,
            "{}: wrong answers: {seen:?}\n{}",
            self.name,
            log()
        );
        let right = [Outcome::Right];
        // Before the fault: every query answered right (those still under way when it began
        // may have met it).
        let before = self.record.seen_where(|e| e.done() < self.from);
        assert_eq!(
            before.answered, before.sent,
            "{}: before the fault: {before:?}",
            self.name
        );
        let recovery = self
            .recovery
            .unwrap_or_else(|| panic!("{}: no right answer after the fault\n{}", self.name, log()));
        assert!(
            recovery <= RECOVERY_LIMIT,
            "{}: recovery {recovery:?}",
            self.name
        );
        let settled = self.to + recovery + Duration::from_secs(1);
        for kind in [Kind::Hit, Kind::Miss] {
            let after = self
                .record
                .unexpected(kind, settled, self.record.stopped, &right);
            assert!(
                after.is_empty(),
                "{}: after the recovery: {after:#?}\n{}",
                self.name,
                log()
            );
        }
        assert_rss(self.name, self.rss_before, self.rss_after);
        assert_rss(self.name, self.rss_before, self.rss_peak);
    }
}

/// Asserts the RSS bound: `after` ≤ `before` × 1.5 + [`RSS_SLACK_KIB`].
pub fn assert_rss(name: &str, before: u64, after: u64) {
    assert!(
        before > 0 && after > 0,
        "{name}: RSS {before} → {after} KiB"
    );
    assert!(
        after <= before + before / 2 + RSS_SLACK_KIB,
        "{name}: RSS grew from {before} to {after} KiB"
    );
}

/// Runs `mix` against `shardns` (warmed first): [`STEADY`], then `inject`, `hold`, `heal`,
/// then until a miss sent after the heal is answered right (≤ [`RECOVERY_LIMIT`]), then
/// [`AFTER`]. Prints the figures.
pub fn run(
    name: &'static str,
    shardns: &Shardns,
    mix: Mix,
    inject: impl FnOnce(),
    hold: Duration,
    heal: impl FnOnce(),
) -> Run {
    run_until(name, shardns, mix, inject, hold, || false, heal)
}

/// [`run`], the fault held until `over` says so (asked every 100 ms) or for `hold` at most.
pub fn run_until(
    name: &'static str,
    shardns: &Shardns,
    mix: Mix,
    inject: impl FnOnce(),
    hold: Duration,
    over: impl Fn() -> bool,
    heal: impl FnOnce(),
) -> Run {
    let server = shardns.udp_addr();
    warm(server, &mix);
    let load = Load::with(server, mix);
    std::thread::sleep(STEADY);
    let rss_before = rss_kib(shardns.pid()).unwrap_or(0);
    let from = Instant::now();
    inject();
    let _ = wait_for(hold, || over().then_some(()));
    // The fault ends when healing starts: the upstream may answer its backlog before `heal`
    // returns (a SIGCONT is sent by a `kill` child that still has to be reaped).
    let to = Instant::now();
    heal();
    let _ = wait_for(RECOVERY_LIMIT, || load.right_miss_since(to).then_some(()));
    std::thread::sleep(AFTER);
    let record = load.finish();
    let rss_after = rss_kib(shardns.pid()).unwrap_or(0);
    let rss_peak = peak_rss_kib(shardns.pid()).unwrap_or(0);
    let run = Run {
        name,
        recovery: record.recovery(to),
        record,
        from,
        to,
        rss_before,
        rss_after,
        rss_peak,
    };
    run.print();
    run
}

/// What the clients must see during a fault.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Misses sent during the fault got SERVFAIL (at least one).
    pub servfail: bool,
    /// Misses sent during the fault may have been answered right (the upstream answered
    /// some, late or on a retry).
    pub some_right: bool,
}

/// The upstream cannot answer: every miss during the fault gets SERVFAIL.
pub const UNANSWERABLE: Expect = Expect {
    servfail: true,
    some_right: false,
};

/// Hits unaffected; misses as `expect` says, each SERVFAIL by the query deadline.
pub fn check_during(run: &Run, expect: Expect, shardns: &Shardns) {
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
