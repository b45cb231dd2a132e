use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Generation tokens/s at batch 1/8/32 and training tokens/s (forward+backward+AdamW), peak memory.
    Model {
        #[arg(long)]
        model: PathBuf,
    },
}

pub fn run(_cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
