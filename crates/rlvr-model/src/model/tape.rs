//! A training forward cut into segments at the decoder's layer boundaries, so that its backward
//! frees each layer's activations as soon as that layer's gradients are out.
//!
//! candle's `backward` walks the whole graph from the loss and keeps every node alive until it
//! returns, so the gradients of all the weights pile up on top of all the activations (on
//! Qwen2.5-0.5B at 8 x 384 tokens: 2 GB of gradients over 4 GB of graph). Cut at each layer
//! boundary, the backward runs segment by segment from the loss down, each segment's output
//! gradient fed in as the gradient of a scalar seed, and drops the segment it has finished. The
//! gradients are the same numbers: every weight still gets exactly the terms it got before.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};

/// Where a forward was cut, from the first segment to the last: each cut's (end of a segment,
/// with its graph; leaf the next segment reads it as) pairs.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    cuts: Vec<Vec<(Tensor, Tensor)>>,
    lookups: Vec<Lookup>,
}

/// An embedding lookup taken off the graph: the rows of `weight` at `ids`, handed to the first
/// segment as the leaf `rows`.
#[derive(Debug, Clone)]
struct Lookup {
    weight: Tensor,
    ids: Tensor,
    rows: Tensor,
}

impl Tape {
    /// The rows of the embedding table `weight` (a variable) at `ids: [N]`, `[N, hidden]`, as a
    /// leaf whose gradient [`Tape::backward_into`] adds into `weight`'s rows itself. candle's
    /// `index_select` backward adds into a zero-filled copy of the whole table and then copies
    /// it again (`index_add`), and adds that to a tied head's gradient a third time: three
    /// vocabulary-sized blocks (545 MB each on Qwen2.5-0.5B) at the very end of the backward,
    /// when the freed activations are in pieces too small to hold them.
    pub(crate) fn lookup(&mut self, weight: &Tensor, ids: Tensor) -> Result<Tensor> {
        let rows = weight.detach().index_select(&ids, 0)?.detach_to_var();
        self.lookups.push(Lookup {
            weight: weight.clone(),
            ids,
            rows: rows.clone(),
        });
        Ok(rows)
    }

    /// Ends the current segment at `xs` and returns them as leaves (the same storage, no graph)
    /// for the next. Tensors without a graph pass through as they are.
    pub(crate) fn cut<const N: usize>(&mut self, xs: [Tensor; N]) -> [Tensor; N] {
        if !xs.iter().any(Tensor::track_op) {
            return xs;
        }
        let leaves = xs.each_ref().map(Tensor::detach_to_var);
        self.cuts
            .push(xs.into_iter().zip(leaves.iter().cloned()).collect());
        leaves
    }

    /// Adds the gradients of `loss` (whose graph starts at this tape's last cut) to `grads`,
    /// segment by segment, freeing each segment once it is done.
    pub(crate) fn backward_into(self, loss: &Tensor, grads: &mut GradStore) -> Result<()> {
        grads.extend(loss.backward()?)?;
        for cut in self.cuts.into_iter().rev() {
            let mut seed: Option<Tensor> = None;
            for (end, leaf) in &cut {
                // A leaf the later segments did not read (or read only where no gradient
                // flows) has nothing to pass down.
                if let Some(g) = grads.remove(leaf) {
                    // A scalar whose gradient with respect to `end` is `g`, without computing
                    // `sum(end * g)` or its backward's two products.
                    let zero = Tensor::zeros((), end.dtype(), end.device())?;
                    let term = super::autograd::op1("tape-seed", end, zero, move |_, _| {
                        Ok(Some(g.clone()))
                    })?;
                    seed = Some(match seed {
                        None => term,
                        Some(s) => (s + term)?,
                    });
                }
            }
            if let Some(seed) = seed {
                grads.extend(seed.backward()?)?;
            }
        }
        // Each embedding table's gradient: what the store holds for it already (a tied head,
        // an earlier micro-batch) plus its rows' gradients, added at their ids.
        let mut tables: Vec<(Tensor, Vec<(Tensor, Tensor)>)> = Vec::new();
        for l in self.lookups {
            let Some(g) = grads.remove(&l.rows) else {
                continue;
            };
            match tables.iter_mut().find(|(w, _)| w.id() == l.weight.id()) {
                Some((_, parts)) => parts.push((l.ids, g)),
                None => tables.push((l.weight, vec![(l.ids, g)])),
            }
        }
        for (w, parts) in tables {
            let sum = add_rows(&w, grads.remove(&w), &parts)?;
            grads.insert(&w, sum);
        }
        Ok(())
    }
}

