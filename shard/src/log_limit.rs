//! A rate limit for log lines written on the query path (failed queries under `errors`): at
//! most so many a second per shard; the rest are counted, and the count is reported with the
//! next line written. Sans clock: callers pass `now`.

use std::time::{Duration, Instant};

/// What to do with one more line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it; `suppressed` lines were left out since the last one written.
    Write { suppressed: u64 },
    /// Leave it out (it is counted).
    Suppress,
}

/// At most `per_second` lines in any one-second window.
#[derive(Debug)]
pub(crate) struct LogLimit {
    per_second: u32,
    window_start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
            window_start: None,
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if expired {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written >= self.per_second {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.written += 1;
        Verdict::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_counted_with_the_next_line() {
        let t0 = Instant::now();
        let mut limit = LogLimit::new(3);
        let verdicts: Vec<Verdict> = (0..5).map(|_| limit.check(t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Write { suppressed: 0 },
                Verdict::Write { suppressed: 0 },
                Verdict::Write { suppressed: 0 },
                Verdict::Suppress,
                Verdict::Suppress
            ]
        );
        assert_eq!(
            limit.check(t0 + Duration::from_millis(999)),
            Verdict::Suppress
        );
        assert_eq!(
            limit.check(t0 + Duration::from_secs(1)),
            Verdict::Write { suppressed: 3 }
        );
        assert_eq!(
            limit.check(t0 + Duration::from_secs(5)),
            Verdict::Write { suppressed: 0 }
        );
    }
}
