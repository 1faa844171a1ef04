//! Differences split by token: per token category (the CLS token, the R storage tokens, the hw
//! patch tokens) and per patch — pure functions of two tensors' bytes, their shape and the token
//! layout.
//!
//! Contracts:
//! - a tensor has a *token axis* of length N = 1 + R + hw ([`TokenLayout::tokens`]); token 0 is
//!   CLS, tokens 1..=R are storage, the rest are patches in row-major grid order (the order
//!   `patch_embed` flattens them). Every other axis is reduced: the axes before the token axis
//!   (batch, heads) and after it (features) all count toward their token;
//! - the same definitions as [`super::compare`]: elements decode to `f64`, sums accumulate in
//!   `f64`, `max_abs` and `rms` are over positions where both sides are finite, and a position
//!   where the two sides are not the same non-finite value is a non-finite mismatch (never in a
//!   maximum or a sum); a category with no finite position has `max_abs` = `rms` = 0;
//! - results do not depend on the thread count: each token is reduced by one thread in index
//!   order, and tokens are combined in token order;
//! - [`per_token`] refuses (with [`TokenError`]) opaque dtypes, element counts that do not match
//!   the shape, and a token axis whose length is not the layout's N; it never panics on them.
//!
//! The storage count R comes from the caller: like the head views (`capture/head.rs`), R = N − 1 −
//! hw, with hw read off a tensor that holds only patches ([`TokenLayout::from_counts`]).

use super::View;
use crate::dump::element::{ElementKind, decode_into, element_size};
use crate::model::Stage;
use crate::model::stage::Dim;
use rayon::prelude::*;
use serde::Serialize;

/// How a token axis is laid out: CLS, then `storage` tokens, then `patches` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenLayout {
    pub storage: usize,
    pub patches: usize,
}

impl TokenLayout {
    /// From a token count N and a patch count hw: R = N − 1 − hw. `None` when N < 1 + hw or
    /// there are no patches.
    pub fn from_counts(tokens: usize, patches: usize) -> Option<TokenLayout> {
        let storage = tokens.checked_sub(1 + patches)?;
        (patches > 0).then_some(TokenLayout { storage, patches })
    }

    /// N = 1 + R + hw.
    pub fn tokens(self) -> usize {
        1 + self.storage + self.patches
    }

    /// The category of token `t` (< N).
    pub fn category(self, t: usize) -> TokenCategory {
        if t == 0 {
            TokenCategory::Cls
        } else if t <= self.storage {
            TokenCategory::Storage
        } else {
            TokenCategory::Patches
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCategory {
    Cls,
    Storage,
    Patches,
}

impl TokenCategory {
    pub const ALL: [TokenCategory; 3] = [
        TokenCategory::Cls,
        TokenCategory::Storage,
        TokenCategory::Patches,
    ];
}

/// The token axis of a canonical stage's tensor of rank `rank`: where `Stage::dims` puts
/// `Tokens`, one less when the tensor lacks the leading batch axis. `None` for stages without a
/// token axis (`input`, `patch_embed`, the head views) and for other ranks.
pub fn token_axis(stage: Stage, rank: usize) -> Option<usize> {
    let dims = stage.dims();
    let at = dims.iter().position(|d| *d == Dim::Tokens)?;
    if rank == dims.len() {
        Some(at)
    } else if rank + 1 == dims.len() && dims[0] == Dim::Batch {
        Some(at - 1)
    } else {
        None
    }
}

/// Why a tensor pair cannot be split by token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{0} elements are compared byte for byte, not by token")]
    Opaque(String),
    #[error("shape {shape:?} has no axis {axis}")]
    NoAxis { shape: Vec<usize>, axis: usize },
    #[error("axis {axis} of shape {shape:?} holds {found} tokens, the layout {expected}")]
    TokenCount {
        shape: Vec<usize>,
        axis: usize,
        found: usize,
        expected: usize,
    },
    #[error("the bytes hold {a} and {b} elements, shape {shape:?} {expected}")]
    ElementCount {
        shape: Vec<usize>,
        a: usize,
        b: usize,
        expected: usize,
    },
}

/// max|Δ| and rms of one token category (or one token).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CategoryDelta {
    /// Tokens in the category.
    pub tokens: usize,
    /// Max |a−b| over positions finite on both sides (0 if none).
    pub max_abs: f64,
    /// sqrt(mean (a−b)²) over the same positions (0 if none).
    pub rms: f64,
    /// Positions finite on both sides.
    pub finite: u64,
    pub nonfinite_mismatches: u64,
}

/// The three categories of one tensor pair; `storage` is `None` when R = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenDeltas {
    pub cls: CategoryDelta,
    pub storage: Option<CategoryDelta>,
    pub patches: CategoryDelta,
}

