//! Capture backends: each runs one framework and streams every intermediate tensor into a dump.
//!
//! - [`input`]: the model input shared by all backends (`dinodiff prep`).
//! - `meta` (feature `torch`), `onnx`, `eqx`: one module per backend (see docs/capture-*.md).

pub mod input;
