//! Helpers shared by the `rlvr` crate's integration tests.
#![allow(dead_code)]

/// Where the real models are (`$RLVR_ASSETS`, else `<workspace root>/assets`) and what a test does
/// when one is missing: the very file `rlvr-model`'s tests use, so both crates follow one rule.
#[path = "../../../rlvr-model/tests/common/assets.rs"]
pub mod assets;

/// The largest `|a - b|` over all elements (runs compared weight by weight).
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}
