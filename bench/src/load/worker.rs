//! What every load thread does regardless of transport: pick the next query, give it an ID,
//! match replies, expire timeouts, pace sends, count, and publish progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::flight::Flight;
use super::pacing::{Pacer, Spacing};
use super::queries::{HEADER_LEN, Query};
use super::report::{NameSet, Stats};
use super::unique::UniqueNames;
use super::zipf::{Zipf, ZipfPicker};

/// Totals every worker adds to about ten times a second, for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub lost: AtomicU64,
}

/// One thread's share of the run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Sockets or connections of this thread.
    pub endpoints: usize,
    /// Closed loop: queries in flight per endpoint at most; open loop: `usize::MAX`.
    pub window: usize,
    /// ID-table slots per endpoint.
    pub slots: usize,
    /// Rate for this thread (`-Q` split across threads), if any.
    pub rate: Option<f64>,
    pub spacing: Spacing,
    /// Open loop (the rate is offered whatever the replies do).
    pub open: bool,
    pub timeout_ns: u64,
    /// Warm-up: queries sent before this are not counted.
    pub measure_from_ns: u64,
    /// Sending stops here; then replies are awaited for up to the timeout.
    pub stop_ns: u64,
    /// Where in the query list this thread starts.
    pub first_query: usize,
    /// Seed of the Poisson spacing.
    pub seed: u64,
    /// Seed of this thread's `--zipf` draws.
    pub zipf_seed: u64,
    /// `--unique`: this thread's first name number and the step between its names (the
    /// thread's index and the number of threads, so no two threads ask the same name).
    pub unique_first: u64,
    pub unique_step: u64,
}

/// Which query comes next.
#[derive(Debug)]
enum Order<'a> {
    /// The query file in order, from this index on (wrapping around).
    Cycle(usize),
    /// Zipf-distributed draws (boxed: the generator state is a few hundred bytes).
    Zipf(Box<ZipfPicker<'a>>),
    /// `--unique`: a new name each time; the number of the next one.
    Unique(&'a UniqueNames, u64),
}

/// Per-thread state shared by the UDP and TCP loops.
#[derive(Debug)]
pub(crate) struct Worker<'a> {
    queries: &'a [Query],
    progress: &'a Progress,
    order: Order<'a>,
    clock: Instant,
    pub plan: Plan,
    pub flights: Vec<Flight>,
    pub stats: Stats,
    pacer: Option<Pacer>,
    published: (u64, u64, u64),
    next_publish_ns: u64,
}

impl<'a> Worker<'a> {
    /// A worker whose clock starts now; it asks a new name from `unique` every time when
    /// given, else draws queries from `zipf` (a table over all of `queries`) when given, else
    /// cycles through `queries` from `plan.first_query`.
    pub(crate) fn new(
        queries: &'a [Query],
        progress: &'a Progress,
        plan: Plan,
        zipf: Option<&'a Zipf>,
        unique: Option<&'a UniqueNames>,
    ) -> Self {
        let pacer = plan
            .rate
            .map(|rate| Pacer::new(rate, plan.spacing, 0, plan.seed));
        let order = match (unique, zipf) {
            (Some(names), _) => Order::Unique(names, plan.unique_first),
            (None, Some(zipf)) => {
                debug_assert_eq!(zipf.len(), queries.len());
                Order::Zipf(Box::new(ZipfPicker::new(zipf, plan.zipf_seed)))
            }
            (None, None) => Order::Cycle(plan.first_query % queries.len()),
        };
        let mut stats = Stats::new();
        stats.names = NameSet::with_len(queries.len());
        Worker {
            queries,
            progress,
            order,
            clock: Instant::now(),
            flights: (0..plan.endpoints)
                .map(|_| Flight::new(plan.slots))
                .collect(),
            stats,
            pacer,
            published: (0, 0, 0),
            next_publish_ns: 0,
            plan,
        }
    }

