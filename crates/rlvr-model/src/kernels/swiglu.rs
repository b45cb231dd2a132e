//! SwiGLU, `silu(gate) * up`, and its backward in one pass each (chunks in parallel). Inputs
//! are f32 or bf16 (mixed-precision training's activations), computed in f32; the output is
//! f32 or rounded to bf16, the gradients too (bf16 for bf16 activations, as autocast's are).

#[cfg(target_arch = "x86_64")]
use super::exp::exp16;
use super::{Elem, Lanes};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const CHUNK: usize = 1 << 14;

/// `silu(gate) * up`.
pub fn forward<T: Elem, O: Elem>(lanes: Lanes, gate: &[T], up: &[T]) -> Vec<O> {
    assert_eq!(gate.len(), up.len());
    let mut out = super::zeroed::<O>(gate.len());
    super::team::for_each_chunk_mut(&mut out, CHUNK, |i, y| {
        let span = i * CHUNK..i * CHUNK + y.len();
        let (g, u) = (&gate[span.clone()], &up[span]);
        #[cfg(target_arch = "x86_64")]
        if lanes == Lanes::AVX512 {
            // SAFETY: AVX-512 checked above; the three slices have the same length.
            return unsafe { forward_avx512(g, u, y) };
        }
        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
            let (g, u) = (g.to_f32(), u.to_f32());
            *y = O::from_f32(g * u / (1.0 + (-g).exp()));
        }
    });
    out
}

/// Gradients of `silu(gate) * up` w.r.t. `gate` and `up`, given the output's gradient `dy`:
/// with `s = sigmoid(gate)`, `d_up = dy silu(gate)`, `d_gate = dy up s (1 + gate (1 - s))`,
/// computed in f32 and written side by side, `[d_gate | d_up]`, in `O`.
pub fn backward<T: Elem, O: Elem>(lanes: Lanes, gate: &[T], up: &[T], dy: &[f32]) -> Vec<O> {
    let n = gate.len();
    assert!(up.len() == n && dy.len() == n);
    let mut out: Vec<O> = Vec::with_capacity(2 * n);
    let (dg, du) = out.spare_capacity_mut()[..2 * n].split_at_mut(n);
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|(((dg, du), (g, u)), dy)| {
            #[cfg(target_arch = "x86_64")]
            if lanes == Lanes::AVX512 {
                // SAFETY: AVX-512 checked above; the five slices have the same length, and
                // `dg`, `du` are only written.
                return unsafe {
                    backward_avx512(
                        g,
                        u,
                        dy,
                        dg.as_mut_ptr().cast::<O>(),
                        du.as_mut_ptr().cast::<O>(),
                    )
                };
            }
            for i in 0..g.len() {
                let (gi, ui) = (g[i].to_f32(), u[i].to_f32());
                let s = 1.0 / (1.0 + (-gi).exp());
                du[i].write(O::from_f32(dy[i] * gi * s));
                dg[i].write(O::from_f32(dy[i] * ui * s * (1.0 + gi * (1.0 - s))));
            }
        });
    // SAFETY: both halves were written in full just above.
    unsafe { out.set_len(2 * n) };
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sigmoid16(g: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_div_ps(one, _mm512_add_ps(one, e))
}

/// `y = silu(g) * u`, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL; `u` and `y` are at least as long as `g`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn forward_avx512<T: Elem, O: Elem>(g: &[T], u: &[T], y: &mut [O]) {
    for i in (0..g.len()).step_by(16) {
        let n = g.len() - i;
        // SAFETY: n.min(16) values from i in each slice.
        unsafe {
            let gv = T::load16(g.as_ptr().add(i), n);
            let uv = T::load16(u.as_ptr().add(i), n);
            let s = sigmoid16(gv);
            O::store16(
                y.as_mut_ptr().add(i),
                n,
                _mm512_mul_ps(_mm512_mul_ps(gv, s), uv),
            );
        }
    }
}

/// [`backward`]'s `dg` and `du` for one chunk, 16 lanes at a time.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VL; `u` and `dy` are at least as long as `g`, and `dg`
/// and `du` have room for as many values, which nothing else accesses during the call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn backward_avx512<T: Elem, O: Elem>(g: &[T], u: &[T], dy: &[f32], dg: *mut O, du: *mut O) {
    let one = _mm512_set1_ps(1.0);
    for i in (0..g.len()).step_by(16) {
        let n = g.len() - i;
        // SAFETY: n.min(16) values from i in each slice.
        unsafe {
            let gv = T::load16(g.as_ptr().add(i), n);
            let uv = T::load16(u.as_ptr().add(i), n);
            let d = f32::load16(dy.as_ptr().add(i), n);
            let s = sigmoid16(gv);
            let ds = _mm512_mul_ps(d, s);
            O::store16(du.add(i), n, _mm512_mul_ps(ds, gv));
            // 1 + g (1 - s)
            let f = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one);
            O::store16(dg.add(i), n, _mm512_mul_ps(_mm512_mul_ps(ds, uv), f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn forward_and_backward_match_f64() {
        for lanes in Lanes::all() {
            check(lanes);
        }
    }

    fn check(lanes: Lanes) {
        let n = 3 * CHUNK + 21;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 40.0)
            .collect();
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 997) as f32 - 498.0) / 100.0)
            .collect();
        let dy: Vec<f32> = (0..n)
            .map(|i| ((i * 11 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let y: Vec<f32> = forward(lanes, &g, &u);
        let d: Vec<f32> = backward(lanes, &g, &u, &dy);
        let (dg, du) = d.split_at(n);
        for i in 0..n {
            let (gi, ui, di) = (g[i] as f64, u[i] as f64, dy[i] as f64);
            let s = 1.0 / (1.0 + (-gi).exp());
            let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs());
            assert!(close(y[i], gi * s * ui), "y[{i}]");
            assert!(close(du[i], di * gi * s), "du[{i}]");
            assert!(
                close(dg[i], di * ui * s * (1.0 + gi * (1.0 - s))),
                "dg[{i}]"
            );
        }
        // bf16 inputs and output: the f32 computation on the widened inputs, rounded once.
        let (gb, ub): (Vec<bf16>, Vec<bf16>) = (
            g.iter().map(|&x| bf16::from_f32(x)).collect(),
            u.iter().map(|&x| bf16::from_f32(x)).collect(),
        );
        let (gw, uw): (Vec<f32>, Vec<f32>) = (
            gb.iter().map(|x| x.to_f32()).collect(),
            ub.iter().map(|x| x.to_f32()).collect(),
        );
        let want: Vec<f32> = forward(lanes, &gw, &uw);
        let got: Vec<bf16> = forward(lanes, &gb, &ub);
        for (i, (w, b)) in want.iter().zip(&got).enumerate() {
            assert_eq!(bf16::from_f32(*w), *b, "bf16 y[{i}]");
        }
        let (wide, narrow): (Vec<f32>, Vec<bf16>) = (
            backward(lanes, &gw, &uw, &dy),
            backward(lanes, &gb, &ub, &dy),
        );
        assert_eq!(wide, backward::<_, f32>(lanes, &gb, &ub, &dy));
        // bf16 gradients: the f32 ones rounded once.
        for (i, (w, b)) in wide.iter().zip(&narrow).enumerate() {
            assert_eq!(bf16::from_f32(*w), *b, "bf16 gradient {i}");
        }
    }
}
