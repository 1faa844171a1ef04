//! `dinodiff capture eqx`: imports an Equinox / JAX run recorded by `tools/eqx_capture.py` (an
//! `.npz`) into a dump, or, given the model (`--model`), records it first with the recorder
//! embedded in the binary and the user's Python.
//!
//! Files: `npz.rs` (the import), `names.rs` (Equinox names -> canonical stages), `record.rs`
//! (`--model`: record, then import), `skeleton.rs` (the model's constructor config: sidecar,
//! `--variant`, `--config` or inferred), `leaves.rs` (the records of an `.eqx` file), `npy.rs`
//! (the guard in front of npyz's header parser, for both).
//!
//! Contract of the import:
//! - the npz must hold `__dinodiff_manifest__` (UTF-8 JSON as a 1-D uint8 array, format
//!   `dinodiff-eqx-npz` version 1) whose `order` lists the arrays in execution order; every
//!   listed array must exist, and arrays not listed are refused (a recording is complete or it is
//!   not imported);
//! - arrays are read with `npyz`: f16, f32, f64, signed and unsigned integers and bool are taken
//!   as they are; 2-byte void arrays are bf16 only when the manifest says the array is `bfloat16`
//!   (how numpy saves `ml_dtypes.bfloat16`); object arrays are refused, never unpickled; other
//!   dtypes (complex, strings, structured) and Fortran-ordered arrays are refused by name;
//! - Equinox names (pytree paths, `blocks[3].ls1`, and the tool's internals, `blocks[3].attn:q`)
//!   are mapped to canonical stages by [`canonical_stage`] (docs/capture-eqx.md has the table),
//!   those of equimo's DINOv3 (`tools/equimo_capture.py`, told by the manifest's model kind) by
//!   [`crate::capture::equimo`]; others keep their names. A canonical stage that lacks its leading batch dimension gets it
//!   (Equinox modules run unbatched); the record says so (`eqx_shape`);
//! - `cls`, `storage`, `patches` and `pooled` are derived from `norm` ([`crate::capture::head`])
//!   when the recording does not hold them (the Equinox model drops storage tokens from its
//!   output and does not pool), with R = N - 1 - hw read off the `patches` or `patch_embed`
//!   shape (nothing is derived without one); their records say `derived`;
//! - the recorded `input` array must hash to the manifest's input sha256, and, with `--input`, to
//!   that dump's `input_sha256` (a recording of another input is refused).

pub mod leaves;
mod names;
mod npy;
mod npz;
pub mod record;
pub mod skeleton;

pub use names::{block_path, canonical_stage};
pub use npz::{EqxImport, EqxOptions, FORMAT, MANIFEST_ARRAY, import};
pub use record::{RecordOptions, Recorded, RecorderKind, record_and_import};
