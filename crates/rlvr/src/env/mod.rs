//! Environments: what scores a response. A registry keyed by `env_class` (the dataset column), so
//! a user's own binary can add environments next to the built-in ones.

mod gsm8k;

pub use gsm8k::Gsm8kEnv;

use crate::data::PromptRow;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A single-turn environment: one response in, one scalar reward out.
pub trait Environment: Send + Sync {
    /// The reward of `response` (detokenised, special tokens skipped) to the prompt in `row`.
    fn reward(&self, response: &str, row: &PromptRow) -> Result<f64>;

    /// Extra per-response scores reported by evaluation as `eval/<data_source>/<name>` (e.g.
    /// GSM8K reports both strict and flexible accuracy whichever one is the reward).
    fn eval_scores(&self, _response: &str, _row: &PromptRow) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

/// Maps `env_class` names to environments.
#[derive(Clone, Default)]
pub struct EnvRegistry {
    envs: BTreeMap<String, Arc<dyn Environment>>,
}

impl EnvRegistry {
    /// The built-in environments, configured from `environment.*`.
    pub fn with_builtins(gsm8k: Gsm8kEnv) -> Self {
        let mut r = Self::default();
        r.register("gsm8k", Arc::new(gsm8k));
        r.register(crate::toy::ENV_CLASS, Arc::new(crate::toy::ToyEnv));
        r
    }

    pub fn register(&mut self, name: &str, env: Arc<dyn Environment>) {
        self.envs.insert(name.to_owned(), env);
    }

    pub fn get(&self, name: &str) -> Result<&Arc<dyn Environment>> {
        self.envs.get(name).ok_or_else(|| {
            anyhow!(
                "no environment registered for env_class {name:?}; registered: {}",
                self.names().join(", ")
            )
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.envs.keys().cloned().collect()
    }

    /// The environment's extra evaluation scores for `response` (empty if it has none).
    pub fn eval_scores(&self, response: &str, row: &PromptRow) -> Vec<(&'static str, f64)> {
        self.get(&row.env_class)
            .map(|e| e.eval_scores(response, row))
            .unwrap_or_default()
    }

    /// Scores `response` with the environment the row names.
    pub fn reward(&self, response: &str, row: &PromptRow) -> Result<f64> {
        self.get(&row.env_class)?.reward(response, row)
    }
}
