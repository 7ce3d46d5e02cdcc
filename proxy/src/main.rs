//! The `shardns` binary: parses the command line and runs the library ([`shardns::run`]).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    shardns::run(shardns::Args::parse())
}
