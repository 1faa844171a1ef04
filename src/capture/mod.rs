//! Capture backends: each runs one framework and streams every intermediate tensor into a dump.
//!
//! - [`input`]: the model input shared by all backends (`dinodiff prep`).
//! - [`pth`]: a first check of `.pth` checkpoints (any build).
//! - `meta` (feature `torch`): Meta's DINOv3 natively in libtorch (docs/capture-meta.md).

pub mod input;
#[cfg(feature = "torch")]
pub mod meta;
pub mod pth;

/// The compute dtype of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
