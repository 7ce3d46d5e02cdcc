//! Medians, ranges and same-round ratios over interleaved rounds.
//!
//! Every server is measured once per round, seconds apart from the others, so dividing by
//! another server's figure from the *same* round cancels slow drift of a shared host; the
//! median of those per-round ratios is the figure to quote.

/// Median and range of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The middle value (the mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// Median and range of the finite values; `None` when there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Ratio of each round's value to the baseline of the same round. Rounds where either is
/// missing or the baseline is not positive are left out.
pub fn same_round_ratios(values: &[Option<f64>], baseline: &[Option<f64>]) -> Vec<f64> {
    values
        .iter()
        .zip(baseline)
        .filter_map(|(v, b)| match (v, b) {
            (Some(v), Some(b)) if *b > 0.0 => Some(v / b),
            _ => None,
        })
        .collect()
}

/// Per round, the largest value among several series (e.g. the best peer of each round).
pub fn best_per_round(series: &[&[Option<f64>]], rounds: usize) -> Vec<Option<f64>> {
    (0..rounds)
        .map(|r| {
            series
                .iter()
                .filter_map(|s| s.get(r).copied().flatten())
                .filter(|x| x.is_finite())
                .max_by(f64::total_cmp)
        })
        .collect()
}

/// `value` divided by `count`, or `None` when `count` is zero.
pub fn per(value: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| value / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(
            summarize(&[3.0, 1.0, 2.0]),
            Some(Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(
            summarize(&[4.0, 1.0, 3.0, 2.0]).map(|s| s.median),
            Some(2.5)
        );
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn ratios_pair_rounds_and_skip_gaps() {
        let v = [Some(10.0), Some(20.0), None, Some(5.0)];
        let b = [Some(5.0), Some(10.0), Some(1.0), Some(0.0)];
        assert_eq!(same_round_ratios(&v, &b), [2.0, 2.0]);
    }

    #[test]
    fn best_peer_is_max_of_the_round() {
        let a = [Some(1.0), Some(5.0), None];
        let b = [Some(2.0), Some(4.0), None];
        assert_eq!(best_per_round(&[&a, &b], 3), [Some(2.0), Some(5.0), None]);
    }

    #[test]
    fn per_query() {
        assert_eq!(per(100.0, 4), Some(25.0));
        assert_eq!(per(1.0, 0), None);
    }
}
