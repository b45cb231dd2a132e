use rlvr::serve::{ServeOptions, Server};
use rlvr_model::engine::LogprobsMode;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model name clients send (default: --model as given, as vLLM does).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Longest prompt + completion (default: the model's max_position_embeddings).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Which log-prob each sampled token reports: `processed_logprobs` (temperature and
    /// filtering applied: comparable with the trainer's) or `raw_logprobs` (vLLM's default).
    #[arg(long, default_value = "processed_logprobs")]
    pub logprobs_mode: String,
    /// Storage of the weights while decoding: float32 (the same numbers as the trainer's f32
    /// model) or bfloat16 (half the memory traffic per token; needs AVX-512).
    #[arg(long, default_value = "float32")]
    pub dtype: String,
    /// cpu, cuda, cuda:N, or auto (the first GPU in a CUDA build, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Concurrent HTTP connections served.
    #[arg(long, default_value_t = 256)]
    pub http_threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::generate::single_elementwise_pool();
    let logprobs_mode = match args.logprobs_mode.as_str() {
        "processed_logprobs" => LogprobsMode::Processed,
        "raw_logprobs" => LogprobsMode::Raw,
        other => {
            anyhow::bail!("--logprobs-mode {other}: expected processed_logprobs or raw_logprobs")
        }
    };
    let device = rlvr_model::parse_device(&args.device)?;
    let server = Server::start(&ServeOptions {
        model: args.model.clone(),
        bind: format!("{}:{}", args.host, args.port),
        served_model_name: args.served_model_name,
        max_num_seqs: args.max_num_seqs,
        max_model_len: args.max_model_len,
        logprobs_mode,
        weights: rlvr::run::decode_dtype(&args.dtype, &device)?,
        device,
        http_threads: args.http_threads,
    })?;
    // Tests and scripts wait for this line (the port is real even when --port 0 was asked).
    eprintln!(
        "rlvr serve: serving `{}` on http://{}",
        server.model_name(),
        server.local_addr()?
    );
    server.run();
    Ok(ExitCode::SUCCESS)
}
