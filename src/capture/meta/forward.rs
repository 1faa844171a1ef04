//! Meta's DINOv3 ViT eval forward, op for op, in libtorch: every canonical stage is handed to a
//! sink as it is computed.
//!
//! Contract:
//! - the ops, their order and their operands are those of Meta's `DinoVisionTransformer` in eval
//!   mode (`forward_features`): same aten kernels, so on CPU the results match Meta's Python
//!   forward bit for bit at the same thread count;
//! - RoPE comes from the checkpoint's `rope_embed.periods` (never recomputed), in f32 (the hub
//!   configs' `pos_embed_rope_dtype = "fp32"`), coordinates `2 * (arange(0.5, h) / h) - 1`;
//!   q and k are cast to f32 for the rotation and back, as Meta's `apply_rope` does;
//! - the qkv bias is multiplied by `bias_mask` when the checkpoint has one (Meta's `mask_k_bias`);
//! - a block's weights are materialized ([`materialize`]) when the block runs and dropped after
//!   ([`Residency::Streamed`]), or all before the forward ([`Residency::InMemory`]); the same
//!   conversion of the same tensors either way, so the two write identical stages;
//! - stages reach the sink in the execution order of `docs/stages.md`; the sink may keep them
//!   (they are shallow handles on tensors the forward no longer writes to).

use super::residency::{MapHints, Residency, block_of, materialize};
use crate::model::{Architecture, BlockStage, Ffn, HeadStage, Stage, StemStage};
use anyhow::{Result, bail};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// LayerNorm epsilon of Meta's `layernormbf16` norm layer (all hub ViTs).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Receives (canonical stage name, Meta's name for the value, tensor).
pub type Sink<'a> = dyn FnMut(Stage, String, &Tensor) -> Result<()> + 'a;

/// A block's view of the sink: the stage within the block.
type BlockSink<'a> = dyn FnMut(BlockStage, String, &Tensor) -> Result<()> + 'a;

/// Weights by checkpoint name.
pub type WeightMap = HashMap<String, Tensor>;

/// The loaded model: its architecture and its weights. The stem's and head's weights (and, in
/// memory, every block's) are materialized on the compute device in the compute dtype
/// ([`materialize`]); a streamed model keeps each block's checkpoint tensors as read and
/// materializes them when the block runs.
pub struct MetaVit {
    pub arch: Architecture,
    /// Declared before `_backing`, so dropped first: some tensors point into its memory.
    resident: WeightMap,
    /// Per block, the checkpoint's tensors as read (streamed; empty lists in memory).
    pending: Vec<Vec<(String, Tensor)>>,
    residency: Residency,
    kind: Kind,
    device: Device,
    hints: Option<MapHints>,
    /// The memory map zero-copy weights point into ([`super::tensors::Backing`]).
    _backing: super::tensors::Backing,
}

/// What [`MetaVit::new`] takes besides the tensors.
pub struct Placement {
    pub kind: Kind,
    pub device: Device,
    pub residency: Residency,
    /// The checkpoint's memory map, when the tensors point into one.
    pub hints: Option<MapHints>,
}

impl MetaVit {
    /// Takes the checkpoint's tensors (already checked against `arch`) and what they point
    /// into. The stem's and head's are materialized now, the blocks' now (in memory) or when
    /// each block runs (streamed), each tensor on its own. The weights are only ever read
    /// (every op of the forward is out of place).
    pub fn new(
        arch: Architecture,
        tensors: Vec<(String, Tensor)>,
        place: Placement,
        backing: super::tensors::Backing,
    ) -> Result<MetaVit> {
        let mut resident = HashMap::with_capacity(tensors.len());
        let mut pending: Vec<Vec<(String, Tensor)>> = (0..arch.depth).map(|_| Vec::new()).collect();
        for (name, t) in tensors {
            let block = block_of(&name).filter(|&i| i < arch.depth);
            match (place.residency, block) {
                (Residency::Streamed, Some(i)) => pending[i].push((name, t)),
                _ => {
                    let t = materialize(&name, &t, place.kind, place.device)?;
                    resident.insert(name, t);
                }
            }
        }
        Ok(MetaVit {
            arch,
            resident,
            pending,
            residency: place.residency,
            kind: place.kind,
            device: place.device,
            hints: place.hints,
            _backing: backing,
        })
    }

    pub fn residency(&self) -> Residency {
        self.residency
    }

