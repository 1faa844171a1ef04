//! DINOv3 ViT variants of Meta's hub (`../shared/dinov3-facts.md`): their dimensions and the shapes
//! of every canonical stage.
//!
//! Contract: [`Variant::lookup`] accepts the short name (`vits16`), the hub prefix
//! (`dinov3_vits16`) and Meta's full names (`dinov3_vits16_pretrain_lvd1689m`); shapes are for
//! batch 1 and a square input of `image_size` pixels.

use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ffn {
    /// fc1 -> GELU -> fc2 with hidden = ratio * D.
    Mlp,
    /// SwiGLU: hidden = int(2 * ratio * D / 3) rounded up to a multiple of `align`.
    SwiGlu { align: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub ffn: Ffn,
    pub ffn_ratio: usize,
    pub patch_size: usize,
    pub storage_tokens: usize,
    pub qkv_bias: bool,
}

const fn v(
    name: &'static str,
    embed_dim: usize,
    depth: usize,
    heads: usize,
    ffn: Ffn,
    ffn_ratio: usize,
    qkv_bias: bool,
) -> Variant {
    Variant {
        name,
        embed_dim,
        depth,
        heads,
        ffn,
        ffn_ratio,
        patch_size: 16,
        storage_tokens: 4,
        qkv_bias,
    }
}

pub const VARIANTS: [Variant; 7] = [
    v("vits16", 384, 12, 6, Ffn::Mlp, 4, true),
    v("vits16plus", 384, 12, 6, Ffn::SwiGlu { align: 8 }, 6, true),
    v("vitb16", 768, 12, 12, Ffn::Mlp, 4, true),
    v("vitl16", 1024, 24, 16, Ffn::Mlp, 4, true),
    v(
        "vitl16plus",
        1024,
        24,
        16,
        Ffn::SwiGlu { align: 8 },
        6,
        true,
    ),
    v(
        "vith16plus",
        1280,
        32,
        20,
        Ffn::SwiGlu { align: 8 },
        6,
        true,
    ),
    v("vit7b16", 4096, 40, 32, Ffn::SwiGlu { align: 64 }, 3, false),
];

impl Variant {
    pub fn lookup(name: &str) -> Result<Variant> {
        let short = name.strip_prefix("dinov3_").unwrap_or(name);
        // Full names: dinov3_<variant>_pretrain_<dataset>
        let short = short.split("_pretrain").next().unwrap_or(short);
        match VARIANTS.iter().find(|v| v.name == short) {
            Some(v) => Ok(*v),
            None => bail!(
                "unknown DINOv3 variant {name:?}; known: {}",
                VARIANTS.map(|v| v.name).join(", ")
            ),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// Hidden width of the feed-forward network.
    pub fn ffn_hidden(&self) -> usize {
        match self.ffn {
            Ffn::Mlp => self.ffn_ratio * self.embed_dim,
            Ffn::SwiGlu { align } => {
                let h = 2 * self.ffn_ratio * self.embed_dim / 3;
                h.next_multiple_of(align)
            }
        }
    }

    /// Tokens for a square image: cls + storage + patches.
    pub fn tokens(&self, image_size: usize) -> usize {
        1 + self.storage_tokens + self.patches(image_size)
    }

    pub fn patches(&self, image_size: usize) -> usize {
        let side = image_size / self.patch_size;
        side * side
    }

    /// Shape of a canonical stage (given as its column name) at batch 1.
    pub fn stage_shape(&self, column: &str, image_size: usize) -> Vec<usize> {
        let d = self.embed_dim;
        let n = self.tokens(image_size);
        let hw = self.patches(image_size);
        let (h, hd) = (self.heads, self.head_dim());
        match column {
            "input" => vec![1, 3, image_size, image_size],
            "patch_embed" => vec![1, hw, d],
            "rope.sin" | "rope.cos" => vec![hw, hd],
            "attn.qkv" => vec![1, n, 3 * d],
            "attn.q" | "attn.k" | "attn.v" => vec![1, h, n, hd],
            "mlp.hidden" => vec![1, n, self.ffn_hidden()],
            "cls" | "pooled" => vec![1, d],
            "storage" => vec![1, self.storage_tokens, d],
            "patches" => vec![1, hw, d],
            _ => vec![1, n, d],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_resolve() {
        assert_eq!(
            Variant::lookup("dinov3_vits16_pretrain_lvd1689m")
                .unwrap()
                .name,
            "vits16"
        );
        assert_eq!(Variant::lookup("dinov3_vitl16").unwrap().depth, 24);
        let e = Variant::lookup("vitq16").unwrap_err().to_string();
        assert!(e.contains("known: vits16, vits16plus"), "{e}");
    }

    #[test]
    fn swiglu_hidden_sizes_match_meta() {
        // int(2 * 6 * 384 / 3) = 1536; 7B: int(2 * 3 * 4096 / 3) = 8192 (multiple of 64).
        assert_eq!(Variant::lookup("vits16plus").unwrap().ffn_hidden(), 1536);
        assert_eq!(Variant::lookup("vith16plus").unwrap().ffn_hidden(), 5120);
        assert_eq!(Variant::lookup("vit7b16").unwrap().ffn_hidden(), 8192);
        assert_eq!(Variant::lookup("vits16").unwrap().ffn_hidden(), 1536);
    }
}
