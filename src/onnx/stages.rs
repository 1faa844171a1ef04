//! Recognition of canonical DINOv3 stages (docs/stages.md) among the values of an inlined ONNX
//! model, from the structure of its calls rather than from value names (exporters name values
//! generically: `v_3`, `add_out_0`).
//!
//! Contract: [`recognize`] maps value names to stages; a value is mapped at most once and a stage
//! is given to at most one value; anything not recognized keeps its name. Rules for jax2onnx
//! exports of the Equinox DINOv3 example (`jax2onnx/plugins/examples/eqx/dino.py`), whose functions
//! are `VisionTransformer > PatchEmbed, Block > MultiHeadAttention, LayerScale, DinoMlp`:
//! - `patch_embed`: PatchEmbed's result; `tokens`: the first Block's input; `blocks.i.output`:
//!   the i-th Block's result (blocks numbered in call order from 0);
//! - in Block i: `norm1` / `attn` = MultiHeadAttention's input / result, `ls1` / `ls2` = the first
//!   / second LayerScale's result, `norm2` / `mlp` = DinoMlp's input / result, `residual1` = the
//!   block's Add that takes `ls1`, `mlp.hidden` = the Gelu inside DinoMlp;
//! - in MultiHeadAttention: `attn.q` / `attn.k` / `attn.v` = the operands of the `Attention`
//!   node (q and k after RoPE, [B, H, N, hd]), `attn.sdpa` = the Reshape of its transposed
//!   result ([B·N, D], written as [1, B·N, D]: captures run batch 1); `attn.qkv` = the first
//!   three Gemms (the q, k, v projections, [N, D] each) concatenated along the last axis
//!   ([1, N, 3D]; Equinox has no fused projection, so the stage is assembled from its pieces,
//!   which keep their own names); `rope.cos` / `rope.sin` = the constant operands of the first
//!   two Muls of the first block's attention (`q * cos`, `rotate(q) * sin`), [1, N, 1, hd]
//!   tables over all tokens, written as their last hw rows [hw, hd] (Meta's layout);
//! - `norm` = the value the head's Slices take after the last block; `cls` = the first Slice
//!   ([B, 1, D], written as [B, D]), `patches` = the second.
//!
//! `storage` and `pooled` are not values of these exports (the model drops the storage tokens
//! from its output and does not pool): the capture derives them from `norm`
//! ([`crate::capture::head`]).

use super::inline::{Call, ValueOrigin};
use std::collections::HashMap;

/// How a recognized value's shape is written (its bytes never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshape {
    AsIs,
    /// Rank 2 [B·N, D] -> [1, B·N, D].
    PrependBatch,
    /// Drop a size-1 axis.
    Squeeze(usize),
    /// A per-token table over all N tokens ([1, N, 1, hd] or [N, hd]): its last hw rows, as
    /// [hw, hd] (the bytes of the prefix tokens are dropped; hw = the patch grid's size).
    PatchRows,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognized {
    pub stage: String,
    pub reshape: Reshape,
    /// Which rule matched (recorded in the manifest).
    pub rule: &'static str,
    /// `Some((k, n))`: the value is the k-th of n pieces that, concatenated along the last axis,
    /// make the stage (Equinox's separate q, k, v projections make `attn.qkv`); the value keeps
    /// its own name and the stage is written once all n pieces are captured.
    pub part: Option<(usize, usize)>,
}

struct Index<'a> {
    by_scope: HashMap<String, Vec<&'a ValueOrigin>>,
    calls_under: HashMap<String, Vec<&'a Call>>,
}

