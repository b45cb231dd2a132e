//! The HTTP APIs of the inference servers rlvr talks to (vLLM, SGLang) and serves (`rlvr serve`
//! answers both). Only wire types live here; the client is in `generator::remote`, the server in
//! `serve`.

pub mod sglang;
pub mod vllm;

/// Which server API a remote engine speaks (`generator.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Vllm,
    Sglang,
}

impl std::str::FromStr for Backend {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "vllm" => Ok(Backend::Vllm),
            "sglang" => Ok(Backend::Sglang),
            other => anyhow::bail!("generator.backend={other}: expected vllm or sglang"),
        }
    }
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vllm => "vllm",
            Backend::Sglang => "sglang",
        }
    }
}
