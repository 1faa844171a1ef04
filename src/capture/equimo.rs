//! equimo's DINOv3 in `capture eqx`: the names `tools/equimo_capture.py` records for equimo 2.x's
//! `VisionTransformer`, mapped to canonical stages.
//!
//! Contract:
//! - a recording is equimo's when its manifest's `model.kind` starts with [`KIND_PREFIX`]
//!   ([`is_equimo`]); the import then maps names with [`canonical_stage`] instead of the
//!   jax2onnx example's table (docs/capture-eqx.md has both tables);
//! - equimo keeps its blocks in chunks: DINOv3 has one, `blocks[0]`, whose `blocks[i]` is
//!   block `i`; a name in another chunk has no canonical stage;
//! - the recording's `model.variant` (dinodiff's short name, `vits16`) names the dump's variant
//!   when it is one `dinodiff variants` lists ([`variant`]), else the dump says `custom`.

use crate::model::{BlockStage, HeadStage, Stage, StemStage};
use serde_json::Value;

/// The start of `model.kind` in the manifest of an equimo recording
/// (`equimo.vision.models.vit.VisionTransformer`).
pub const KIND_PREFIX: &str = "equimo.";

/// Whether the recorder's manifest describes an equimo model.
pub fn is_equimo(recorded: &Value) -> bool {
    recorded["model"]["kind"]
        .as_str()
        .is_some_and(|kind| kind.starts_with(KIND_PREFIX))
}

/// The hub variant the recording names (`model.variant`), when dinodiff knows it; `custom`
/// when it names another; `None` when it names none.
pub fn variant(recorded: &Value) -> Option<String> {
    let name = recorded["model"]["variant"].as_str()?;
    let known = crate::model::variant::VARIANTS
        .iter()
        .any(|v| v.name == name);
    Some(if known { name.into() } else { "custom".into() })
}

/// The canonical stage of a name in an equimo recording, or `None` when it has none.
pub fn canonical_stage(name: &str) -> Option<Stage> {
    let direct = match name {
        "input" => Some(Stage::INPUT),
        "patch_embed" => Some(Stage::Stem(StemStage::PatchEmbed)),
        "tokens" => Some(Stage::Stem(StemStage::Tokens)),
        "rope:sin" => Some(Stage::Stem(StemStage::RopeSin)),
        "rope:cos" => Some(Stage::Stem(StemStage::RopeCos)),
        "norm" => Some(Stage::NORM),
        "pooled" => Some(Stage::Head(HeadStage::Pooled)),
        _ => None,
    };
    if direct.is_some() {
        return direct;
    }
    let (index, tail) = crate::capture::eqx::block_path(name, "blocks[0].blocks[")?;
    let stage = match tail {
        "" => BlockStage::Output,
        ".prenorm" => BlockStage::Norm1,
        ".attn.qkv" => BlockStage::AttnQkv,
        ".attn:q" => BlockStage::AttnQ,
        ".attn:k" => BlockStage::AttnK,
        ".attn:v" => BlockStage::AttnV,
        ".attn:sdpa" => BlockStage::AttnSdpa,
        ".attn" => BlockStage::Attn,
        ".ls1" => BlockStage::Ls1,
        ".drop_path1" => BlockStage::Residual1,
        ".norm" => BlockStage::Norm2,
        ".mlp:hidden" => BlockStage::MlpHidden,
        ".mlp" => BlockStage::Mlp,
        ".ls2" => BlockStage::Ls2,
        _ => return None,
    };
    Some(Stage::Block(index, stage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equimo_names_map_to_canonical_stages() {
        let cases = [
            ("patch_embed", Some("patch_embed")),
            ("patch_embed.proj", None),
            ("tokens", Some("tokens")),
            ("rope:cos", Some("rope.cos")),
            ("blocks[0].blocks[0]", Some("blocks.0.output")),
            ("blocks[0].blocks[11].prenorm", Some("blocks.11.norm1")),
            ("blocks[0].blocks[3].attn.qkv", Some("blocks.3.attn.qkv")),
            ("blocks[0].blocks[3].attn:v", Some("blocks.3.attn.v")),
            ("blocks[0].blocks[3].attn:sdpa", Some("blocks.3.attn.sdpa")),
            ("blocks[0].blocks[3].attn", Some("blocks.3.attn")),
            ("blocks[0].blocks[3].drop_path1", Some("blocks.3.residual1")),
            ("blocks[0].blocks[3].norm", Some("blocks.3.norm2")),
            (
                "blocks[0].blocks[3].mlp:hidden",
                Some("blocks.3.mlp.hidden"),
            ),
            ("blocks[0].blocks[3].ls2", Some("blocks.3.ls2")),
            ("blocks[0].blocks[3].drop_path2", None),
            ("blocks[0].blocks[3].attn.proj", None),
            ("blocks[0].blocks[03].ls1", None),
            ("blocks[1].blocks[0].ls1", None),
            ("blocks[0]", None),
            ("blocks[3].ls1", None),
            ("norm", Some("norm")),
            ("pooled", Some("pooled")),
            ("head", None),
        ];
        for (name, want) in cases {
            let got = canonical_stage(name).map(|s| s.to_string());
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }

    #[test]
    fn the_kind_and_variant_come_from_the_manifest() {
        let equimo = json!({"model": {"kind": "equimo.vision.models.vit.VisionTransformer",
                                      "variant": "vits16"}});
        assert!(is_equimo(&equimo));
        assert_eq!(variant(&equimo).as_deref(), Some("vits16"));
        let other = json!({"model": {"kind": "jax2onnx.plugins.examples.eqx.dino.VisionTransformer",
                                     "variant": "dinov3_vitl16_pretrain_sat493m"}});
        assert!(!is_equimo(&other));
        assert_eq!(variant(&other).as_deref(), Some("custom"));
        assert!(!is_equimo(&json!({})));
        assert_eq!(variant(&json!({})), None);
    }
}
