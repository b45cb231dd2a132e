use rlvr_model::engine::{Engine, EngineConfig, Request, SamplingParams};
use rlvr_model::{load_pretrained, ChatMessage, Model};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// The user message; the model's chat template is applied.
    #[arg(long)]
    pub chat: String,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// cpu, cuda, cuda:N, or auto (the first GPU in a CUDA build, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

pub use rlvr::generator::stop_token_ids as stop_ids;

/// candle runs element-wise ops on its own spinning thread pool next to rayon's (used by gemm);
/// on 2 cores the two pools fight, and measured training steps and batch-1 decoding were faster
/// with element-wise ops on the calling thread. Must run before the first tensor op; an explicit
/// `CANDLE_NUM_THREADS` wins.
pub fn single_elementwise_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::generate::single_elementwise_pool();
    let device = rlvr_model::parse_device(&args.device)?;
    let pre = load_pretrained(&args.model, &device)?;
    let model = Model::from_tensors(&pre.config, &pre.tensors, &device)?;
    let prompt = pre
        .tokenizer
        .apply_chat_template_ids(&[ChatMessage::user(args.chat.clone())], true)?;
    let request = Request {
        prompt,
        params: SamplingParams {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            seed: Some(args.seed),
            stop_token_ids: stop_ids(&pre),
            ..Default::default()
        },
    };
    let out = Engine::new(
        &model,
        EngineConfig {
            max_batch: 1,
            ..Default::default()
        },
    )
    .generate(&[request])?
    .remove(0);
    println!("{}", pre.tokenizer.decode(&out.token_ids, true)?);
    Ok(ExitCode::SUCCESS)
}
