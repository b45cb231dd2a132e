//! Evaluation on the validation set: SkyRL's `eval/{all,<data_source>}/{avg_score,pass_at_k}`, the
//! environments' extra scores (e.g. GSM8K's strict and flexible accuracy), and a JSONL dump of
//! every prompt, response and score.

use crate::data::PromptRow;
use crate::env::EnvRegistry;
use crate::generator::{Generator, PromptGroup, Sampling};
use crate::logging::Metrics;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// What evaluation needs besides the generator and the rows.
pub struct EvalSettings<'a> {
    pub sampling: &'a Sampling,
    pub n_samples: usize,
    /// Prompts per generation call.
    pub batch_size: usize,
    pub seed: u64,
    pub envs: &'a EnvRegistry,
    /// One JSON line per response is written here when set.
    pub dump: Option<&'a Path>,
}

/// Scores of one data source (or of all rows): per group, the samples' rewards; per extra score
/// name, the sum and count.
#[derive(Default)]
struct Tally {
    groups: Vec<Vec<f64>>,
    extra: BTreeMap<&'static str, (f64, usize)>,
}

impl Tally {
    fn metrics(&self, name: &str, n: usize, out: &mut Metrics) {
        let flat: Vec<f64> = self.groups.iter().flatten().copied().collect();
        let avg = flat.iter().sum::<f64>() / flat.len().max(1) as f64;
        let passed = self
            .groups
            .iter()
            .filter(|g| g.iter().any(|&s| s > 0.0))
            .count();
        out.insert(format!("eval/{name}/avg_score"), avg);
        out.insert(
            format!("eval/{name}/pass_at_{n}"),
            passed as f64 / self.groups.len().max(1) as f64,
        );
        for (k, (sum, count)) in &self.extra {
            out.insert(format!("eval/{name}/{k}"), sum / (*count).max(1) as f64);
        }
    }
}

/// Generates `n_samples` responses per row and scores them.
pub fn evaluate(
    generator: &mut dyn Generator,
    rows: &[PromptRow],
    s: &EvalSettings,
) -> Result<Metrics> {
    let n = s.n_samples.max(1);
    let batch = s.batch_size.max(1);
    let mut per_source: BTreeMap<String, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    let mut lines = Vec::new();
    for (chunk_idx, chunk) in rows.chunks(batch).enumerate() {
        let groups: Vec<PromptGroup> = chunk
            .iter()
            .enumerate()
            .map(|(i, row)| PromptGroup {
                uid: format!("eval-{}", chunk_idx * batch + i),
                row: row.clone(),
                n,
            })
            .collect();
        let out = generator.generate(&groups, s.sampling, s.seed.wrapping_add(chunk_idx as u64))?;
        for (g, group) in groups.iter().enumerate() {
            let source = per_source.entry(group.row.data_source.clone()).or_default();
            let mut scores = Vec::with_capacity(n);
            for k in g * n..(g + 1) * n {
                let extra = s.envs.eval_scores(&out.responses[k], &group.row);
                for &(name, v) in &extra {
                    for t in [&mut *source, &mut all] {
                        let e = t.extra.entry(name).or_default();
                        e.0 += v;
                        e.1 += 1;
                    }
                }
                scores.push(out.rewards[k]);
                let mut line = serde_json::json!({
                    "uid": group.uid,
                    "data_source": group.row.data_source,
                    "prompt": group.row.prompt,
                    "ground_truth": group.row.reward_spec.ground_truth,
                    "response": out.responses[k],
                    "num_tokens": out.response_ids[k].len(),
                    "stop_reason": out.stop_reasons[k].as_str(),
                    "score": out.rewards[k],
                });
                for (name, v) in extra {
                    line[name] = v.into();
                }
                lines.push(line);
            }
            source.groups.push(scores.clone());
            all.groups.push(scores);
        }
    }
    let mut metrics = Metrics::new();
    all.metrics("all", n, &mut metrics);
    for (source, tally) in &per_source {
        tally.metrics(source, n, &mut metrics);
    }
    if let Some(path) = s.dump {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for l in &lines {
            writeln!(f, "{l}")?;
        }
        f.flush()?;
    }
    Ok(metrics)
}
