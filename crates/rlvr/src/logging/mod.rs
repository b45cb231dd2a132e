//! Metric sinks selected by `trainer.logger`: console, JSON lines, CSV, TensorBoard event files.

mod csv;
mod jsonl;
mod tensorboard;

pub use self::csv::CsvLogger;
pub use jsonl::JsonlLogger;
pub use tensorboard::TensorBoardLogger;

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// One step's metrics, by SkyRL's names (`reward/avg_raw_reward`, `policy/policy_loss`, ...).
pub type Metrics = BTreeMap<String, f64>;

pub trait Logger {
    fn log(&mut self, step: usize, metrics: &Metrics) -> Result<()>;
}

/// Prints a one-line summary per step on stderr (progress bars live there too).
pub struct ConsoleLogger;

impl Logger for ConsoleLogger {
    fn log(&mut self, step: usize, m: &Metrics) -> Result<()> {
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        let mut line = format!("step {step}");
        for (label, key) in [
            ("reward", "reward/avg_raw_reward"),
            ("loss", "policy/policy_loss"),
            ("entropy", "policy/policy_entropy"),
            ("clip", "policy/loss_metrics/clip_ratio"),
            ("grad_norm", "policy/grad_norm"),
            ("len", "generate/avg_num_tokens"),
            ("gen_batches", "dynamic_sampling/num_gen_batches"),
            ("step_s", "timing/step"),
        ] {
            if m.contains_key(key) {
                line.push_str(&format!(" | {label} {:.4}", get(key)));
            }
        }
        if let Some((k, v)) = m.iter().find(|(k, _)| k.starts_with("reward/avg_pass_at_")) {
            line.push_str(&format!(
                " | {} {v:.4}",
                k.trim_start_matches("reward/avg_")
            ));
        }
        if let Some(score) = m.get("eval/all/avg_score") {
            line.push_str(&format!(" | eval {score:.4}"));
        }
        eprintln!("{line}");
        Ok(())
    }
}

/// The sinks of a run.
pub type Loggers = Vec<Box<dyn Logger>>;

/// Builds the sinks named in `trainer.logger` (a name or a list of names) writing under `dir`.
/// Returns the loggers and one warning per name rlvr cannot honour (e.g. `wandb`, which needs a
/// network service: its metrics go to the JSONL file instead).
pub fn from_names(names: &[String], dir: &Path) -> Result<(Loggers, Vec<String>)> {
    let mut loggers: Loggers = Vec::new();
    let mut warnings = Vec::new();
    let mut have_jsonl = false;
    for name in names {
        match name.as_str() {
            "console" => loggers.push(Box::new(ConsoleLogger)),
            "jsonl" | "json" => {
                if !have_jsonl {
                    loggers.push(Box::new(JsonlLogger::create(&dir.join("metrics.jsonl"))?));
                    have_jsonl = true;
                }
            }
            "csv" => loggers.push(Box::new(CsvLogger::create(&dir.join("metrics.csv"))?)),
            "tensorboard" => loggers.push(Box::new(TensorBoardLogger::create(
                &dir.join("tensorboard"),
            )?)),
            other => {
                warnings.push(format!(
                    "trainer.logger={other}: not available in rlvr (no network services); logging to console and {}",
                    dir.join("metrics.jsonl").display()
                ));
                if !have_jsonl {
                    loggers.push(Box::new(JsonlLogger::create(&dir.join("metrics.jsonl"))?));
                    have_jsonl = true;
                }
                loggers.push(Box::new(ConsoleLogger));
            }
        }
    }
    Ok((loggers, warnings))
}