impl TokenDeltas {
    pub fn get(&self, category: TokenCategory) -> Option<&CategoryDelta> {
        match category {
            TokenCategory::Cls => Some(&self.cls),
            TokenCategory::Storage => self.storage.as_ref(),
            TokenCategory::Patches => Some(&self.patches),
        }
    }
}

/// Sums over one token (or a run of tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct TokenSums {
    max_abs: f64,
    sum_sq: f64,
    finite: u64,
    mismatches: u64,
}

impl TokenSums {
    fn merge(mut self, o: &TokenSums) -> TokenSums {
        self.max_abs = self.max_abs.max(o.max_abs);
        self.sum_sq += o.sum_sq;
        self.finite += o.finite;
        self.mismatches += o.mismatches;
        self
    }

    fn delta(&self, tokens: usize) -> CategoryDelta {
        CategoryDelta {
            tokens,
            max_abs: self.max_abs,
            rms: if self.finite > 0 {
                (self.sum_sq / self.finite as f64).sqrt()
            } else {
                0.0
            },
            finite: self.finite,
            nonfinite_mismatches: self.mismatches,
        }
    }
}

/// The differences of one tensor pair, token by token; [`PerToken::categories`] and
/// [`PerToken::patch_max_abs`] read them.
#[derive(Debug, Clone, PartialEq)]
pub struct PerToken {
    layout: TokenLayout,
    sums: Vec<TokenSums>,
}

impl PerToken {
    pub fn layout(&self) -> TokenLayout {
        self.layout
    }

    /// max|Δ| and rms per category.
    pub fn categories(&self) -> TokenDeltas {
        let r = self.layout.storage;
        let over = |from: usize, to: usize| {
            self.sums[from..to]
                .iter()
                .fold(TokenSums::default(), |acc, s| acc.merge(s))
                .delta(to - from)
        };
        TokenDeltas {
            cls: over(0, 1),
            storage: (r > 0).then(|| over(1, 1 + r)),
            patches: over(1 + r, self.layout.tokens()),
        }
    }

    /// max|Δ| of each patch token, in token order (row-major over the h × w patch grid; length
    /// hw).
    pub fn patch_max_abs(&self) -> Vec<f64> {
        self.sums[1 + self.layout.storage..]
            .iter()
            .map(|s| s.max_abs)
            .collect()
    }

    /// max|Δ| and rms of each token (CLS, storage, patches in order; length N).
    pub fn tokens(&self) -> Vec<CategoryDelta> {
        self.sums.iter().map(|s| s.delta(1)).collect()
    }
}

