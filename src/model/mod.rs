//! What dinodiff knows about DINOv3, in one place: the model's dimensions ([`Architecture`]),
//! the hub variants ([`Variant`]), the canonical stage vocabulary ([`Stage`]) and the key set of
//! Meta's checkpoints ([`checkpoint`]). No other module spells a stage name or a variant's size.

pub mod architecture;
pub mod checkpoint;
pub mod stage;
pub mod transformers;
pub mod variant;

pub use architecture::{Architecture, Ffn, Grid};
pub use stage::{BlockStage, HeadStage, Headline, INPUT_NAME, Row, Stage, StemStage};
pub use variant::Variant;
