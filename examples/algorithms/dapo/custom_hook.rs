//! DAPO's soft overlong punishment written as a custom trainer hook, the way SkyRL's
//! `examples/algorithms/dapo/main_dapo.py` does it with a `RayPPOTrainer` subclass overriding
//! `postprocess_generator_output`. (rlvr also has it built in: setting
//! `+trainer.algorithm.overlong_buffer.*` is enough. This shows the extension point.)
//!
//! ```bash
//! cargo run --release --example dapo_custom_hook -- --config my.yaml \
//!     +trainer.algorithm.overlong_buffer.len=512 +trainer.algorithm.overlong_buffer.penalty_factor=1.0
//! ```

use anyhow::Result;
use rlvr::config::ConfigBuilder;
use rlvr::generator::GeneratorOutput;
use rlvr::run::{self, Extensions};
use rlvr::trainer::{HookContext, TrainerHooks};

/// Overrides the default post-processing, so the built-in punishment does not also run.
struct DapoHooks;

impl TrainerHooks for DapoHooks {
    fn postprocess_generator_output(
        &mut self,
        mut output: GeneratorOutput,
        _uids: &[String],
        ctx: &HookContext,
    ) -> Result<GeneratorOutput> {
        let Some((buffer_len, penalty_factor)) = ctx.overlong_buffer else {
            return Ok(output);
        };
        let expected_len = ctx.max_generate_length as f64 - buffer_len as f64;
        for (reward, response) in output.rewards.iter_mut().zip(&output.response_ids) {
            let exceed_len = response.len() as f64 - expected_len;
            *reward += (-exceed_len / buffer_len as f64 * penalty_factor).min(0.0);
        }
        Ok(output)
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut builder = ConfigBuilder::new();
    let mut args = std::env::args().skip(1);
    let mut overrides = Vec::new();
    while let Some(a) = args.next() {
        if a == "--config" {
            builder.merge_file(std::path::Path::new(&args.next().expect("--config FILE")))?;
        } else {
            overrides.push(a);
        }
    }
    builder.apply_overrides(&overrides)?;
    let resolved = builder.resolve()?;
    for w in resolved.validate()? {
        tracing::warn!("{w}");
    }
    let mut ext = Extensions::defaults(&resolved.config)?;
    ext.hooks = Box::new(DapoHooks);
    let mut trainer = run::build(&resolved, ext)?;
    let last = trainer.fit()?;
    if let Some((detail, r)) = trainer.final_mean_reward(&last) {
        println!("{detail}");
        println!("final mean reward: {r:.4}");
    }
    Ok(())
}
