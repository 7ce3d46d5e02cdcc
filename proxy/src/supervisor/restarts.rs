//! When to restart a worker that died, and when to give the node back to the cluster DNS.
//! No clock of its own: every call takes `now`.
//!
//! - A worker that dies is restarted at once, the first [`AT_ONCE`] times within
//!   [`WINDOW`]; after that each restart waits twice as long as the one before (from
//!   [`FIRST_WAIT`] up to [`LONGEST_WAIT`]).
//! - At [`FAIL_OPEN_AFTER`] deaths within [`WINDOW`], the node fails open: the supervisor
//!   removes the rules, so pods' queries go to the cluster DNS instead of a dead cache, and
//!   keeps restarting the worker with growing waits.
//! - A worker that has served for [`HEALTHY_AFTER`] resets it all (and the rules go back in).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Deaths restarted without waiting, within [`WINDOW`].
pub(crate) const AT_ONCE: usize = 3;
/// The window deaths are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// The first wait once restarts are no longer immediate.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between restarts.
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Deaths within [`WINDOW`] after which the rules are removed.
pub(crate) const FAIL_OPEN_AFTER: usize = 5;
/// How long a worker must serve to count as healthy.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// What to do about a worker that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Restart it after this long (zero: at once).
    pub wait: Duration,
    /// Remove the rules now (the first time the limit is passed).
    pub fail_open: bool,
}

/// The deaths of the supervisor's workers.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    deaths: VecDeque<Instant>,
    /// The rules were removed and are not back yet.
    failed_open: bool,
    /// Restarts that waited since the last healthy worker.
    waited: u32,
}

impl Restarts {
    /// A worker died at `now`.
    pub(crate) fn died(&mut self, now: Instant) -> Decision {
        self.deaths.push_back(now);
        while self
            .deaths
            .front()
            .is_some_and(|&death| now.duration_since(death) > WINDOW)
        {
            self.deaths.pop_front();
        }
        let recent = self.deaths.len();
        let fail_open = recent >= FAIL_OPEN_AFTER && !self.failed_open;
        if fail_open {
            self.failed_open = true;
        }
        let wait = if recent <= AT_ONCE && !self.failed_open {
            Duration::ZERO
        } else {
            self.waited += 1;
            FIRST_WAIT
                .saturating_mul(1 << (self.waited - 1).min(16))
                .min(LONGEST_WAIT)
        };
        Decision { wait, fail_open }
    }

    /// The worker started at `since` still serves at `now`: once it has for
    /// [`HEALTHY_AFTER`], the count starts over. Returns `true` the moment the node, failed
    /// open, may have its rules back.
    pub(crate) fn serving(&mut self, since: Instant, now: Instant) -> bool {
        if now.duration_since(since) < HEALTHY_AFTER {
            return false;
        }
        self.deaths.clear();
        self.waited = 0;
        std::mem::take(&mut self.failed_open)
    }

    /// Whether the rules are out because of crashes.
    #[cfg(test)]
    fn failed_open(&self) -> bool {
        self.failed_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_deaths_restart_at_once_then_back_off_then_fail_open() {
        let start = Instant::now();
        let mut restarts = Restarts::default();
        let at = |s: u64| start + Duration::from_secs(s);
        for s in 0..3 {
            assert_eq!(
                restarts.died(at(s)),
                Decision {
                    wait: Duration::ZERO,
                    fail_open: false
                }
            );
        }
        assert_eq!(restarts.died(at(3)).wait, FIRST_WAIT);
        let fifth = restarts.died(at(4));
        assert!(fifth.fail_open, "{fifth:?}");
        assert_eq!(fifth.wait, FIRST_WAIT * 2);
        assert!(restarts.failed_open());
        let sixth = restarts.died(at(40));
        assert!(!sixth.fail_open, "once");
        assert_eq!(sixth.wait, FIRST_WAIT * 4);
        // A worker that serves 30 s brings the rules back and starts the count over.
        assert!(!restarts.serving(at(80), at(100)));
        assert!(restarts.serving(at(80), at(110)));
        assert!(!restarts.failed_open());
        assert_eq!(restarts.died(at(111)).wait, Duration::ZERO);
    }

    #[test]
    fn deaths_far_apart_are_always_restarted_at_once() {
        let start = Instant::now();
        let mut restarts = Restarts::default();
        for minute in 0..20 {
            let decision = restarts.died(start + Duration::from_secs(61 * minute));
            assert_eq!(decision.wait, Duration::ZERO);
            assert!(!decision.fail_open);
        }
    }

    #[test]
    fn waits_double_up_to_the_longest() {
        let start = Instant::now();
        let mut restarts = Restarts::default();
        let waits: Vec<Duration> = (0..12)
            .map(|i| restarts.died(start + Duration::from_millis(i)).wait)
            .collect();
        assert_eq!(&waits[..3], [Duration::ZERO; 3]);
        assert_eq!(waits[3], FIRST_WAIT);
        assert_eq!(waits[6], FIRST_WAIT * 8);
        assert_eq!(waits[11], LONGEST_WAIT);
    }
}
