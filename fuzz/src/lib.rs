//! The fuzz targets of dinodiff's parsers ([`targets`]); each `src/bin/<target>.rs` is the AFL++
//! harness of one of them. How to run them: docs/fuzzing.md.

pub mod targets;
