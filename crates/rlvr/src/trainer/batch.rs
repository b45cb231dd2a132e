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
    let r = response_columns(out, rows);
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

/// Rows laid out for one prompt pass per group ([`rlvr_model::SharedPrompts`]): each run of
/// consecutive rows with the same prompt keeps that prompt once.
#[derive(Debug, Clone)]
pub struct SharedLayout {
    /// `[G, P]` u32, left-padded.
    pub prompt_ids: Tensor,
    pub prompt_mask: Tensor,
    /// `[B, R]` u32, right-padded (R as in [`build`]).
    pub response_ids: Tensor,
    pub response_mask: Tensor,
    /// Each row's prompt.
    pub group: Vec<u32>,
}

impl SharedLayout {
    pub fn view(&self) -> rlvr_model::SharedPrompts<'_> {
        rlvr_model::SharedPrompts {
            prompt_ids: &self.prompt_ids,
            prompt_mask: &self.prompt_mask,
            response_ids: &self.response_ids,
            response_mask: &self.response_mask,
            group: &self.group,
        }
    }
}

/// The shared layout of `rows`, or `None` where it saves nothing (no two consecutive rows share
/// their prompt) or a prompt is empty.
pub fn shared_layout(
    out: &GeneratorOutput,
    rows: &[usize],
    pad_id: u32,
    device: &Device,
) -> Result<Option<SharedLayout>> {
    let mut prompts: Vec<&[u32]> = Vec::new();
    let mut group = Vec::with_capacity(rows.len());
    for &i in rows {
        let prompt = out.prompt_token_ids[i].as_slice();
        if prompt.is_empty() {
            return Ok(None);
        }
        if prompts.last() != Some(&prompt) {
            prompts.push(prompt);
        }
        group.push((prompts.len() - 1) as u32);
    }
    if prompts.len() == rows.len() {
        return Ok(None);
    }
    let (g, b) = (prompts.len(), rows.len());
    let p = prompts.iter().map(|x| x.len()).max().unwrap_or(0);
    let r = response_columns(out, rows);
    let mut ids = vec![pad_id; g * p];
    let mut mask = vec![0u32; g * p];
    for (k, prompt) in prompts.iter().enumerate() {
        let off = k * p + p - prompt.len();
        ids[off..off + prompt.len()].copy_from_slice(prompt);
        mask[off..off + prompt.len()].fill(1);
    }
    let mut rids = vec![pad_id; b * r];
    let mut rmask = vec![0u32; b * r];
    for (row, &i) in rows.iter().enumerate() {
        let resp = &out.response_ids[i];
        rids[row * r..row * r + resp.len()].copy_from_slice(resp);
        rmask[row * r..row * r + resp.len()].fill(1);
    }
    Ok(Some(SharedLayout {
        prompt_ids: Tensor::from_vec(ids, (g, p), device)?,
        prompt_mask: Tensor::from_vec(mask, (g, p), device)?,
        response_ids: Tensor::from_vec(rids, (b, r), device)?,
        response_mask: Tensor::from_vec(rmask, (b, r), device)?,
        group,
    }))
}

/// The longest response among `rows`, and at least one column, so a batch of empty responses
/// still has a shape.
fn response_columns(out: &GeneratorOutput, rows: &[usize]) -> usize {
    let longest = rows.iter().map(|&i| out.response_ids[i].len()).max();
    longest.unwrap_or(0).max(1)
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
        // No two rows share a prompt: nothing to share.
        assert!(shared_layout(&out, &[0, 1], 0, &Device::Cpu)
            .unwrap()
            .is_none());
        // Selecting rows reorders them.
        let b = build(&out, &[1], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![7, 9, 10, 11]]
        );
    }

    #[test]
    fn runs_of_one_prompt_keep_it_once() {
        let out = GeneratorOutput {
            prompt_token_ids: vec![vec![5, 6], vec![5, 6], vec![7], vec![5, 6]],
            response_ids: vec![vec![8], vec![9, 10], vec![], vec![11]],
            ..Default::default()
        };
        let s = shared_layout(&out, &[0, 1, 2, 3], 0, &Device::Cpu)
            .unwrap()
            .unwrap();
        // The fourth row's prompt equals the first's but is not next to it: a new group.
        assert_eq!(s.group, vec![0, 0, 1, 2]);
        assert_eq!(
            s.prompt_ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6], vec![0, 7], vec![5, 6]]
        );
        assert_eq!(
            s.prompt_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 1], vec![0, 1], vec![1, 1]]
        );
        assert_eq!(
            s.response_ids.to_vec2::<u32>().unwrap(),
            vec![vec![8, 0], vec![9, 10], vec![0, 0], vec![11, 0]]
        );
        assert_eq!(
            s.response_mask.to_vec2::<u32>().unwrap(),
            vec![vec![1, 0], vec![1, 1], vec![0, 0], vec![1, 0]]
        );
    }
}
