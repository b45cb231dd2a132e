//! The `rlvr` command line. Each subcommand lives in its own file under `cli/`.

use clap::{Parser, Subcommand};

/// Training and decoding allocate and free many large buffers per step; glibc's malloc hands
/// those back to the kernel and takes page faults and zeroing to get them again. mimalloc keeps
/// them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use rlvr::{config, data, export, plot, run, toy, trainer};

#[derive(Parser)]
#[command(
    name = "rlvr",
    version,
    about = "Reinforcement learning from verifiable rewards (GRPO, DAPO)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a policy (GRPO, DAPO, ...) with SkyRL's config keys and overrides.
    Train(cli::train::Args),
    /// Evaluate a model on `data.val_data` with `generator.eval_sampling_params`, without training.
    Eval(cli::eval::Args),
    /// Inspect the resolved configuration.
    #[command(subcommand)]
    Config(cli::config::ConfigCommand),
    /// Run every golden file in DIR through the algorithm core and report pass/fail per file.
    Conformance(cli::conformance::Args),
    /// Generate a chat response with the embedded engine.
    Generate(cli::generate::Args),
    /// Serve a model over HTTP (vLLM's OpenAI-compatible and SGLang's native API subsets) for
    /// remote generation.
    Serve(cli::serve::Args),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Convert a raw word-problem set (GSM8K, MAWPS, SVAMP) into SkyRL-schema parquet files.
    Data(cli::data::Args),
    /// PNG curves of a run's metrics.
    Plot(cli::plot::Args),
    /// Write the toy task (tiny random model and data) used by examples/toy.
    Toy(cli::toy::Args),
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
        Command::Train(a) => cli::train::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Config(c) => cli::config::run(c),
        Command::Conformance(a) => cli::conformance::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Bench(b) => cli::bench::run(b),
        Command::Data(a) => cli::data::run(a),
        Command::Plot(a) => cli::plot::run(a),
        Command::Toy(a) => cli::toy::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
