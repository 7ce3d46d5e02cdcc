//! A bounded, deterministic run of the engine fuzz target (`fuzz/fuzz_targets/engine.rs`) in
//! the test suite: hand-written seed programs, then inputs made by mutating their bytes and
//! random step programs, from a fixed seed. A panic (an engine panic or a broken invariant)
//! fails the test with the input in hex, also written under `CARGO_TARGET_TMPDIR` for
//! `cargo fuzz run engine FILE`.

#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Instant;

use shardns_fuzz_harness::engine::seeds::{programs, random_program, raw_packets};
use shardns_fuzz_harness::engine::{self, Program, Report};
use shardns_fuzz_harness::mutate::Mutator;
use shardns_fuzz_harness::run_caught;

/// Inputs after the seeds.
const INPUTS: usize = 20_000;

/// Runs input `index`; a panic fails the test with the input (saved for `cargo fuzz`).
fn run_one(index: usize, input: &[u8]) -> Report {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    run_caught("engine", dir, index, input, engine::run, |input| {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:?}\n{hex}", engine::decode(input))
    })
}

#[test]
fn seed_programs_roundtrip() {
    for program in programs() {
        assert_eq!(engine::decode(&program.encode()), program);
    }
}

#[test]
fn engine_survives_mutated_and_random_programs() {
    let started = Instant::now();
    let seeds: Vec<Vec<u8>> = programs().iter().map(Program::encode).collect();
    let mut total = Report::default();
    for (i, seed) in seeds.iter().enumerate() {
        total += run_one(i, seed);
    }
    let seeded = total;
    let dictionary = raw_packets();
    let mut mutator = Mutator::new(0x5eed_f022, seeds.clone(), dictionary, 4096);
    for i in 0..INPUTS {
        let input = if i % 4 == 0 {
            random_program(&mut mutator).encode()
        } else {
            mutator.next_input()
        };
        total += run_one(seeds.len() + i, &input);
    }
    eprintln!(
        "engine fuzz: {} seeds + {INPUTS} inputs in {:.1?}: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    // The seeds reach every path they were written for.
    assert!(
        seeded.later_replies > 100 && seeded.upstream_replies > 100,
        "{seeded:?}"
    );
    assert_eq!(seeded.max_pending, engine::MAX_PENDING, "{seeded:?}");
    assert!(seeded.reloads > 0 && seeded.imports > 0, "{seeded:?}");
    // And so do the mutated inputs, many times over.
    let mutated = |a: usize, b: usize| a - b;
    for (what, got, least) in [
        (
            "client queries",
            mutated(total.client_queries, seeded.client_queries),
            50_000,
        ),
        (
            "immediate replies",
            mutated(total.immediate_replies, seeded.immediate_replies),
            10_000,
        ),
        (
            "upstream queries",
            mutated(total.upstream_queries, seeded.upstream_queries),
            20_000,
        ),
        (
            "upstream replies",
            mutated(total.upstream_replies, seeded.upstream_replies),
            20_000,
        ),
        (
            "later replies",
            mutated(total.later_replies, seeded.later_replies),
            10_000,
        ),
        ("timeouts", mutated(total.timeouts, seeded.timeouts), 10_000),
        (
            "links closed by the engine",
            mutated(total.links_closed_by_engine, seeded.links_closed_by_engine),
            100,
        ),
    ] {
        assert!(
            got >= least,
            "only {got} {what} from the mutated inputs: {total:?}"
        );
    }
}
