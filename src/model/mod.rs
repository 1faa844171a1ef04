//! What dinodiff knows about DINOv3: the canonical stage vocabulary and the hub variants.

pub mod stages;
pub mod variant;

pub use stages::{Group, Stage};
pub use variant::Variant;
