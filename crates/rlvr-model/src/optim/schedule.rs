//! Learning-rate schedules of `transformers.get_scheduler`, as multipliers of the base LR at a
//! given optimizer step (the value used for that step, as `LambdaLR` does).

use std::f64::consts::PI;

/// `optimizer_config.scheduler`: transformers' schedule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// The base LR from the first step; `num_warmup_steps` is not read (transformers' `constant`).
    Constant,
    /// Linear warmup from 0, then constant.
    ConstantWithWarmup,
    /// Linear warmup from 0, then a straight line down to 0 at `total_steps`.
    Linear,
    /// Linear warmup from 0, then half a cosine down to 0 at `total_steps`.
    Cosine,
}

impl std::str::FromStr for ScheduleKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "constant" => Ok(Self::Constant),
            "constant_with_warmup" => Ok(Self::ConstantWithWarmup),
            "linear" => Ok(Self::Linear),
            "cosine" | "cosine_with_warmup" => Ok(Self::Cosine),
            _ => anyhow::bail!(
                "unknown lr scheduler `{s}` (expected constant, constant_with_warmup, linear or cosine)"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// Multiplier of the base LR at `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        let (s, w) = (step as f64, self.warmup_steps as f64);
        if self.kind == ScheduleKind::Constant {
            return 1.0;
        }
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::ConstantWithWarmup => 1.0,
            ScheduleKind::Linear => {
                let span = (self.total_steps.saturating_sub(self.warmup_steps) as f64).max(1.0);
                ((self.total_steps as f64 - s) / span).max(0.0)
            }
            ScheduleKind::Cosine => {
                let span = (self.total_steps.saturating_sub(self.warmup_steps) as f64).max(1.0);
                let progress = (s - w) / span;
                // num_cycles = 0.5
                (0.5 * (1.0 + (PI * 2.0 * 0.5 * progress).cos())).max(0.0)
            }
        }
    }

    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_with_warmup_ramps_then_holds() {
        let s = LrSchedule {
            kind: ScheduleKind::ConstantWithWarmup,
            base_lr: 2e-6,
            warmup_steps: 4,
            total_steps: 10,
        };
        let got: Vec<f64> = (0..7).map(|i| s.factor(i)).collect();
        assert_eq!(got, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
        assert_eq!(s.lr(2), 1e-6);
        let none = LrSchedule {
            warmup_steps: 0,
            ..s
        };
        assert_eq!(none.factor(0), 1.0);
        // transformers' `constant` ignores the warmup steps.
        let constant = LrSchedule {
            kind: "constant".parse().unwrap(),
            ..s
        };
        assert_eq!(constant.factor(0), 1.0);
        assert_eq!(constant.lr(1), 2e-6);
    }

    #[test]
    fn linear_decays_to_zero_like_transformers() {
        let s = LrSchedule {
            kind: "linear".parse().unwrap(),
            base_lr: 1.0,
            warmup_steps: 2,
            total_steps: 10,
        };
        // transformers: max(0, (total - step) / (total - warmup)) after the warmup.
        let got: Vec<f64> = [0, 1, 2, 6, 10, 12].iter().map(|&i| s.factor(i)).collect();
        assert_eq!(got, vec![0.0, 0.5, 1.0, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn cosine_matches_transformers_values() {
        let s = LrSchedule {
            kind: ScheduleKind::Cosine,
            base_lr: 1.0,
            warmup_steps: 2,
            total_steps: 10,
        };
        // transformers: step 2 -> 1.0, step 6 -> 0.5, step 4 -> 0.5 (1 + cos(pi/4)), step 10 -> 0.
        assert_eq!(s.factor(1), 0.5);
        assert!((s.factor(2) - 1.0).abs() < 1e-15);
        assert!((s.factor(4) - 0.5 * (1.0 + (PI / 4.0).cos())).abs() < 1e-15);
        assert!((s.factor(6) - 0.5).abs() < 1e-15);
        assert!(s.factor(10).abs() < 1e-15);
        assert!(s.factor(12) >= 0.0);
        assert!("cosine".parse::<ScheduleKind>().is_ok());
        assert!("polynomial"
            .parse::<ScheduleKind>()
            .unwrap_err()
            .to_string()
            .contains("polynomial"));
    }
}
