use rlvr::serve::{Limits, ServeOptions, Server};
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
    /// Clients must send `Authorization: Bearer <key>` on every route but /health (as vLLM's
    /// --api-key). Needed to bind beyond loopback.
    #[arg(long, env = rlvr::serve::API_KEY_ENV, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve beyond loopback without an API key: anyone who reaches the port can then replace
    /// the weights.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most sequences (prompts x n) one request may ask for.
    #[arg(long, default_value_t = Limits::default().max_seqs_per_request)]
    pub max_seqs_per_request: usize,
    /// Open connections at once; more wait to be accepted.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's head, and then its body.
    #[arg(long, default_value_t = Limits::default().read_timeout.as_secs_f64())]
    pub read_timeout_s: f64,
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
        api_key: args.api_key,
        allow_unauthenticated: args.allow_unauthenticated,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_seqs_per_request: args.max_seqs_per_request,
            max_connections: args.max_connections,
            read_timeout: read_timeout(args.read_timeout_s)?,
        },
    })?;
    // Tests and scripts wait for this line (the port is real even when --port 0 was asked).
    eprintln!(
        "rlvr serve: serving `{}` on http://{}",
        server.model_name(),
        server.local_addr()?
    );
    server.run()?;
    Ok(ExitCode::SUCCESS)
}

fn read_timeout(seconds: f64) -> anyhow::Result<std::time::Duration> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        anyhow::bail!("--read-timeout-s {seconds}: expected a number of seconds in (0, 86400]");
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}
