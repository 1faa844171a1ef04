//! The `.st` dump format: a plain safetensors file whose `__metadata__` carries a dinodiff
//! manifest (`docs/dump-format.md`).
//!
//! - [`manifest`]: the provenance record and its JSON shape;
//! - [`writer`]: streaming, atomic writer;
//! - [`reader`]: memory-mapped, validating reader;
//! - [`element`]: decoding raw elements to `f64`.

pub mod element;
pub mod fp8;
pub mod manifest;
pub mod reader;
pub mod writer;

pub use manifest::{
    DEPLOYED_PREFIX, FileIdentity, Manifest, OptimizerEffect, OutputEffect, SourceKind,
    TensorRecord, UNMARKED_PREFIX, deployed_name,
};
pub use reader::{Dump, DumpError, TensorEntry};
pub use writer::{DumpWriter, WrittenDump};
