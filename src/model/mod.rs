//! What dinodiff knows about DINOv3: the canonical stage vocabulary, the hub
//! variants and the key set of Meta's checkpoints.

pub mod checkpoint;
pub mod stages;
pub mod variant;

pub use stages::{Group, Stage};
pub use variant::Variant;
