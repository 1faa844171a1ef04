//! Hugging Face transformers' DINOv3 (`DINOv3ViTModel`, `model_type` `dinov3_vit`, as
//! `save_pretrained` writes it: `model.safetensors` + `config.json`) in Meta's names: how each key
//! Meta's `DinoVisionTransformer` needs is made from the transformers checkpoint.
//!
//! Contract:
//! - [`HfConfig`] reads `config.json` with transformers' defaults for absent fields; [`meta_sources`]
//!   refuses, with the reason, a config Meta's forward cannot run as transformers does (another
//!   activation, LayerNorm eps, a projection without bias, q and v biases that differ);
//! - every key of Meta's model gets one [`Source`]: a transformers tensor as it is, or reshaped
//!   (`mask_token` [1, 1, D] -> [1, D]); the fused `attn.qkv` from the q, k and v projections
//!   concatenated along the rows (Meta's `qkv` order); its bias likewise, with zeros for a k
//!   projection without bias, plus Meta's `bias_mask` (ones, zeros, ones) in that case, so the
//!   architecture is the hub's; `rope_embed.periods` is [`Source::RopePeriods`]: `1 / inv_freq`,
//!   the value transformers' RoPE multiplies by (Meta divides by periods), which the backend
//!   computes with the same kernels transformers uses (`capture/meta/hf.rs`), so that it is
//!   bit-exact;
//! - names: `embeddings.{cls_token, mask_token, register_tokens, patch_embeddings.*}`,
//!   `model.layer.<i>.{norm1, attention.{q,k,v,o}_proj, layer_scale1.lambda1, norm2,
//!   mlp.{up,down,gate}_proj, layer_scale2.lambda1}` (`layer.<i>.…` in files `save_pretrained`
//!   writes: the sources name the keys as the file does), `norm`. A transformers key that no source
//!   uses is an error (nothing is silently dropped); the RoPE `inv_freq` buffer is not saved.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The fields of transformers' `DINOv3ViTConfig` that decide the weights and the forward.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HfConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub rope_theta: f64,
    pub num_channels: usize,
    pub patch_size: usize,
    pub query_bias: bool,
    pub key_bias: bool,
    pub value_bias: bool,
    pub proj_bias: bool,
    pub mlp_bias: bool,
    pub use_gated_mlp: bool,
    pub num_register_tokens: usize,
}

impl Default for HfConfig {
    /// transformers' defaults (`DINOv3ViTConfig()`, ViT-S/16 without registers).
    fn default() -> Self {
        HfConfig {
            model_type: "dinov3_vit".into(),
            hidden_size: 384,
            intermediate_size: 1536,
            num_hidden_layers: 12,
            num_attention_heads: 6,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            rope_theta: 100.0,
            num_channels: 3,
            patch_size: 16,
            query_bias: true,
            key_bias: false,
            value_bias: true,
            proj_bias: true,
            mlp_bias: true,
            use_gated_mlp: false,
            num_register_tokens: 0,
        }
    }
}

/// The LayerNorm eps of Meta's DINOv3 (`capture meta` runs it).
pub const META_LAYER_NORM_EPS: f64 = 1e-5;

/// One piece of a concatenation.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A transformers tensor.
    Tensor(String),
    /// `n` zeros of the pieces' dtype.
    Zeros(usize),
}

/// How one of Meta's keys is made.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The transformers tensor as it is.
    Same(String),
    /// The transformers tensor with another shape (same elements, same order).
    Reshaped(String, Vec<usize>),
    /// Pieces concatenated along the first axis (rows), in order.
    ConcatRows(Vec<Piece>),
    /// Values computed here, f32.
    Values(Vec<f32>),
    /// `1 / inv_freq` with transformers' `inv_freq = 1 / rope_theta ** arange(0, 1, 4 /
    /// head_dim)` in f32: `head_dim / 4` values.
    RopePeriods { rope_theta: f64, head_dim: usize },
}

