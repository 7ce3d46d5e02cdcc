//! With the `bpf` feature, compiles `bpf/fastpath.bpf.c` with clang (`-O2 -g -target bpf`)
//! into `$OUT_DIR/fastpath.bpf.o`, which the crate embeds, and `bpf/stand_in.bpf.c` (a
//! program that passes everything, which the tests attach to stand for a CNI's) into
//! `$OUT_DIR/stand_in.bpf.o`. Without it, nothing: the crate builds without clang and
//! `Fastpath::load` reports that the object is missing.

use std::path::PathBuf;
use std::process::Command;

const SOURCES: [(&str, &str); 2] = [
    ("bpf/fastpath.bpf.c", "fastpath.bpf.o"),
    ("bpf/stand_in.bpf.c", "stand_in.bpf.o"),
];

fn main() {
    for (source, _) in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=SHARDNS_BPF_CLANG");
    if std::env::var_os("CARGO_FEATURE_BPF").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (source, object) in SOURCES {
        compile(source, &out.join(object));
    }
}

fn compile(source: &str, object: &std::path::Path) {
    let clang = std::env::var("SHARDNS_BPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    // <asm/types.h> lives in the host's multiarch include directory (Debian's linux-libc-dev).
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", source, "-o"])
        .arg(object)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed on {source}: {status}"),
        Err(error) => panic!(
            "the bpf feature needs clang ({clang}: {error}); on Debian: \
             apt-get install clang llvm libbpf-dev"
        ),
    }
}
