//! The `rlvr` command line. Each subcommand lives in its own file under `cli/`.

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(name = "rlvr", version, about = "Reinforcement learning from verifiable rewards (GRPO, DAPO)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the resolved configuration.
    #[command(subcommand)]
    Config(cli::config::ConfigCommand),
    /// Run every golden file in DIR through the algorithm core and report pass/fail per file.
    Conformance(cli::conformance::Args),
    /// Generate a chat response with the embedded engine.
    Generate(cli::generate::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config(c) => cli::config::run(c),
        Command::Conformance(a) => cli::conformance::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Bench(b) => cli::bench::run(b),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
