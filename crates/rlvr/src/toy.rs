//! A toy task with a verifiable reward, small enough to learn in minutes on a CPU: the prompt is
//! one token `qK`, and the reward is 1 when the response's first word is `aK`. A freshly
//! initialised model answers at random (reward ≈ 1/18); a working RL loop teaches it the mapping.
//! `rlvr toy DIR` writes the tiny model (HF format) and the dataset; the learning test and
//! `examples/toy/run_toy.sh` use them.

use crate::data::{write_rows, Message, PromptRow, RewardSpec};
use crate::env::Environment;
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rlvr_model::{ModelConfig, SpecialTokens, Tokenizer};
use std::collections::HashMap;
use std::path::Path;

/// Number of distinct prompts (and answers).
pub const NUM_KEYS: usize = 8;
pub const ENV_CLASS: &str = "toy";

/// Reward 1.0 when the first word of the response is the ground truth.
pub struct ToyEnv;

impl Environment for ToyEnv {
    fn reward(&self, response: &str, row: &PromptRow) -> Result<f64> {
        let first = response.split_whitespace().next().unwrap_or("");
        Ok(if first == row.reward_spec.ground_truth {
            1.0
        } else {
            0.0
        })
    }
}

/// `<pad> <eos> q0..q7 a0..a7` as whole words.
pub fn tokenizer() -> Result<Tokenizer> {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    use tokenizers::AddedToken;
    let mut words = vec!["<pad>".to_string(), "<eos>".to_string()];
    words.extend((0..NUM_KEYS).map(|k| format!("q{k}")));
    words.extend((0..NUM_KEYS).map(|k| format!("a{k}")));
    let vocab: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<pad>".into())
        .build()
        .map_err(|e| anyhow::anyhow!("toy tokenizer: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_pre_tokenizer(Some(WhitespaceSplit));
    inner
        .add_special_tokens(vec![
            AddedToken::from("<pad>", true),
            AddedToken::from("<eos>", true),
        ])
        .map_err(|e| anyhow::anyhow!("toy tokenizer: {e}"))?;
    let special = SpecialTokens {
        bos_token: None,
        eos_token: Some("<eos>".into()),
        pad_token: Some("<pad>".into()),
        unk_token: Some("<pad>".into()),
    };
    Tokenizer::from_parts(
        inner,
        special,
        Some("{% for m in messages %}{{ m.content }}{% endfor %}"),
        false,
    )
}

/// A 2-layer Llama-style decoder over the toy vocabulary.
pub fn model_config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama",
        "vocab_size": 2 + 2 * NUM_KEYS,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": true,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }))
    .expect("a valid toy config")
}

/// HF-style initialisation: linear weights and embeddings ~ N(0, 0.02²), norms 1.
pub fn random_tensors(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    let dev = Device::Cpu;
    let mut normal = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        // Box-Muller; the toy needs no better generator.
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let (u1, u2): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
                0.02 * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        Ok(Tensor::from_vec(data, shape, &dev)?)
    };
    let (h, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.num_kv_heads() * cfg.head_dim(),
    );
    out.insert("model.embed_tokens.weight".into(), normal(&[v, h])?);
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for (name, shape) in [
            ("self_attn.q_proj", [q, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, q]),
            ("mlp.gate_proj", [f, h]),
            ("mlp.up_proj", [f, h]),
            ("mlp.down_proj", [h, f]),
        ] {
            out.insert(format!("{p}.{name}.weight"), normal(&shape)?);
        }
        out.insert(
            format!("{p}.input_layernorm.weight"),
            Tensor::ones(h, candle_core::DType::F32, &dev)?,
        );
        out.insert(
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones(h, candle_core::DType::F32, &dev)?,
        );
    }
    out.insert(
        "model.norm.weight".into(),
        Tensor::ones(h, candle_core::DType::F32, &dev)?,
    );
    Ok(out)
}

/// `copies` rows per key, as SkyRL-schema rows.
pub fn rows(copies: usize) -> Vec<PromptRow> {
    (0..copies)
        .flat_map(|_| 0..NUM_KEYS)
        .map(|k| PromptRow {
            data_source: "toy".into(),
            prompt: vec![Message {
                role: "user".into(),
                content: format!("q{k}"),
            }],
            env_class: ENV_CLASS.into(),
            reward_spec: RewardSpec {
                method: "rule".into(),
                ground_truth: format!("a{k}"),
            },
            extra_info: serde_json::json!({ "key": k }),
        })
        .collect()
}

/// Writes `DIR/model` (HF format, random weights) and `DIR/data/{train,validation}.parquet`.
/// The overrides that point a run of `examples/toy/dapo_toy.yaml` at the files [`write`] put
/// under `dir`, with its logs, checkpoints and exports there too (JSONL metrics only).
pub fn run_overrides(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("trainer.policy.model.path={d}/model"),
        format!("data.train_data=['{d}/data/train.parquet']"),
        format!("data.val_data=['{d}/data/validation.parquet']"),
        format!("trainer.log_path={d}/logs"),
        format!("trainer.ckpt_path={d}/ckpt"),
        format!("trainer.export_path={d}/export"),
        "trainer.logger=jsonl".into(),
    ]
}

pub fn write(dir: &Path, seed: u64) -> Result<()> {
    let cfg = model_config();
    let tensors = random_tensors(&cfg, seed)?;
    rlvr_model::save_hf(&dir.join("model"), &cfg, &tensors, &tokenizer()?, None)?;
    write_rows(&dir.join("data/train.parquet"), &rows(16))?;
    write_rows(&dir.join("data/validation.parquet"), &rows(1))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_round_trips_and_reward_checks_first_word() {
        let t = tokenizer().unwrap();
        let ids = t.encode("q3 a5 <eos>", false).unwrap();
        assert_eq!(ids, vec![5, 15, 1]);
        assert_eq!(t.decode(&ids, true).unwrap(), "q3 a5");
        let row = &rows(1)[3];
        assert_eq!(ToyEnv.reward("a3 a1", row).unwrap(), 1.0);
        assert_eq!(ToyEnv.reward("a1 a3", row).unwrap(), 0.0);
        assert_eq!(ToyEnv.reward("", row).unwrap(), 0.0);
        assert_eq!(
            t.apply_chat_template_ids(&row.prompt, true).unwrap(),
            vec![5]
        );
    }
}
