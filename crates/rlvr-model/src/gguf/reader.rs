//! A GGUF file opened for reading: candle's header parser, typed metadata getters, and tensors
//! dequantized to f32 by candle's block decoders. Every error names the file (and the key or
//! tensor); nothing here panics on a malformed file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = BufReader::new(file);
        // Checked here so that the error never quotes the file's bytes (candle's shows them).
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            bail!(
                "{}: not a GGUF file (it does not start with GGUF)",
                path.display()
            );
        }
        reader.rewind()?;
        let content = Content::read(&mut reader)
            .map_err(|e| anyhow!("{}: not a readable GGUF file: {e}", path.display()))?;
        let file_len = reader.get_ref().metadata()?.len();
        check_layout(&content, file_len).with_context(|| {
            format!("{}: the tensor table does not fit the file", path.display())
        })?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            content,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    fn err_key(&self, key: &str, what: &str) -> anyhow::Error {
        anyhow!("{}: metadata {key}: {what}", self.path.display())
    }

    /// An unsigned integer of any width (GGUF writers differ on u32/u64/i32).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(Some).ok_or_else(|| {
            self.err_key(
                key,
                &format!("expected a non-negative integer, found {v:?}"),
            )
        })
    }

    pub fn require_usize(&self, key: &str) -> Result<usize> {
        self.get_u64(key)?
            .map(|v| v as usize)
            .ok_or_else(|| self.err_key(key, "missing (required)"))
    }

    /// A float; f32 values are widened through their shortest decimal form so that
    /// `1e-5f32` reads as `1e-5`, as HF's config.json writes it.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        match v {
            Value::F32(x) => Ok(Some(x.to_string().parse::<f64>().unwrap_or(*x as f64))),
            Value::F64(x) => Ok(Some(*x)),
            _ => self.get_u64(key).map(|o| o.map(|u| u as f64)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err_key(key, &format!("expected a bool, found {v:?}"))),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err_key(
                key,
                &format!("expected a string, found {:?}", v.value_type()),
            )),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.err_key(key, "expected an array of strings"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.err_key(
                    key,
                    &format!(
                        "element {i}: expected a string, found {:?}",
                        other.value_type()
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.err_key(key, "expected an array of integers"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::I8(x) => Ok(*x as i64),
                Value::U8(x) => Ok(*x as i64),
                Value::I16(x) => Ok(*x as i64),
                Value::U16(x) => Ok(*x as i64),
                Value::I32(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                other => Err(self.err_key(
                    key,
                    &format!(
                        "element {i}: expected an integer, found {:?}",
                        other.value_type()
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Reads tensor `name` and dequantizes it to f32 on the CPU, in row-major HF order
    /// (GGUF lists dims innermost first; candle reverses them, so a linear is `[out, in]`).
    pub fn dequantize(&mut self, name: &str) -> Result<Tensor> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| anyhow!("{}: no tensor named {name}", self.path.display()))?;
        let ctx = || {
            format!(
                "{}: tensor {name} ({:?}, shape {:?})",
                self.path.display(),
                info.ggml_dtype,
                info.shape.dims()
            )
        };
        // A corrupt header can declare dims whose product overflows; candle would not check.
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if elems.is_none_or(|n| n > isize::MAX as usize) {
            bail!("{}: implausible dims", ctx());
        }
        let q = info
            .read(
                &mut self.reader,
                self.content.tensor_data_offset,
                &Device::Cpu,
            )
            .map_err(|e| anyhow!("{}: {e}", ctx()))?;
        q.dequantize(&Device::Cpu)
            .map_err(|e| anyhow!("{}: dequantize: {e}", ctx()))
    }
}

/// Decodes raw GGML bytes of `dtype` into an f32 tensor of `dims` (row-major), via candle.
/// Checks the byte count first: candle reads `dims`-many blocks without checking.
pub fn dequantize_bytes(dtype: GgmlDType, data: &[u8], dims: &[usize]) -> Result<Tensor> {
    let elems: usize = dims.iter().product();
    if elems == 0 {
        bail!("{dtype:?} {dims:?}: no elements");
    }
    let block = dtype.block_size();
    if !elems.is_multiple_of(block) {
        bail!("{dtype:?}: {elems} elements is not a multiple of the block size {block}");
    }
    let need = elems / block * dtype.type_size();
    if data.len() != need {
        bail!(
            "{dtype:?} {dims:?}: expected {need} bytes, got {}",
            data.len()
        );
    }
    // A fresh allocation is aligned for the block structs candle casts the bytes to.
    let owned = data.to_vec();
    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &owned,
        dims.to_vec(),
        &Device::Cpu,
    )?;
    Ok(q.dequantize(&Device::Cpu)?)
}

/// Every tensor's bytes lie inside the file and no two tensors overlap. A tensor whose type or
/// shape was altered would otherwise read its neighbours' bytes as its own.
fn check_layout(content: &Content, file_len: u64) -> Result<()> {
    let data_len = file_len
        .checked_sub(content.tensor_data_offset)
        .ok_or_else(|| anyhow!("the tensor data starts beyond the end of the file"))?;
    let mut spans = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let shown = crate::load::quote(name);
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| anyhow!("tensor {shown}: the element count overflows"))?;
        if elems == 0 {
            // No model tensor is empty, and candle would build its block slice from a dangling
            // pointer.
            bail!(
                "tensor {shown} has no elements (shape {:?})",
                info.shape.dims()
            );
        }
        let block = info.ggml_dtype.block_size() as u64;
        if elems % block != 0 {
            bail!(
                "tensor {shown}: {elems} elements of {:?} do not fill whole blocks of {block}",
                info.ggml_dtype
            );
        }
        let bytes = (elems / block)
            .checked_mul(info.ggml_dtype.type_size() as u64)
            .ok_or_else(|| anyhow!("tensor {shown}: the byte count overflows"))?;
        let end = info.offset.checked_add(bytes).filter(|&e| e <= data_len).ok_or_else(|| {
            anyhow!(
                "tensor {shown} ({:?}, {bytes} bytes at offset {}) ends beyond the file's {data_len} bytes of tensor data",
                info.ggml_dtype,
                info.offset
            )
        })?;
        spans.push((info.offset, end, shown));
    }
    spans.sort();
    // Writers place tensors back to back, each at the next multiple of the alignment: a gap
    // means a tensor's type or shape no longer matches the bytes written for it.
    let align = match content.metadata.get("general.alignment") {
        Some(Value::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(Value::U64(a)) if a.is_power_of_two() => *a,
        Some(_) => bail!("general.alignment must be a power of two"),
        None => 32,
    };
    for w in spans.windows(2) {
        if w[0].1 > w[1].0 {
            bail!("tensors {} and {} overlap", w[0].2, w[1].2);
        }
        if w[0].1.div_ceil(align) * align != w[1].0 {
            bail!(
                "{} bytes lie between tensors {} and {}: the table does not describe the data",
                w[1].0 - w[0].1,
                w[0].2,
                w[1].2
            );
        }
    }
    if let Some((_, end, name)) = spans.last() {
        if data_len.saturating_sub(*end) >= align {
            bail!(
                "{} bytes follow the last tensor {name}: the table does not describe the data",
                data_len - end
            );
        }
    }
    Ok(())
}
