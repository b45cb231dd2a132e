//! Evaluation on the validation set: SkyRL's `eval/{all,<data_source>}/{avg_score,pass_at_k}`, the
//! environments' extra scores (e.g. GSM8K's strict and flexible accuracy), the truncation rate and
//! mean response length, each mean with its standard error (`…_stderr`, over responses), and a
//! JSONL dump of every prompt, response and score.

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
    /// `generator.zero_reward_on_non_stop`, as in training.
    pub zero_reward_on_non_stop: bool,
}

/// Running sum and sum of squares of one per-response score.
#[derive(Default, Clone, Copy)]
pub(crate) struct Moments {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl Moments {
    pub(crate) fn add(&mut self, v: f64) {
        self.sum += v;
        self.sum_sq += v * v;
        self.count += 1;
    }

    pub(crate) fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    /// Standard error of the mean: the sample standard deviation (n − 1) over √n; for a 0/1 score
    /// this is √(p(1−p)/(n−1)). Zero for fewer than two responses.
    fn stderr(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let var = ((self.sum_sq - self.sum * self.sum / n) / (n - 1.0)).max(0.0);
        (var / n).sqrt()
    }
}

/// Scores of one data source (or of all rows): per group, the samples' rewards; per extra score
/// name (the environment's, `truncated`, `response_length`), its moments.
#[derive(Default)]
struct Tally {
    groups: Vec<Vec<f64>>,
    extra: BTreeMap<&'static str, Moments>,
}

impl Tally {
    fn metrics(&self, name: &str, n: usize, out: &mut Metrics) {
        let mut score = Moments::default();
        self.groups.iter().flatten().for_each(|&v| score.add(v));
        let passed = self
            .groups
            .iter()
            .filter(|g| g.iter().any(|&s| s > 0.0))
            .count();
        out.insert(format!("eval/{name}/avg_score"), score.mean());
        out.insert(format!("eval/{name}/avg_score_stderr"), score.stderr());
        let mut positive = Moments::default();
        self.groups
            .iter()
            .flatten()
            .for_each(|&v| positive.add(v.max(0.0)));
        out.insert(format!("eval/{name}/mean_positive_reward"), positive.mean());
        out.insert(
            format!("eval/{name}/pass_at_{n}"),
            passed as f64 / self.groups.len().max(1) as f64,
        );
        for (k, m) in &self.extra {
            out.insert(format!("eval/{name}/{k}"), m.mean());
            out.insert(format!("eval/{name}/{k}_stderr"), m.stderr());
        }
    }
}

/// A data source as it appears in metric keys, as SkyRL's `sanitize_data_source` makes it:
/// `openai/gsm8k` → `openai_gsm8k` (one path level per key), none → `unknown`.
fn metric_name(data_source: &str) -> String {
    if data_source.is_empty() {
        "unknown".into()
    } else {
        data_source.replace('/', "_")
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
    // Every response, for SkyRL's `eval/all/generate/*` over the whole evaluation.
    let mut everything = crate::generator::GeneratorOutput::default();
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
        let mut out =
            generator.generate(&groups, s.sampling, s.seed.wrapping_add(chunk_idx as u64))?;
        if s.zero_reward_on_non_stop {
            out.zero_rewards_not_stopped();
        }
        for (g, group) in groups.iter().enumerate() {
            let source = per_source.entry(group.row.data_source.clone()).or_default();
            let mut scores = Vec::with_capacity(n);
            for k in g * n..(g + 1) * n {
                let truncated = out.stop_reasons[k] == crate::generator::StopReason::Length;
                let mut extra = s.envs.eval_scores(&out.responses[k], &group.row);
                extra.push(("truncated", truncated as u8 as f64));
                extra.push(("response_length", out.response_ids[k].len() as f64));
                for &(name, v) in &extra {
                    for t in [&mut *source, &mut all] {
                        t.extra.entry(name).or_default().add(v);
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
                // Which problem this was, so a dump can be re-scored or compared row by row.
                let info = &group.row.extra_info;
                if let Some(index) = info.get("index").and_then(|v| v.as_u64()) {
                    line["index"] = index.into();
                    let test_split = info.get("split").and_then(|v| v.as_str()) == Some("test");
                    if group.row.data_source == "openai/gsm8k" && test_split {
                        line["gsm8k_test_index"] = index.into();
                    }
                }
                lines.push(line);
            }
            source.groups.push(scores.clone());
            all.groups.push(scores);
        }
        everything.extend(out);
    }
    let mut metrics = Metrics::new();
    all.metrics("all", n, &mut metrics);
    for (k, v) in crate::trainer::length_metrics(&everything) {
        metrics.insert(format!("eval/all/{k}"), v);
    }
    for (source, tally) in &per_source {
        tally.metrics(&metric_name(source), n, &mut metrics);
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

#[cfg(test)]
mod tests {
    use super::{metric_name, Moments};

    #[test]
    fn data_sources_are_sanitised_in_metric_keys_as_skyrl_does() {
        assert_eq!(metric_name("openai/gsm8k"), "openai_gsm8k");
        assert_eq!(metric_name("a/b/c"), "a_b_c");
        assert_eq!(metric_name("mawps"), "mawps");
        assert_eq!(metric_name(""), "unknown");
    }

    #[test]
    fn stderr_of_a_binary_score_is_the_binomial_one() {
        // 3 of 10 correct: mean 0.3, sample variance 0.3·0.7·10/9, stderr √(0.21/9).
        let mut m = Moments::default();
        for i in 0..10 {
            m.add((i < 3) as u8 as f64);
        }
        assert!((m.mean() - 0.3).abs() < 1e-12);
        assert!((m.stderr() - (0.21f64 / 9.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn stderr_matches_the_two_pass_formula_and_is_zero_for_one_value() {
        let xs = [250.0, 31.0, 320.0, 7.5, 199.0];
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.add(x));
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!((m.stderr() - (var / n).sqrt()).abs() < 1e-9);
        let mut one = Moments::default();
        one.add(1.0);
        assert_eq!(one.stderr(), 0.0);
        assert_eq!(Moments::default().mean(), 0.0);
    }
}
