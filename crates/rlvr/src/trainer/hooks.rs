//! Extension points of the trainer loop.

use crate::generator::GeneratorOutput;
use anyhow::Result;

/// What a custom trainer may override (SkyRL users subclass `RayPPOTrainer` for this).
pub trait TrainerHooks {
    /// Called after dynamic sampling, before reward metrics and advantages: may reshape rewards
    /// (e.g. DAPO's soft overlong punishment). The default applies the built-in punishment when
    /// `trainer.algorithm.overlong_buffer` is configured, which `ctx` carries.
    fn postprocess_generator_output(
        &mut self,
        output: GeneratorOutput,
        _uids: &[String],
        ctx: &HookContext,
    ) -> Result<GeneratorOutput> {
        default_postprocess(output, ctx)
    }
}

/// Settings the default hook needs.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub max_generate_length: usize,
    /// `(len, penalty_factor)` from `trainer.algorithm.overlong_buffer`.
    pub overlong_buffer: Option<(usize, f64)>,
}

/// The built-in behaviour: soft overlong punishment when configured.
pub fn default_postprocess(
    mut output: GeneratorOutput,
    ctx: &HookContext,
) -> Result<GeneratorOutput> {
    if let Some((len, factor)) = ctx.overlong_buffer {
        let lengths: Vec<usize> = output.response_ids.iter().map(Vec::len).collect();
        let buffer = rlvr_algo::overlong::OverlongBuffer {
            max_generate_length: ctx.max_generate_length,
            len,
            penalty_factor: factor,
        };
        output.rewards =
            rlvr_algo::overlong::soft_overlong_punishment(&output.rewards, &lengths, &buffer)?;
    }
    Ok(output)
}

/// No overrides: the stock trainer.
pub struct DefaultHooks;

impl TrainerHooks for DefaultHooks {}