impl HfConfig {
    pub fn parse(json: &str) -> Result<HfConfig, String> {
        let config: HfConfig =
            serde_json::from_str(json).map_err(|e| format!("not a DINOv3ViTConfig: {e}"))?;
        if config.model_type != "dinov3_vit" {
            return Err(format!(
                "model_type is {:?}, not \"dinov3_vit\" (transformers' DINOv3ViTModel)",
                config.model_type
            ));
        }
        Ok(config)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Why Meta's forward cannot run this model as transformers does, if it cannot.
    fn unsupported(&self) -> Option<String> {
        let activation = if self.use_gated_mlp { "silu" } else { "gelu" };
        if self.hidden_act != activation {
            return Some(format!(
                "hidden_act is {:?}; Meta's DINOv3 uses {activation:?} in its {} (use_gated_mlp = {})",
                self.hidden_act,
                if self.use_gated_mlp { "SwiGLU" } else { "Mlp" },
                self.use_gated_mlp
            ));
        }
        if self.layer_norm_eps != META_LAYER_NORM_EPS {
            return Some(format!(
                "layer_norm_eps is {:e}; Meta's DINOv3 LayerNorms use {META_LAYER_NORM_EPS:e}",
                self.layer_norm_eps
            ));
        }
        if !self.proj_bias || !self.mlp_bias {
            return Some(
                "proj_bias and mlp_bias must be true: Meta's projections have biases".into(),
            );
        }
        if self.query_bias != self.value_bias || (self.key_bias && !self.query_bias) {
            return Some(format!(
                "query_bias = {}, key_bias = {}, value_bias = {}: Meta's fused qkv has a bias for \
                 all three (K masked to zero) or for none",
                self.query_bias, self.key_bias, self.value_bias
            ));
        }
        let hd = self.head_dim();
        if hd == 0 || !hd.is_multiple_of(4) || hd * self.num_attention_heads != self.hidden_size {
            return Some(format!(
                "hidden_size {} does not split into {} heads of a multiple of 4",
                self.hidden_size, self.num_attention_heads
            ));
        }
        None
    }
}

/// Meta's key -> how it is made from the transformers checkpoint whose keys and shapes are `hf`.
pub fn meta_sources(
    config: &HfConfig,
    hf: &BTreeMap<String, Vec<usize>>,
) -> Result<BTreeMap<String, Source>, String> {
    if let Some(why) = config.unsupported() {
        return Err(why);
    }
    let mut out = BTreeMap::new();
    stem_sources(config, &mut out);
    for i in 0..config.num_hidden_layers {
        block_sources(config, hf, i, &mut out)?;
    }
    for p in ["weight", "bias"] {
        out.insert(format!("norm.{p}"), Source::Same(format!("norm.{p}")));
    }
    check_used(hf, &out)?;
    Ok(out)
}

fn stem_sources(config: &HfConfig, out: &mut BTreeMap<String, Source>) {
    let d = config.hidden_size;
    let same = |k: &str| Source::Same(format!("embeddings.{k}"));
    out.insert("cls_token".into(), same("cls_token"));
    out.insert(
        "mask_token".into(),
        Source::Reshaped("embeddings.mask_token".into(), vec![1, d]),
    );
    if config.num_register_tokens > 0 {
        out.insert("storage_tokens".into(), same("register_tokens"));
    }
    out.insert(
        "patch_embed.proj.weight".into(),
        same("patch_embeddings.weight"),
    );
    out.insert(
        "patch_embed.proj.bias".into(),
        same("patch_embeddings.bias"),
    );
    out.insert(
        "rope_embed.periods".into(),
        Source::RopePeriods {
            rope_theta: config.rope_theta,
            head_dim: config.head_dim(),
        },
    );
}

/// How the file names its layers: `DINOv3ViTModel.state_dict()` says `model.layer.<i>.`, while
/// `save_pretrained` (transformers 5 reverts its key renaming on save) writes `layer.<i>.`.
fn layer_prefix(hf: &BTreeMap<String, Vec<usize>>) -> &'static str {
    if hf.keys().any(|k| k.starts_with("layer.")) {
        "layer."
    } else {
        "model.layer."
    }
}

