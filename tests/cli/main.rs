//! The integration tests: one binary running dinodiff end to end, a module per command (or
//! concern), with the helpers they share in `common`. Snapshots live in `snapshots/`, named
//! `cli__<module>__<name>.snap`.

mod common;

mod align;
mod bad_inputs;
mod capture;
mod diff;
mod errors;
mod fit;
mod fuzz_corpus;
mod inspect;
mod prep;
mod report;
mod synth;
mod tools;
mod triangle;
