use crate::dist;
use crate::run::{self, Extensions};
use crate::trainer::checkpoint;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How long a data-parallel rank waits at a collective for the others before it ends the job
/// (`+trainer.collective_timeout_s`): longer than any legitimate wait (rank 0 writing a
/// checkpoint, uneven generation), as torch.distributed's 30-minute default.
const DEFAULT_COLLECTIVE_TIMEOUT_S: u64 = 1800;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

#[derive(clap::Args)]
pub struct Args {
    /// YAML config files merged over the defaults, in order, before the overrides.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    /// `a.b.c=value` overrides (SkyRL's keys); `+a.b.c=value` adds a key outside the schema.
    pub overrides: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    super::generate::single_elementwise_pool();
    let resolved = rlvr::config::load(&args.configs, &args.overrides)?;
    for w in resolved.validate()? {
        tracing::warn!("{w}");
    }
    let mut ext = Extensions::defaults(&resolved.config)?;
    // Under `mpirun -n N`: N data-parallel ranks (`--features mpi`).
    let timeout = match resolved.get("trainer.collective_timeout_s") {
        None => DEFAULT_COLLECTIVE_TIMEOUT_S,
        Some(v) => v
            .as_u64()
            .filter(|&s| s > 0)
            .context("+trainer.collective_timeout_s: expected a positive number of seconds")?,
    };
    ext.group = dist::from_launcher(Duration::from_secs(timeout))?;
    let group = ext.group.clone();
    if group.size() == 1 {
        return train(&resolved, ext);
    }
    tracing::info!("data-parallel rank {} of {}", group.rank(), group.size());
    // An error on one rank ends every rank now: left alone, the others would wait for it at
    // their next collective (and this one in MPI's finalisation) until the timeout.
    match train(&resolved, ext) {
        Ok(code) => Ok(code),
        Err(e) => group.abort(&format!("{e:#}")),
    }
}

fn train(resolved: &crate::config::ResolvedConfig, ext: Extensions) -> Result<ExitCode> {
    let mut trainer = run::build(resolved, ext)?;

    // First Ctrl-C: finish the step in flight, checkpoint, exit. Second: exit at once.
    let stop = trainer.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to quit now)"
        );
    })?;

    let last = trainer.fit()?;
    if trainer.stop.load(Ordering::SeqCst) {
        if let Some(dir) = trainer.ckpt_dir.clone() {
            if trainer.global_step > 0 {
                checkpoint::save(&trainer, &dir)?;
            }
        }
        eprintln!(
            "stopped at step {}; resume with trainer.resume_mode=latest",
            trainer.global_step
        );
        return Ok(ExitCode::from(130));
    }
    if trainer.cfg.trainer.hf_save_interval > 0 && !trainer.exports_at(trainer.global_step) {
        crate::export::export_policy(&trainer)?;
    }
    // Rank 0 speaks for a data-parallel run.
    let closing = trainer
        .final_mean_reward(&last)
        .filter(|_| trainer.group.is_main());
    if let Some((detail, r)) = closing {
        println!("{detail}");
        println!("final mean reward: {r:.4}");
    }
    Ok(ExitCode::SUCCESS)
}
