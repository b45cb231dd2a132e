//! The crate's error type for user-facing failures (bad names, bad shapes, sampling limits).

/// Errors raised by the algorithm core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A configuration value or input that is not valid; the message names it and what was expected.
    #[error("{0}")]
    InvalidValue(String),
    /// Dynamic sampling ran out of generation batches (SkyRL's exact text).
    #[error("Exiting training loop due to hitting dynamic sampling limit for {strategy} strategy with {max_sample_batches} max sample batches. Please check your data difficulty distribution.")]
    DynamicSamplingLimit {
        strategy: String,
        max_sample_batches: i64,
    },
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidValue(msg.into())
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
