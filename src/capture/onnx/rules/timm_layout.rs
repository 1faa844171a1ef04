//! The stage rules shared by both torch.onnx exporters: timm's DINOv3 layout (timm's Eva port
//! loaded from a Meta checkpoint), read from each node's module path. How a node's module path
//! is written is the exporter's business ([`super::torch_dynamo`], [`super::torch_legacy`]); this
//! module only reads the paths it is given, plus the node-name scopes both exporters may use.
//!
//! Contract: [`recognize`] takes one module path M per value (`""` when it has none). Value names
//! are never used (counters such as `mul_12` run across the graph). The rules, per block i
//! (M = `blocks.i…`):
//! - `norm1` / `norm2`: the LayerNormalization at `blocks.i.norm1` / `.norm2`; `norm`: at `norm`;
//! - `tokens`: block 0's norm1 input; `patch_embed`: the last input of the Concat making `tokens`;
//! - `attn.qkv`: the MatMul at `blocks.i.attn` that takes norm1, or the bias Add after it;
//! - `attn.q/k/v`: the inputs of an `Attention` node at `blocks.i.attn` (opset ≥ 23); else, around
//!   the Softmax there: q and k = the inputs of the MatMul feeding it, v = the second input of the
//!   MatMul after it, each walked back through Muls by a scale (an initializer, a Constant, or
//!   computed from shapes), Reshapes and Transposes;
//! - `attn.sdpa` / `attn`: the input of the MatMul at `blocks.i.attn.proj` / its bias Add;
//! - `ls1` / `ls2`: the Mul at exactly `blocks.i` taking `attn` / `mlp` (timm's LayerScale is a
//!   plain multiply by `gamma_1` / `gamma_2`); `residual1` / `output`: the Add there taking them;
//! - `mlp.hidden` / `mlp`: the input of the MatMul at `blocks.i.mlp.fc2` (`.w3` for SwiGLU) / its
//!   bias Add;
//! - `rope.sin` / `rope.cos` (block 0 only; the tables are shared): around the first Neg at
//!   `blocks.0.attn` (rotate_half): sin = the other operand of the Mul taking the rotated value,
//!   cos = the operand of the Add's other Mul that is not the rotated input;
//! - `patches` / `pooled` (global pool `avg`): the Slice of `norm` at the top / its ReduceMean;
//!   `cls` (global pool `token`): the Gather of `norm` at the top.
//!
//! The rest of the head (`cls`, `storage`, `patches`, `pooled`, whichever the export lacks) is
//! derived from `norm` by the capture.

use super::{Out, Reshape};
use crate::model::{BlockStage, HeadStage, Stage, StemStage};
use crate::onnx::inline::ValueOrigin;
use std::collections::HashMap;

/// The metadata key under which the dynamo exporter records each node's module scopes.
pub(super) const NAME_SCOPES: &str = "pkg.torch.onnx.name_scopes";

/// The module path in a node's name, as the legacy exporter writes it (`/blocks.0/attn/proj/
/// MatMul` → `blocks.0.attn.proj`); `None` for names not starting with `/`.
pub(super) fn node_name_scopes(v: &ValueOrigin) -> Option<String> {
    let name = v.node.strip_prefix('/')?;
    let parts: Vec<&str> = name.split('/').collect();
    Some(parts[..parts.len() - 1].join("."))
}

/// Whether a value's node carries the dynamo exporter's name scopes.
pub(super) fn has_name_scopes(v: &ValueOrigin) -> bool {
    v.metadata.iter().any(|(k, _)| k == NAME_SCOPES)
}

struct Graph<'a> {
    values: &'a [ValueOrigin],
    by_name: HashMap<&'a str, &'a ValueOrigin>,
    module: Vec<String>,
    rule: &'static str,
}

