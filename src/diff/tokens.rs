//! `diff --tokens`: which token layout a dump has, and the per-token-category differences of a
//! pair ([`crate::metrics::tokens`] does the arithmetic).
//!
//! Contract: the layout is N = 1 + R + hw. N is the token axis of the dump's first canonical
//! stage that has one; hw is the patch count of `patches` or `patch_embed` (as the head views
//! derive it, `capture/head.rs`), and R = N − 1 − hw. A dump with neither stage takes R from the
//! architecture of the variant its manifest names. Without a layout, or for a pair whose stage
//! has no token axis (`input`, `patch_embed`, RoPE tables, the head views) or whose token axis
//! does not hold N tokens, there is no breakdown.

use crate::dump::Dump;
use crate::metrics::View;
use crate::metrics::tokens::{self, TokenDeltas, TokenLayout};
use crate::model::{HeadStage, Stage, StemStage, Variant};

/// The token layout of a dump, if it can be told (see the module contract).
pub fn layout_of(d: &Dump) -> Option<TokenLayout> {
    let tokens = d.tensors().iter().find_map(|t| {
        let stage = Stage::parse(&t.name)?;
        t.shape
            .get(tokens::token_axis(stage, t.shape.len())?)
            .copied()
    })?;
    let patches = [
        Stage::Head(HeadStage::Patches),
        Stage::Stem(StemStage::PatchEmbed),
    ]
    .iter()
    .find_map(|s| {
        let shape = &d.get(&s.to_string())?.shape;
        shape.get(shape.len().checked_sub(2)?).copied()
    });
    match patches {
        Some(hw) => TokenLayout::from_counts(tokens, hw),
        None => {
            let variant = Variant::lookup(d.manifest().variant.as_deref()?).ok()?;
            let storage = variant.arch.storage_tokens;
            TokenLayout::from_counts(tokens, tokens.checked_sub(1 + storage)?)
        }
    }
}

/// The breakdown of one compared pair named `key`, with A's `shape`; `None` when it has none.
pub fn pair_tokens(
    key: &str,
    shape: &[usize],
    a: View<'_>,
    b: View<'_>,
    layout: TokenLayout,
) -> Option<TokenDeltas> {
    let axis = tokens::token_axis(Stage::parse(key)?, shape.len())?;
    tokens::token_deltas(a, b, shape, axis, layout).ok()
}
