//! Writes the seed inputs of the fuzz targets for `cargo fuzz`:
//! `cargo run -p shardns-fuzz-harness --example write-corpus -- fuzz/corpus` makes
//! `fuzz/corpus/engine/` (the seed programs, encoded) and `fuzz/corpus/corefile/`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use shardns_fuzz_harness::{corefile, engine};

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let engine_dir = root.join("engine");
    std::fs::create_dir_all(&engine_dir)?;
    let programs = engine::seeds::programs();
    for (i, program) in programs.iter().enumerate() {
        std::fs::write(engine_dir.join(format!("seed-{i:03}")), program.encode())?;
    }
    let corefile_dir = root.join("corefile");
    std::fs::create_dir_all(&corefile_dir)?;
    let corefiles = corefile::seeds::all();
    for (i, text) in corefiles.iter().enumerate() {
        std::fs::write(corefile_dir.join(format!("seed-{i:03}")), text)?;
    }
    println!(
        "{} engine seeds in {}, {} Corefile seeds in {}",
        programs.len(),
        engine_dir.display(),
        corefiles.len(),
        corefile_dir.display()
    );
    Ok(())
}
