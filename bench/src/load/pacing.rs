//! Send pacing: how many queries a worker may send by now, for a rate limit (`-Q`) or an
//! open-loop offered rate with even or Poisson spacing.

use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

/// How open-loop send times are spaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Spacing {
    /// Exactly 1/rate apart.
    #[default]
    Even,
    /// Exponential gaps with mean 1/rate (a Poisson arrival process).
    Poisson,
}

/// Releases queries at a fixed rate from time `start_ns`.
#[derive(Debug)]
pub(crate) struct Pacer {
    gap_ns: f64,
    /// Send time of the next query not yet released.
    next_ns: f64,
    rng: Option<StdRng>,
}

impl Pacer {
    /// A pacer for `rate` queries per second from `start_ns`; `seed` varies Poisson streams.
    pub(crate) fn new(rate: f64, spacing: Spacing, start_ns: u64, seed: u64) -> Self {
        let rng = (spacing == Spacing::Poisson).then(|| StdRng::seed_from_u64(seed));
        let mut pacer = Pacer {
            gap_ns: 1e9 / rate,
            next_ns: start_ns as f64,
            rng,
        };
        if pacer.rng.is_some() {
            pacer.next_ns += pacer.gap();
        }
        pacer
    }

    fn gap(&mut self) -> f64 {
        match &mut self.rng {
            // Inverse transform of an exponential: -ln(U) / rate, U in (0, 1].
            Some(rng) => -(1.0 - rng.random::<f64>()).ln() * self.gap_ns,
            None => self.gap_ns,
        }
    }

    /// Queries due by `now` and not yet taken, at most `limit`; they are taken.
    pub(crate) fn take(&mut self, now: u64, limit: u64) -> u64 {
        let now = now as f64;
        let mut taken = 0;
        while taken < limit && self.next_ns <= now {
            self.next_ns += self.gap();
            taken += 1;
        }
        taken
    }

    /// Forgets queries due by `now` beyond `keep` (closed loop: a window that was full must
    /// not turn into a burst later); returns how many were forgotten.
    pub(crate) fn forgive(&mut self, now: u64, keep: u64) -> u64 {
        let late_ns = now as f64 - self.next_ns;
        if late_ns < 0.0 {
            return 0;
        }
        let due = (late_ns / self.gap_ns).floor() + 1.0;
        if due > keep as f64 {
            let skip = due - keep as f64;
            self.next_ns += skip * self.gap_ns;
            return skip as u64;
        }
        0
    }

    /// When the next query is due.
    pub(crate) fn next_due(&self) -> u64 {
        self.next_ns.max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_spacing_releases_rate_times_elapsed() {
        let mut pacer = Pacer::new(1000.0, Spacing::Even, 0, 0);
        assert_eq!(pacer.take(0, u64::MAX), 1);
        assert_eq!(pacer.take(999_999, u64::MAX), 0);
        assert_eq!(pacer.take(10_000_000, u64::MAX), 10);
        assert_eq!(pacer.next_due(), 11_000_000);
        assert_eq!(pacer.take(1_000_000_000, 5), 5);
        assert_eq!(pacer.forgive(1_000_000_000, 100), 885);
        assert_eq!(pacer.take(1_000_000_000, u64::MAX), 100);
    }

    #[test]
    fn poisson_spacing_averages_the_rate() {
        let mut pacer = Pacer::new(10_000.0, Spacing::Poisson, 0, 7);
        let taken = pacer.take(10_000_000_000, u64::MAX);
        assert!((99_000..101_000).contains(&taken), "{taken}");
    }
}
