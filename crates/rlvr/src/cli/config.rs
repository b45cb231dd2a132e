//! `rlvr config show [--config FILE]... [OVERRIDES...]`: print the resolved, validated config as YAML
//! (stdout) and one line per ignored SkyRL key (stderr). Invalid input exits nonzero.

use clap::Subcommand;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved config after applying OVERRIDES (`a.b.c=value`, `+a.b=value`, `++a.b=value`).
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// A YAML file merged over the defaults before the overrides (repeatable; later files win).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// `a.b.c=value` sets a key, `+a.b.c=value` adds one, `++a.b.c=value` adds or sets.
    #[arg(value_name = "OVERRIDES", allow_hyphen_values = true)]
    pub overrides: Vec<String>,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Show(args) => show(args),
    }
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let resolved = rlvr::config::load(&args.config, &args.overrides)?;
    let warnings = resolved.validate()?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    std::io::stdout().write_all(resolved.to_yaml().as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