fn block_sources(
    config: &HfConfig,
    hf: &BTreeMap<String, Vec<usize>>,
    i: usize,
    out: &mut BTreeMap<String, Source>,
) -> Result<(), String> {
    let (hf_b, meta_b) = (format!("{}{i}", layer_prefix(hf)), format!("blocks.{i}"));
    let mut put = |meta: &str, source: Source| out.insert(format!("{meta_b}.{meta}"), source);
    let same = |hf_key: &str| Source::Same(format!("{hf_b}.{hf_key}"));
    for p in ["weight", "bias"] {
        put(&format!("norm1.{p}"), same(&format!("norm1.{p}")));
        put(&format!("norm2.{p}"), same(&format!("norm2.{p}")));
        put(
            &format!("attn.proj.{p}"),
            same(&format!("attention.o_proj.{p}")),
        );
    }
    let attn = |x: &str, p: &str| Piece::Tensor(format!("{hf_b}.attention.{x}_proj.{p}"));
    put(
        "attn.qkv.weight",
        Source::ConcatRows(vec![
            attn("q", "weight"),
            attn("k", "weight"),
            attn("v", "weight"),
        ]),
    );
    if config.query_bias {
        let d = config.hidden_size;
        let k_bias = if config.key_bias {
            attn("k", "bias")
        } else {
            Piece::Zeros(d)
        };
        put(
            "attn.qkv.bias",
            Source::ConcatRows(vec![attn("q", "bias"), k_bias, attn("v", "bias")]),
        );
        if !config.key_bias {
            let mask: Vec<f32> = [1.0, 0.0, 1.0].iter().flat_map(|&m| vec![m; d]).collect();
            put("attn.qkv.bias_mask", Source::Values(mask));
        }
    }
    put("ls1.gamma", same("layer_scale1.lambda1"));
    put("ls2.gamma", same("layer_scale2.lambda1"));
    let mlp = |hf_name: &str, meta: &str, put: &mut dyn FnMut(&str, Source) -> Option<Source>| {
        for p in ["weight", "bias"] {
            put(
                &format!("mlp.{meta}.{p}"),
                same(&format!("mlp.{hf_name}.{p}")),
            );
        }
    };
    if config.use_gated_mlp {
        // Meta's SwiGLU: w3(silu(w1 x) * w2 x); transformers': down(act(gate x) * up x).
        mlp("gate_proj", "w1", &mut put);
        mlp("up_proj", "w2", &mut put);
        mlp("down_proj", "w3", &mut put);
    } else {
        mlp("up_proj", "fc1", &mut put);
        mlp("down_proj", "fc2", &mut put);
    }
    if !hf.contains_key(&format!("{hf_b}.norm1.weight")) {
        return Err(format!(
            "it has no `{hf_b}.norm1.weight`, but config.json says num_hidden_layers = {}",
            config.num_hidden_layers
        ));
    }
    Ok(())
}

/// Every transformers key a source names exists, and every transformers key is used.
fn check_used(
    hf: &BTreeMap<String, Vec<usize>>,
    out: &BTreeMap<String, Source>,
) -> Result<(), String> {
    let mut used = BTreeSet::new();
    for source in out.values() {
        match source {
            Source::Same(k) | Source::Reshaped(k, _) => _ = used.insert(k.as_str()),
            Source::ConcatRows(pieces) => {
                for p in pieces {
                    if let Piece::Tensor(k) = p {
                        used.insert(k.as_str());
                    }
                }
            }
            Source::Values(_) | Source::RopePeriods { .. } => {}
        }
    }
    let missing: Vec<&str> = used
        .iter()
        .copied()
        .filter(|k| !hf.contains_key(*k))
        .collect();
    if let Some(first) = missing.first() {
        return Err(format!(
            "it has no `{first}`{} that config.json implies",
            more(missing.len())
        ));
    }
    let unused: Vec<&String> = hf.keys().filter(|k| !used.contains(k.as_str())).collect();
    if let Some(first) = unused.first() {
        return Err(format!(
            "it holds `{first}`{}, which Meta's DINOv3 has no place for (a head or adapter?)",
            more(unused.len())
        ));
    }
    Ok(())
}

/// The shape each of Meta's keys gets (for [`super::Architecture::infer`] and the strict check).
pub fn meta_shapes(
    sources: &BTreeMap<String, Source>,
    hf: &BTreeMap<String, Vec<usize>>,
) -> BTreeMap<String, Vec<usize>> {
    let shape_of = |source: &Source| -> Vec<usize> {
        match source {
            Source::Same(k) => hf.get(k).cloned().unwrap_or_default(),
            Source::Reshaped(_, shape) => shape.clone(),
            Source::Values(v) => vec![v.len()],
            Source::RopePeriods { head_dim, .. } => vec![head_dim / 4],
            Source::ConcatRows(pieces) => {
                let mut shape: Vec<usize> = Vec::new();
                for p in pieces {
                    let piece = match p {
                        Piece::Tensor(k) => hf.get(k).cloned().unwrap_or_default(),
                        Piece::Zeros(n) => vec![*n],
                    };
                    match shape.first_mut() {
                        None => shape = piece,
                        Some(rows) => *rows += piece.first().copied().unwrap_or(0),
                    }
                }
                shape
            }
        }
    };
    sources
        .iter()
        .map(|(k, s)| (k.clone(), shape_of(s)))
        .collect()
}

fn more(n: usize) -> String {
    match n {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    }
}

#[cfg(test)]
#[path = "transformers_tests.rs"]
mod tests;
