use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved config after applying OVERRIDES (`a.b.c=value`, `+a.b=value`).
    Show { overrides: Vec<String> },
}

pub fn run(_cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
