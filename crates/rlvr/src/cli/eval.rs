use crate::run::{self, Extensions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// YAML config files merged over the defaults, in order, before the overrides.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    /// `a.b.c=value` overrides; the model is `trainer.policy.model.path`, the rows `data.val_data`,
    /// the sampling `generator.eval_sampling_params`.
    pub overrides: Vec<String>,
}

/// `rlvr eval`: the trainer's evaluation, once, without training; prints the metrics as JSON.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::generate::single_elementwise_pool();
    let resolved = rlvr::config::load(&args.configs, &args.overrides)?;
    for w in resolved.validate()? {
        tracing::warn!("{w}");
    }
    let ext = Extensions::defaults(&resolved.config)?;
    let mut trainer = run::build_for(&resolved, ext, run::Purpose::Evaluate)?;
    let t = std::time::Instant::now();
    let mut metrics = trainer.evaluate()?;
    metrics.insert("timing/eval".into(), t.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&metrics)?);
    Ok(ExitCode::SUCCESS)
}