impl<'a> Graph<'a> {
    fn at(&self, m: &str, op: &str) -> impl Iterator<Item = &'a ValueOrigin> + '_ {
        let m = m.to_string();
        let op = op.to_string();
        self.values
            .iter()
            .zip(&self.module)
            .filter(move |(v, vm)| **vm == m && v.op_type == op)
            .map(|(v, _)| v)
    }

    fn taking(&self, m: &str, op: &str, input: &str) -> Option<&'a ValueOrigin> {
        self.at(m, op).find(|v| v.inputs.iter().any(|i| i == input))
    }

    fn producer(&self, name: &str) -> Option<&'a ValueOrigin> {
        self.by_name.get(name).copied()
    }

    /// `value`, or the bias Add at `m` that consumes it.
    fn with_bias(&self, m: &str, value: &'a ValueOrigin) -> &'a ValueOrigin {
        self.taking(m, "Add", &value.name).unwrap_or(value)
    }

    /// Claims the value named `v` (if any) for `stage` under this graph's rule.
    fn put(&self, out: &mut Out, v: Option<&str>, stage: Stage, reshape: Reshape) {
        out.put(v.map(str::to_string).as_ref(), stage, reshape, self.rule);
    }

    /// Walks back through Muls by a constant, Reshapes and Transposes.
    fn walk_back(&self, mut name: &'a str) -> &'a str {
        for _ in 0..8 {
            let Some(p) = self.producer(name) else { break };
            let next = match p.op_type.as_str() {
                "Reshape" | "Transpose" => p.inputs.first(),
                "Mul" => {
                    // The scale: an initializer, a Constant, or computed from shapes (the
                    // legacy exporter's `1 / sqrt(sqrt(hd))`: Sqrt, Div, Cast, Reciprocal).
                    let constant = |i: &String| {
                        self.producer(i).is_none_or(|q| {
                            matches!(
                                q.op_type.as_str(),
                                "Constant" | "Sqrt" | "Div" | "Cast" | "Reciprocal"
                            )
                        })
                    };
                    match (p.inputs.first(), p.inputs.get(1)) {
                        (Some(a), Some(b)) if constant(b) => Some(a),
                        (Some(a), Some(b)) if constant(a) => Some(b),
                        _ => None,
                    }
                }
                _ => None,
            };
            match next {
                Some(n) => name = n,
                None => break,
            }
        }
        name
    }
}

/// Recognizes timm's DINOv3 stages; `module[i]` is the module path of `values[i]`, `rule` the
/// name recorded with each claim.
pub(super) fn recognize(
    values: &[ValueOrigin],
    module: Vec<String>,
    rule: &'static str,
    out: &mut Out,
) {
    let g = Graph {
        values,
        by_name: values.iter().map(|v| (v.name.as_str(), v)).collect(),
        module,
        rule,
    };
    let mut depth = 0;
    while g
        .at(&format!("blocks.{depth}.norm1"), "LayerNormalization")
        .next()
        .is_some()
    {
        depth += 1;
    }
    let mut tokens_done = false;
    for i in 0..depth {
        let b = format!("blocks.{i}");
        let Some(norm1) = g.at(&format!("{b}.norm1"), "LayerNormalization").next() else {
            continue;
        };
        if !tokens_done {
            tokens_done = true;
            stem(&g, norm1, out);
        }
        g.put(
            out,
            Some(&norm1.name),
            Stage::Block(i, BlockStage::Norm1),
            Reshape::AsIs,
        );
        let attn = attention(&g, i, norm1, out);
        residuals_and_mlp(&g, i, attn, out);
    }
    head(&g, out);
}

/// `tokens` (block 0's norm1 input) and `patch_embed` (the last input of the Concat making it).
fn stem(g: &Graph, norm1: &ValueOrigin, out: &mut Out) {
    let tokens = norm1.inputs.first().map(String::as_str);
    g.put(out, tokens, Stage::Stem(StemStage::Tokens), Reshape::AsIs);
    let concat = tokens
        .and_then(|t| g.producer(t))
        .filter(|p| p.op_type == "Concat");
    g.put(
        out,
        concat.and_then(|c| c.inputs.last()).map(String::as_str),
        Stage::Stem(StemStage::PatchEmbed),
        Reshape::AsIs,
    );
}

/// Block i's attention stages, from `attn.qkv` to `attn`; returns the `attn` value.
fn attention<'a>(
    g: &Graph<'a>,
    i: usize,
    norm1: &ValueOrigin,
    out: &mut Out,
) -> Option<&'a ValueOrigin> {
    let b = format!("blocks.{i}");
    let stage = |s: BlockStage| Stage::Block(i, s);
    let attn_m = format!("{b}.attn");
    if let Some(mm) = g.taking(&attn_m, "MatMul", &norm1.name) {
        g.put(
            out,
            Some(&g.with_bias(&attn_m, mm).name),
            stage(BlockStage::AttnQkv),
            Reshape::AsIs,
        );
    }
    if i == 0 {
        rope(g, &attn_m, out);
    }
    query_key_value(g, &attn_m, &stage, out);
    let proj_m = format!("{b}.attn.proj");
    let proj = g.at(&proj_m, "MatMul").next();
    g.put(
        out,
        proj.and_then(|p| p.inputs.first()).map(String::as_str),
        stage(BlockStage::AttnSdpa),
        Reshape::AsIs,
    );
    let attn = proj.map(|p| g.with_bias(&proj_m, p));
    g.put(
        out,
        attn.map(|a| a.name.as_str()),
        stage(BlockStage::Attn),
        Reshape::AsIs,
    );
    attn
}