impl<'a> Index<'a> {
    fn new(values: &'a [ValueOrigin], calls: &'a [Call]) -> Index<'a> {
        let mut by_scope: HashMap<String, Vec<&ValueOrigin>> = HashMap::new();
        for v in values {
            by_scope.entry(v.call_path_string()).or_default().push(v);
        }
        let mut calls_under: HashMap<String, Vec<&Call>> = HashMap::new();
        for c in calls {
            let parent = c.path.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            calls_under.entry(parent).or_default().push(c);
        }
        Index {
            by_scope,
            calls_under,
        }
    }

    fn calls(&self, scope: &str, function: &str) -> Vec<&'a Call> {
        self.calls_under
            .get(scope)
            .map(|cs| {
                cs.iter()
                    .copied()
                    .filter(|c| c.function == function)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn values(&self, scope: &str) -> &[&'a ValueOrigin] {
        self.by_scope.get(scope).map_or(&[], |v| v.as_slice())
    }
}

pub(crate) struct Out {
    map: HashMap<String, Recognized>,
    taken: std::collections::HashSet<String>,
}

impl Out {
    pub(crate) fn put(
        &mut self,
        value: Option<&String>,
        stage: String,
        reshape: Reshape,
        rule: &'static str,
    ) {
        let Some(value) = value else { return };
        if value.is_empty() || self.map.contains_key(value) || !self.taken.insert(stage.clone()) {
            return;
        }
        self.map.insert(
            value.clone(),
            Recognized {
                stage,
                reshape,
                rule,
                part: None,
            },
        );
    }

    fn put_part(
        &mut self,
        value: Option<&String>,
        stage: String,
        part: (usize, usize),
        reshape: Reshape,
        rule: &'static str,
    ) {
        let Some(value) = value else { return };
        if value.is_empty()
            || self.map.contains_key(value)
            || !self.taken.insert(format!("{stage}#{}", part.0))
        {
            return;
        }
        self.map.insert(
            value.clone(),
            Recognized {
                stage,
                reshape,
                rule,
                part: Some(part),
            },
        );
    }
}

/// Value name -> recognized stage.
pub fn recognize(values: &[ValueOrigin], calls: &[Call]) -> HashMap<String, Recognized> {
    let index = Index::new(values, calls);
    let mut out = Out {
        map: HashMap::new(),
        taken: Default::default(),
    };
    for vit in index.calls("", "VisionTransformer") {
        jax2onnx_vit(&index, vit, &mut out);
    }
    if out.map.is_empty() {
        super::torch_stages::recognize(values, &mut out);
    }
    out.map
}

fn jax2onnx_vit(index: &Index, vit: &Call, out: &mut Out) {
    const RULE: &str = "jax2onnx Equinox DINOv3";
    if let Some(pe) = index.calls(&vit.path, "PatchEmbed").first() {
        out.put(
            pe.outputs.first(),
            "patch_embed".into(),
            Reshape::AsIs,
            RULE,
        );
    }
    let blocks = index.calls(&vit.path, "Block");
    if let Some(first) = blocks.first() {
        out.put(first.inputs.first(), "tokens".into(), Reshape::AsIs, RULE);
    }
    for (i, block) in blocks.iter().enumerate() {
        let stage = |s: &str| format!("blocks.{i}.{s}");
        let p = &block.path;
        let mha = index.calls(p, "MultiHeadAttention");
        if let Some(mha) = mha.first() {
            out.put(mha.inputs.first(), stage("norm1"), Reshape::AsIs, RULE);
            attention_internals(index, mha, &stage, out);
            out.put(mha.outputs.first(), stage("attn"), Reshape::AsIs, RULE);
        }
        let scales = index.calls(p, "LayerScale");
        let ls1 = scales.first().and_then(|c| c.outputs.first());
        out.put(ls1, stage("ls1"), Reshape::AsIs, RULE);
        if let Some(ls1) = ls1 {
            let residual = index
                .values(p)
                .iter()
                .find(|v| v.op_type == "Add" && v.inputs.contains(ls1));
            out.put(
                residual.map(|v| &v.name),
                stage("residual1"),
                Reshape::AsIs,
                RULE,
            );
        }
        if let Some(mlp) = index.calls(p, "DinoMlp").first() {
            out.put(mlp.inputs.first(), stage("norm2"), Reshape::AsIs, RULE);
            let gelu = index.values(&mlp.path).iter().find(|v| v.op_type == "Gelu");
            out.put(
                gelu.map(|v| &v.name),
                stage("mlp.hidden"),
                Reshape::AsIs,
                RULE,
            );
            out.put(mlp.outputs.first(), stage("mlp"), Reshape::AsIs, RULE);
        }
        out.put(
            scales.get(1).and_then(|c| c.outputs.first()),
            stage("ls2"),
            Reshape::AsIs,
            RULE,
        );
        out.put(block.outputs.first(), stage("output"), Reshape::AsIs, RULE);
    }
    // Head: the Slices of the final norm, after the last block.
    let last = blocks.last().and_then(|b| b.outputs.first());
    let scope = index.values(&vit.path);
    let after_blocks = match last {
        Some(last) => scope
            .iter()
            .position(|v| v.inputs.contains(last))
            .map_or(&scope[scope.len()..], |i| &scope[i..]),
        None => scope,
    };
    let slices: Vec<&&ValueOrigin> = after_blocks
        .iter()
        .filter(|v| v.op_type == "Slice")
        .collect();
    if let Some(first) = slices.first() {
        let norm = first.inputs.first();
        out.put(norm, "norm".into(), Reshape::AsIs, RULE);
        let of_norm: Vec<&&&ValueOrigin> =
            slices.iter().filter(|v| v.inputs.first() == norm).collect();
        if of_norm.len() == 2 {
            out.put(
                Some(&of_norm[0].name),
                "cls".into(),
                Reshape::Squeeze(1),
                RULE,
            );
            out.put(
                Some(&of_norm[1].name),
                "patches".into(),
                Reshape::AsIs,
                RULE,
            );
        }
    }
}

fn attention_internals(index: &Index, mha: &Call, stage: &dyn Fn(&str) -> String, out: &mut Out) {
    const RULE: &str = "jax2onnx Equinox DINOv3";
    let scope = index.values(&mha.path);
    // q, k, v projections: the Gemms fed by the input's flattened copies, in order.
    let gemms: Vec<&&ValueOrigin> = scope.iter().filter(|v| v.op_type == "Gemm").collect();
    if gemms.len() >= 3 {
        for (k, g) in gemms.iter().take(3).enumerate() {
            out.put_part(
                Some(&g.name),
                stage("attn.qkv"),
                (k, 3),
                Reshape::PrependBatch,
                RULE,
            );
        }
    }
    // RoPE tables: the constant operands of the first `x * cos` and `rotated * sin` Muls (the
    // rotary step of q). Only the first block's are taken (every block uses the same tables).
    if stage("").starts_with("blocks.0.") {
        let constants: std::collections::HashSet<&str> = scope
            .iter()
            .filter(|v| v.op_type == "Constant")
            .map(|v| v.name.as_str())
            .collect();
        let muls: Vec<&str> = scope
            .iter()
            .filter(|v| v.op_type == "Mul")
            .filter_map(|v| v.inputs.iter().find(|i| constants.contains(i.as_str())))
            .map(String::as_str)
            .take(2)
            .collect();
        if let [cos, sin] = muls[..] {
            out.put(
                Some(&cos.to_string()),
                "rope.cos".into(),
                Reshape::PatchRows,
                RULE,
            );
            out.put(
                Some(&sin.to_string()),
                "rope.sin".into(),
                Reshape::PatchRows,
                RULE,
            );
        }
    }
    let Some(att) = scope.iter().find(|v| v.op_type == "Attention") else {
        return;
    };
    for (k, s) in ["attn.q", "attn.k", "attn.v"].iter().enumerate() {
        out.put(att.inputs.get(k), stage(s), Reshape::AsIs, RULE);
    }
    let transposed = scope
        .iter()
        .find(|v| v.op_type == "Transpose" && v.inputs.first() == Some(&att.name));
    if let Some(t) = transposed {
        let merged = scope
            .iter()
            .find(|v| v.op_type == "Reshape" && v.inputs.first() == Some(&t.name));
        out.put(
            merged.map(|v| &v.name),
            stage("attn.sdpa"),
            Reshape::PrependBatch,
            RULE,
        );
    }
}

/// The shape a recognized value is written with.
pub fn reshaped(shape: &[usize], r: Reshape) -> Vec<usize> {
    match r {
        Reshape::AsIs => shape.to_vec(),
        Reshape::PrependBatch if shape.len() == 2 => vec![1, shape[0], shape[1]],
        Reshape::PrependBatch => shape.to_vec(),
        Reshape::Squeeze(axis) if shape.get(axis) == Some(&1) => {
            let mut s = shape.to_vec();
            s.remove(axis);
            s
        }
        Reshape::Squeeze(_) => shape.to_vec(),
        // The rows are cut by the caller, who knows hw ([`patch_rows`]).
        Reshape::PatchRows => shape.to_vec(),
    }
}

/// The last `hw` rows of a per-token table ([1, N, 1, hd] or [N, hd], `element` bytes per
/// value), as ([hw, hd], bytes); `None` when the shape is not such a table.
pub fn patch_rows(
    shape: &[usize],
    bytes: &[u8],
    element: usize,
    hw: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let (n, hd) = match shape {
        [1, n, 1, hd] | [n, hd] => (*n, *hd),
        _ => return None,
    };
    if hw > n || bytes.len() != n * hd * element {
        return None;
    }
    Some((vec![hw, hd], bytes[(n - hw) * hd * element..].to_vec()))
}

/// Concatenates pieces ([.., d_k], same leading dims) along the last axis.
pub fn concat_last(
    pieces: &[(Vec<usize>, Vec<u8>)],
    element: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let first = &pieces.first()?.0;
    let lead = &first[..first.len().checked_sub(1)?];
    if pieces
        .iter()
        .any(|(s, _)| s.len() != first.len() || &s[..lead.len()] != lead)
    {
        return None;
    }
    let rows: usize = lead.iter().product();
    let widths: Vec<usize> = pieces
        .iter()
        .map(|(s, _)| s[lead.len()] * element)
        .collect();
    let mut bytes = Vec::with_capacity(rows * widths.iter().sum::<usize>());
    for r in 0..rows {
        for ((_, b), w) in pieces.iter().zip(&widths) {
            bytes.extend_from_slice(&b[r * w..(r + 1) * w]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(widths.iter().sum::<usize>() / element);
    Some((shape, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshapes_only_change_the_shape_they_can() {
        assert_eq!(reshaped(&[201, 384], Reshape::PrependBatch), [1, 201, 384]);
        assert_eq!(
            reshaped(&[1, 201, 384], Reshape::PrependBatch),
            [1, 201, 384]
        );
        assert_eq!(reshaped(&[1, 1, 384], Reshape::Squeeze(1)), [1, 384]);
        assert_eq!(reshaped(&[1, 2, 384], Reshape::Squeeze(1)), [1, 2, 384]);
    }

    #[test]
    fn patch_rows_keep_the_last_rows() {
        let bytes: Vec<u8> = (0..12).collect(); // N = 3 tokens, hd = 4, 1-byte elements
        assert_eq!(
            patch_rows(&[1, 3, 1, 4], &bytes, 1, 2),
            Some((vec![2, 4], (4..12).collect()))
        );
        assert_eq!(
            patch_rows(&[3, 4], &bytes, 1, 3),
            Some((vec![3, 4], bytes.clone()))
        );
        assert_eq!(patch_rows(&[3, 4], &bytes, 1, 4), None);
        assert_eq!(patch_rows(&[1, 3, 2, 2], &bytes, 1, 2), None);
    }

    #[test]
    fn concat_along_the_last_axis() {
        let a = (vec![2, 1], vec![1u8, 2]);
        let b = (vec![2, 2], vec![3u8, 4, 5, 6]);
        assert_eq!(
            concat_last(&[a.clone(), b], 1),
            Some((vec![2, 3], vec![1, 3, 4, 2, 5, 6]))
        );
        assert_eq!(concat_last(&[a, (vec![3, 1], vec![0; 3])], 1), None);
    }
}
