//! PyTorch's CPU float32 sum of a contiguous row (`cascade_sum` in ATen's `SumKernel.cpp`), in
//! its order of additions. SkyRL reduces rewards in float32 with `sum` and `mean`; where equal
//! scores are not exactly representable (0.1, 0.7) the rounding of that order decides whether a
//! GRPO group's advantages are exactly 0 or small and nonzero, so it is matched, not just
//! approximated.
//!
//! The order: four accumulators take elements `4r + k` (a row viewed as `[-1, 4]`), with a
//! four-level cascade every 16+ of those rows; leftover elements go to the first accumulator;
//! then the four are added in order. A row of at least one SIMD vector is summed the same way
//! over vectors (lane by lane), the scalar tail is summed on its own, and then each lane is added
//! in order. The lane count is that of AVX-512 (16 floats), PyTorch's path on the CPUs the golden
//! numbers come from; rows shorter than 16 take the scalar path on every CPU.

/// Floats per `Vectorized<float>` on AVX-512.
const LANES: usize = 16;
/// `row_sum`'s interleave (`ilp_factor`).
const ILP: usize = 4;
/// `multi_row_sum`'s cascade depth.
const LEVELS: usize = 4;

/// The float32 sum of `xs`, as `torch.sum` of a contiguous CPU tensor computes it.
pub fn sum_f32(xs: &[f32]) -> f32 {
    if xs.len() < LANES {
        return row_sum(xs.len(), |i| [xs[i]])[0];
    }
    let vectors = xs.len() / LANES;
    let acc: [f32; LANES] = row_sum(vectors, |v| {
        let mut lane = [0f32; LANES];
        lane.copy_from_slice(&xs[v * LANES..(v + 1) * LANES]);
        lane
    });
    let mut total = 0f32;
    for &x in &xs[vectors * LANES..] {
        total += x;
    }
    for a in acc {
        total += a;
    }
    total
}

/// The float32 mean, as `torch.mean` on the CPU computes it: the sum above divided by `n` in
/// float32.
pub fn mean_f32(xs: &[f32]) -> f32 {
    sum_f32(xs) / xs.len() as f32
}

/// `row_sum`: elements `0..n` (each a scalar or a vector of lanes, added lane-wise).
fn row_sum<const W: usize>(n: usize, load: impl Fn(usize) -> [f32; W]) -> [f32; W] {
    let rows = n / ILP;
    let mut partial = multi_row_sum(rows, |r, k| load(r * ILP + k));
    for i in rows * ILP..n {
        add(&mut partial[0], &load(i));
    }
    let mut out = partial[0];
    for p in &partial[1..] {
        add(&mut out, p);
    }
    out
}

/// `multi_row_sum` with `ILP` columns over `rows` rows: a cascade of `LEVELS` accumulators, the
/// lowest flushed upward every `level_step` rows.
fn multi_row_sum<const W: usize>(
    rows: usize,
    load: impl Fn(usize, usize) -> [f32; W],
) -> [[f32; W]; ILP] {
    let ceil_log2 = if rows <= 1 {
        0
    } else {
        usize::BITS - (rows - 1).leading_zeros()
    } as usize;
    let level_power = (ceil_log2 / LEVELS).max(4);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[[0f32; W]; ILP]; LEVELS];
    let mut i = 0;
    while i + level_step <= rows {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                add(a, &load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (below, here) = acc.split_at_mut(j);
            for (hi, lo) in here[0].iter_mut().zip(below[j - 1].iter_mut()) {
                add(hi, lo);
                *lo = [0f32; W];
            }
            if i & (level_mask << (j * level_power)) != 0 {
                break;
            }
        }
    }
    for r in i..rows {
        for (k, a) in acc[0].iter_mut().enumerate() {
            add(a, &load(r, k));
        }
    }
    let mut out = acc[0];
    for level in &acc[1..] {
        for (o, l) in out.iter_mut().zip(level) {
            add(o, l);
        }
    }
    out
}

fn add<const W: usize>(a: &mut [f32; W], b: &[f32; W]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_rows_add_in_four_interleaved_accumulators() {
        // n = 5: ((((x0 + x4) + x1) + x2) + x3).
        let xs = [1e8f32, 1.0, 1.0, 1.0, -1e8];
        assert_eq!(sum_f32(&xs), ((((1e8f32 + -1e8) + 1.0) + 1.0) + 1.0));
        assert_eq!(sum_f32(&xs), 3.0);
        // Left to right would lose the ones: ((1e8 + 1) + 1) + 1 rounds back to 1e8.
        assert_eq!(xs.iter().fold(0f32, |a, &x| a + x), 0.0);
    }

    #[test]
    fn long_rows_sum_lanes_then_tail_then_lanes_in_order() {
        let xs: Vec<f32> = (0..37).map(|i| 0.1 * i as f32 + 0.013).collect();
        // Two vectors: lane l holds xs[l] + xs[16 + l]; the tail xs[32..] is summed first.
        let mut want = 0f32;
        for &x in &xs[32..] {
            want += x;
        }
        for l in 0..16 {
            want += 0f32 + xs[l] + xs[16 + l];
        }
        assert_eq!(sum_f32(&xs), want);
    }

    #[test]
    fn exact_where_every_order_is_exact() {
        let xs: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        assert_eq!(sum_f32(&xs), 500_500.0);
        assert_eq!(sum_f32(&[]), 0.0);
        assert_eq!(mean_f32(&[0.25, 0.75]), 0.5);
    }

    #[test]
    fn equal_non_dyadic_scores_can_have_a_mean_off_by_an_ulp() {
        // What makes SkyRL's float32 GRPO give small nonzero advantages to an all-equal group.
        assert_eq!(mean_f32(&[0.7f32; 3]), 0.7);
        let m = mean_f32(&[0.3f32; 6]);
        assert_ne!(m, 0.3);
        assert!((m - 0.3).abs() <= f32::EPSILON);
    }
}
