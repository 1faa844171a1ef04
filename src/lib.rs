//! dinodiff: find where numerical parity breaks between implementations of the same network.
//!
//! The library holds all logic and does not depend on clap; the binary (`main.rs` with its
//! `cli.rs`, the argument definitions, and `app.rs`, the dispatch) parses the command line, calls
//! the library and maps errors to exit codes. Modules, one concern each:
//! - [`dump`]: the `.st` format (manifest, streaming writer, validating reader);
//! - [`model`]: DINOv3 variants, the canonical stage vocabulary, Meta's checkpoint keys;
//! - [`onnx`]: the ONNX protobuf subset and local-function inlining;
//! - [`checkpoint`]: a reader of `torch.save` checkpoints (zip, pickle allow-list, containers);
//! - [`capture`]: capture backends and the shared model input (`prep`);
//! - [`align`], [`metrics`], [`diff`], [`triangulate`]: the comparisons, as data;
//! - [`figures`]: what `dinodiff report` draws beyond the numbers (token breakdowns, patch maps,
//!   the input image), as data;
//! - [`report`]: their renderers (and the inspection's), the only place data becomes words;
//! - [`inspect`], [`synth`], [`vocabulary`]: the other subcommands;
//! - [`pytools`]: the Python helpers of `tools/` embedded in the binary (`dinodiff tools`, and the
//!   Equinox recorder `capture eqx --model` runs);
//! - [`exit`] (exit codes), [`cleanup`] (temporary files removed on SIGINT/SIGTERM), [`progress`].

pub mod align;
pub mod capture;
pub mod checkpoint;
pub mod cleanup;
pub mod diff;
pub mod dump;
pub mod exit;
pub mod figures;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod progress;
pub mod pytools;
pub mod report;
pub mod synth;
pub mod triangulate;
pub mod vocabulary;