    /// Nanoseconds since the worker started.
    pub(crate) fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn measured(&self, sent_ns: u64) -> bool {
        sent_ns >= self.plan.measure_from_ns
    }

    /// How many queries endpoint `ep` can take now.
    pub(crate) fn room(&self, ep: usize) -> usize {
        let flight = &self.flights[ep];
        flight
            .free()
            .min(self.plan.window.saturating_sub(flight.busy()))
    }

    /// Queries in flight on all endpoints.
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.iter().map(Flight::busy).sum()
    }

    /// How many queries the pacing allows now (unlimited without `-Q`), taken from the pacer.
    pub(crate) fn budget(&mut self, now: u64) -> u64 {
        let room: usize = (0..self.flights.len()).map(|ep| self.room(ep)).sum();
        match &mut self.pacer {
            None => room as u64,
            // Open loop: everything due is offered; what cannot be sent is counted dropped.
            Some(pacer) if self.plan.open => pacer.take(now, u64::MAX),
            Some(pacer) => {
                pacer.forgive(now, room as u64);
                pacer.take(now, room as u64)
            }
        }
    }

    /// Open loop: `n` due queries could not be sent.
    pub(crate) fn drop_unsent(&mut self, n: u64, now: u64) {
        if self.measured(now) {
            self.stats.dropped += n;
        }
    }

    /// When the pacer releases the next query (`None` without pacing).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.pacer.as_ref().map(Pacer::next_due)
    }

    /// When the oldest query in flight times out.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        let oldest = self.flights.iter().filter_map(Flight::oldest).min()?;
        Some(oldest.saturating_add(self.plan.timeout_ns))
    }

    /// Nanoseconds from `now` until something needs doing: a timeout, the next paced
    /// send, the end of sending (`sending`) or of the drain that follows. `room` says whether
    /// any endpoint could take a query now.
    pub(crate) fn wait_ns(&self, now: u64, sending: bool, room: bool) -> u64 {
        let mut wake = self.next_expiry().unwrap_or(u64::MAX);
        if sending {
            wake = wake.min(self.plan.stop_ns);
            match self.next_due() {
                Some(due) if room || self.plan.open => wake = wake.min(due),
                Some(_) => {}
                None if room => return 0,
                None => {}
            }
        } else {
            wake = wake.min(self.plan.stop_ns.saturating_add(self.plan.timeout_ns));
        }
        wake.saturating_sub(now)
    }

    /// Whether the drain after sending is over (every query sent has had its full timeout).
    pub(crate) fn drained(&self, now: u64) -> bool {
        now >= self.plan.stop_ns.saturating_add(self.plan.timeout_ns)
    }

    /// One turn of a send/receive loop: the time, and the send budget while sending is still
    /// on (`Some(0)` when the pacing allows nothing yet, `None` once sending has stopped).
    /// Publishes progress. `None` for the whole turn when the run is over: nothing left in
    /// flight after the stop, or the last timeout has passed.
    pub(crate) fn turn(&mut self) -> Option<(u64, Option<u64>)> {
        let now = self.now();
        let sending = now < self.plan.stop_ns;
        if !sending && (self.in_flight() == 0 || self.drained(now)) {
            return None;
        }
        self.publish(now, false);
        Some((now, sending.then(|| self.budget(now))))
    }

    /// Writes the next query for endpoint `ep` into `out` with a fresh ID; returns its
    /// length and ID, or `None` when the endpoint's table is full.
    pub(crate) fn issue(&mut self, ep: usize, now: u64, out: &mut [u8]) -> Option<(usize, u16)> {
        if self.flights[ep].free() == 0 {
            return None;
        }
        let index = match &mut self.order {
            Order::Cycle(cursor) => {
                let index = *cursor;
                *cursor = if index + 1 == self.queries.len() {
                    0
                } else {
                    index + 1
                };
                index
            }
            Order::Zipf(picker) => picker.next_index(),
            Order::Unique(names, next) => {
                let n = *next;
                let id = self.flights[ep].begin(n, now)?;
                *next = n.wrapping_add(self.plan.unique_step);
                let len = names.write(n, out);
                out[..2].copy_from_slice(&id.to_be_bytes());
                return Some((len, id));
            }
        };
        let query = &self.queries[index];
        let id = self.flights[ep].begin(index as u64, now)?;
        let len = query.wire.len();
        out[..len].copy_from_slice(&query.wire);
        out[..2].copy_from_slice(&id.to_be_bytes());
        Some((len, id))
    }

    /// `ids` were issued on `ep` at `now`; the first `sent` of them went out, the rest are
    /// withdrawn.
    pub(crate) fn sent(&mut self, ep: usize, ids: &[u16], sent: usize, now: u64) {
        if self.measured(now) {
            self.stats.sent += sent as u64;
        }
        if let Order::Unique(..) = self.order {
            // Every name is new: count them instead of marking query-file lines.
            self.stats.fresh_names += sent.min(ids.len()) as u64;
        } else {
            for &id in &ids[..sent.min(ids.len())] {
                if let Some(query) = self.flights[ep].query(id) {
                    self.stats.names.insert(query as usize);
                }
            }
        }
        for &id in &ids[sent.min(ids.len())..] {
            self.flights[ep].land(id);
        }
    }

    /// A reply arrived on `ep` at `now`.
    pub(crate) fn reply(&mut self, ep: usize, reply: &[u8], now: u64) {
        if reply.len() < HEADER_LEN {
            self.stats.mismatched += 1;
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let Some(landed) = self.flights[ep].land(id) else {
            self.stats.late += 1;
            return;
        };
        if !self.measured(landed.sent_ns) {
            return;
        }
        let question_ok = match &self.order {
            Order::Unique(names, _) => names.question_matches(landed.query, reply),
            _ => self.queries[landed.query as usize].question_matches(reply),
        };
        if reply[2] & 0x80 == 0 || !question_ok {
            self.stats.mismatched += 1;
            return;
        }
        self.stats.answered += 1;
        self.stats.rcodes[usize::from(reply[3] & 0x0f)] += 1;
        self.stats
            .latency_ns
            .saturating_record(now.saturating_sub(landed.sent_ns).max(1));
    }

    /// Counts queries that timed out by `now` as lost and frees their IDs.
    pub(crate) fn expire(&mut self, now: u64) {
        let (from, timeout) = (self.plan.measure_from_ns, self.plan.timeout_ns);
        let lost = &mut self.stats.lost;
        for flight in &mut self.flights {
            flight.expire(now, timeout, |sent_ns| *lost += u64::from(sent_ns >= from));
        }
    }

    /// Counts every query still in flight on `ep` as lost (a broken TCP connection).
    pub(crate) fn abandon(&mut self, ep: usize) {
        let from = self.plan.measure_from_ns;
        let lost = &mut self.stats.lost;
        self.flights[ep].abandon(|sent_ns| *lost += u64::from(sent_ns >= from));
    }

    /// Adds this worker's news to the shared progress totals, about ten times a second.
    pub(crate) fn publish(&mut self, now: u64, force: bool) {
        if now < self.next_publish_ns && !force {
            return;
        }
        self.next_publish_ns = now + 100_000_000;
        let s = &self.stats;
        let (sent, answered, lost) = self.published;
        self.progress
            .sent
            .fetch_add(s.sent - sent, Ordering::Relaxed);
        self.progress
            .answered
            .fetch_add(s.answered - answered, Ordering::Relaxed);
        self.progress
            .lost
            .fetch_add(s.lost - lost, Ordering::Relaxed);
        self.published = (s.sent, s.answered, s.lost);
    }

    /// Ends the run: whatever is still in flight is lost.
    pub(crate) fn finish(mut self) -> Stats {
        for ep in 0..self.flights.len() {
            self.abandon(ep);
        }
        self.publish(0, true);
        self.stats
    }
}
