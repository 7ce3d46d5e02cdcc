//! Runs the fuzz targets on saved inputs (a crash found by `cargo fuzz`, or by the bounded
//! tests under `target/tmp/`), printing the engine's decoded program first:
//! `cargo run -p shardns-fuzz-harness --example replay -- engine FILE...`.

#![forbid(unsafe_code)]

use shardns_fuzz_harness::{corefile, engine};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    for path in args {
        let data = std::fs::read(&path)?;
        println!("{path}: {} bytes", data.len());
        match target.as_str() {
            "engine" => {
                let program = engine::decode(&data);
                println!("config {}, group {}", program.config, program.group);
                for step in &program.steps {
                    println!("  {step:?}");
                }
                println!("{:?}", engine::run(&data));
            }
            "corefile" => {
                println!("{}", String::from_utf8_lossy(&data));
                println!("{:?}", corefile::run(&data));
            }
            other => panic!("unknown target {other:?} (engine or corefile)"),
        }
    }
    Ok(())
}
