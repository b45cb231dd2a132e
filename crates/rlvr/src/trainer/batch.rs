//! Padding generated rows into the trainer's tensors: `[prompt | response]` with prompts
//! left-padded and responses right-padded, as SkyRL's `convert_prompts_responses_to_batch_tensors`.

use crate::generator::GeneratorOutput;
use candle_core::{Device, Result, Tensor};

/// One padded batch of rows. Response-side tensors are `[B, R]` with `R` the longest response.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// `[B, P + R]` u32.
    pub input_ids: Tensor,
    /// `[B, P + R]` u32, 1 on real tokens.
    pub attention_mask: Tensor,
    /// `[B, R]` f32, 1 on real response tokens.
    pub response_mask: Tensor,
    /// `[B, R]` f32, the generator's loss mask (after overlong filtering), 0 on padding.
    pub loss_mask: Tensor,
    /// `[B, R]` f32, the scalar reward on each row's last response token.
    pub token_rewards: Tensor,
    pub response_len: usize,
    pub lengths: Vec<usize>,
}

pub fn build(
    out: &GeneratorOutput,
    rows: &[usize],
    pad_id: u32,
    device: &Device,
) -> Result<TrainBatch> {
    let b = rows.len();
    let p = rows
        .iter()
        .map(|&i| out.prompt_token_ids[i].len())
        .max()
        .unwrap_or(0);
    // At least one response column, so a batch of empty responses still has a shape.
    let r = rows
        .iter()
        .map(|&i| out.response_ids[i].len())
        .max()
        .unwrap_or(0)
        .max(1);
    let s = p + r;
    let mut ids = vec![pad_id; b * s];
    let mut attn = vec![0u32; b * s];
    let mut resp_mask = vec![0f32; b * r];
    let mut loss_mask = vec![0f32; b * r];
    let mut rewards = vec![0f32; b * r];
    let mut lengths = Vec::with_capacity(b);
    for (row, &i) in rows.iter().enumerate() {
        let prompt = &out.prompt_token_ids[i];
        let resp = &out.response_ids[i];
        let off = p - prompt.len();
        for (j, &t) in prompt.iter().enumerate() {
            ids[row * s + off + j] = t;
            attn[row * s + off + j] = 1;
        }
        for (j, &t) in resp.iter().enumerate() {
            ids[row * s + p + j] = t;
            attn[row * s + p + j] = 1;
            resp_mask[row * r + j] = 1.0;
            loss_mask[row * r + j] = out.loss_masks[i].get(j).copied().unwrap_or(0.0);
        }
        if !resp.is_empty() {
            rewards[row * r + resp.len() - 1] = out.rewards[i] as f32;
        }
        lengths.push(resp.len());
    }
    Ok(TrainBatch {
        input_ids: Tensor::from_vec(ids, (b, s), device)?,
        attention_mask: Tensor::from_vec(attn, (b, s), device)?,
        response_mask: Tensor::from_vec(resp_mask, (b, r), device)?,
        loss_mask: Tensor::from_vec(loss_mask, (b, r), device)?,
        token_rewards: Tensor::from_vec(rewards, (b, r), device)?,
        response_len: r,
        lengths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_left_padded_responses_right_padded_reward_on_last_token() {
        let out = GeneratorOutput {
            prompt_token_ids: vec![vec![5, 6], vec![7]],
            response_ids: vec![vec![8], vec![9, 10, 11]],
            loss_masks: vec![vec![1.0], vec![1.0, 0.0, 1.0]],
            rewards: vec![1.0, 0.5],
            ..Default::default()
        };
        let b = build(&out, &[0, 1], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 8, 0, 0], vec![0, 7, 9, 10, 11]]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1, 1, 0, 0], vec![0, 1, 1, 1, 1]]
        );
        assert_eq!(
            b.response_mask.to_vec2::<f32>().unwrap(),
            vec![vec![1., 0., 0.], vec![1., 1., 1.]]
        );
        assert_eq!(
            b.loss_mask.to_vec2::<f32>().unwrap(),
            vec![vec![1., 0., 0.], vec![1., 0., 1.]]
        );
        assert_eq!(
            b.token_rewards.to_vec2::<f32>().unwrap(),
            vec![vec![1., 0., 0.], vec![0., 0., 0.5]]
        );
        // Selecting rows reorders them.
        let b = build(&out, &[1], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![7, 9, 10, 11]]
        );
    }
}