/// Reduces `a` − `b` (both of `shape`, row-major) over every axis but `axis`, which must hold
/// `layout.tokens()` tokens. Dtypes may differ (an f16 port against an f32 reference), as in
/// [`super::compare`].
pub fn per_token(
    a: View<'_>,
    b: View<'_>,
    shape: &[usize],
    axis: usize,
    layout: TokenLayout,
) -> Result<PerToken, TokenError> {
    for d in [a.dtype, b.dtype] {
        if !ElementKind::decodable(d) {
            return Err(TokenError::Opaque(d.to_string()));
        }
    }
    let Some(&n) = shape.get(axis) else {
        return Err(TokenError::NoAxis {
            shape: shape.to_vec(),
            axis,
        });
    };
    if n != layout.tokens() {
        return Err(TokenError::TokenCount {
            shape: shape.to_vec(),
            axis,
            found: n,
            expected: layout.tokens(),
        });
    }
    let expected = shape.iter().product::<usize>();
    if a.elements() != expected || b.elements() != expected {
        return Err(TokenError::ElementCount {
            shape: shape.to_vec(),
            a: a.elements(),
            b: b.elements(),
            expected,
        });
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let sums = (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0f64; inner], vec![0f64; inner]),
            |(xa, xb), t| {
                (0..outer).fold(TokenSums::default(), |acc, o| {
                    let lo = (o * n + t) * inner;
                    decode_into(a.dtype, &a.data[lo * element_size(a.dtype)..], xa);
                    decode_into(b.dtype, &b.data[lo * element_size(b.dtype)..], xb);
                    acc.merge(&row_sums(xa, xb))
                })
            },
        )
        .collect();
    Ok(PerToken { layout, sums })
}

/// [`per_token`] read by category.
pub fn token_deltas(
    a: View<'_>,
    b: View<'_>,
    shape: &[usize],
    axis: usize,
    layout: TokenLayout,
) -> Result<TokenDeltas, TokenError> {
    per_token(a, b, shape, axis, layout).map(|p| p.categories())
}

