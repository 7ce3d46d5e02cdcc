//! The logic of shardns's fuzz targets, in a crate of the workspace so that stable tests can
//! run it: `fuzz/fuzz_targets/*.rs` are thin `libfuzzer-sys` wrappers over [`engine::run`]
//! and [`corefile::run`], and `tests/` runs each over a bounded, seeded stream of mutated seed
//! inputs ([`mutate`]).
//!
//! - [`engine`]: input bytes decoded into a sequence of [`engine::Step`]s (client queries over
//!   UDP and TCP, upstream replies built from what the engine really sent (right or wrong ID,
//!   question, flags, damaged bytes), closed links and connections, time, reloads) and driven
//!   through the engine's public [`shardns_shard::Handler`] API exactly as a driver does, with
//!   the invariants asserted after every step.
//! - [`corefile`]: input bytes as a Corefile, built as `--conf` builds it: a configuration or
//!   an error naming the file and line; never a panic. A configuration that builds must run.
//! - [`mutate`]: a small seeded mutator (libFuzzer's byte-level moves) for the bounded runs.

#![forbid(unsafe_code)]

pub mod corefile;
pub mod engine;
pub mod mutate;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Runs `target` on input number `index` of a bounded run; a panic is turned into one that
/// names the input, shows it (`describe`) and saves it as `<dir>/<name>-crash-<index>.bin`,
/// where `cargo fuzz run <name> FILE` replays it.
pub fn run_caught<T>(
    name: &str,
    dir: &Path,
    index: usize,
    input: &[u8],
    target: impl FnOnce(&[u8]) -> T,
    describe: impl FnOnce(&[u8]) -> String,
) -> T {
    match catch_unwind(AssertUnwindSafe(|| target(input))) {
        Ok(value) => value,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let path = dir.join(format!("{name}-crash-{index}.bin"));
            let saved = match std::fs::write(&path, input) {
                Ok(()) => format!("saved to {}", path.display()),
                Err(e) => format!("not saved: {e}"),
            };
            panic!(
                "{name} input {index} failed: {message}\ninput ({} bytes, {saved}):\n{}",
                input.len(),
                describe(input)
            );
        }
    }
}
