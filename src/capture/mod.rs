//! Capture backends: each runs one framework and streams every intermediate tensor into a dump.
//!
//! - [`input`]: the model input shared by all backends (`dinodiff prep`).
//! - [`pth`]: a first check of `.pth` checkpoints (any build).
//! - `meta` (feature `torch`): Meta's DINOv3 natively in libtorch (docs/capture-meta.md).
//! - [`onnx`]: any ONNX model through ONNX Runtime, loaded at run time.
//! - [`eqx`]: an Equinox / JAX run recorded by `tools/eqx_capture.py` (`.npz`), imported.

pub mod eqx;
pub mod head;
pub mod input;
#[cfg(feature = "torch")]
pub mod meta;
pub mod onnx;
pub mod pth;

/// The compute dtype of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

/// `--only REGEX...`: which stages a capture keeps. Empty = all; `input` is always kept (it
/// carries the input hash that `diff` checks).
#[derive(Debug, Clone, Default)]
pub struct StageFilter {
    patterns: Vec<regex::Regex>,
}

impl StageFilter {
    pub fn new(patterns: &[String]) -> anyhow::Result<StageFilter> {
        let patterns = patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p)
                    .map_err(|e| anyhow::anyhow!("--only {p:?} is not a valid regex: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(StageFilter { patterns })
    }

    pub fn keeps(&self, name: &str) -> bool {
        name == crate::model::INPUT_NAME
            || self.patterns.is_empty()
            || self.patterns.iter().any(|p| p.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_keeps_input_and_matches_anywhere_in_the_name() {
        let all = StageFilter::new(&[]).unwrap();
        assert!(all.keeps("blocks.3.ls1"));
        let some = StageFilter::new(&["^blocks\\.5\\.".into(), "cls".into()]).unwrap();
        assert!(some.keeps("input"));
        assert!(some.keeps("blocks.5.attn.q"));
        assert!(some.keeps("cls"));
        assert!(!some.keeps("blocks.15.attn.q"));
        let e = StageFilter::new(&["(".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--only \"(\" is not a valid regex"), "{e}");
    }
}
