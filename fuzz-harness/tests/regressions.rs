//! Inputs the fuzz targets once failed on, kept under `tests/regressions/<target>/` and run
//! on every test run (add a crash from `fuzz/artifacts/<target>/` once it is fixed).
//!
//! - `engine/hit-without-qr-after-handoff`: a hand-off chunk damaged in a stored message's
//!   flags (QR clear, opcode 11) was imported, and a hit served that header as it was: a
//!   reply without QR. Imports (and upstream replies) that are not replies to a standard
//!   query are now refused.

#![forbid(unsafe_code)]

use std::path::Path;

use shardns_fuzz_harness::{corefile, engine, run_caught};

#[test]
fn saved_inputs_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut ran = 0;
    for target in ["engine", "corefile"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for (index, path) in paths.iter().enumerate() {
            let input = std::fs::read(path).expect("a saved input");
            eprintln!("{target}: {}", path.display());
            match target {
                "engine" => {
                    run_caught(target, tmp, index, &input, engine::run, |i| {
                        format!("{:?}", engine::decode(i))
                    });
                }
                _ => {
                    run_caught(target, tmp, index, &input, corefile::run, |i| {
                        String::from_utf8_lossy(i).into_owned()
                    });
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 1, "no saved input found under {}", root.display());
}
