//! A Hugging Face transformers DINOv3 checkpoint (`DINOv3ViTModel.save_pretrained`:
//! `model.safetensors` + `config.json`) as Meta's weights, through [`crate::model::transformers`].
//!
//! Contract:
//! - every Meta key is made from its [`Source`]: a transformers tensor as it is or reshaped (a
//!   zero-copy view of the map), q/k/v rows concatenated into `qkv` (a new tensor, zeros for a k
//!   projection without bias, in the pieces' dtype), `bias_mask` from its values, and
//!   `rope_embed.periods` computed with libtorch exactly as transformers computes its RoPE
//!   (`1 / (1 / rope_theta ** arange(0, 1, 4 / head_dim))` in f32), so that Meta's division by
//!   the periods uses the reciprocal of transformers' own `inv_freq`;
//! - the keys are the file's own (`layer.<i>.` as `save_pretrained` writes them, or
//!   `model.layer.<i>.`; [`meta_sources`] reads either), and so are the names in the manifest's
//!   mapping and in the errors;
//! - the mapping and the config facts are recorded in the manifest (`format: "transformers"`);
//!   a config Meta's forward cannot run, a missing or unused key is refused with the reason.

use super::tensors::{Backing, Weights, borrowed_tensor, safetensors_of, tensor_count};
use crate::model::transformers::{HfConfig, Piece, Source, meta_sources};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Reads `file` (already mapped as `map`) with `config` as transformers' DINOv3ViTModel.
pub fn from_transformers(file: &Path, config: &Path, map: Arc<memmap2::Mmap>) -> Result<Weights> {
    let shown = file.display();
    let text = std::fs::read_to_string(config).map_err(|e| {
        anyhow!(
            "cannot read {}: {}",
            config.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let cfg = HfConfig::parse(&text).map_err(|e| anyhow!("{}: {e}", config.display()))?;
    let st = safetensors_of(file, &map)?;
    let mut hf: HashMap<String, Tensor> = HashMap::new();
    let mut dtypes = BTreeMap::new();
    for (name, v) in st.iter() {
        *dtypes.entry(v.dtype().to_string()).or_insert(0) += 1;
        // SAFETY: `v.data()` borrows `map`, which the returned `backing` keeps alive as long as
        // the model (the contract of `borrowed_tensor`).
        let t = unsafe { borrowed_tensor(name, v.dtype(), v.shape(), Cow::Borrowed(v.data())) }?;
        hf.insert(name.to_string(), t);
    }
    drop(st);
    let hf_shapes = hf
        .iter()
        .map(|(k, t)| (k.clone(), t.size().iter().map(|&d| d as usize).collect()))
        .collect();
    let sources = meta_sources(&cfg, &hf_shapes).map_err(|why| {
        anyhow!("cannot map the transformers DINOv3 checkpoint {shown} onto Meta's: {why}")
    })?;
    let mut tensors = Vec::with_capacity(sources.len());
    let mut mapping = serde_json::Map::new();
    for (key, source) in &sources {
        let t = make(source, &hf).with_context(|| format!("making Meta's {key} from {shown}"))?;
        mapping.insert(key.clone(), json!(describe(key, source)));
        tensors.push((key.clone(), t));
    }
    let summary = format!(
        "checkpoint: transformers DINOv3ViTModel ({} layers, hidden {}, {} registers), {} mapped \
         onto {} of Meta's keys (q/k/v fused into qkv)",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_register_tokens,
        tensor_count(hf.len(), &dtypes),
        tensors.len()
    );
    let facts = json!({
        "format": "transformers",
        "config": config.display().to_string(),
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "num_register_tokens": cfg.num_register_tokens,
        "patch_size": cfg.patch_size,
        "rope_theta": cfg.rope_theta,
        "use_gated_mlp": cfg.use_gated_mlp,
        "key_bias": cfg.key_bias,
        "tensors": hf.len(),
        "dtypes": dtypes,
        "mapping": mapping,
    });
    let hints = Some(super::residency::MapHints::new(&map));
    let backing: Backing = Some(map);
    Ok(Weights {
        tensors,
        file: file.to_path_buf(),
        facts,
        summary,
        backing,
        hints,
    })
}

fn get<'a>(hf: &'a HashMap<String, Tensor>, k: &str) -> Result<&'a Tensor> {
    hf.get(k)
        .ok_or_else(|| anyhow!("it has no `{k}` (the mapping should have caught this)"))
}

/// One of Meta's tensors from its source.
fn make(source: &Source, hf: &HashMap<String, Tensor>) -> Result<Tensor> {
    Ok(match source {
        Source::Same(k) => get(hf, k)?.shallow_clone(),
        Source::Reshaped(k, shape) => {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            get(hf, k)?.f_reshape(&shape)?
        }
        Source::ConcatRows(pieces) => {
            let kind = pieces
                .iter()
                .find_map(|p| match p {
                    Piece::Tensor(k) => hf.get(k).map(Tensor::kind),
                    Piece::Zeros(_) => None,
                })
                .unwrap_or(Kind::Float);
            let parts = pieces
                .iter()
                .map(|p| match p {
                    Piece::Tensor(k) => Ok(get(hf, k)?.shallow_clone()),
                    Piece::Zeros(n) => Ok(Tensor::f_zeros([*n as i64], (kind, Device::Cpu))?),
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::f_cat(&parts, 0)?
        }
        Source::RopePeriods {
            rope_theta,
            head_dim,
        } => transformers_periods(*rope_theta, *head_dim)?,
        Source::Values(v) => Tensor::f_from_slice(v)?,
    })
}

/// `1 / inv_freq` with transformers' `inv_freq = 1 / rope_theta ** arange(0, 1, 4 / head_dim)`
/// in f32, by the same libtorch kernels (Python's `1 / t` is `t.reciprocal()`).
fn transformers_periods(rope_theta: f64, head_dim: usize) -> Result<Tensor> {
    if head_dim == 0 {
        bail!("a head dimension of 0");
    }
    let steps =
        Tensor::f_arange_start_step(0.0, 1.0, 4.0 / head_dim as f64, (Kind::Float, Device::Cpu))?;
    let inv_freq = Tensor::f_pow_scalar(rope_theta, &steps)?.f_reciprocal()?;
    Ok(inv_freq.f_reciprocal()?)
}

/// The manifest's words for how a Meta key was made.
fn describe(key: &str, source: &Source) -> String {
    match source {
        Source::Same(k) => k.clone(),
        Source::Reshaped(k, shape) => format!("{k} reshaped to {shape:?}"),
        Source::ConcatRows(pieces) => {
            let parts: Vec<String> = pieces
                .iter()
                .map(|p| match p {
                    Piece::Tensor(k) => k.clone(),
                    Piece::Zeros(n) => format!("zeros({n})"),
                })
                .collect();
            format!("rows of {}", parts.join(" + "))
        }
        Source::RopePeriods { .. } => {
            "1 / inv_freq, inv_freq = 1 / rope_theta ** arange(0, 1, 4 / head_dim) in f32".into()
        }
        Source::Values(v) if key.ends_with("bias_mask") => {
            format!("ones, zeros, ones ({} values: Meta's K bias mask)", v.len())
        }
        Source::Values(v) => format!("{} computed values", v.len()),
    }
}
