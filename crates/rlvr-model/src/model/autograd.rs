//! Ops whose forward is computed without a graph (fused kernels, fewer intermediates) and whose
//! backward is given as a closure over tensor ops. Only the op's inputs stay alive for backward,
//! instead of every intermediate of a composite op (the attention scores alone would be
//! `B x heads x S x S` floats per layer, several times over).

#[cfg(feature = "cuda")]
use candle_core::Storage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use std::sync::Mutex;

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// Backward of a 1-, 2- or 3-input op: `(inputs, grad of the output) -> grads of the inputs`.
type Bwd1 = Box<dyn Fn(&Tensor, &Tensor) -> Result<Option<Tensor>> + Send + Sync>;
type Bwd2 = Box<
    dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync,
>;
type Bwd3 = Box<dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Grads3> + Send + Sync>;

/// An op's precomputed result: a tensor, or a CPU buffer that becomes the op's output as is.
pub enum Output {
    Tensor(Tensor),
    Cpu(CpuStorage, Shape),
}

impl From<Tensor> for Output {
    fn from(t: Tensor) -> Self {
        Output::Tensor(t)
    }
}

impl Output {
    /// The result as a tensor on `device` (a CPU buffer moves into it, no copy).
    pub fn into_tensor(self, device: &candle_core::Device) -> Result<Tensor> {
        match self {
            Output::Tensor(t) => Ok(t),
            Output::Cpu(s, shape) => match s {
                CpuStorage::F32(v) => Tensor::from_vec(v, shape, device),
                CpuStorage::BF16(v) => Tensor::from_vec(v, shape, device),
                CpuStorage::F64(v) => Tensor::from_vec(v, shape, device),
                _ => candle_core::bail!("into_tensor: unsupported CPU dtype"),
            },
        }
    }

    /// A CPU buffer of `shape` (moved, not copied, into the op's output).
    pub fn cpu<T: candle_core::WithDType>(data: Vec<T>, shape: impl Into<Shape>) -> Self {
        Output::Cpu(T::to_cpu_storage_owned(data), shape.into())
    }
}

struct Precomputed<B> {
    name: &'static str,
    /// Taken by the forward (a tensor is copied into the op's output, a CPU buffer moved), so
    /// it is not kept twice.
    result: Mutex<Option<Output>>,
    bwd: B,
}

impl<B> Precomputed<B> {
    fn new(name: &'static str, result: Output, bwd: B) -> Self {
        Self {
            name,
            result: Mutex::new(Some(result)),
            bwd,
        }
    }

    fn take(&self) -> Result<Output> {
        self.result
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: poisoned", self.name)))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: forward ran twice", self.name)))
    }

    fn take_cpu(&self) -> Result<(CpuStorage, Shape)> {
        let t = match self.take()? {
            Output::Cpu(s, shape) => return Ok((s, shape)),
            Output::Tensor(t) => t,
        };
        let shape = t.shape().clone();
        let flat = t.flatten_all()?;
        let s = match t.dtype() {
            DType::F32 => CpuStorage::F32(flat.to_vec1::<f32>()?),
            DType::F64 => CpuStorage::F64(flat.to_vec1::<f64>()?),
            DType::BF16 => CpuStorage::BF16(flat.to_vec1::<half::bf16>()?),
            d => candle_core::bail!("{}: unsupported dtype {d:?}", self.name),
        };
        Ok((s, shape))
    }

    #[cfg(feature = "cuda")]
    fn take_cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let t = match self.take()? {
            Output::Tensor(t) => t.contiguous()?,
            Output::Cpu(..) => candle_core::bail!("{}: CPU result for a CUDA op", self.name),
        };
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            Storage::Cuda(s) => Ok((s.try_clone(layout)?, layout.shape().clone())),
            _ => candle_core::bail!("{}: result is not on CUDA", self.name),
        }
    }
}

impl CustomOp1 for Precomputed<Bwd1> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.take_cpu()
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.take_cuda()
    }
    fn bwd(&self, a: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        (self.bwd)(&a.detach(), g)
    }
}

impl CustomOp2 for Precomputed<Bwd2> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.take_cpu()
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.take_cuda()
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        (self.bwd)(&a.detach(), &b.detach(), g)
    }
}

impl CustomOp3 for Precomputed<Bwd3> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.take_cpu()
    }
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.take_cuda()
    }
    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Grads3> {
        (self.bwd)(&a.detach(), &b.detach(), &c.detach(), g)
    }
}

/// `result` (computed from `a` without a graph) with `bwd` as its gradient rule.
pub fn op1(
    name: &'static str,
    a: &Tensor,
    result: impl Into<Output>,
    bwd: impl Fn(&Tensor, &Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
) -> Result<Tensor> {
    let b: Bwd1 = Box::new(bwd);
    a.apply_op1(Precomputed::new(name, result.into(), b))
}

pub fn op2(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    result: impl Into<Output>,
    bwd: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)>
        + Send
        + Sync
        + 'static,
) -> Result<Tensor> {
    let f: Bwd2 = Box::new(bwd);
    a.apply_op2(b, Precomputed::new(name, result.into(), f))
}

pub fn op3(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    result: impl Into<Output>,
    bwd: impl Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Grads3> + Send + Sync + 'static,
) -> Result<Tensor> {
    let f: Bwd3 = Box::new(bwd);
    a.apply_op3(b, c, Precomputed::new(name, result.into(), f))
}
