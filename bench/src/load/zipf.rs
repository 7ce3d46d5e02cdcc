//! Zipf-distributed choice of query-file lines (`load --zipf S`): line k (rank k, 1-based)
//! is asked with probability proportional to 1/k^S.
//!
//! The table is built once per run and shared by the load threads; each thread draws with
//! its own seeded generator. A draw is an inverse-CDF lookup: a uniform `u` in [0, 1) picks
//! one of `n` equal-width buckets of the unit interval, a guide table gives the ranks whose
//! CDF values can fall in that bucket, and a binary search among those (a handful even in
//! the tail) finds the first rank whose CDF exceeds `u`. The result is exactly the
//! inverse-CDF answer; a draw costs a few comparisons and allocates nothing.

use rand::{Rng, SeedableRng as _, rngs::StdRng};

/// The precomputed law over `n` ranks.
#[derive(Debug)]
pub(crate) struct Zipf {
    /// `cdf[i]`: probability of ranks 1..=i+1; the last value is exactly 1.0.
    cdf: Vec<f64>,
    /// `guide[j]`: the first index whose CDF value falls in bucket `j` or later
    /// (`bucket(cdf[i]) >= j`); `len() + 2` entries, `n` past the end.
    guide: Vec<u32>,
    /// The exponent.
    s: f64,
}

impl Zipf {
    /// The law over `n` ranks (at least 1, at most `u32::MAX`) with exponent `s` (> 0,
    /// finite).
    pub(crate) fn new(n: usize, s: f64) -> Result<Self, String> {
        if !(s > 0.0 && s.is_finite()) {
            return Err(format!("Zipf exponent must be > 0 and finite, not {s}"));
        }
        if n == 0 || u32::try_from(n).is_err() {
            return Err(format!("Zipf needs 1 to {} ranks, not {n}", u32::MAX));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += (rank as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        cdf[n - 1] = 1.0;
        let mut zipf = Zipf {
            cdf,
            guide: Vec::new(),
            s,
        };
        // Buckets: as many as ranks. `bucket` is monotone, so for a `u` in bucket j every
        // rank before guide[j] has cdf <= u and the rank at guide[j + 1] (if any) has
        // cdf > u: the answer lies in guide[j]..=guide[j + 1].
        let mut guide = Vec::with_capacity(n + 2);
        for (i, &c) in zipf.cdf.iter().enumerate() {
            let bucket = zipf.bucket(c);
            while guide.len() <= bucket {
                guide.push(i as u32);
            }
        }
        guide.resize(n + 2, n as u32);
        zipf.guide = guide;
        Ok(zipf)
    }

    /// Number of ranks.
    pub(crate) fn len(&self) -> usize {
        self.cdf.len()
    }

    /// The exponent.
    pub(crate) fn exponent(&self) -> f64 {
        self.s
    }

    /// The bucket of a CDF value or of a uniform draw (at most `len()`).
    fn bucket(&self, x: f64) -> usize {
        ((x * self.cdf.len() as f64) as usize).min(self.cdf.len())
    }

    /// The 0-based index (rank - 1) whose CDF interval holds `u` in [0, 1): the first index
    /// with `cdf > u`.
    pub(crate) fn index(&self, u: f64) -> usize {
        let last = self.cdf.len() - 1;
        let bucket = self.bucket(u);
        let lo = self.guide[bucket] as usize;
        let hi = (self.guide[bucket + 1] as usize).min(last);
        if lo >= hi {
            return lo.min(last);
        }
        (lo + self.cdf[lo..=hi].partition_point(|&c| c <= u)).min(last)
    }

    /// Draws a 0-based index with `rng`.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> usize {
        self.index(rng.random::<f64>())
    }

    /// The probability of the 0-based index `i`.
    #[cfg(test)]
    pub(crate) fn probability(&self, i: usize) -> f64 {
        self.cdf[i] - if i == 0 { 0.0 } else { self.cdf[i - 1] }
    }
}

/// One thread's draws from a shared [`Zipf`] table.
#[derive(Debug)]
pub(crate) struct ZipfPicker<'a> {
    zipf: &'a Zipf,
    rng: StdRng,
}

