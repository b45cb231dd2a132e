//! The policy optimizer as SkyRL's strategy runs it: clip the global gradient norm, skip the step
//! when that norm is not finite, otherwise AdamW at the scheduled learning rate and advance the
//! schedule. Its state (moments, step counts, schedule position) goes into checkpoints.

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rlvr_model::optim::{clip_scale, AdamW, AdamWConfig, LrSchedule, ParamState, ScheduleKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `trainer.policy.optimizer_config` plus the run length the schedule needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerSettings {
    pub lr: f64,
    pub betas: (f64, f64),
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub scheduler: ScheduleKind,
    pub num_warmup_steps: usize,
    /// Optimizer steps in the whole run (for cosine).
    pub num_training_steps: usize,
}

impl OptimizerSettings {
    /// `trainer.{policy,critic}.optimizer_config` for a run of `num_training_steps` optimizer steps.
    pub fn new(c: &crate::config::OptimizerConfig, num_training_steps: usize) -> Self {
        Self {
            lr: c.lr,
            betas: (c.adam_betas[0], c.adam_betas[1]),
            weight_decay: c.weight_decay,
            max_grad_norm: c.max_grad_norm,
            scheduler: c.scheduler,
            num_warmup_steps: c.num_warmup_steps,
            num_training_steps,
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// True when the norm was not finite and nothing was updated.
    pub skipped: bool,
}

/// Non-tensor state saved next to the moments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    steps_taken: u64,
    param_steps: HashMap<String, u64>,
}

pub struct Optimizer {
    adamw: AdamW,
    vars: Vec<Var>,
    schedule: LrSchedule,
    max_grad_norm: f64,
    /// Optimizer steps taken so far (the schedule's position).
    steps_taken: u64,
    /// Steps skipped in a row (non-finite gradient norm) since the last one taken.
    skipped_in_a_row: usize,
}

impl Optimizer {
    pub fn new(params: Vec<(String, Var)>, s: OptimizerSettings) -> Result<Self> {
        let kind = s.scheduler;
        let vars = params.iter().map(|(_, v)| v.clone()).collect();
        let adamw = AdamW::new(
            params,
            AdamWConfig {
                lr: s.lr,
                beta1: s.betas.0,
                beta2: s.betas.1,
                eps: 1e-8,
                weight_decay: s.weight_decay,
            },
        )?;
        Ok(Self {
            adamw,
            vars,
            schedule: LrSchedule {
                kind,
                base_lr: s.lr,
                warmup_steps: s.num_warmup_steps as u64,
                total_steps: s.num_training_steps as u64,
            },
            max_grad_norm: s.max_grad_norm,
            steps_taken: 0,
            skipped_in_a_row: 0,
        })
    }

    /// Clips `grads`, then updates the parameters (unless the norm is not finite).
    pub fn step(&mut self, grads: GradStore) -> Result<StepStats> {
        // The clipping factor is applied inside AdamW's pass, not in one of its own.
        let clip = clip_scale(&grads, &self.vars, self.max_grad_norm)?;
        let lr = self.schedule.lr(self.steps_taken);
        if !clip.finite {
            tracing::warn!(
                "gradient norm is {}: skipping this optimizer step",
                clip.norm
            );
            self.skipped_in_a_row += 1;
            return Ok(StepStats {
                grad_norm: clip.norm,
                lr,
                skipped: true,
            });
        }
        self.skipped_in_a_row = 0;
        self.adamw.set_lr(lr);
        self.adamw.step_scaled(&grads, clip.scale)?;
        self.steps_taken += 1;
        Ok(StepStats {
            grad_norm: clip.norm,
            lr,
            skipped: false,
        })
    }

    /// Optimizer steps skipped in a row up to now (0 after a step that updated the weights).
    pub fn skipped_in_a_row(&self) -> usize {
        self.skipped_in_a_row
    }

    /// The learning rate the next step will use.
    pub fn current_lr(&self) -> f64 {
        self.schedule.lr(self.steps_taken)
    }

    /// Moments as named tensors (`{param}.exp_avg`, `{param}.exp_avg_sq`) and the rest as JSON.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, serde_json::Value)> {
        let mut tensors = HashMap::new();
        let mut param_steps = HashMap::new();
        for (name, st) in self.adamw.names().zip(self.adamw.state()) {
            tensors.insert(format!("{name}.exp_avg"), st.exp_avg.clone());
            tensors.insert(format!("{name}.exp_avg_sq"), st.exp_avg_sq.clone());
            param_steps.insert(name.to_string(), st.step);
        }
        let meta = Meta {
            steps_taken: self.steps_taken,
            param_steps,
        };
        Ok((tensors, serde_json::to_value(meta)?))
    }

    /// Restores what [`Optimizer::state`] produced.
    /// Checks a saved state against this optimizer without changing it: every moment present,
    /// of its parameter's shape, and finite.
    pub fn check_state(
        &self,
        tensors: &HashMap<String, Tensor>,
        meta: &serde_json::Value,
    ) -> Result<()> {
        serde_json::from_value::<Meta>(meta.clone())
            .context("optimizer state in trainer_state.json")?;
        for (name, current) in self.adamw.names().zip(self.adamw.state()) {
            for suffix in ["exp_avg", "exp_avg_sq"] {
                let key = format!("{name}.{suffix}");
                let t = tensors.get(&key).with_context(|| format!("no `{key}`"))?;
                if t.dims() != current.exp_avg.dims() {
                    anyhow::bail!(
                        "`{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        current.exp_avg.dims()
                    );
                }
                if !rlvr_model::all_finite(t)? {
                    anyhow::bail!("`{key}` holds NaN or infinite values");
                }
            }
        }
        Ok(())
    }

    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        meta: &serde_json::Value,
    ) -> Result<()> {
        let meta: Meta = serde_json::from_value(meta.clone())
            .context("optimizer state in trainer_state.json")?;
        let names: Vec<String> = self.adamw.names().map(str::to_string).collect();
        for name in names {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("{name}.{suffix}"))
                    .cloned()
                    .with_context(|| format!("optimizer.safetensors has no `{name}.{suffix}`"))
            };
            let state = ParamState {
                step: meta.param_steps.get(&name).copied().unwrap_or(0),
                exp_avg: get("exp_avg")?,
                exp_avg_sq: get("exp_avg_sq")?,
            };
            self.adamw.set_state(&name, state)?;
        }
        self.steps_taken = meta.steps_taken;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn settings(scheduler: ScheduleKind) -> OptimizerSettings {
        OptimizerSettings {
            lr: 0.1,
            betas: (0.9, 0.999),
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            scheduler,
            num_warmup_steps: 2,
            num_training_steps: 10,
        }
    }

    fn grads_of(v: &Var, scale: f32) -> GradStore {
        let loss = (v.as_tensor() * scale as f64).unwrap().sum_all().unwrap();
        loss.backward().unwrap()
    }

    #[test]
    fn warmup_clipping_and_state_round_trip() {
        let v = Var::from_tensor(&Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::new(
            vec![("w".into(), v.clone())],
            settings(ScheduleKind::ConstantWithWarmup),
        )
        .unwrap();
        // Warmup: step 0 uses lr 0, step 1 uses lr 0.05, then 0.1.
        let s0 = opt.step(grads_of(&v, 3.0)).unwrap();
        assert_eq!(s0.lr, 0.0);
        assert!(
            (s0.grad_norm - 6.0).abs() < 1e-6,
            "pre-clip norm of four 3s"
        );
        assert_eq!(v.to_vec1::<f32>().unwrap(), vec![0.0; 4]);
        let s1 = opt.step(grads_of(&v, 3.0)).unwrap();
        assert!((s1.lr - 0.05).abs() < 1e-12);
        assert!(v.to_vec1::<f32>().unwrap()[0] < 0.0);

        let (tensors, meta) = opt.state().unwrap();
        let w = v.as_tensor().copy().unwrap();
        let v2 = Var::from_tensor(&w).unwrap();
        let mut restored = Optimizer::new(
            vec![("w".into(), v2.clone())],
            settings(ScheduleKind::ConstantWithWarmup),
        )
        .unwrap();
        restored.load_state(&tensors, &meta).unwrap();
        assert_eq!(restored.current_lr(), opt.current_lr());
        opt.step(grads_of(&v, -1.0)).unwrap();
        restored.step(grads_of(&v2, -1.0)).unwrap();
        assert_eq!(v.to_vec1::<f32>().unwrap(), v2.to_vec1::<f32>().unwrap());
    }

    #[test]
    fn non_finite_norm_skips_the_step() {
        let v = Var::from_tensor(&Tensor::ones(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::new(
            vec![("w".into(), v.clone())],
            settings(ScheduleKind::Cosine),
        )
        .unwrap();
        let s = opt.step(grads_of(&v, f32::NAN)).unwrap();
        assert!(s.skipped && s.grad_norm.is_nan());
        assert_eq!(v.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        assert_eq!(
            opt.current_lr(),
            0.0,
            "a skipped step does not advance the schedule"
        );
    }
}
