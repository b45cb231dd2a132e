//! Evaluation on the validation set: SkyRL's `eval/{all,<data_source>}/{avg_score,pass_at_k}`, and
//! a JSONL dump of every prompt, response and score.

use crate::data::PromptRow;
use crate::generator::{Generator, PromptGroup, Sampling};
use crate::logging::Metrics;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Generates `n_samples` responses per validation row and scores them. Rows are processed in
/// chunks of `batch_size` prompts. When `dump` is set, writes one JSON line per response there.
pub fn evaluate(
    generator: &mut dyn Generator,
    rows: &[PromptRow],
    sampling: &Sampling,
    n_samples: usize,
    batch_size: usize,
    seed: u64,
    dump: Option<&Path>,
) -> Result<Metrics> {
    let mut per_source: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let mut all: Vec<Vec<f64>> = Vec::new();
    let mut lines = Vec::new();
    for (chunk_idx, chunk) in rows.chunks(batch_size.max(1)).enumerate() {
        let groups: Vec<PromptGroup> = chunk
            .iter()
            .enumerate()
            .map(|(i, row)| PromptGroup {
                uid: format!("eval-{}", chunk_idx * batch_size + i),
                row: row.clone(),
                n: n_samples,
            })
            .collect();
        let out = generator.generate(&groups, sampling, seed.wrapping_add(chunk_idx as u64))?;
        for (g, group) in groups.iter().enumerate() {
            let scores: Vec<f64> = (0..n_samples)
                .map(|j| out.rewards[g * n_samples + j])
                .collect();
            for j in 0..n_samples {
                let k = g * n_samples + j;
                lines.push(serde_json::json!({
                    "uid": group.uid,
                    "data_source": group.row.data_source,
                    "prompt": group.row.prompt,
                    "ground_truth": group.row.reward_spec.ground_truth,
                    "response": out.responses[k],
                    "num_tokens": out.response_ids[k].len(),
                    "stop_reason": out.stop_reasons[k].as_str(),
                    "score": out.rewards[k],
                }));
            }
            per_source
                .entry(group.row.data_source.clone())
                .or_default()
                .push(scores.clone());
            all.push(scores);
        }
    }
    let mut metrics = Metrics::new();
    let mut add = |name: &str, groups: &[Vec<f64>]| {
        let flat: Vec<f64> = groups.iter().flatten().copied().collect();
        let avg = flat.iter().sum::<f64>() / flat.len().max(1) as f64;
        let pass = groups.iter().filter(|g| g.iter().any(|&s| s > 0.0)).count() as f64
            / groups.len().max(1) as f64;
        metrics.insert(format!("eval/{name}/avg_score"), avg);
        metrics.insert(format!("eval/{name}/pass_at_{n_samples}"), pass);
    };
    add("all", &all);
    for (source, groups) in &per_source {
        add(source, groups);
    }
    if let Some(path) = dump {
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
