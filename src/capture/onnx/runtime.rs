//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`), and turning
//! its outputs into dump bytes.
//!
//! Contract: the library is taken from `--ort-lib`, else `ORT_DYLIB_PATH`, else the `onnxruntime`
//! package of the active Python environment (`$VIRTUAL_ENV/bin/python`, then `python3` on PATH:
//! `onnxruntime/capi/libonnxruntime.so*`). The first candidate that exists is loaded; when none
//! works the error lists every place tried and how to install the runtime.

use anyhow::{Result, bail};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// Loads ONNX Runtime and returns its environment and where the library came from.
pub fn load(explicit: Option<&Path>) -> Result<(ort::environment::Environment, PathBuf)> {
    let mut tried: Vec<String> = Vec::new();
    let mut candidates: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(p) = explicit {
        candidates.push((p.to_path_buf(), "--ort-lib"));
    } else {
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) => candidates.push((PathBuf::from(p), "ORT_DYLIB_PATH")),
            None => tried.push("ORT_DYLIB_PATH: not set".into()),
        }
        match python_onnxruntime_lib() {
            Ok(p) => candidates.push((p, "the Python onnxruntime package")),
            Err(why) => tried.push(format!("the Python onnxruntime package: {why}")),
        }
    }
    for (path, from) in candidates {
        if !path.is_file() {
            tried.push(format!("{from}: {} does not exist", path.display()));
            continue;
        }
        match ort::init_from(&path).map(|b| b.with_name("dinodiff").build()) {
            Ok(Ok(env)) => return Ok((env, path)),
            Ok(Err(e)) => tried.push(format!("{from}: {}: {e}", path.display())),
            Err(e) => tried.push(format!("{from}: {} cannot be loaded: {e}", path.display())),
        }
    }
    bail!(
        "no ONNX Runtime library found. Tried: {}. Install it with `pip install onnxruntime==1.31.1` \
         (in the active venv), or pass --ort-lib /path/to/libonnxruntime.so.1.31.1 / set ORT_DYLIB_PATH",
        tried.join("; ")
    )
}

fn python_onnxruntime_lib() -> std::result::Result<PathBuf, String> {
    let python = match std::env::var_os("VIRTUAL_ENV") {
        Some(v) if Path::new(&v).join("bin/python").exists() => Path::new(&v).join("bin/python"),
        _ => PathBuf::from("python3"),
    };
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} has no onnxruntime module", python.display()));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    // The versioned name (libonnxruntime.so.1.31.1) sorts last.
    libs.sort();
    libs.pop()
        .ok_or_else(|| format!("no libonnxruntime.so* in {}", dir.display()))
}

/// A runtime value as dump bytes: dtype, shape and little-endian data.
pub struct Extracted {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Copies a tensor value out of ONNX Runtime. Non-tensor values (sequences, maps) and string
/// tensors give an error naming the value.
pub fn extract(name: &str, value: &ort::value::DynValue) -> Result<Extracted> {
    use ort::value::TensorElementType as T;
    fn raw<E: ort::value::PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug>(
        v: &ort::value::DynValue,
    ) -> Result<(Vec<usize>, Vec<u8>)> {
        let (shape, data) = v.try_extract_tensor::<E>()?;
        Ok((
            shape.iter().map(|&d| d as usize).collect(),
            bytemuck::cast_slice(data).to_vec(),
        ))
    }
    let ty = match value.dtype() {
        ort::value::ValueType::Tensor { ty, .. } => *ty,
        other => bail!("value {name} is a {other:?}, not a tensor; it cannot be dumped"),
    };
    let (dtype, (shape, bytes)) = match ty {
        T::Float32 => (Dtype::F32, raw::<f32>(value)?),
        T::Float64 => (Dtype::F64, raw::<f64>(value)?),
        T::Float16 => (Dtype::F16, raw::<half::f16>(value)?),
        T::Bfloat16 => (Dtype::BF16, raw::<half::bf16>(value)?),
        T::Int8 => (Dtype::I8, raw::<i8>(value)?),
        T::Int16 => (Dtype::I16, raw::<i16>(value)?),
        T::Int32 => (Dtype::I32, raw::<i32>(value)?),
        T::Int64 => (Dtype::I64, raw::<i64>(value)?),
        T::Uint8 => (Dtype::U8, raw::<u8>(value)?),
        T::Uint16 => (Dtype::U16, raw::<u16>(value)?),
        T::Uint32 => (Dtype::U32, raw::<u32>(value)?),
        T::Uint64 => (Dtype::U64, raw::<u64>(value)?),
        T::Bool => {
            let (shape, data) = value.try_extract_tensor::<bool>()?;
            (
                Dtype::BOOL,
                (
                    shape.iter().map(|&d| d as usize).collect(),
                    data.iter().map(|&b| b as u8).collect(),
                ),
            )
        }
        other => bail!("value {name} has element type {other:?}, which a dump cannot hold"),
    };
    Ok(Extracted {
        dtype,
        shape,
        bytes,
    })
}
