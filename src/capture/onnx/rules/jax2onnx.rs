//! Stage rules for jax2onnx exports of the Equinox DINOv3 example
//! (`jax2onnx/plugins/examples/eqx/dino.py`), read from the call structure of the inlined model:
//! `VisionTransformer > PatchEmbed, Block > MultiHeadAttention, LayerScale, DinoMlp`.
//!
//! Contract: applies when the main graph calls a `VisionTransformer` function. The rules:
//! - `patch_embed`: PatchEmbed's result; `tokens`: the first Block's input; `blocks.i.output`:
//!   the i-th Block's result (blocks numbered in call order from 0);
//! - in Block i: `norm1` / `attn` = MultiHeadAttention's input / result, `ls1` / `ls2` = the first
//!   / second LayerScale's result, `norm2` / `mlp` = DinoMlp's input / result, `residual1` = the
//!   block's Add that takes `ls1`, `mlp.hidden` = the Gelu inside DinoMlp;
//! - in MultiHeadAttention: `attn.q` / `attn.k` / `attn.v` = the operands of the `Attention`
//!   node (q and k after RoPE, [B, heads, N, hd]), `attn.sdpa` = the Reshape of its transposed
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

use super::{InlinedGraph, Out, Reshape, StageRules};
use crate::model::{BlockStage, HeadStage, Stage, StemStage};
use crate::onnx::inline::{Call, ValueOrigin};
use std::collections::HashMap;

const RULE: &str = "jax2onnx Equinox DINOv3";

pub struct Jax2Onnx;

impl StageRules for Jax2Onnx {
    fn name(&self) -> &'static str {
        RULE
    }

    fn applies(&self, graph: InlinedGraph) -> bool {
        graph
            .calls
            .iter()
            .any(|c| parent(&c.path).is_empty() && c.function == "VisionTransformer")
    }

    fn recognize(&self, graph: InlinedGraph, out: &mut Out) {
        let index = Index::new(graph.values, graph.calls);
        for vit in index.calls("", "VisionTransformer") {
            vision_transformer(&index, vit, out);
        }
    }
}

/// The call path of the call a path is inside (`""` at the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// The values and calls of the inlined graph by the call they are directly inside.
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
            calls_under
                .entry(parent(&c.path).to_string())
                .or_default()
                .push(c);
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

fn vision_transformer(index: &Index, vit: &Call, out: &mut Out) {
    if let Some(pe) = index.calls(&vit.path, "PatchEmbed").first() {
        out.put(
            pe.outputs.first(),
            Stage::Stem(StemStage::PatchEmbed),
            Reshape::AsIs,
            RULE,
        );
    }
    let blocks = index.calls(&vit.path, "Block");
    if let Some(first) = blocks.first() {
        out.put(
            first.inputs.first(),
            Stage::Stem(StemStage::Tokens),
            Reshape::AsIs,
            RULE,
        );
    }
    for (i, block) in blocks.iter().enumerate() {
        self::block(index, i, block, out);
    }
    head(
        index,
        vit,
        blocks.last().and_then(|b| b.outputs.first()),
        out,
    );
}

