//! `rlvr plot RUN_DIR`: PNG curves of a run's metrics (read from `metrics.jsonl`).

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The font is shipped in the binary, so plots render the same on a machine without fonts.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// One figure per entry: file name, title, the metric keys drawn on it.
const FIGURES: &[(&str, &str, &[&str])] = &[
    (
        "reward.png",
        "Reward",
        &["reward/avg_raw_reward", "reward/mean_positive_reward"],
    ),
    ("eval_score.png", "Eval score", &["eval/all/avg_score"]),
    (
        "accuracy.png",
        "Accuracy (eval greedy; train samples)",
        &[
            "eval/all/strict_accuracy",
            "eval/all/flexible_accuracy",
            "environment/strict_accuracy",
        ],
    ),
    (
        "marker_rate.png",
        "Responses containing ####",
        &["eval/all/marker_rate", "environment/marker_rate"],
    ),
    (
        "zero_variance_groups.png",
        "Zero-variance group fraction",
        &["dynamic_sampling/zero_std_group_fraction"],
    ),
    (
        "generation_batches.png",
        "Generation batches per step",
        &["dynamic_sampling/num_gen_batches"],
    ),
    (
        "response_length.png",
        "Response length (tokens)",
        &["generate/avg_num_tokens", "generate/max_num_tokens"],
    ),
    ("entropy.png", "Policy entropy", &["policy/policy_entropy"]),
    (
        "clip_fraction.png",
        "Clip fraction",
        &[
            "policy/loss_metrics/clip_ratio",
            "policy/loss_metrics/clip_ratio_low",
            "policy/loss_metrics/clip_ratio_high",
        ],
    ),
];

/// Reads `metrics.jsonl`: metric → (step, value) points.
pub fn read_metrics(path: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not a JSON object", path.display(), i + 1))?;
        let step = obj
            .get("step")
            .and_then(|s| s.as_f64())
            .with_context(|| format!("{}: line {} has no step", path.display(), i + 1))?;
        for (k, v) in &obj {
            if let Some(v) = v.as_f64() {
                series.entry(k.clone()).or_default().push((step, v));
            }
        }
    }
    Ok(series)
}

/// Writes one PNG per figure that has data; returns the files written.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let metrics = read_metrics(&run_dir.join("metrics.jsonl"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("loading the embedded font"))?;
    let out_dir = run_dir.join("plots");
    std::fs::create_dir_all(&out_dir)?;
    let mut written = Vec::new();
    for (file, title, keys) in FIGURES {
        let lines: Vec<(&str, &Vec<(f64, f64)>)> = keys
            .iter()
            .filter_map(|k| metrics.get(*k).map(|s| (*k, s)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        let path = out_dir.join(file);
        draw(&path, title, &lines).with_context(|| format!("drawing {}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        bail!(
            "{}: none of the plotted metrics were logged",
            run_dir.join("metrics.jsonl").display()
        );
    }
    Ok(written)
}

fn draw(path: &Path, title: &str, lines: &[(&str, &Vec<(f64, f64)>)]) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let pts = lines
        .iter()
        .flat_map(|(_, s)| s.iter())
        .filter(|(_, y)| y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .label_style(("sans-serif", 15))
        .draw()?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN];
    for (i, (name, series)) in lines.iter().enumerate() {
        let color = palette[i % palette.len()];
        let data: Vec<(f64, f64)> = series
            .iter()
            .copied()
            .filter(|(_, y)| y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            data.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_written_from_metrics_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let lines: String = (1..=5)
            .map(|s| format!("{{\"step\":{s},\"reward/avg_raw_reward\":{},\"policy/policy_entropy\":null}}\n", s as f64 / 10.0))
            .collect();
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        let files = plot_run(dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join("plots/reward.png")]);
        let bytes = std::fs::read(&files[0]).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(plot_run(tempfile::tempdir().unwrap().path()).is_err());
    }
}
