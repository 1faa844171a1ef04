//! libtorch tensors over a checkpoint's memory map, and the weights they make.
//!
//! Contract:
//! - [`borrowed_tensor`] hands contiguous little-endian bytes to libtorch without a copy when they
//!   are borrowed and aligned (`from_blob`; the caller keeps the memory alive and unwritten, see
//!   its `# Safety`), and copies them otherwise;
//! - [`Weights::backing`] owns that memory for as long as the model ([`super::forward::MetaVit`]
//!   keeps it, dropped after the weights).

use crate::checkpoint::Shapes;
use anyhow::{Context, Result, anyhow};
use safetensors::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Whatever owns the memory the zero-copy tensors point into (a memory map).
pub type Backing = Option<Arc<dyn std::any::Any + Send + Sync>>;

/// The checkpoint in Meta's names, as libtorch tensors on the CPU in the file's dtypes.
pub struct Weights {
    pub tensors: Vec<(String, Tensor)>,
    /// The file whose size and sha256 the manifest records.
    pub file: PathBuf,
    /// The manifest's `meta.checkpoint`.
    pub facts: serde_json::Value,
    /// One line for stderr: what was read and how.
    pub summary: String,
    /// Must outlive every tensor of `tensors` (see [`borrowed_tensor`]).
    pub backing: Backing,
    /// The memory map the zero-copy tensors point into, for readahead advice.
    pub hints: Option<super::residency::MapHints>,
}

impl Weights {
    /// Name → shape (what the architecture is inferred from).
    pub fn shapes(&self) -> Shapes {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.size().iter().map(|&d| d as usize).collect()))
            .collect()
    }
}

/// `N tensors bf16`, or `N tensors (150 f32, 38 bf16)`.
pub fn tensor_count(n: usize, dtypes: &BTreeMap<String, usize>) -> String {
    let names: Vec<String> = dtypes
        .iter()
        .map(|(d, c)| format!("{c} {}", d.to_lowercase()))
        .collect();
    match dtypes.keys().next() {
        Some(d) if dtypes.len() == 1 => format!("{n} tensors {}", d.to_lowercase()),
        _ => format!("{n} tensors ({})", names.join(", ")),
    }
}

/// The file mapped read-only.
pub fn map_file(path: &Path) -> Result<Arc<memmap2::Mmap>> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow!(
            "cannot read the checkpoint {shown}: {}",
            crate::dump::reader::io_problem(&e)
        )
    })?;
    // SAFETY: the map is read-only and private to this process; like every reader of a
    // checkpoint, we require that the file does not change while it is read.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map the checkpoint {shown}"))?;
    Ok(Arc::new(map))
}

/// A safetensors file's tensors (sorted by name), with the error naming the file.
pub fn safetensors_of<'a>(path: &Path, map: &'a [u8]) -> Result<safetensors::SafeTensors<'a>> {
    safetensors::SafeTensors::deserialize(map).map_err(|e| {
        anyhow!(
            "cannot read the checkpoint {}: it starts like a safetensors file but is not one: {e}",
            path.display()
        )
    })
}

/// The libtorch kind of a checkpoint dtype.
pub fn kind_of_dtype(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F64 => Kind::Double,
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// A CPU tensor of `dtype` and `shape` over `bytes` (row-major, little-endian): **without a
/// copy** when `bytes` is borrowed, non-empty and aligned for the dtype; else a copy.
///
/// # Safety
/// When `bytes` is borrowed, the returned tensor points into that memory without owning it:
/// the caller must keep the memory alive and unchanged for as long as the tensor or any view or
/// alias of it lives, and must never write through it (it is a read-only map: a write would fault).
pub unsafe fn borrowed_tensor(
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    bytes: Cow<'_, [u8]>,
) -> Result<Tensor> {
    let kind = kind_of_dtype(dtype)
        .ok_or_else(|| anyhow!("tensor {name} is {dtype}, which libtorch cannot take here"))?;
    let size: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    match bytes {
        Cow::Borrowed(b)
            if !b.is_empty() && (b.as_ptr() as usize).is_multiple_of(kind.elt_size_in_bytes()) =>
        {
            // SAFETY: `b` holds exactly numel × element size bytes (the readers check every
            // tensor against its storage / data offsets), is non-null and aligned for `kind`,
            // and is row-major contiguous (empty strides = contiguous). libtorch's from_blob
            // neither frees nor copies it. Lifetime and immutability are the caller's contract.
            let t = unsafe { Tensor::f_from_blob(b.as_ptr(), &size, &[], kind, Device::Cpu) };
            Ok(t.with_context(|| format!("handing tensor {name} to libtorch"))?)
        }
        other => Ok(Tensor::f_from_data_size(&other, &size, kind)
            .with_context(|| format!("copying tensor {name} into libtorch"))?),
    }
}
