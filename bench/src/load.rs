//! `load` subcommand (being written).

/// Arguments of `load`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `load`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("load: not written yet")
}
