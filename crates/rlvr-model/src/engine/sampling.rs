//! Token sampling from one row of logits, in vLLM's order: temperature, min-p, top-k, top-p, then
//! a draw from the renormalised distribution (inverse CDF on one uniform from the request's own
//! RNG, so a seed fixes the tokens whatever else is in the batch). Temperature 0 is greedy.

use rand::Rng;

/// Below this temperature sampling is greedy (vLLM's `_SAMPLING_EPS`).
pub const GREEDY_EPS: f64 = 1e-5;

/// Which log-prob is reported for a sampled token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogprobsMode {
    /// `log_softmax` of the raw model logits, before temperature and filtering (vLLM's default,
    /// `raw_logprobs`).
    #[default]
    Raw,
    /// Log-prob under the distribution actually sampled from: temperature-scaled, filtered by
    /// min-p/top-k/top-p, renormalised (vLLM's `processed_logprobs`). Greedy reports raw.
    Processed,
}

/// Per-request sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f64,
    /// 1.0 disables.
    pub top_p: f64,
    /// 0 disables.
    pub top_k: usize,
    /// 0.0 disables.
    pub min_p: f64,
    pub max_tokens: usize,
    /// `None` draws a seed from the OS.
    pub seed: Option<u64>,
    /// Generation stops after emitting one of these (the id is kept in the output).
    pub stop_token_ids: Vec<u32>,
    /// Generation stops once the detokenized response contains one of these.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_tokens: 16,
            seed: None,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_EPS
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            anyhow::bail!("temperature must be >= 0, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            anyhow::bail!("min_p must be in [0, 1], got {}", self.min_p);
        }
        Ok(())
    }
}

/// `exp((x - max) * scale)` for every entry (the vectorized exp: the vocabulary is 49k wide
/// and this runs once per sampled token).
fn shifted_exp(x: &[f32], max: f32, scale: f32) -> Vec<f32> {
    let mut w: Vec<f32> = x.iter().map(|&v| (v - max) * scale).collect();
    crate::kernels::exp::exp_inplace(&mut w);
    w
}

/// `log(sum(exp(x)))`, summed in f64.
fn logsumexp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = shifted_exp(x, max, 1.0).iter().map(|&e| e as f64).sum();
    let max = max as f64;
    max + s.ln()
}

/// First index of the largest value (torch's `argmax` tie rule).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Samples one token from `logits`; returns it and its log-prob under `mode`.
pub fn sample(
    logits: &[f32],
    p: &SamplingParams,
    mode: LogprobsMode,
    rng: &mut impl Rng,
) -> (u32, f32) {
    let raw_lp = |i: usize, lse: f64| (logits[i] as f64 - lse) as f32;
    if p.is_greedy() {
        let i = argmax(logits);
        return (i as u32, raw_lp(i, logsumexp(logits)));
    }
    let inv_t = 1.0 / p.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Unnormalised probabilities of the temperature-scaled logits (sums are taken in f64).
    let w32 = shifted_exp(logits, max, inv_t as f32);
    let w = |i: usize| f64::from(w32[i]);
    let all_weights = || w32.iter().map(|&e| f64::from(e));
    let filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
    let u: f64 = rng.gen();
    let (token, weight, total) = if !filtered {
        let total: f64 = all_weights().sum();
        let i = draw(all_weights().enumerate(), u * total);
        (i, w(i), total)
    } else {
        let mut kept: Vec<usize> = (0..w32.len()).collect();
        // min-p: relative to the most likely token, whose weight is exp(0) = 1.
        if p.min_p > 0.0 {
            kept.retain(|&i| w(i) >= p.min_p);
        }
        kept.sort_by(|&a, &b| w(b).total_cmp(&w(a)).then(a.cmp(&b)));
        if p.top_k > 0 && kept.len() > p.top_k {
            kept.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let total: f64 = kept.iter().map(|&i| w(i)).sum();
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut cum = 0.0;
            let mut n = 0;
            for &i in &kept {
                cum += w(i);
                n += 1;
                if cum >= p.top_p * total {
                    break;
                }
            }
            kept.truncate(n.max(1));
        }
        let total: f64 = kept.iter().map(|&i| w(i)).sum();
        let i = draw(kept.iter().map(|&i| (i, w(i))), u * total);
        (i, w(i), total)
    };
    let lp = match mode {
        // At temperature 1 the weights are already `exp(logits - max)`: their sum gives the
        // log-normaliser without another two passes over the vocabulary (same values, same
        // order, so bit-identical to `logsumexp`).
        LogprobsMode::Raw if inv_t == 1.0 => {
            let all = if filtered { all_weights().sum() } else { total };
            raw_lp(token, max as f64 + all.ln())
        }
        LogprobsMode::Raw => raw_lp(token, logsumexp(logits)),
        LogprobsMode::Processed => (weight / total).ln() as f32,
    };
    (token as u32, lp)
}