fn block(index: &Index, i: usize, block: &Call, out: &mut Out) {
    let stage = |s: BlockStage| Stage::Block(i, s);
    let p = &block.path;
    let mha = index.calls(p, "MultiHeadAttention");
    if let Some(mha) = mha.first() {
        out.put(
            mha.inputs.first(),
            stage(BlockStage::Norm1),
            Reshape::AsIs,
            RULE,
        );
        attention_internals(index, mha, &stage, out);
        out.put(
            mha.outputs.first(),
            stage(BlockStage::Attn),
            Reshape::AsIs,
            RULE,
        );
    }
    let scales = index.calls(p, "LayerScale");
    let ls1 = scales.first().and_then(|c| c.outputs.first());
    out.put(ls1, stage(BlockStage::Ls1), Reshape::AsIs, RULE);
    if let Some(ls1) = ls1 {
        let residual = index
            .values(p)
            .iter()
            .find(|v| v.op_type == "Add" && v.inputs.contains(ls1));
        out.put(
            residual.map(|v| &v.name),
            stage(BlockStage::Residual1),
            Reshape::AsIs,
            RULE,
        );
    }
    if let Some(mlp) = index.calls(p, "DinoMlp").first() {
        out.put(
            mlp.inputs.first(),
            stage(BlockStage::Norm2),
            Reshape::AsIs,
            RULE,
        );
        let gelu = index.values(&mlp.path).iter().find(|v| v.op_type == "Gelu");
        out.put(
            gelu.map(|v| &v.name),
            stage(BlockStage::MlpHidden),
            Reshape::AsIs,
            RULE,
        );
        out.put(
            mlp.outputs.first(),
            stage(BlockStage::Mlp),
            Reshape::AsIs,
            RULE,
        );
    }
    out.put(
        scales.get(1).and_then(|c| c.outputs.first()),
        stage(BlockStage::Ls2),
        Reshape::AsIs,
        RULE,
    );
    out.put(
        block.outputs.first(),
        stage(BlockStage::Output),
        Reshape::AsIs,
        RULE,
    );
}

/// The head: the Slices of the final norm, after the last block (whose result is `last`).
fn head(index: &Index, vit: &Call, last: Option<&String>, out: &mut Out) {
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
        out.put(norm, Stage::Head(HeadStage::Norm), Reshape::AsIs, RULE);
        let of_norm: Vec<&&&ValueOrigin> =
            slices.iter().filter(|v| v.inputs.first() == norm).collect();
        if of_norm.len() == 2 {
            out.put(
                Some(&of_norm[0].name),
                Stage::Head(HeadStage::Cls),
                Reshape::Squeeze(1),
                RULE,
            );
            out.put(
                Some(&of_norm[1].name),
                Stage::Head(HeadStage::Patches),
                Reshape::AsIs,
                RULE,
            );
        }
    }
}

fn attention_internals(
    index: &Index,
    mha: &Call,
    stage: &dyn Fn(BlockStage) -> Stage,
    out: &mut Out,
) {
    let scope = index.values(&mha.path);
    // q, k, v projections: the Gemms fed by the input's flattened copies, in order.
    let gemms: Vec<&&ValueOrigin> = scope.iter().filter(|v| v.op_type == "Gemm").collect();
    if gemms.len() >= 3 {
        for (k, g) in gemms.iter().take(3).enumerate() {
            out.put_part(
                Some(&g.name),
                stage(BlockStage::AttnQkv),
                (k, 3),
                Reshape::PrependBatch,
                RULE,
            );
        }
    }
    // Only the first block's RoPE tables are taken (every block uses the same tables).
    if let Stage::Block(0, _) = stage(BlockStage::Norm1) {
        rope_tables(scope, out);
    }
    let Some(att) = scope.iter().find(|v| v.op_type == "Attention") else {
        return;
    };
    for (k, s) in [BlockStage::AttnQ, BlockStage::AttnK, BlockStage::AttnV]
        .iter()
        .enumerate()
    {
        out.put(att.inputs.get(k), stage(*s), Reshape::AsIs, RULE);
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
            stage(BlockStage::AttnSdpa),
            Reshape::PrependBatch,
            RULE,
        );
    }
}

/// RoPE tables: the constant operands of the first `x * cos` and `rotated * sin` Muls of an
/// attention's values (the rotary step of q).
fn rope_tables(scope: &[&ValueOrigin], out: &mut Out) {
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
            Stage::Stem(StemStage::RopeCos),
            Reshape::PatchRows,
            RULE,
        );
        out.put(
            Some(&sin.to_string()),
            Stage::Stem(StemStage::RopeSin),
            Reshape::PatchRows,
            RULE,
        );
    }
}
