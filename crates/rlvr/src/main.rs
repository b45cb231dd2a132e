//! The `rlvr` command line. Each subcommand lives in its own file under `cli/`.

#![deny(unsafe_op_in_unsafe_fn)]

use clap::{Parser, Subcommand};

/// Training and decoding allocate and free many large buffers per step. Freed memory is kept, not
/// handed back to the kernel (which took page faults and zeroing to get it again): small blocks
/// by mimalloc ([`retain_freed_memory`]), large ones on glibc by its heap, set to keep them
/// ([`heap::tiered`]: fewer holes between live blocks, so a smaller resident set). The bytes
/// live are counted, so that `rlvr bench` can tell the memory the program holds from the memory
/// the allocator keeps.
#[global_allocator]
static GLOBAL: heap::Counting<Allocator> = heap::Counting::new(ALLOCATOR);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use heap::tiered::Tiered as Allocator;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
use mimalloc::MiMalloc as Allocator;
const ALLOCATOR: Allocator = Allocator;

mod heap;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (mimalloc.h; libmimalloc-sys 0.1.49's
/// Rust constants stop before it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Stops mimalloc from returning freed memory to the kernel a second after it is freed (its
/// default `purge_delay` of 1000 ms). A training step frees and reallocates gigabytes of
/// activations and gradients; with purging, every reallocation page-faulted and the kernel
/// zeroed the pages again, which measured 21 % of a SmolLM2 training step on 2 cores (97.8 -> 132
/// tok/s without it). Memory is kept at the peak, as PyTorch's caching allocator does.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn retain_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; called first thing in `main`, before any threads.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

mod cli;

use rlvr::{config, data, dist, export, plot, run, toy, trainer};

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
    retain_freed_memory();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    heap::tiered::keep_freed();
    rlvr::dist::share_cores_between_local_ranks();
    // Data-parallel ranks but the first report only warnings and errors (unless RUST_LOG says).
    let level = match rlvr::dist::launcher_rank() {
        Some(r) if r > 0 => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Every command runs on a worker of rayon's pool: the kernels' parallel sections then fork
    // from a worker, where from the main thread each was injected into the pool and waited on
    // (two thread wake-ups per call; a third of batch-1 decoding time).
    let result = rayon::scope(|_| match cli.command {
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
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_mimalloc_documents() {
        // The index is checked through the option's default (1000 ms, v3 options.c) first.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), 1000);
            retain_freed_memory();
            assert_eq!(get(), -1);
        }
    }
}
