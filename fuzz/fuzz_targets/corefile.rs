//! Fuzz target: bytes as a Corefile, built as `--conf` builds it: a configuration (which an
//! engine then runs) or an error naming `Corefile:LINE`; never a panic. The logic is
//! `shardns_fuzz_harness::corefile::run`, which the test suite also runs
//! (`cargo test -p shardns-fuzz-harness --test corefile`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shardns_fuzz_harness::corefile::run(data);
});
