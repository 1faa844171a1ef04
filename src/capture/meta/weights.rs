//! Where `capture meta`'s weights come from: a `torch.save` file, a safetensors file with Meta's
//! names, or a Hugging Face transformers checkpoint, each turned into Meta's name → libtorch
//! tensor map.
//!
//! Contract:
//! - [`locate`] decides the format from the path and the file's first bytes: a directory is a
//!   transformers checkpoint (`model.safetensors` + `config.json`); a file that starts with a
//!   safetensors header is safetensors (Meta's names when they infer as Meta's DINOv3, else
//!   transformers' when a `config.json` lies beside it); anything else is a `torch.save` file,
//!   read by [`crate::checkpoint`] (the state dict whose key set infers as Meta's DINOv3,
//!   `--key` to choose) or, with [`Loader::Libtorch`], by libtorch's own loader;
//! - every tensor that is contiguous and little-endian in the file is handed to libtorch
//!   **without a copy** (`from_blob` over the read-only memory map, which [`Weights::backing`]
//!   keeps alive); the others are copied, one tensor at a time. Dtype conversion is the model's,
//!   one block at a time ([`super::residency`]), so a capture holds the map plus one block's
//!   converted weights;
//! - refusals come from the readers (exit 2, nothing written), naming the file;
//! - [`Weights::facts`] is the manifest's `meta.checkpoint` and [`Weights::summary`] the one
//!   stderr line saying what was read.

use super::hf;
use super::residency::MapHints;
pub use super::tensors::{Backing, Weights};
use super::tensors::{borrowed_tensor, map_file, safetensors_of, tensor_count};
use crate::checkpoint::{self, Selection, Shapes};
use crate::model::Architecture;
use anyhow::{Result, anyhow, bail};
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Tensor;

/// Which reader takes a `.pth` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// [`crate::checkpoint`]: containers, prefixes, an allow-list, zero-copy (the default).
    Dinodiff,
    /// `torch::pickle_load` (tch's `loadz_multi`): a plain dict of tensors only, copied.
    Libtorch,
}

/// What kind of checkpoint a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    Pth(PathBuf),
    /// A safetensors file; `config` is a `config.json` beside it, if any.
    Safetensors {
        file: PathBuf,
        config: Option<PathBuf>,
    },
    /// A transformers directory (`save_pretrained`).
    Transformers {
        file: PathBuf,
        config: PathBuf,
    },
}

impl Located {
    /// The file to hash (and map).
    pub fn file(&self) -> &Path {
        match self {
            Located::Pth(f) => f,
            Located::Safetensors { file, .. } | Located::Transformers { file, .. } => file,
        }
    }
}

/// Decides the format (see the module contract); reads at most the first 9 bytes.
pub fn locate(path: &Path) -> Result<Located> {
    if path.is_dir() {
        let file = path.join("model.safetensors");
        let config = path.join("config.json");
        for needed in [&file, &config] {
            if !needed.is_file() {
                bail!(
                    "{} is a directory, read as a Hugging Face transformers checkpoint (what \
                     save_pretrained writes), but it has no {}",
                    path.display(),
                    needed
                        .file_name()
                        .map_or(Cow::Borrowed(""), |n| n.to_string_lossy())
                );
            }
        }
        return Ok(Located::Transformers { file, config });
    }
    if starts_like_safetensors(path) {
        let config = path.with_file_name("config.json");
        return Ok(Located::Safetensors {
            file: path.to_path_buf(),
            config: config.is_file().then_some(config),
        });
    }
    Ok(Located::Pth(path.to_path_buf()))
}

/// A safetensors file starts with the little-endian u64 length of its JSON header, then `{`.
fn starts_like_safetensors(path: &Path) -> bool {
    let mut head = [0u8; 9];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let size = f.metadata().map_or(0, |m| m.len());
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
    head[8] == b'{' && n >= 2 && n <= size.saturating_sub(8)
}

/// Reads the weights `located` names.
pub fn load(located: &Located, key: Option<&str>, loader: Loader) -> Result<Weights> {
    if loader == Loader::Libtorch && !matches!(located, Located::Pth(_)) {
        bail!("--loader libtorch reads .pth files only; safetensors files are read by dinodiff");
    }
    if key.is_some() && (loader == Loader::Libtorch || !matches!(located, Located::Pth(_))) {
        bail!("--key chooses a state dict inside a .pth file read by dinodiff's loader");
    }
    match located {
        Located::Pth(path) if loader == Loader::Libtorch => from_libtorch(path),
        Located::Pth(path) => from_pth(path, key),
        Located::Safetensors { file, config } => from_safetensors(file, config.as_deref()),
        Located::Transformers { file, config } => {
            let map = map_file(file)?;
            hf::from_transformers(file, config, map)
        }
    }
}

