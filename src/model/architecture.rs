//! The dimensions of one DINOv3 model, whatever it was read from (a hub variant's name, a
//! checkpoint's shapes, an Equinox skeleton): the one place that says what a model is.
//!
//! Contract: an [`Architecture`] with `heads > 0` and `embed_dim` a multiple of `heads` (every
//! constructor in this crate ensures it: [`Variant`](super::Variant)s by construction,
//! [`Architecture::infer`](super::checkpoint) by refusing anything else). [`Grid`] is the patch
//! grid of one input (`h` rows × `w` columns of patches).

use std::fmt;

/// The feed-forward network of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ffn {
    /// fc1 -> exact GELU -> fc2.
    Mlp,
    /// w3(silu(w1 x) * w2 x).
    SwiGlu,
}

impl Ffn {
    pub const fn name(self) -> &'static str {
        match self {
            Ffn::Mlp => "Mlp",
            Ffn::SwiGlu => "SwiGLU",
        }
    }
}

/// Everything the forward (and every stage shape) needs to know about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Architecture {
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub ffn: Ffn,
    pub ffn_hidden: usize,
    pub qkv_bias: bool,
    /// `attn.qkv.bias_mask` (Meta's `mask_k_bias`): the bias is multiplied by it.
    pub qkv_bias_mask: bool,
    pub storage_tokens: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    /// `cls_norm` (untie_cls_and_patch_norms): cls and storage tokens get their own final norm.
    pub cls_norm: bool,
    /// `local_cls_norm` (untie_global_and_local_cls_norm): used in training only.
    pub local_cls_norm: bool,
}

impl Architecture {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.heads
    }

    /// The patch grid of a square image of `image_size` pixels.
    pub fn grid(&self, image_size: usize) -> Grid {
        Grid::square(image_size, self.patch_size)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bias = match (self.qkv_bias, self.qkv_bias_mask) {
            (false, _) => "no qkv bias",
            (true, true) => "qkv bias with K mask",
            (true, false) => "qkv bias without K mask",
        };
        write!(
            f,
            "D={}, {} blocks, {} heads of {}, {} hidden {}, {bias}, {} storage tokens, patch {}",
            self.embed_dim,
            self.depth,
            self.heads,
            self.head_dim(),
            self.ffn.name(),
            self.ffn_hidden,
            self.storage_tokens,
            self.patch_size
        )?;
        if self.cls_norm {
            write!(f, ", cls_norm")?;
        }
        if self.local_cls_norm {
            write!(f, ", local_cls_norm")?;
        }
        Ok(())
    }
}

/// The patch grid of one input: `h` rows and `w` columns of patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub h: usize,
    pub w: usize,
}

impl Grid {
    pub fn square(image_size: usize, patch_size: usize) -> Grid {
        let side = image_size / patch_size;
        Grid { h: side, w: side }
    }

    pub fn patches(&self) -> usize {
        self.h * self.w
    }
}