/// `attn.q/k/v` at module `attn_m`: an `Attention` node's inputs, else around the Softmax.
fn query_key_value(g: &Graph, attn_m: &str, stage: &dyn Fn(BlockStage) -> Stage, out: &mut Out) {
    if let Some(att) = g.at(attn_m, "Attention").next() {
        for (k, s) in [BlockStage::AttnQ, BlockStage::AttnK, BlockStage::AttnV]
            .iter()
            .enumerate()
        {
            g.put(
                out,
                att.inputs.get(k).map(String::as_str),
                stage(*s),
                Reshape::AsIs,
            );
        }
    } else if let Some(softmax) = g.at(attn_m, "Softmax").next() {
        let scores = softmax
            .inputs
            .first()
            .and_then(|s| g.producer(g.walk_back(s)));
        if let Some(scores) = scores.filter(|p| p.op_type == "MatMul") {
            let q = scores.inputs.first().map(|q| g.walk_back(q));
            let k = scores.inputs.get(1).map(|k| g.walk_back(k));
            g.put(out, q, stage(BlockStage::AttnQ), Reshape::AsIs);
            g.put(out, k, stage(BlockStage::AttnK), Reshape::AsIs);
        }
        if let Some(weighted) = g.taking(attn_m, "MatMul", &softmax.name) {
            let v = weighted.inputs.get(1).map(|v| g.walk_back(v));
            g.put(out, v, stage(BlockStage::AttnV), Reshape::AsIs);
        }
    }
}

