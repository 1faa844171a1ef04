//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`), and turning
//! its outputs into dump bytes.
//!
//! Contract: the library is taken from `--ort-lib`, else `ORT_DYLIB_PATH`, else the `onnxruntime`
//! package of the active Python environment (looked up on disk in `$VIRTUAL_ENV`'s
//! site-packages, else located by `$VIRTUAL_ENV/bin/python` or `python3` on PATH without importing
//! it: `onnxruntime/capi/libonnxruntime.so*`). Each place is tried only when the ones before it
//! failed; when none works the error lists every place tried and how to install the runtime.

use anyhow::{Result, bail};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

/// Loads ONNX Runtime and returns its environment and where the library came from.
pub fn load(explicit: Option<&Path>) -> Result<(ort::environment::Environment, PathBuf)> {
    let mut tried: Vec<String> = Vec::new();
    let try_load = |path: &Path, from: &str, tried: &mut Vec<String>| {
        if !path.is_file() {
            tried.push(format!("{from}: {} does not exist", path.display()));
            return None;
        }
        match ort::init_from(path).map(|b| b.with_name("dinodiff").build()) {
            Ok(Ok(env)) => Some(env),
            Ok(Err(e)) => {
                tried.push(format!("{from}: {}: {e}", path.display()));
                None
            }
            Err(e) => {
                tried.push(format!("{from}: {} cannot be loaded: {e}", path.display()));
                None
            }
        }
    };
    if let Some(p) = explicit {
        if let Some(env) = try_load(p, "--ort-lib", &mut tried) {
            return Ok((env, p.to_path_buf()));
        }
    } else {
        // Each place is looked at only when the ones before it failed (asking Python costs a
        // process start).
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) => {
                let p = PathBuf::from(p);
                if let Some(env) = try_load(&p, "ORT_DYLIB_PATH", &mut tried) {
                    return Ok((env, p));
                }
            }
            None => tried.push("ORT_DYLIB_PATH: not set".into()),
        }
        match python_onnxruntime_lib() {
            Ok(p) => {
                if let Some(env) = try_load(&p, "the Python onnxruntime package", &mut tried) {
                    return Ok((env, p));
                }
            }
            Err(why) => tried.push(format!("the Python onnxruntime package: {why}")),
        }
    }
    bail!(
        "no ONNX Runtime library found. Tried: {}. Install it with `pip install onnxruntime==1.31.1` \
         (in the active venv), or pass --ort-lib /path/to/libonnxruntime.so.1.31.1 / set ORT_DYLIB_PATH",
        tried.join("; ")
    )
}

/// The package directory of `onnxruntime` in the venv's site-packages, found on disk.
fn venv_onnxruntime_dir(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join("onnxruntime"))
        .find(|p| p.join("capi").is_dir())
}

fn python_onnxruntime_lib() -> std::result::Result<PathBuf, String> {
    let venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    let package = match venv.as_deref().and_then(venv_onnxruntime_dir) {
        Some(dir) => dir,
        None => {
            let python = match &venv {
                Some(v) if v.join("bin/python").exists() => v.join("bin/python"),
                _ => PathBuf::from("python3"),
            };
            // find_spec locates the package without importing it (no onnxruntime start-up).
            let out = std::process::Command::new(&python)
                .args([
                    "-c",
                    "import importlib.util as u; s = u.find_spec('onnxruntime'); \
                     print(s.submodule_search_locations[0] if s else '')",
                ])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || dir.is_empty() {
                return Err(format!("{} has no onnxruntime module", python.display()));
            }
            PathBuf::from(dir)
        }
    };
    let dir = package.join("capi");
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

/// A runtime value as dump bytes: dtype, shape and little-endian data, borrowed from ONNX
/// Runtime's buffer where the layouts agree (every dtype but bool), so capturing does not copy.
pub struct Extracted<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

impl Extracted<'_> {
    /// A copy that outlives the run's outputs.
    pub fn into_owned(self) -> Extracted<'static> {
        Extracted {
            dtype: self.dtype,
            shape: self.shape,
            bytes: std::borrow::Cow::Owned(self.bytes.into_owned()),
        }
    }
}

/// Copies a tensor value out of ONNX Runtime. Non-tensor values (sequences, maps) and string
/// tensors give an error naming the value.
pub fn extract<'a>(name: &str, value: &'a ort::value::DynValue) -> Result<Extracted<'a>> {
    use ort::value::TensorElementType as T;
    fn raw<E: ort::value::PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug>(
        v: &ort::value::DynValue,
    ) -> Result<(Vec<usize>, std::borrow::Cow<'_, [u8]>)> {
        let (shape, data) = v.try_extract_tensor::<E>()?;
        Ok((
            shape.iter().map(|&d| d as usize).collect(),
            std::borrow::Cow::Borrowed(bytemuck::cast_slice(data)),
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
                    std::borrow::Cow::Owned(data.iter().map(|&b| b as u8).collect()),
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
