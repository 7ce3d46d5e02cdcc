//! Fuzz target: the engine, driven through its public API by a byte-coded sequence of steps
//! (client queries over UDP and TCP, upstream replies built from what it sent, closed links
//! and connections, time, reloads, cache hand-offs), with its invariants asserted after every
//! step. The logic is `shardns_fuzz_harness::engine::run`, which the test suite also runs
//! (`cargo test -p shardns-fuzz-harness --test engine`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardns_fuzz_harness::engine::run(data);
});