/// Inverse CDF: the first item whose cumulative weight exceeds `target`.
fn draw(items: impl Iterator<Item = (usize, f64)>, target: f64) -> usize {
    let mut cum = 0.0;
    let mut last = 0;
    for (i, w) in items {
        if w <= 0.0 {
            continue;
        }
        cum += w;
        last = i;
        if cum > target {
            return i;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn params(t: f64) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    fn freq(logits: &[f32], p: &SamplingParams, n: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut c = vec![0.0; logits.len()];
        for _ in 0..n {
            c[sample(logits, p, LogprobsMode::Raw, &mut rng).0 as usize] += 1.0 / n as f64;
        }
        c
    }

    #[test]
    fn greedy_takes_the_first_argmax_and_reports_the_raw_logprob() {
        let logits = [0.5f32, 2.0, 2.0, -1.0];
        let mut rng = StdRng::seed_from_u64(0);
        let (t, lp) = sample(&logits, &params(0.0), LogprobsMode::Processed, &mut rng);
        assert_eq!(t, 1);
        let lse = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lp as f64 - (2.0 - lse)).abs() < 1e-6);
    }

    #[test]
    fn sampling_follows_the_tempered_distribution() {
        let logits = [0.0f32, 1.0, 2.0];
        let t = 2.0;
        let f = freq(&logits, &params(t), 20000);
        let z: Vec<f64> = logits.iter().map(|&v| (v as f64 / t).exp()).collect();
        let s: f64 = z.iter().sum();
        for i in 0..3 {
            assert!((f[i] - z[i] / s).abs() < 0.015, "{f:?}");
        }
    }

    #[test]
    fn filters_remove_the_right_tokens() {
        // probs at T=1: ~[0.6439, 0.2369, 0.0871, 0.0321]
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut p = params(1.0);
        p.top_k = 2;
        let f = freq(&logits, &p, 4000);
        assert!(f[2] == 0.0 && f[3] == 0.0 && f[1] > 0.2);
        let mut p = params(1.0);
        p.top_p = 0.8; // 0.644 < 0.8 <= 0.881: two tokens
        let f = freq(&logits, &p, 4000);
        assert!(f[2] == 0.0 && f[3] == 0.0 && f[1] > 0.2);
        let mut p = params(1.0);
        p.min_p = 0.1; // keeps p >= 0.0644: three tokens
        let f = freq(&logits, &p, 4000);
        assert!(f[3] == 0.0 && f[2] > 0.05);
    }

    #[test]
    fn processed_logprob_is_under_the_filtered_distribution() {
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut p = params(0.5);
        p.top_k = 2;
        let mut rng = StdRng::seed_from_u64(3);
        let (t, lp) = sample(&logits, &p, LogprobsMode::Processed, &mut rng);
        let w: Vec<f64> = [6.0f64, 4.0].iter().map(|v| v.exp()).collect();
        let want = (w[t as usize] / (w[0] + w[1])).ln();
        assert!((lp as f64 - want).abs() < 1e-6);
        let (t, lp) = sample(&logits, &p, LogprobsMode::Raw, &mut rng);
        let lse = logits.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lp as f64 - (logits[t as usize] as f64 - lse)).abs() < 1e-6);
    }

    #[test]
    fn raw_logprob_at_temperature_one_is_exactly_log_softmax() {
        // Temperature 1 reuses the sampling weights' sum as the normaliser: it must give the
        // same bits as the separate `logsumexp`, filtered or not.
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 37 % 101) as f32).sin() * 7.0)
            .collect();
        let lse = logsumexp(&logits);
        let mut rng = StdRng::seed_from_u64(11);
        for top_p in [1.0, 0.9] {
            let mut p = params(1.0);
            p.top_p = top_p;
            for _ in 0..20 {
                let (t, lp) = sample(&logits, &p, LogprobsMode::Raw, &mut rng);
                assert_eq!(
                    lp,
                    (logits[t as usize] as f64 - lse) as f32,
                    "top_p {top_p}"
                );
            }
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let mut p = params(1.0);
        p.top_p = 0.0;
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        assert!(params(-1.0).validate().is_err());
    }
}
