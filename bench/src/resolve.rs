//! `resolve` subcommand (being written).

/// Arguments of `resolve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `resolve`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("resolve: not written yet")
}