    /// Block `i`'s weights: materialized now (streamed) or shared with the resident ones.
    fn block_weights(&self, i: usize) -> Result<WeightMap> {
        match self.residency {
            Residency::Streamed => self.pending[i]
                .iter()
                .map(|(name, t)| Ok((name.clone(), materialize(name, t, self.kind, self.device)?)))
                .collect(),
            Residency::InMemory => {
                let prefix = format!("blocks.{i}.");
                Ok(self
                    .resident
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, t)| (k.clone(), t.shallow_clone()))
                    .collect())
            }
        }
    }

    /// Advice on block `i`'s mapped checkpoint bytes: needed soon, or done with (streamed only:
    /// in memory, materialized weights may alias the map for the whole forward).
    fn hint(&self, i: usize, needed: bool) {
        let (Some(hints), Residency::Streamed, Some(block)) =
            (self.hints, self.residency, self.pending.get(i))
        else {
            return;
        };
        let tensors = block.iter().map(|(_, t)| t);
        if needed {
            hints.will_need(tensors);
        } else {
            hints.done(tensors);
        }
    }

    /// Meta's `RopePositionEmbedding.forward(H=h, W=w)` in eval mode: (sin, cos), each [h*w, hd].
    pub fn rope(&self, h: i64, w: i64) -> Result<(Tensor, Tensor)> {
        let dd = (Kind::Float, self.device);
        let coords_h = Tensor::f_arange_start_step(0.5, h as f64, 1.0, dd)?.f_div_scalar(h)?;
        let coords_w = Tensor::f_arange_start_step(0.5, w as f64, 1.0, dd)?.f_div_scalar(w)?;
        let grid = Tensor::f_meshgrid_indexing(&[coords_h, coords_w], "ij")?;
        let coords = Tensor::f_stack(&grid, -1)?.f_flatten(0, 1)?;
        let coords = coords.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
        let periods = weight(&self.resident, "rope_embed.periods")?;
        let angles = coords
            .f_unsqueeze(-1)?
            .f_mul_scalar(2.0 * std::f64::consts::PI)?
            .f_div(&periods.f_unsqueeze(0)?.f_unsqueeze(0)?)?;
        let angles = angles.f_flatten(1, 2)?.f_tile([2])?;
        Ok((angles.f_sin()?, angles.f_cos()?))
    }

    /// Runs the forward on `input` [B, C, H, W] (already in the compute dtype and on the device).
    pub fn forward(&self, input: &Tensor, sink: &mut Sink) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let a = &self.arch;
        let d = a.embed_dim as i64;
        let p = a.patch_size as i64;
        let r = a.storage_tokens as i64;

        // Patch embedding: conv -> [B, D, h, w] -> [B, h*w, D] (Meta: flatten(2).transpose(1, 2),
        // reshape to [B, h, w, D], then flatten(1, 2) in prepare_tokens_with_masks).
        let conv = input.f_conv2d(
            weight(&self.resident, "patch_embed.proj.weight")?,
            Some(weight(&self.resident, "patch_embed.proj.bias")?),
            [p, p],
            [0, 0],
            [1, 1],
            1,
        )?;
        let (b, h, w) = (conv.size()[0], conv.size()[2], conv.size()[3]);
        let patches = conv
            .f_flatten(2, 3)?
            .f_transpose(1, 2)?
            .f_reshape([-1, h, w, d])?
            .f_flatten(1, 2)?;
        sink(
            Stage::Stem(StemStage::PatchEmbed),
            "patch_embed".into(),
            &patches,
        )?;

        let cls = weight(&self.resident, "cls_token")?
            .f_add(&weight(&self.resident, "mask_token")?.f_mul_scalar(0)?)?;
        let mut parts = vec![cls.f_expand([b, -1, -1], false)?];
        if r > 0 {
            parts.push(weight(&self.resident, "storage_tokens")?.f_expand([b, -1, -1], false)?);
        }
        parts.push(patches);
        let mut x = Tensor::f_cat(&parts, 1)?;
        sink(
            Stage::Stem(StemStage::Tokens),
            "prepare_tokens_with_masks (cls, storage, patches)".into(),
            &x,
        )?;

        let (sin, cos) = self.rope(h, w)?;
        sink(
            Stage::Stem(StemStage::RopeSin),
            "rope_embed(H, W)[0]".into(),
            &sin,
        )?;
        sink(
            Stage::Stem(StemStage::RopeCos),
            "rope_embed(H, W)[1]".into(),
            &cos,
        )?;

        self.hint(0, true);
        for i in 0..a.depth {
            let ws = self.block_weights(i)?;
            // Read the next block's bytes while this one computes.
            self.hint(i + 1, true);
            x = self.block(i, &ws, &x, &sin, &cos, sink)?;
            drop(ws);
            self.hint(i, false);
        }

        let n_prefix = 1 + r;
        let normed = if a.cls_norm {
            let n = x.size()[1];
            let prefix = layer_norm(
                &self.resident,
                &x.f_narrow(1, 0, n_prefix)?,
                "cls_norm",
                a.embed_dim,
            )?;
            let rest = layer_norm(
                &self.resident,
                &x.f_narrow(1, n_prefix, n - n_prefix)?,
                "norm",
                a.embed_dim,
            )?;
            Tensor::f_cat(&[prefix, rest], 1)?
        } else {
            layer_norm(&self.resident, &x, "norm", a.embed_dim)?
        };
        sink(
            Stage::Head(HeadStage::Norm),
            if a.cls_norm {
                "cat(cls_norm(x[:, :1+R]), norm(x[:, 1+R:]))".into()
            } else {
                "norm".into()
            },
            &normed,
        )?;
        let n = normed.size()[1];
        sink(
            Stage::Head(HeadStage::Cls),
            "x_norm_clstoken".into(),
            &normed.f_select(1, 0)?,
        )?;
        sink(
            Stage::Head(HeadStage::Storage),
            "x_storage_tokens".into(),
            &normed.f_narrow(1, 1, r)?,
        )?;
        let patch_tokens = normed.f_narrow(1, n_prefix, n - n_prefix)?;
        sink(
            Stage::Head(HeadStage::Patches),
            "x_norm_patchtokens".into(),
            &patch_tokens,
        )?;
        let pooled = patch_tokens.f_mean_dim([1i64].as_slice(), false, None::<Kind>)?;
        sink(
            Stage::Head(HeadStage::Pooled),
            "x_norm_patchtokens.mean(1)".into(),
            &pooled,
        )?;
        Ok(())
    }

    fn block(
        &self,
        i: usize,
        ws: &WeightMap,
        x: &Tensor,
        sin: &Tensor,
        cos: &Tensor,
        sink: &mut Sink,
    ) -> Result<Tensor> {
        let pre = format!("blocks.{i}");
        let mut put =
            |s: BlockStage, native: String, t: &Tensor| sink(Stage::Block(i, s), native, t);

        let norm1 = layer_norm(ws, x, &format!("{pre}.norm1"), self.arch.embed_dim)?;
        put(BlockStage::Norm1, format!("{pre}.norm1"), &norm1)?;
        let attn = self.attention(ws, &pre, &norm1, sin, cos, &mut put)?;
        put(BlockStage::Attn, format!("{pre}.attn"), &attn)?;
        let ls1 = attn.f_mul(weight(ws, &format!("{pre}.ls1.gamma"))?)?;
        put(BlockStage::Ls1, format!("{pre}.ls1"), &ls1)?;
        let residual1 = x.f_add(&ls1)?;
        put(
            BlockStage::Residual1,
            format!("{pre} x + ls1(attn)"),
            &residual1,
        )?;

        let norm2 = layer_norm(ws, &residual1, &format!("{pre}.norm2"), self.arch.embed_dim)?;
        put(BlockStage::Norm2, format!("{pre}.norm2"), &norm2)?;
        let mlp = self.ffn(ws, &pre, &norm2, &mut put)?;
        put(BlockStage::Mlp, format!("{pre}.mlp"), &mlp)?;
        let ls2 = mlp.f_mul(weight(ws, &format!("{pre}.ls2.gamma"))?)?;
        put(BlockStage::Ls2, format!("{pre}.ls2"), &ls2)?;
        let output = residual1.f_add(&ls2)?;
        put(BlockStage::Output, pre.clone(), &output)?;
        Ok(output)
    }

    /// Meta's `SelfAttention` up to (not including) `proj`'s output being handed back: the
    /// masked-bias qkv, RoPE on q and k, SDPA, heads merged, `proj`.
    fn attention(
        &self,
        ws: &WeightMap,
        pre: &str,
        norm1: &Tensor,
        sin: &Tensor,
        cos: &Tensor,
        put: &mut BlockSink,
    ) -> Result<Tensor> {
        let a = &self.arch;
        let (bsz, n, d) = (norm1.size()[0], norm1.size()[1], a.embed_dim as i64);
        let (heads, hd) = (a.heads as i64, a.head_dim() as i64);
        // LinearKMaskedBias: F.linear(x, weight, bias * bias_mask).
        let qkv_weight = weight(ws, &format!("{pre}.attn.qkv.weight"))?;
        let qkv_bias = match ws.get(&format!("{pre}.attn.qkv.bias")) {
            None => None,
            Some(bias) => Some(match ws.get(&format!("{pre}.attn.qkv.bias_mask")) {
                Some(mask) => bias.f_mul(&mask.f_to_kind(bias.kind())?)?,
                None => bias.shallow_clone(),
            }),
        };
        let qkv = norm1.f_linear(qkv_weight, qkv_bias.as_ref())?;
        put(BlockStage::AttnQkv, format!("{pre}.attn.qkv"), &qkv)?;

        // SelfAttention.compute_attention
        let split = qkv.f_reshape([bsz, n, 3, heads, hd])?.f_unbind(2)?;
        let [q, k, v]: [Tensor; 3] = split
            .into_iter()
            .map(|t| t.f_transpose(1, 2))
            .collect::<Result<Vec<_>, _>>()?
            .try_into()
            .map_err(|_| anyhow::anyhow!("qkv did not split in three"))?;
        let q = self.apply_rope(&q, sin, cos)?;
        let k = self.apply_rope(&k, sin, cos)?;
        put(BlockStage::AttnQ, format!("{pre}.attn q (after RoPE)"), &q)?;
        put(BlockStage::AttnK, format!("{pre}.attn k (after RoPE)"), &k)?;
        put(BlockStage::AttnV, format!("{pre}.attn v"), &v)?;
        let attended = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        )?;
        let merged = attended.f_transpose(1, 2)?.f_reshape([bsz, n, d])?;
        let native = format!("{pre}.attn scaled_dot_product_attention (heads merged)");
        put(BlockStage::AttnSdpa, native, &merged)?;
        linear(ws, &merged, &format!("{pre}.attn.proj"))
    }

    /// The feed-forward network: Mlp (fc1 -> exact GELU -> fc2) or SwiGLU (w3(silu(w1) * w2)).
    fn ffn(
        &self,
        ws: &WeightMap,
        pre: &str,
        norm2: &Tensor,
        put: &mut BlockSink,
    ) -> Result<Tensor> {
        match self.arch.ffn {
            Ffn::Mlp => {
                let hidden = linear(ws, norm2, &format!("{pre}.mlp.fc1"))?.f_gelu("none")?;
                put(
                    BlockStage::MlpHidden,
                    format!("{pre}.mlp.act(fc1)"),
                    &hidden,
                )?;
                linear(ws, &hidden, &format!("{pre}.mlp.fc2"))
            }
            Ffn::SwiGlu => {
                let x1 = linear(ws, norm2, &format!("{pre}.mlp.w1"))?;
                let x2 = linear(ws, norm2, &format!("{pre}.mlp.w2"))?;
                let hidden = x1.f_silu()?.f_mul(&x2)?;
                put(
                    BlockStage::MlpHidden,
                    format!("{pre}.mlp silu(w1) * w2"),
                    &hidden,
                )?;
                linear(ws, &hidden, &format!("{pre}.mlp.w3"))
            }
        }
    }

    /// Meta's `SelfAttention.apply_rope` for one of q / k: the last h*w tokens rotated, prefix
    /// tokens untouched, computed in the RoPE dtype (f32).
    fn apply_rope(&self, t: &Tensor, sin: &Tensor, cos: &Tensor) -> Result<Tensor> {
        let rope_kind = sin.kind();
        let t32 = if t.kind() == rope_kind {
            t.shallow_clone()
        } else {
            t.f_to_kind(rope_kind)?
        };
        let n = t32.size()[2];
        let hw = sin.size()[0];
        let prefix = n - hw;
        if prefix < 0 {
            bail!("{n} tokens but a RoPE table for {hw} patches");
        }
        let head = t32.f_narrow(2, 0, prefix)?;
        let tail = t32.f_narrow(2, prefix, hw)?;
        let halves = tail.f_chunk(2, -1)?;
        let rotated = Tensor::f_cat(&[halves[1].f_neg()?, halves[0].shallow_clone()], -1)?;
        let tail = tail.f_mul(cos)?.f_add(&rotated.f_mul(sin)?)?;
        let out = Tensor::f_cat(&[head, tail], -2)?;
        Ok(if self.kind == rope_kind {
            out
        } else {
            out.f_to_kind(self.kind)?
        })
    }
}

fn weight<'m>(ws: &'m WeightMap, key: &str) -> Result<&'m Tensor> {
    match ws.get(key) {
        Some(t) => Ok(t),
        None => bail!("checkpoint tensor {key} is missing (the key check should have caught this)"),
    }
}

fn linear(ws: &WeightMap, x: &Tensor, prefix: &str) -> Result<Tensor> {
    let w = weight(ws, &format!("{prefix}.weight"))?;
    let bias = ws.get(&format!("{prefix}.bias"));
    Ok(x.f_linear(w, bias)?)
}

fn layer_norm(ws: &WeightMap, x: &Tensor, prefix: &str, dim: usize) -> Result<Tensor> {
    let w = weight(ws, &format!("{prefix}.weight"))?;
    let bias = weight(ws, &format!("{prefix}.bias"))?;
    Ok(x.f_layer_norm([dim as i64], Some(w), Some(bias), LAYER_NORM_EPS, true)?)
}