/// `base` (zeros if `None`) plus each part's rows `g` added at the rows `ids` of the table `w`, in
/// order (candle's `index_add`), into one new table: one vocabulary-sized block, where
/// `base.index_add` makes a copy per part.
fn add_rows(w: &Tensor, base: Option<Tensor>, parts: &[(Tensor, Tensor)]) -> Result<Tensor> {
    if !crate::kernels::applies(w) {
        let mut t = match base {
            Some(b) => b,
            None => w.zeros_like()?,
        };
        for (ids, g) in parts {
            t = t.index_add(ids, &g.to_dtype(t.dtype())?, 0)?;
        }
        return Ok(t);
    }
    let h = w.dim(1)?;
    let mut t = match base {
        Some(b) => crate::kernels::with_slice(&b, <[f32]>::to_vec)?,
        None => crate::kernels::zeroed(w.elem_count()),
    };
    for (ids, g) in parts {
        let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        crate::kernels::with_slice(&g.to_dtype(DType::F32)?, |g| {
            debug_assert_eq!(ids.len() * h, g.len());
            for (&id, row) in ids.iter().zip(g.chunks_exact(h)) {
                // The forward's `index_select` took these rows, so each id is in the table.
                let dst = &mut t[id as usize * h..][..h];
                dst.iter_mut().zip(row).for_each(|(d, s)| *d += s);
            }
        })?;
    }
    Tensor::from_vec(t, w.shape(), w.device())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_abs_diff, tiny_model};
    use crate::logprobs::{LogProbOptions, TokenLogProbs};
    use crate::{Model, Precision, SharedPrompts};
    use candle_core::backprop::GradStore;
    use candle_core::{DType, Device, Tensor};

    fn ids(v: Vec<u32>, shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A loss that weighs every log-prob differently, plus the entropies.
    fn loss(o: &TokenLogProbs) -> Tensor {
        let (b, r) = o.logprobs.dims2().unwrap();
        let w = Tensor::arange(0f32, (b * r) as f32, &Device::Cpu)
            .unwrap()
            .reshape((b, r))
            .unwrap()
            .affine(0.2, -0.5)
            .unwrap();
        ((&o.logprobs * w).unwrap().sum_all().unwrap()
            + (o.entropy.as_ref().unwrap() * 0.3)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap()
    }

    /// The CPU f32 row adder equals candle's `index_add` (its path for other dtypes and
    /// devices, here f64): repeated ids, two parts, with and without a base, u32 and i64 ids.
    #[test]
    fn rows_add_into_the_table_as_index_add_does() {
        let dev = &Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (7, 3), dev).unwrap();
        let base = Tensor::randn(0f32, 1.0, (7, 3), dev).unwrap();
        let g1 = Tensor::randn(0f32, 1.0, (4, 3), dev).unwrap();
        let g2 = Tensor::randn(0f32, 1.0, (2, 3), dev).unwrap();
        let id1 = Tensor::new(&[2u32, 5, 2, 0], dev).unwrap();
        let id2 = Tensor::new(&[6i64, 2], dev).unwrap();
        for with_base in [false, true] {
            let parts = |dt| {
                [(&id1, &g1), (&id2, &g2)]
                    .map(|(i, g)| (i.clone(), g.to_dtype(dt).unwrap()))
                    .to_vec()
            };
            let b = |dt| with_base.then(|| base.to_dtype(dt).unwrap());
            let f64 = candle_core::DType::F64;
            let got = super::add_rows(&w, b(DType::F32), &parts(DType::F32)).unwrap();
            let w64 = w.to_dtype(f64).unwrap();
            let want = super::add_rows(&w64, b(f64), &parts(f64)).unwrap();
            let mut by_hand = b(f64).unwrap_or_else(|| w64.zeros_like().unwrap());
            for (i, g) in parts(f64) {
                by_hand = by_hand
                    .index_add(&i.to_dtype(DType::U32).unwrap(), &g, 0)
                    .unwrap();
            }
            assert_eq!(max_abs_diff(&want, &by_hand), 0.0);
            let d = max_abs_diff(&got, &want);
            assert!(d < 1e-6, "base {with_base}: differs by {d}");
        }
    }

    fn assert_same_gradients(model: &Model, got: &GradStore, want: &GradStore, what: &str) {
        for (name, var) in model.named_vars() {
            let want = want
                .get(var)
                .unwrap_or_else(|| panic!("{what} {name}: none"));
            let got = got
                .get(var)
                .unwrap_or_else(|| panic!("{what} {name}: no gradient when segmented"));
            let scale = 1.0 + max_abs_diff(want, &want.zeros_like().unwrap());
            // Only the tied embedding's two terms are added in another order.
            let d = max_abs_diff(got, want);
            assert!(d <= 1e-6 * scale, "{what} {name}: differs by {d}");
        }
    }

    /// Cut at every layer, the backward gives every weight the gradient the whole graph gives
    /// (tied and untied heads, f32 and bf16 products, whole rows and shared prompts), and
    /// accumulating two micro-batches into one store equals adding their stores.
    #[test]
    fn segmented_backward_gives_the_whole_graphs_gradients() {
        let row_ids = ids(vec![0, 5, 9, 17, 3, 44, 8, 1, 2, 60, 31, 7], (2, 6));
        let row_mask = ids(vec![0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1], (2, 6));
        let (p_ids, p_mask) = (
            ids(vec![0, 7, 3, 12, 40, 5], (2, 3)),
            ids(vec![0, 1, 1, 1, 1, 1], (2, 3)),
        );
        let (r_ids, r_mask) = (
            ids(vec![4, 8, 15, 0, 23, 42], (3, 2)),
            ids(vec![1, 1, 1, 0, 1, 1], (3, 2)),
        );
        let shared = SharedPrompts {
            prompt_ids: &p_ids,
            prompt_mask: &p_mask,
            response_ids: &r_ids,
            response_mask: &r_mask,
            group: &[0, 0, 1],
        };
        for (bias, tied) in [(false, true), (true, false)] {
            let model = tiny_model(bias, tied, 3);
            for precision in [Precision::F32, Precision::Bf16] {
                let run = |segmented: bool, shared_prompts: bool| {
                    let opts = LogProbOptions {
                        entropy: true,
                        temperature: 0.8,
                        precision,
                        segmented,
                        ..Default::default()
                    };
                    if shared_prompts {
                        model.response_logprobs_shared(&shared, &opts).unwrap()
                    } else {
                        model
                            .response_logprobs(&row_ids, &row_mask, 3, &opts)
                            .unwrap()
                    }
                };
                for shared_prompts in [false, true] {
                    let what = format!("tied {tied} {precision:?} shared {shared_prompts}:");
                    let whole = run(false, shared_prompts);
                    let want = loss(&whole).backward().unwrap();
                    let cut = run(true, shared_prompts);
                    assert!(!cut.tape.cuts.is_empty(), "{what} nothing was cut");
                    assert!(
                        !cut.tape.lookups.is_empty(),
                        "{what} no lookup off the graph"
                    );
                    let l = loss(&cut);
                    let got = cut.backward(&l).unwrap();
                    assert_same_gradients(&model, &got, &want, &what);

                    let mut sum = GradStore::default();
                    for _ in 0..2 {
                        let o = run(true, shared_prompts);
                        let l = loss(&o);
                        o.backward_into(&l, &mut sum).unwrap();
                    }
                    let mut twice = GradStore::default();
                    twice.extend(loss(&whole).backward().unwrap()).unwrap();
                    twice.extend(want).unwrap();
                    assert_same_gradients(&model, &sum, &twice, &format!("{what} accumulated"));
                }
            }
        }
    }
}
