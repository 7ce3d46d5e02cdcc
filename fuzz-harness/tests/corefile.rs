//! A bounded, deterministic run of the Corefile fuzz target (`fuzz/fuzz_targets/corefile.rs`)
//! in the test suite: seed Corefiles (node-local-dns's, and every directive with every
//! option), then inputs made by mutating them from a fixed seed, with Corefile words as the
//! dictionary. A panic fails the test with the input, also written under
//! `CARGO_TARGET_TMPDIR` for `cargo fuzz run corefile FILE`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rand::Rng;
use shardns_fuzz_harness::corefile::seeds::{self, EVERYTHING, SMALL, STOCK, TEMPLATE, WORDS};
use shardns_fuzz_harness::corefile::{self, Built};
use shardns_fuzz_harness::mutate::Mutator;
use shardns_fuzz_harness::run_caught;

/// Inputs after the seeds.
const INPUTS: usize = 50_000;

/// Runs input `index`; a panic fails the test with the input (saved for `cargo fuzz`).
fn run_one(index: usize, input: &[u8]) -> Built {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    run_caught("corefile", dir, index, input, corefile::run, |input| {
        String::from_utf8_lossy(input).into_owned()
    })
}

/// A seed with whole lines deleted, repeated, moved or taken from another seed (1 to 3 times),
/// so that more of the inputs are valid Corefiles of unusual shapes.
fn shuffle_lines(mutator: &mut Mutator, seeds: &[Vec<u8>]) -> Vec<u8> {
    let rng = mutator.rng();
    let lines_of = |seed: &Vec<u8>| -> Vec<Vec<u8>> {
        seed.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
    };
    let mut lines = lines_of(&seeds[rng.random_range(0..seeds.len())]);
    for _ in 0..rng.random_range(1..=3) {
        if lines.is_empty() {
            break;
        }
        let at = rng.random_range(0..lines.len());
        match rng.random_range(0..4) {
            0 => {
                lines.remove(at);
            }
            1 => {
                let line = lines[at].clone();
                lines.insert(rng.random_range(0..=lines.len()), line);
            }
            2 => {
                let line = lines.remove(at);
                lines.insert(rng.random_range(0..=lines.len()), line);
            }
            _ => {
                let other = lines_of(&seeds[rng.random_range(0..seeds.len())]);
                lines.insert(at, other[rng.random_range(0..other.len())].clone());
            }
        }
    }
    lines.join(&b'\n')
}

#[test]
fn the_seeds_build() {
    for seed in [STOCK, EVERYTHING].iter().chain(SMALL) {
        assert_eq!(
            corefile::run(seed.as_bytes()),
            Built::Ran,
            "seed does not build:\n{seed}"
        );
    }
    // node-cache's template has placeholders where addresses go.
    assert!(matches!(
        corefile::run(TEMPLATE.as_bytes()),
        Built::ErrorAt(_)
    ));
}

#[test]
fn corefile_builds_or_names_a_line_for_mutated_input() {
    let started = Instant::now();
    let seeds: Vec<Vec<u8>> = seeds::all().iter().map(|s| s.as_bytes().to_vec()).collect();
    let dictionary = WORDS.iter().map(|w| w.as_bytes().to_vec()).collect();
    let mut mutator = Mutator::new(0xc0de_f11e, seeds.clone(), dictionary, 8192).rounds(2);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lines = std::collections::BTreeSet::new();
    for i in 0..INPUTS {
        let input = match i % 2 {
            0 => mutator.next_input(),
            _ => shuffle_lines(&mut mutator, &seeds),
        };
        let kind = match run_one(i, &input) {
            Built::Ran => "ran",
            Built::Large => "too large to run",
            Built::ErrorAt(line) => {
                lines.insert(line);
                "error at a line"
            }
            Built::Error => "error about the file",
        };
        *outcomes.entry(kind).or_default() += 1;
    }
    eprintln!(
        "corefile fuzz: {INPUTS} inputs in {:.1?}: {outcomes:?}, errors at {} distinct lines",
        started.elapsed(),
        lines.len()
    );
    // Mutations keep a good share valid (so the builder and the engine run), and the errors
    // come from all over the files.
    assert!(
        outcomes.get("ran").copied().unwrap_or(0) >= INPUTS / 20,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("error at a line").copied().unwrap_or(0) >= INPUTS / 4,
        "{outcomes:?}"
    );
    assert!(lines.len() >= 40, "errors at only {} lines", lines.len());
}
