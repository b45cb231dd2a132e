//! The byte-mutation fuzzing harness shared by the loader fuzz tests of both crates: seeded
//! mutations of valid inputs, and a tally that fails on any panic. `RLVR_FUZZ_CASES` sets the
//! inputs per format (default 10,000).
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A seeded generator (an LCG: varied, reproducible bytes; a failing case replays by its index).
pub struct Mutator(pub u64);

impl Mutator {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u32() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() as f32 / (1u64 << 31) as f32) - 1.0
    }
}

pub fn cases() -> usize {
    std::env::var("RLVR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Values that break size arithmetic when they land in a length, count, offset or dimension.
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    u64::MAX - 7,
];

/// One mutation of `base`; `hot` bytes at the start (a header) get most of the attention.
pub fn mutate(rng: &mut Mutator, base: &[u8], hot: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    let pick = |rng: &mut Mutator, len: usize| -> usize {
        let hot = hot.min(len).max(1);
        if rng.next_u32().is_multiple_of(4) {
            rng.next_u32() as usize % len.max(1)
        } else {
            rng.next_u32() as usize % hot
        }
    };
    for _ in 0..1 + rng.next_u32() % 3 {
        if b.is_empty() {
            b.push(rng.byte());
            continue;
        }
        match rng.next_u32() % 6 {
            // Flip bits.
            0 => {
                let at = pick(rng, b.len());
                b[at] ^= 1 << (rng.next_u32() % 8);
            }
            // A random byte.
            1 => {
                let at = pick(rng, b.len());
                b[at] = rng.byte();
            }
            // An interesting integer, 4 or 8 bytes, little-endian.
            2 => {
                let v = INTERESTING[rng.next_u32() as usize % INTERESTING.len()];
                let width = if rng.next_u32().is_multiple_of(2) {
                    4
                } else {
                    8
                };
                let at = pick(rng, b.len());
                for (i, byte) in v.to_le_bytes()[..width].iter().enumerate() {
                    if let Some(x) = b.get_mut(at + i) {
                        *x = *byte;
                    }
                }
            }
            // Cut short.
            3 => {
                let at = pick(rng, b.len());
                b.truncate(at);
            }
            // Bytes inserted.
            4 => {
                let at = pick(rng, b.len());
                let n = 1 + rng.next_u32() as usize % 16;
                let extra = rng.bytes(n);
                b.splice(at..at, extra);
            }
            // A span removed.
            _ => {
                let at = pick(rng, b.len());
                let end = (at + 1 + rng.next_u32() as usize % 16).min(b.len());
                b.drain(at..end);
            }
        }
    }
    b
}

#[derive(Default, Debug)]
pub struct Tally {
    loaded: usize,
    errors: usize,
    panics: Vec<String>,
}

impl Tally {
    pub fn run<T>(&mut self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(_)) => self.loaded += 1,
            Ok(Err(_)) => self.errors += 1,
            Err(p) => {
                let why = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.panics.push(format!("{what}: {why}"));
            }
        }
    }

    pub fn check(&self, format: &str) {
        // Back to the default hook, so that the assertion below is reported.
        let _ = std::panic::take_hook();
        eprintln!(
            "{format}: {} inputs, {} loaded, {} clean errors, {} panics",
            self.loaded + self.errors + self.panics.len(),
            self.loaded,
            self.errors,
            self.panics.len()
        );
        assert!(
            self.panics.is_empty(),
            "{format}: {} panics, first: {:?}",
            self.panics.len(),
            &self.panics[..self.panics.len().min(5)]
        );
    }
}

pub fn quiet_panics() {
    // The panics are counted and reported by the test; their default messages are noise.
    std::panic::set_hook(Box::new(|_| {}));
}
