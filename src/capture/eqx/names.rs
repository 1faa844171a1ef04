//! Equinox names -> canonical stages: the pytree paths of jax2onnx's example model
//! (`blocks[3].ls1`) and the recorder's internals (`blocks[3].attn:q`, `rope:sin`), as listed in
//! docs/capture-eqx.md. Names of another Equinox implementation go here too, beside these.

use crate::model::{BlockStage, HeadStage, Stage, StemStage};

/// The canonical stage of an Equinox name, or `None` when it has none.
pub fn canonical_stage(name: &str) -> Option<Stage> {
    let direct = match name {
        "input" => Some(Stage::INPUT),
        "patch_embed" => Some(Stage::Stem(StemStage::PatchEmbed)),
        "tokens" => Some(Stage::Stem(StemStage::Tokens)),
        "rope:sin" => Some(Stage::Stem(StemStage::RopeSin)),
        "rope:cos" => Some(Stage::Stem(StemStage::RopeCos)),
        "norm" => Some(Stage::NORM),
        "cls" => Some(Stage::Head(HeadStage::Cls)),
        "storage" => Some(Stage::Head(HeadStage::Storage)),
        "patches" => Some(Stage::Head(HeadStage::Patches)),
        "pooled" => Some(Stage::Head(HeadStage::Pooled)),
        _ => None,
    };
    if direct.is_some() {
        return direct;
    }
    let (index, tail) = block_path(name, "blocks[")?;
    let stage = match tail {
        "" => BlockStage::Output,
        ".norm1" => BlockStage::Norm1,
        ".attn:qkv" => BlockStage::AttnQkv,
        ".attn:q" => BlockStage::AttnQ,
        ".attn:k" => BlockStage::AttnK,
        ".attn:v" => BlockStage::AttnV,
        ".attn:sdpa" => BlockStage::AttnSdpa,
        ".attn" => BlockStage::Attn,
        ".ls1" => BlockStage::Ls1,
        ":residual1" => BlockStage::Residual1,
        ".norm2" => BlockStage::Norm2,
        ".mlp:hidden" => BlockStage::MlpHidden,
        ".mlp" => BlockStage::Mlp,
        ".ls2" => BlockStage::Ls2,
        _ => return None,
    };
    Some(Stage::Block(index, stage))
}

/// `(i, tail)` of a pytree path `{prefix}i]{tail}` (`blocks[3].ls1` with prefix `blocks[`), where
/// `i` is written as Python writes an index (`blocks[03]` is not a pytree path).
pub fn block_path<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (digits, tail) = name.strip_prefix(prefix)?.split_once(']')?;
    let index: usize = digits.parse().ok()?;
    (index.to_string() == digits).then_some((index, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equinox_names_map_to_canonical_stages() {
        let cases = [
            ("patch_embed", Some("patch_embed")),
            ("rope:sin", Some("rope.sin")),
            ("blocks[0]", Some("blocks.0.output")),
            ("blocks[11].attn", Some("blocks.11.attn")),
            ("blocks[3].attn:q", Some("blocks.3.attn.q")),
            ("blocks[3].attn:sdpa", Some("blocks.3.attn.sdpa")),
            ("blocks[3]:residual1", Some("blocks.3.residual1")),
            ("blocks[3].mlp:hidden", Some("blocks.3.mlp.hidden")),
            ("blocks[3].mlp", Some("blocks.3.mlp")),
            ("blocks[3].mlp.fc1", None),
            ("blocks[3]:input", None),
            ("blocks[3].attn.core.attn.query_proj", None),
            ("blocks[x].ls1", None),
            ("blocks[03].ls1", None),
            ("output", None),
        ];
        for (name, want) in cases {
            let got = canonical_stage(name).map(|s| s.to_string());
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }
}
