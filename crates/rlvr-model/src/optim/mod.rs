//! Optimizer glue for the trainer: AdamW (torch semantics), global-norm gradient clipping, and
//! the learning-rate schedules of `transformers`.

pub mod adamw;
pub mod clip;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamState};
pub use clip::{clip_grad_norm, clip_scale, ClipOutcome};
pub use schedule::{LrSchedule, ScheduleKind};
