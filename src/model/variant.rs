//! DINOv3 ViT variants of Meta's hub (`docs/stages.md`, Meta's `hubconf.py`): their names and
//! their [`Architecture`]s.
//!
//! Contract: [`Variant::lookup`] accepts the short name (`vits16`), the hub prefix
//! (`dinov3_vits16`) and Meta's full names (`dinov3_vits16_pretrain_lvd1689m`); every variant's
//! architecture is what Meta's hub builds (patch 16, 4 storage tokens, qkv bias with K mask but
//! for ViT-7B).

use super::architecture::{Architecture, Ffn};
use anyhow::{Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Variant {
    pub name: &'static str,
    /// The hub's `ffn_ratio`: F = ratio · D (Mlp), int(2 · ratio · D / 3) rounded up to a
    /// multiple of `ffn_align` (SwiGLU).
    pub ffn_ratio: usize,
    pub ffn_align: usize,
    pub arch: Architecture,
}

/// The feed-forward width of the hub's formula (see [`Variant::ffn_ratio`]).
pub const fn ffn_hidden(ffn: Ffn, ratio: usize, align: usize, embed_dim: usize) -> usize {
    match ffn {
        Ffn::Mlp => ratio * embed_dim,
        Ffn::SwiGlu => (2 * ratio * embed_dim / 3).next_multiple_of(align),
    }
}

const fn hub(
    name: &'static str,
    (embed_dim, depth, heads): (usize, usize, usize),
    (ffn, ffn_ratio, ffn_align): (Ffn, usize, usize),
    qkv_bias: bool,
) -> Variant {
    Variant {
        name,
        ffn_ratio,
        ffn_align,
        arch: Architecture {
            embed_dim,
            depth,
            heads,
            ffn,
            ffn_hidden: ffn_hidden(ffn, ffn_ratio, ffn_align, embed_dim),
            qkv_bias,
            qkv_bias_mask: qkv_bias,
            storage_tokens: 4,
            patch_size: 16,
            in_chans: 3,
            cls_norm: false,
            local_cls_norm: false,
        },
    }
}

const MLP4: (Ffn, usize, usize) = (Ffn::Mlp, 4, 1);
const SWIGLU6: (Ffn, usize, usize) = (Ffn::SwiGlu, 6, 8);

pub const VARIANTS: [Variant; 7] = [
    hub("vits16", (384, 12, 6), MLP4, true),
    hub("vits16plus", (384, 12, 6), SWIGLU6, true),
    hub("vitb16", (768, 12, 12), MLP4, true),
    hub("vitl16", (1024, 24, 16), MLP4, true),
    hub("vitl16plus", (1024, 24, 16), SWIGLU6, true),
    hub("vith16plus", (1280, 32, 20), SWIGLU6, true),
    hub("vit7b16", (4096, 40, 32), (Ffn::SwiGlu, 3, 64), false),
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

    /// The hub variant with this architecture (`local_cls_norm` aside), if there is one.
    pub fn of(arch: &Architecture) -> Option<Variant> {
        VARIANTS.iter().copied().find(|v| {
            let hub = Architecture {
                local_cls_norm: arch.local_cls_norm,
                ..v.arch
            };
            hub == *arch
        })
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
        assert_eq!(Variant::lookup("dinov3_vitl16").unwrap().arch.depth, 24);
        let e = Variant::lookup("vitq16").unwrap_err().to_string();
        assert!(e.contains("known: vits16, vits16plus"), "{e}");
    }

    #[test]
    fn swiglu_hidden_sizes_match_meta() {
        // int(2 * 6 * 384 / 3) = 1536; 7B: int(2 * 3 * 4096 / 3) = 8192 (multiple of 64).
        let hidden = |n: &str| Variant::lookup(n).unwrap().arch.ffn_hidden;
        assert_eq!(hidden("vits16plus"), 1536);
        assert_eq!(hidden("vith16plus"), 5120);
        assert_eq!(hidden("vit7b16"), 8192);
        assert_eq!(hidden("vits16"), 1536);
    }
}
