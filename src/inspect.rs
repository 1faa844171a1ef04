//! `dinodiff inspect`: a dump's manifest and per-tensor statistics in execution order, as data
//! ([`Inspection`]); [`crate::report`] renders it.
//!
//! Contract: statistics come from [`crate::metrics::stats`] (finite elements only, NaN and Inf
//! counted apart); the inspection is also the JSON form (`schema` = [`SCHEMA`]): the whole
//! manifest and one object per tensor, in execution order.

use crate::dump::{Dump, Manifest};
use crate::metrics::{self, Stats, View};
use rayon::prelude::*;
use serde::Serialize;

pub const SCHEMA: &str = "dinodiff.inspect/1";

#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    pub name: String,
    /// The framework's own name (the dump name when the dump records none).
    pub native: String,
    pub stage: Option<String>,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub stats: Stats,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub schema: &'static str,
    pub path: String,
    pub file_size: usize,
    pub has_manifest: bool,
    pub manifest: Manifest,
    pub tensors: Vec<TensorSummary>,
}

pub fn inspect(d: &Dump) -> Inspection {
    d.advise_sequential();
    let m = d.manifest();
    let tensors = d
        .tensors()
        .par_iter()
        .map(|t| {
            let rec = m.tensors.get(&t.name);
            TensorSummary {
                name: t.name.clone(),
                native: rec.map_or_else(|| t.name.clone(), |r| r.native.clone()),
                stage: rec.and_then(|r| r.stage.clone()),
                shape: t.shape.clone(),
                dtype: t.dtype.to_string(),
                stats: metrics::stats(View::of(d, t)),
            }
        })
        .collect();
    Inspection {
        schema: SCHEMA,
        path: d.path().display().to_string(),
        file_size: d.file_size(),
        has_manifest: d.has_manifest(),
        manifest: m.clone(),
        tensors,
    }
}
