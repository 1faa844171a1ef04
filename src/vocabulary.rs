//! `dinodiff stages` and `dinodiff variants`: the model vocabulary as data, for people and for
//! the Python tools (which read the JSON instead of keeping copies of it).
//!
//! Contract (JSON schemas `dinodiff.stages/1` and `dinodiff.variants/1`, docs/stages.md):
//! - every stage has a stable `id` (never changes, what tools key on) and its canonical `name`
//!   (what dumps hold; a block stage's full name is `blocks.<i>.<name>`), its `group`
//!   (stem / block / head: the stage table's row), its `shape` as symbols from `dims`, and its
//!   `headline` role when it has one; stages are listed in execution order;
//! - every hub variant has its short `name`, the hub's `ffn_ratio` / `ffn_align` and its
//!   architecture (the fields of [`Architecture`], `ffn` as `mlp` or `swiglu`).

use crate::model::stage::Dim;
use crate::model::variant::VARIANTS;
use crate::model::{Architecture, BlockStage, HeadStage, Stage, StemStage};
use serde::Serialize;

pub const STAGES_SCHEMA: &str = "dinodiff.stages/1";
pub const VARIANTS_SCHEMA: &str = "dinodiff.variants/1";

#[derive(Debug, Serialize)]
pub struct StageList {
    pub schema: &'static str,
    /// How a block stage's full name is formed from its block index and name.
    pub block_name: &'static str,
    pub dims: Vec<DimInfo>,
    pub stages: Vec<StageInfo>,
}

#[derive(Debug, Serialize)]
pub struct DimInfo {
    pub symbol: &'static str,
    pub meaning: &'static str,
}

#[derive(Debug, Serialize)]
pub struct StageInfo {
    pub id: String,
    pub name: &'static str,
    pub group: &'static str,
    pub shape: Vec<&'static str>,
    pub headline: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct VariantList {
    pub schema: &'static str,
    pub variants: Vec<VariantInfo>,
}

#[derive(Debug, Serialize)]
pub struct VariantInfo {
    pub name: &'static str,
    /// Meta's name prefix (`dinov3_<name>`); full names append `_pretrain_<dataset>`.
    pub hub_name: String,
    pub ffn_ratio: usize,
    pub ffn_align: usize,
    pub head_dim: usize,
    #[serde(flatten)]
    pub arch: Architecture,
}

fn meaning(d: Dim) -> &'static str {
    match d {
        Dim::Batch => "batch (1 in every capture)",
        Dim::Channels => "image channels (3)",
        Dim::Height => "image height in pixels",
        Dim::Width => "image width in pixels",
        Dim::Patches => "patches: h * w of the patch grid",
        Dim::Tokens => "tokens: 1 + R + hw",
        Dim::Storage => "storage (register) tokens",
        Dim::Embed => "embedding width",
        Dim::Qkv => "3 * D, the fused qkv projection",
        Dim::Heads => "attention heads",
        Dim::HeadDim => "head dimension D / heads",
        Dim::Hidden => "feed-forward hidden width",
    }
}

fn info(stage: Stage, id: String) -> StageInfo {
    StageInfo {
        id,
        name: stage.column(),
        group: match stage {
            Stage::Stem(_) => "stem",
            Stage::Block(..) => "block",
            Stage::Head(_) => "head",
        },
        shape: stage.dims().iter().map(|d| d.symbol()).collect(),
        headline: stage.headline().map(|h| h.stage().column()),
    }
}

/// Every stage kind once (block stages without an index), in execution order.
pub fn stages() -> StageList {
    let stem = StemStage::ALL.iter().map(|&s| info(Stage::Stem(s), id(s)));
    let block = BlockStage::ALL
        .iter()
        .map(|&s| info(Stage::Block(0, s), id(s)));
    let head = HeadStage::ALL.iter().map(|&s| info(Stage::Head(s), id(s)));
    StageList {
        schema: STAGES_SCHEMA,
        block_name: "blocks.{i}.{name}",
        dims: Dim::ALL
            .iter()
            .map(|&d| DimInfo {
                symbol: d.symbol(),
                meaning: meaning(d),
            })
            .collect(),
        stages: stem.chain(block).chain(head).collect(),
    }
}

/// The stable id of a stage kind: its Rust variant name in snake case (`AttnQkv` -> `attn_qkv`).
fn id(kind: impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{kind:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn variants() -> VariantList {
    VariantList {
        schema: VARIANTS_SCHEMA,
        variants: VARIANTS
            .iter()
            .map(|v| VariantInfo {
                name: v.name,
                hub_name: format!("dinov3_{}", v.name),
                ffn_ratio: v.ffn_ratio,
                ffn_align: v.ffn_align,
                head_dim: v.arch.head_dim(),
                arch: v.arch,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dim_is_described_once() {
        let list = stages();
        let used: std::collections::BTreeSet<&str> =
            list.stages.iter().flat_map(|s| s.shape.clone()).collect();
        let described: std::collections::BTreeSet<&str> =
            list.dims.iter().map(|d| d.symbol).collect();
        assert_eq!(described.len(), Dim::ALL.len());
        assert!(used.is_subset(&described), "{used:?} vs {described:?}");
    }

    #[test]
    fn ids_are_snake_case_and_unique() {
        let list = stages();
        let ids: Vec<&str> = list.stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(&ids[..3], ["input", "patch_embed", "tokens"]);
        assert!(ids.contains(&"attn_qkv") && ids.contains(&"mlp_hidden"));
        // `norm` is a head stage; `norm1` a block stage: ids are unique across groups.
        let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }
}
