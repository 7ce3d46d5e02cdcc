//! SplitMix64: a small seeded generator for the tests' random choices and bytes (the same
//! sequence on every run; no RNG crate in this package).

use std::time::Duration;

/// The generator; its state is the seed to start with.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A random message ID.
    pub fn id(&mut self) -> u16 {
        self.next_u64() as u16
    }

    /// Random bytes, from `min` to `max - 1` of them.
    pub fn bytes(&mut self, min: usize, max: usize) -> Vec<u8> {
        let n = min + self.below(max - min);
        (0..n).map(|_| self.byte()).collect()
    }

    /// A duration from `low` to `high - 1` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_within_bounds() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert_eq!(a.next_u64(), b.next_u64());
        for _ in 0..1000 {
            assert!(a.below(10) < 10);
            let bytes = a.bytes(3, 6);
            assert!((3..6).contains(&bytes.len()));
            let d = a.millis(100, 200);
            assert!(d >= Duration::from_millis(100) && d < Duration::from_millis(200));
        }
        assert_ne!(Rng(1).next_u64(), Rng(2).next_u64());
    }
}
