//! Preallocated KV cache: per layer one key and one value tensor `[slots, kv_heads, capacity,
//! head_dim]`, written in place (`slice_set`), so decoding allocates nothing per token for it.
//! Each slot holds one sequence with its own length.

use crate::config::ModelConfig;
use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    lens: Vec<usize>,
    capacity: usize,
}

impl KvCache {
    pub fn new(
        cfg: &ModelConfig,
        slots: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (slots, cfg.num_kv_heads(), capacity, cfg.head_dim());
        let mk = || Tensor::zeros(shape, dtype, device);
        let layers = cfg.num_hidden_layers;
        Ok(Self {
            k: (0..layers).map(|_| mk()).collect::<Result<_>>()?,
            v: (0..layers).map(|_| mk()).collect::<Result<_>>()?,
            lens: vec![0; slots],
            capacity,
        })
    }

    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens cached for `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    pub fn is_empty(&self, slot: usize) -> bool {
        self.lens[slot] == 0
    }

    /// Forgets `slot`'s sequence (its memory is reused).
    pub fn clear(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Writes `k, v: [n, kv_heads, L, head_dim]` for slots `first..first+n`, row b at `starts[b]`.
    pub(crate) fn write(
        &self,
        layer: usize,
        first: usize,
        starts: &[usize],
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        for (b, &s0) in starts.iter().enumerate() {
            // A cache in another dtype (bf16 for a bf16 decoding copy) stores rounded values.
            let dtype = self.k[layer].dtype();
            let kb = k.narrow(0, b, 1)?.to_dtype(dtype)?.contiguous()?;
            let vb = v.narrow(0, b, 1)?.to_dtype(dtype)?.contiguous()?;
            self.k[layer]
                .narrow(0, first + b, 1)?
                .slice_set(&kb, 2, s0)?;
            self.v[layer]
                .narrow(0, first + b, 1)?
                .slice_set(&vb, 2, s0)?;
        }
        Ok(())
    }

    /// Views `[n, kv_heads, len, head_dim]` of slots `first..first+n`, positions `0..len`.
    /// Layer `layer`'s whole key and value tensors, `[slots, kv_heads, capacity, head_dim]`.
    pub(crate) fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    pub(crate) fn view(
        &self,
        layer: usize,
        first: usize,
        n: usize,
        len: usize,
    ) -> Result<(Tensor, Tensor)> {
        let k = self.k[layer].narrow(0, first, n)?.narrow(2, 0, len)?;
        let v = self.v[layer].narrow(0, first, n)?.narrow(2, 0, len)?;
        Ok((k, v))
    }

    pub(crate) fn advance(&mut self, first: usize, n: usize, by: usize) {
        for l in &mut self.lens[first..first + n] {
            *l += by;
        }
    }

    /// Copies the first `len` cached positions of slot `from` into slot `to` (a prompt shared by
    /// several sequences is prefilled once).
    pub fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        if from == to || len > self.lens[from] {
            candle_core::bail!(
                "copy_prefix: slot {from} holds {} positions, {len} asked for slot {to}",
                self.lens[from]
            )
        }
        for t in self.k.iter().chain(self.v.iter()) {
            let src = t.narrow(0, from, 1)?.narrow(2, 0, len)?.contiguous()?;
            // `contiguous` may return a view of the cache itself; slice_set needs its own copy.
            let src = if src.is_contiguous() {
                src.copy()?
            } else {
                src
            };
            t.narrow(0, to, 1)?.slice_set(&src, 2, 0)?;
        }
        self.lens[to] = len;
        Ok(())
    }

    /// Moves the sequence in slot `from` to slot `to` (compaction when slots free up).
    pub fn move_slot(&mut self, from: usize, to: usize) -> Result<()> {
        if from == to {
            return Ok(());
        }
        let len = self.lens[from];
        if len > 0 {
            for t in self.k.iter().chain(self.v.iter()) {
                let view = t.narrow(0, from, 1)?.narrow(2, 0, len)?;
                // slice_set needs a contiguous source that does not share the target's storage.
                let src = if view.is_contiguous() {
                    view.copy()?
                } else {
                    view.contiguous()?
                };
                t.narrow(0, to, 1)?.slice_set(&src, 2, 0)?;
            }
        }
        self.lens[to] = len;
        self.lens[from] = 0;
        Ok(())
    }
}
