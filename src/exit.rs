//! Exit codes, in one place (documented in docs/exit-codes.md and the README).
//!
//! - [`WITHIN_TOLERANCE`] (0): the command did its job; for `diff`, every pair is within tolerance.
//! - [`OVER_TOLERANCE`] (1): `diff` ran and found tensors over tolerance (or mismatched shapes).
//! - [`ERROR`] (2): the command could not do its job: bad arguments, unreadable or malformed
//!   input, dumps of different inputs, a backend not compiled in. Nothing was written.
//! - SIGINT, SIGTERM, SIGHUP: the run's temporary files are removed and the process ends by the
//!   signal itself ([`crate::cleanup`]); a shell reports 130, 143, 129.

use std::process::ExitCode;

pub const WITHIN_TOLERANCE: u8 = 0;
pub const OVER_TOLERANCE: u8 = 1;
pub const ERROR: u8 = 2;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