fn row_sums(xa: &[f64], xb: &[f64]) -> TokenSums {
    let mut s = TokenSums::default();
    for (&x, &y) in xa.iter().zip(xb) {
        if x.is_finite() && y.is_finite() {
            let d = (x - y).abs();
            s.max_abs = s.max_abs.max(d);
            s.sum_sq += d * d;
            s.finite += 1;
        } else {
            let same = x == y || (x.is_nan() && y.is_nan());
            s.mismatches += u64::from(!same);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockStage, HeadStage, StemStage};
    use safetensors::Dtype;

    fn f32_view(v: &[f32]) -> View<'_> {
        View {
            dtype: Dtype::F32,
            data: bytemuck::cast_slice(v),
        }
    }

    /// [1, N = 1 + 2 + 4, D = 2] with every difference placed by hand.
    #[test]
    fn categories_split_cls_storage_and_patches() {
        let layout = TokenLayout {
            storage: 2,
            patches: 4,
        };
        let a = vec![0f32; 14];
        let mut b = vec![0f32; 14];
        b[1] = 0.5; // CLS, feature 1
        b[2] = 3.0; // storage 0
        b[5] = -4.0; // storage 1
        b[6 + 6] = 2.0; // patch 3 (token 6), feature 0
        let d = token_deltas(f32_view(&a), f32_view(&b), &[1, 7, 2], 1, layout).unwrap();
        assert_eq!(d.cls.tokens, 1);
        assert_eq!(d.cls.max_abs, 0.5);
        assert_eq!(d.cls.rms, (0.25f64 / 2.0).sqrt());
        let s = d.storage.unwrap();
        assert_eq!((s.tokens, s.max_abs, s.rms), (2, 4.0, (25f64 / 4.0).sqrt()));
        assert_eq!((d.patches.tokens, d.patches.max_abs), (4, 2.0));
        assert_eq!(d.patches.rms, (4f64 / 8.0).sqrt());
        let p = per_token(f32_view(&a), f32_view(&b), &[1, 7, 2], 1, layout).unwrap();
        assert_eq!(p.patch_max_abs(), vec![0.0, 0.0, 0.0, 2.0]);
        assert_eq!(p.tokens().len(), 7);
    }

    /// [1, H = 2, N = 3, hd = 2]: the heads axis comes before the tokens and counts toward them.
    #[test]
    fn axes_before_the_tokens_are_reduced_too() {
        let layout = TokenLayout {
            storage: 0,
            patches: 2,
        };
        let a = vec![0f32; 12];
        let mut b = vec![0f32; 12];
        b[6] = 1.0; // head 1, token 0 (CLS)
        b[11] = 7.0; // head 1, token 2 (patch 1)
        let p = per_token(f32_view(&a), f32_view(&b), &[1, 2, 3, 2], 2, layout).unwrap();
        let d = p.categories();
        assert_eq!(d.cls.max_abs, 1.0);
        assert!(d.storage.is_none());
        assert_eq!(p.patch_max_abs(), vec![0.0, 7.0]);
    }

    #[test]
    fn non_finite_values_are_counted_not_summed() {
        let layout = TokenLayout {
            storage: 0,
            patches: 1,
        };
        let a = [f32::NAN, 1.0, f32::INFINITY, 2.0];
        let b = [f32::NAN, 1.5, 0.0, 2.0];
        let d = token_deltas(f32_view(&a), f32_view(&b), &[1, 2, 2], 1, layout).unwrap();
        assert_eq!((d.cls.max_abs, d.cls.finite), (0.5, 1));
        assert_eq!(d.cls.nonfinite_mismatches, 0);
        assert_eq!((d.patches.max_abs, d.patches.finite), (0.0, 1));
        assert_eq!(d.patches.nonfinite_mismatches, 1);
    }

    #[test]
    fn mixed_dtypes_compare_by_value() {
        let layout = TokenLayout {
            storage: 0,
            patches: 1,
        };
        let a = [1f32, 2.0];
        let b: Vec<u8> = [1f64, 2.25].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b = View {
            dtype: Dtype::F64,
            data: &b,
        };
        let d = token_deltas(f32_view(&a), b, &[2, 1], 0, layout).unwrap();
        assert_eq!((d.cls.max_abs, d.patches.max_abs), (0.0, 0.25));
    }

    #[test]
    fn refusals_name_what_does_not_fit() {
        let layout = TokenLayout {
            storage: 1,
            patches: 2,
        };
        let v = [0f32; 8];
        let e = per_token(f32_view(&v), f32_view(&v), &[1, 4, 2], 3, layout).unwrap_err();
        assert!(matches!(e, TokenError::NoAxis { .. }));
        let e = per_token(f32_view(&v), f32_view(&v), &[1, 2, 4], 1, layout).unwrap_err();
        assert!(
            e.to_string().contains("holds 2 tokens, the layout 4"),
            "{e}"
        );
        let short = [0f32; 6];
        let e = per_token(f32_view(&v), f32_view(&short), &[1, 4, 2], 1, layout).unwrap_err();
        assert!(matches!(e, TokenError::ElementCount { .. }));
        let c = View {
            dtype: Dtype::C64,
            data: bytemuck::cast_slice(&v),
        };
        assert!(matches!(
            per_token(c, c, &[1, 4, 1], 1, layout),
            Err(TokenError::Opaque(_))
        ));
    }

    #[test]
    fn layout_from_counts_and_categories() {
        let l = TokenLayout::from_counts(201, 196).unwrap();
        assert_eq!((l.storage, l.patches, l.tokens()), (4, 196, 201));
        assert_eq!(l.category(0), TokenCategory::Cls);
        assert_eq!(l.category(4), TokenCategory::Storage);
        assert_eq!(l.category(5), TokenCategory::Patches);
        assert_eq!(TokenLayout::from_counts(196, 196), None);
        assert_eq!(TokenLayout::from_counts(1, 0), None);
    }

    #[test]
    fn token_axis_follows_the_stage_dims() {
        let q = Stage::Block(0, BlockStage::AttnQ);
        assert_eq!(token_axis(q, 4), Some(2));
        assert_eq!(token_axis(q, 3), Some(1));
        assert_eq!(token_axis(Stage::Block(3, BlockStage::Output), 3), Some(1));
        assert_eq!(token_axis(Stage::Block(3, BlockStage::Output), 2), Some(0));
        assert_eq!(token_axis(Stage::Head(HeadStage::Norm), 3), Some(1));
        assert_eq!(token_axis(Stage::Head(HeadStage::Patches), 3), None);
        assert_eq!(token_axis(Stage::Stem(StemStage::PatchEmbed), 3), None);
        assert_eq!(token_axis(Stage::Block(0, BlockStage::Output), 5), None);
    }
}
