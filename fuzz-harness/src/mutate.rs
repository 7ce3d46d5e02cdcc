//! A small seeded mutator for the bounded runs in the test suite: libFuzzer's byte-level moves
//! (flip a bit, set a byte, insert or erase a run, copy a run inside the input, splice with
//! another seed, insert a dictionary word, overwrite a 16-bit length with an interesting
//! value, cut short), a few of them per input. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Byte values that matter to DNS and Corefile parsers.
const INTERESTING: [u8; 12] = [
    0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff, b'.', b'{', b'}', b'\n',
];

/// A seeded mutator over a seed corpus.
#[derive(Debug)]
pub struct Mutator {
    rng: StdRng,
    seeds: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
    max_len: usize,
    max_rounds: usize,
}

impl Mutator {
    /// A mutator over `seeds` (at least one) inserting words of `dictionary`, making inputs
    /// of at most `max_len` bytes.
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>, dictionary: Vec<Vec<u8>>, max_len: usize) -> Self {
        assert!(!seeds.is_empty(), "a seed corpus");
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            seeds,
            dictionary,
            max_len,
            max_rounds: 8,
        }
    }

    /// At most `max` mutations per input (8 unless set).
    pub fn rounds(mut self, max: usize) -> Self {
        self.max_rounds = max.max(1);
        self
    }

    /// The random generator (for callers that generate structured inputs too).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A new input: a seed, mutated 1 to 8 times (see [`Mutator::rounds`]).
    pub fn next_input(&mut self) -> Vec<u8> {
        let pick = self.rng.random_range(0..self.seeds.len());
        let mut data = self.seeds[pick].clone();
        let rounds = self.rng.random_range(1..=self.max_rounds);
        for _ in 0..rounds {
            self.mutate(&mut data);
        }
        data.truncate(self.max_len);
        data
    }

    /// One mutation of `data`.
    pub fn mutate(&mut self, data: &mut Vec<u8>) {
        let rng = &mut self.rng;
        let len = data.len();
        match rng.random_range(0..10) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                data[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                data[at] = if rng.random_bool(0.5) {
                    INTERESTING[rng.random_range(0..INTERESTING.len())]
                } else {
                    rng.random()
                };
            }
            2 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - at).min(16));
                data.drain(at..at + n);
            }
            4 if len > 1 => {
                let from = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - from).min(32));
                let run = data[from..from + n].to_vec();
                let to = rng.random_range(0..=len);
                data.splice(to..to, run);
            }
            5 => {
                let other = &self.seeds[rng.random_range(0..self.seeds.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let n = rng.random_range(1..=(other.len() - from).min(64));
                    let at = rng.random_range(0..=len);
                    data.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            6 if !self.dictionary.is_empty() => {
                let word = &self.dictionary[rng.random_range(0..self.dictionary.len())];
                let at = rng.random_range(0..=len);
                data.splice(at..at, word.iter().copied());
            }
            7 if len > 1 => {
                let at = rng.random_range(0..len - 1);
                let v: u16 = [
                    0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0xc00c, 0xffff, 512, 1232,
                ][rng.random_range(0..11)];
                data[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            8 if len > 0 => data.truncate(rng.random_range(0..len)),
            _ => {
                let at = rng.random_range(0..=len);
                data.insert(at, INTERESTING[rng.random_range(0..INTERESTING.len())]);
            }
        }
    }
}