/// The key set is Meta's DINOv3 (the reader's predicate).
fn is_meta(shapes: &Shapes) -> bool {
    Architecture::infer(shapes).is_ok()
}

fn from_pth(path: &Path, key: Option<&str>) -> Result<Weights> {
    let sd = checkpoint::open(
        path,
        &Selection {
            key,
            accept: &is_meta,
        },
    )?;
    let mut tensors = Vec::with_capacity(sd.len());
    for v in sd.tensors() {
        // SAFETY: the bytes borrow `sd`'s read-only map, which `backing` below keeps alive as
        // long as the model (the contract of `borrowed_tensor`).
        let t = unsafe { borrowed_tensor(v.name, v.dtype(), v.shape(), v.contiguous_le_bytes()) }?;
        tensors.push((v.name.to_string(), t));
    }
    let p = &sd.provenance;
    let summary = format!(
        "checkpoint: {} {}{}, {}{}",
        p.container,
        if p.key.is_empty() {
            "at the root".to_string()
        } else {
            format!("under {:?}", p.key)
        },
        if p.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix {:?} stripped", p.prefix)
        },
        tensor_count(p.tensors, &p.dtypes),
        if p.left_out > 0 {
            format!(" ({} other tensors left out)", p.left_out)
        } else {
            String::new()
        }
    );
    let mut facts = serde_json::to_value(p)?;
    if let Some(obj) = facts.as_object_mut() {
        obj.insert("format".into(), json!("torch.save"));
        obj.insert("loader".into(), json!("dinodiff"));
    }
    Ok(Weights {
        tensors,
        file: path.to_path_buf(),
        facts,
        summary,
        hints: Some(MapHints::new(sd.mapped())),
        backing: Some(Arc::new(sd)),
    })
}

/// libtorch's own loader (the documented fallback and the benchmark's baseline).
fn from_libtorch(path: &Path) -> Result<Weights> {
    crate::capture::pth::sniff(path)?;
    let tensors = Tensor::loadz_multi(path).map_err(|e| {
        // libtorch's message carries a C++ backtrace after the first line.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or("").trim().to_string();
        anyhow!(
            "libtorch cannot load the checkpoint {}: {first}. A Meta checkpoint is a \
             torch.save'd state dict of tensors",
            path.display()
        )
    })?;
    Ok(Weights {
        summary: format!("checkpoint: read by libtorch, {} tensors", tensors.len()),
        facts: json!({"format": "torch.save", "loader": "libtorch", "tensors": tensors.len()}),
        tensors,
        file: path.to_path_buf(),
        backing: None,
        hints: None,
    })
}

fn from_safetensors(path: &Path, config: Option<&Path>) -> Result<Weights> {
    let map = map_file(path)?;
    let st = safetensors_of(path, &map)?;
    let shapes: Shapes = st
        .iter()
        .map(|(k, v)| (k.to_string(), v.shape().to_vec()))
        .collect();
    if let Err(why) = Architecture::infer(&shapes) {
        if let Some(config) = config {
            drop(st);
            return hf::from_transformers(path, config, map);
        }
        bail!(
            "cannot tell which DINOv3 {} holds: {why}. A safetensors checkpoint needs Meta's key \
             names (cls_token, blocks.0.attn.qkv.weight, ...), or transformers' with the \
             config.json that save_pretrained writes beside it",
            path.display()
        );
    }
    let mut tensors = Vec::with_capacity(shapes.len());
    let mut dtypes = BTreeMap::new();
    for (name, v) in st.iter() {
        *dtypes.entry(v.dtype().to_string()).or_insert(0) += 1;
        // SAFETY: `v.data()` borrows `map`, which `backing` below keeps alive as long as the
        // model (the contract of `borrowed_tensor`).
        let t = unsafe { borrowed_tensor(name, v.dtype(), v.shape(), Cow::Borrowed(v.data())) }?;
        tensors.push((name.to_string(), t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let n = tensors.len();
    drop(st);
    Ok(Weights {
        summary: format!("checkpoint: safetensors, {}", tensor_count(n, &dtypes)),
        facts: json!({"format": "safetensors", "tensors": n, "dtypes": dtypes}),
        tensors,
        file: path.to_path_buf(),
        hints: Some(MapHints::new(&map)),
        backing: Some(map),
    })
}