/// Block i's stages after attention: `ls1`, `residual1`, `norm2`, `mlp.hidden`, `mlp`, `ls2`,
/// `output`.
fn residuals_and_mlp(g: &Graph, i: usize, attn: Option<&ValueOrigin>, out: &mut Out) {
    fn name(v: Option<&ValueOrigin>) -> Option<&str> {
        v.map(|v| v.name.as_str())
    }
    let b = format!("blocks.{i}");
    let stage = |s: BlockStage| Stage::Block(i, s);
    let ls1 = attn.and_then(|a| g.taking(&b, "Mul", &a.name));
    g.put(out, name(ls1), stage(BlockStage::Ls1), Reshape::AsIs);
    let residual1 = ls1.and_then(|l| g.taking(&b, "Add", &l.name));
    g.put(
        out,
        name(residual1),
        stage(BlockStage::Residual1),
        Reshape::AsIs,
    );
    if let Some(norm2) = g.at(&format!("{b}.norm2"), "LayerNormalization").next() {
        g.put(
            out,
            Some(&norm2.name),
            stage(BlockStage::Norm2),
            Reshape::AsIs,
        );
    }
    let (fc2_m, fc2) = ["mlp.fc2", "mlp.w3"]
        .iter()
        .map(|s| format!("{b}.{s}"))
        .find_map(|m| g.at(&m, "MatMul").next().map(|v| (m, v)))
        .unzip();
    g.put(
        out,
        fc2.and_then(|f| f.inputs.first()).map(String::as_str),
        stage(BlockStage::MlpHidden),
        Reshape::AsIs,
    );
    let mlp = fc2.zip(fc2_m.as_deref()).map(|(f, m)| g.with_bias(m, f));
    g.put(out, name(mlp), stage(BlockStage::Mlp), Reshape::AsIs);
    let ls2 = mlp.and_then(|m| g.taking(&b, "Mul", &m.name));
    g.put(out, name(ls2), stage(BlockStage::Ls2), Reshape::AsIs);
    let output = ls2.and_then(|l| g.taking(&b, "Add", &l.name));
    g.put(out, name(output), stage(BlockStage::Output), Reshape::AsIs);
}

/// `norm`, and the head views the export has of it: `patches` / `pooled`, `cls`.
fn head(g: &Graph, out: &mut Out) {
    let Some(norm) = g.at("norm", "LayerNormalization").next() else {
        return;
    };
    g.put(
        out,
        Some(&norm.name),
        Stage::Head(HeadStage::Norm),
        Reshape::AsIs,
    );
    if let Some(patches) = g.taking("", "Slice", &norm.name) {
        g.put(
            out,
            Some(&patches.name),
            Stage::Head(HeadStage::Patches),
            Reshape::AsIs,
        );
        let pooled = g.taking("", "ReduceMean", &patches.name);
        g.put(
            out,
            pooled.map(|v| v.name.as_str()),
            Stage::Head(HeadStage::Pooled),
            Reshape::AsIs,
        );
    }
    let cls = g.taking("", "Gather", &norm.name);
    g.put(
        out,
        cls.map(|v| v.name.as_str()),
        Stage::Head(HeadStage::Cls),
        Reshape::AsIs,
    );
}

/// RoPE tables from block 0's rotate_half (see the module docs).
fn rope(g: &Graph, attn_m: &str, out: &mut Out) {
    let Some(neg) = g.at(attn_m, "Neg").next() else {
        return;
    };
    // x: what was split into halves for rotate_half.
    let x = neg
        .inputs
        .first()
        .and_then(|h| g.producer(h))
        .and_then(|split| split.inputs.first());
    let Some(rotated) = g.taking(attn_m, "Concat", &neg.name) else {
        return;
    };
    let Some(sin_mul) = g.taking(attn_m, "Mul", &rotated.name) else {
        return;
    };
    let sin = sin_mul.inputs.iter().find(|i| **i != rotated.name);
    let cos = g
        .taking(attn_m, "Add", &sin_mul.name)
        .and_then(|add| add.inputs.iter().find(|i| **i != sin_mul.name))
        .and_then(|c| g.producer(c))
        .filter(|m| m.op_type == "Mul")
        .and_then(|m| m.inputs.iter().find(|i| Some(*i) != x));
    // Tables produced by nodes only (initializers are not values of the run).
    let node_value = |v: Option<&String>| v.filter(|n| g.producer(n).is_some()).cloned();
    out.put(
        node_value(sin).as_ref(),
        Stage::Stem(StemStage::RopeSin),
        Reshape::AsIs,
        g.rule,
    );
    out.put(
        node_value(cos).as_ref(),
        Stage::Stem(StemStage::RopeCos),
        Reshape::AsIs,
        g.rule,
    );
}
