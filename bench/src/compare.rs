//! `compare` subcommand (being written).

/// Arguments of `compare`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `compare`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("compare: not written yet")
}
