//! Build facts for `coredns_build_info`: the compiler's version and the git revision.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let toolchain = output(&rustc, &["--version"]).unwrap_or_default();
    let toolchain = toolchain.split(' ').take(2).collect::<Vec<_>>().join(" ");
    println!("cargo:rustc-env=SHARDNS_RUSTC_VERSION={toolchain}");
    let revision = output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=SHARDNS_REVISION={revision}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
