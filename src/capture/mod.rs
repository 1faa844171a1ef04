//! Capture backends: each runs one framework and streams every intermediate tensor into a dump.
//!
//! - [`input`]: the model input shared by all backends (`dinodiff prep`).
//! - [`pth`]: a first check of `.pth` checkpoints (any build).
//! - `meta` (feature `torch`): Meta's DINOv3 natively in libtorch (docs/capture-meta.md).
//! - [`onnx`]: any ONNX model through ONNX Runtime, loaded at run time.
//! - [`eqx`]: an Equinox / JAX run recorded by `tools/eqx_capture.py` (`.npz`), imported;
//!   [`equimo`]: the stage names of equimo's DINOv3 (`tools/equimo_capture.py`).

pub mod equimo;
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

    /// Refuses a pattern that matches none of `names` (all a capture could keep): a typo would
    /// otherwise give a dump of `input` alone. `of` says whose names they are, for the message.
    pub fn check_matches<'n>(
        &self,
        names: impl Iterator<Item = &'n str> + Clone,
        of: &str,
    ) -> anyhow::Result<()> {
        for p in &self.patterns {
            if !names.clone().any(|n| p.is_match(n)) {
                anyhow::bail!(
                    "--only {:?} matches no stage or value of {of}; stage names are those \
                     `dinodiff stages` lists (e.g. blocks.0.ls1, cls)",
                    p.as_str()
                );
            }
        }
        Ok(())
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

    #[test]
    fn a_pattern_that_matches_nothing_is_refused() {
        let names = ["input", "blocks.0.ls1", "cls"];
        let some = StageFilter::new(&["ls1$".into(), "^cls".into()]).unwrap();
        assert!(some.check_matches(names.into_iter(), "m.onnx").is_ok());
        let typo = StageFilter::new(&["cls".into(), "bloks".into()]).unwrap();
        let e = typo
            .check_matches(names.into_iter(), "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--only \"bloks\" matches no stage or value of m.onnx; "),
            "{e}"
        );
    }
}
