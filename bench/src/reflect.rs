//! `reflect` subcommand (being written).

/// Arguments of `reflect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `reflect`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("reflect: not written yet")
}
