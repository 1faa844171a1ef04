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
//! - stages reach the sink in the execution order of `docs/stages.md`; the sink may keep them
//!   (they are shallow handles on tensors the forward no longer writes to).

use crate::model::{Architecture, BlockStage, Ffn, HeadStage, Stage, StemStage};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// LayerNorm epsilon of Meta's `layernormbf16` norm layer (all hub ViTs).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Receives (canonical stage name, Meta's name for the value, tensor).
pub type Sink<'a> = dyn FnMut(Stage, String, &Tensor) -> Result<()> + 'a;

/// A block's view of the sink: the stage within the block.
type BlockSink<'a> = dyn FnMut(BlockStage, String, &Tensor) -> Result<()> + 'a;

/// The loaded model: its architecture and its weights, on the compute device in the compute dtype
/// (`rope_embed.periods` and `bias_mask` as they are in f32).
pub struct MetaVit {
    pub arch: Architecture,
    /// Declared before `_backing`, so dropped first: some tensors point into its memory.
    weights: HashMap<String, Tensor>,
    kind: Kind,
    device: Device,
    /// The memory map zero-copy weights point into ([`super::tensors::Backing`]).
    _backing: super::tensors::Backing,
}

impl MetaVit {
    /// Takes the checkpoint's tensors (already checked against `arch`), each converted to the
    /// device and dtype on its own (a no-op alias when they already match), and what they point
    /// into. The weights are only ever read (every op of the forward is out of place).
    pub fn new(
        arch: Architecture,
        tensors: Vec<(String, Tensor)>,
        kind: Kind,
        device: Device,
        backing: super::tensors::Backing,
    ) -> Result<MetaVit> {
        let mut weights = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            let want = if name == "rope_embed.periods" || name.ends_with(".bias_mask") {
                Kind::Float
            } else {
                kind
            };
            let t = t
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(want))
                .with_context(|| {
                    format!("moving checkpoint tensor {name} to {device:?} {want:?}")
                })?;
            weights.insert(name, t);
        }
        Ok(MetaVit {
            arch,
            weights,
            kind,
            device,
            _backing: backing,
        })
    }

    fn w(&self, key: &str) -> Result<&Tensor> {
        match self.weights.get(key) {
            Some(t) => Ok(t),
            None => {
                bail!("checkpoint tensor {key} is missing (the key check should have caught this)")
            }
        }
    }

    fn linear(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let weight = self.w(&format!("{prefix}.weight"))?;
        let bias = self.weights.get(&format!("{prefix}.bias"));
        Ok(x.f_linear(weight, bias)?)
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let weight = self.w(&format!("{prefix}.weight"))?;
        let bias = self.w(&format!("{prefix}.bias"))?;
        Ok(x.f_layer_norm(
            [self.arch.embed_dim as i64],
            Some(weight),
            Some(bias),
            LAYER_NORM_EPS,
            true,
        )?)
    }

    /// Meta's `RopePositionEmbedding.forward(H=h, W=w)` in eval mode: (sin, cos), each [h*w, hd].
    pub fn rope(&self, h: i64, w: i64) -> Result<(Tensor, Tensor)> {
        let dd = (Kind::Float, self.device);
        let coords_h = Tensor::f_arange_start_step(0.5, h as f64, 1.0, dd)?.f_div_scalar(h)?;
        let coords_w = Tensor::f_arange_start_step(0.5, w as f64, 1.0, dd)?.f_div_scalar(w)?;
        let grid = Tensor::f_meshgrid_indexing(&[coords_h, coords_w], "ij")?;
        let coords = Tensor::f_stack(&grid, -1)?.f_flatten(0, 1)?;
        let coords = coords.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
        let periods = self.w("rope_embed.periods")?;
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
            self.w("patch_embed.proj.weight")?,
            Some(self.w("patch_embed.proj.bias")?),
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

        let cls = self
            .w("cls_token")?
            .f_add(&self.w("mask_token")?.f_mul_scalar(0)?)?;
        let mut parts = vec![cls.f_expand([b, -1, -1], false)?];
        if r > 0 {
            parts.push(self.w("storage_tokens")?.f_expand([b, -1, -1], false)?);
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

        for i in 0..a.depth {
            x = self.block(i, &x, &sin, &cos, sink)?;
        }

        let n_prefix = 1 + r;
        let normed = if a.cls_norm {
            let n = x.size()[1];
            let prefix = self.layer_norm(&x.f_narrow(1, 0, n_prefix)?, "cls_norm")?;
            let rest = self.layer_norm(&x.f_narrow(1, n_prefix, n - n_prefix)?, "norm")?;
            Tensor::f_cat(&[prefix, rest], 1)?
        } else {
            self.layer_norm(&x, "norm")?
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
        x: &Tensor,
        sin: &Tensor,
        cos: &Tensor,
        sink: &mut Sink,
    ) -> Result<Tensor> {
        let pre = format!("blocks.{i}");
        let mut put =
            |s: BlockStage, native: String, t: &Tensor| sink(Stage::Block(i, s), native, t);

        let norm1 = self.layer_norm(x, &format!("{pre}.norm1"))?;
        put(BlockStage::Norm1, format!("{pre}.norm1"), &norm1)?;
        let attn = self.attention(&pre, &norm1, sin, cos, &mut put)?;
        put(BlockStage::Attn, format!("{pre}.attn"), &attn)?;
        let ls1 = attn.f_mul(self.w(&format!("{pre}.ls1.gamma"))?)?;
        put(BlockStage::Ls1, format!("{pre}.ls1"), &ls1)?;
        let residual1 = x.f_add(&ls1)?;
        put(
            BlockStage::Residual1,
            format!("{pre} x + ls1(attn)"),
            &residual1,
        )?;

        let norm2 = self.layer_norm(&residual1, &format!("{pre}.norm2"))?;
        put(BlockStage::Norm2, format!("{pre}.norm2"), &norm2)?;
        let mlp = self.ffn(&pre, &norm2, &mut put)?;
        put(BlockStage::Mlp, format!("{pre}.mlp"), &mlp)?;
        let ls2 = mlp.f_mul(self.w(&format!("{pre}.ls2.gamma"))?)?;
        put(BlockStage::Ls2, format!("{pre}.ls2"), &ls2)?;
        let output = residual1.f_add(&ls2)?;
        put(BlockStage::Output, pre.clone(), &output)?;
        Ok(output)
    }

    /// Meta's `SelfAttention` up to (not including) `proj`'s output being handed back: the
    /// masked-bias qkv, RoPE on q and k, SDPA, heads merged, `proj`.
    fn attention(
        &self,
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
        let qkv_weight = self.w(&format!("{pre}.attn.qkv.weight"))?;
        let qkv_bias = match self.weights.get(&format!("{pre}.attn.qkv.bias")) {
            None => None,
            Some(bias) => Some(
                match self.weights.get(&format!("{pre}.attn.qkv.bias_mask")) {
                    Some(mask) => bias.f_mul(&mask.f_to_kind(bias.kind())?)?,
                    None => bias.shallow_clone(),
                },
            ),
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
        self.linear(&merged, &format!("{pre}.attn.proj"))
    }

    /// The feed-forward network: Mlp (fc1 -> exact GELU -> fc2) or SwiGLU (w3(silu(w1) * w2)).
    fn ffn(&self, pre: &str, norm2: &Tensor, put: &mut BlockSink) -> Result<Tensor> {
        match self.arch.ffn {
            Ffn::Mlp => {
                let hidden = self
                    .linear(norm2, &format!("{pre}.mlp.fc1"))?
                    .f_gelu("none")?;
                put(
                    BlockStage::MlpHidden,
                    format!("{pre}.mlp.act(fc1)"),
                    &hidden,
                )?;
                self.linear(&hidden, &format!("{pre}.mlp.fc2"))
            }
            Ffn::SwiGlu => {
                let x1 = self.linear(norm2, &format!("{pre}.mlp.w1"))?;
                let x2 = self.linear(norm2, &format!("{pre}.mlp.w2"))?;
                let hidden = x1.f_silu()?.f_mul(&x2)?;
                put(
                    BlockStage::MlpHidden,
                    format!("{pre}.mlp silu(w1) * w2"),
                    &hidden,
                )?;
                self.linear(&hidden, &format!("{pre}.mlp.w3"))
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
