//! `gen`.
#[derive(Debug, clap::Args)]
pub struct GenOptions {}
pub fn run(_o: &GenOptions) -> anyhow::Result<bool> { todo!() }