impl<'a> ZipfPicker<'a> {
    /// Draws from `zipf` with a generator seeded with `seed`.
    pub(crate) fn new(zipf: &'a Zipf, seed: u64) -> Self {
        ZipfPicker {
            zipf,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next 0-based query index.
    pub(crate) fn next_index(&mut self) -> usize {
        self.zipf.sample(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pearson's chi-square of `counts` against `law`, over bins of consecutive ranks each
    /// expecting at least 20 draws (single ranks at the head, wider bins in the tail);
    /// returns (statistic, degrees of freedom).
    fn chi_square(counts: &[u64], law: &Zipf) -> (f64, usize) {
        let total: u64 = counts.iter().sum();
        let (mut stat, mut bins) = (0.0, 0);
        let (mut observed, mut expected) = (0.0, 0.0);
        for (i, &count) in counts.iter().enumerate() {
            observed += count as f64;
            expected += law.probability(i) * total as f64;
            if expected >= 20.0 || i + 1 == counts.len() {
                stat += (observed - expected).powi(2) / expected;
                bins += 1;
                (observed, expected) = (0.0, 0.0);
            }
        }
        (stat, bins - 1)
    }

    /// A chi-square threshold far out in the upper tail for `df` degrees of freedom
    /// (mean df, standard deviation sqrt(2 df)): exceeded by chance with negligible odds.
    fn threshold(df: usize) -> f64 {
        df as f64 + 6.0 * (2.0 * df as f64).sqrt()
    }

    fn draw(zipf: &Zipf, seed: u64, draws: usize) -> Vec<u64> {
        let mut picker = ZipfPicker::new(zipf, seed);
        let mut counts = vec![0u64; zipf.len()];
        for _ in 0..draws {
            counts[picker.next_index()] += 1;
        }
        counts
    }

    #[test]
    fn law_is_one_over_k_to_the_s() {
        let zipf = Zipf::new(1000, 1.0).unwrap();
        let harmonic: f64 = (1..=1000).map(|k| 1.0 / k as f64).sum();
        for k in [1usize, 2, 10, 500, 1000] {
            let want = 1.0 / (k as f64 * harmonic);
            assert!((zipf.probability(k - 1) - want).abs() < 1e-12, "rank {k}");
        }
        let total: f64 = (0..1000).map(|i| zipf.probability(i)).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn draws_follow_the_law() {
        let zipf = Zipf::new(10_000, 1.0).unwrap();
        let draws = 2_000_000;
        let counts = draw(&zipf, 42, draws);
        let (stat, df) = chi_square(&counts, &zipf);
        assert!(stat < threshold(df), "chi-square {stat:.1} with {df} df");
        // Rank 1 alone: 1/H(10000) of the draws, within 1 %.
        let share = counts[0] as f64 / draws as f64;
        assert!(
            (share / zipf.probability(0) - 1.0).abs() < 0.01,
            "rank 1 share {share}"
        );
        // The test has power: the same draws are far from a neighbouring law.
        for other in [0.95, 1.05] {
            let (stat, df) = chi_square(&counts, &Zipf::new(10_000, other).unwrap());
            assert!(
                stat > 3.0 * threshold(df),
                "s = {other}: chi-square {stat:.1}, {df} df"
            );
        }
    }

    #[test]
    fn other_exponents_follow_their_law() {
        for s in [0.5, 1.3, 2.5] {
            let zipf = Zipf::new(5_000, s).unwrap();
            let counts = draw(&zipf, 7, 1_000_000);
            let (stat, df) = chi_square(&counts, &zipf);
            assert!(
                stat < threshold(df),
                "s = {s}: chi-square {stat:.1}, {df} df"
            );
        }
    }

    #[test]
    fn exponent_near_zero_is_uniform() {
        let zipf = Zipf::new(200, 1e-6).unwrap();
        let draws = 1_000_000;
        let counts = draw(&zipf, 3, draws);
        let per_rank = draws as f64 / 200.0;
        let stat: f64 = counts
            .iter()
            .map(|&c| (c as f64 - per_rank).powi(2) / per_rank)
            .sum();
        assert!(
            stat < threshold(199),
            "chi-square against uniform {stat:.1}"
        );
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(
            *min as f64 > 0.9 * per_rank && (*max as f64) < 1.1 * per_rank,
            "{min}..{max}"
        );
    }

    #[test]
    fn index_is_the_exact_inverse_cdf() {
        for (n, s) in [
            (1, 1.0),
            (2, 1.0),
            (7, 0.3),
            (1000, 1.0),
            (1000, 3.0),
            (4096, 1e-9),
        ] {
            let zipf = Zipf::new(n, s).unwrap();
            let brute = |u: f64| zipf.cdf.partition_point(|&c| c <= u).min(n - 1);
            let mut points = vec![0.0, 1.0 - f64::EPSILON / 2.0, 0.5];
            for &c in &zipf.cdf {
                points.extend([c, c.next_down(), c.next_up()]);
            }
            points.extend((0..10_000).map(|i| i as f64 / 10_000.0));
            for u in points.into_iter().filter(|u| (0.0..1.0).contains(u)) {
                assert_eq!(zipf.index(u), brute(u), "n {n} s {s} u {u}");
            }
        }
    }

    #[test]
    fn one_rank_and_bad_arguments() {
        let zipf = Zipf::new(1, 1.0).unwrap();
        assert_eq!(draw(&zipf, 1, 100), [100]);
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Zipf::new(10, s).is_err(), "{s}");
        }
        assert!(Zipf::new(0, 1.0).is_err());
    }

    #[test]
    fn a_seed_repeats_its_draws() {
        let zipf = Zipf::new(1000, 1.0).unwrap();
        let run = |seed| {
            let mut picker = ZipfPicker::new(&zipf, seed);
            (0..1000).map(|_| picker.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
