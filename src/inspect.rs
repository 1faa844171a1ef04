//! `dinodiff inspect`: a dump's manifest summary and per-tensor statistics in execution order.
//!
//! Contract: statistics come from [`crate::metrics::stats`] (finite elements only, NaN and Inf
//! counted apart); the JSON form (`schema` = `dinodiff.inspect/1`) carries the whole manifest and
//! one object per tensor, in execution order.

use crate::dump::{Dump, Manifest};
use crate::metrics::{self, Stats, View};
use crate::report::sci;
use comfy_table::{Cell, CellAlignment, Table, presets};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write;

#[derive(Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub native: String,
    pub stage: Option<String>,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub stats: Stats,
}

#[derive(Serialize)]
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
                stats: metrics::stats(View {
                    dtype: t.dtype,
                    data: d.data(t),
                }),
            }
        })
        .collect();
    Inspection {
        schema: "dinodiff.inspect/1",
        path: d.path().display().to_string(),
        file_size: d.file_size(),
        has_manifest: d.has_manifest(),
        manifest: m.clone(),
        tensors,
    }
}

pub fn render_json(i: &Inspection) -> String {
    let mut s = serde_json::to_string_pretty(i).expect("an inspection always serializes");
    s.push('\n');
    s
}

pub fn render_table(i: &Inspection) -> String {
    let mut out = String::new();
    let m = &i.manifest;
    let _ = writeln!(
        out,
        "{} ({} bytes, {} tensors)",
        i.path,
        i.file_size,
        i.tensors.len()
    );
    if !i.has_manifest {
        let _ = writeln!(
            out,
            "no dinodiff manifest: a plain safetensors file (order = data order)"
        );
    } else {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "source: {}  (dinodiff {}, format {})",
            m.source, m.dinodiff_version, m.format_version
        );
        let _ = writeln!(out, "created: {} on {}", m.created, m.host);
        if !m.command_line.is_empty() {
            let _ = writeln!(out, "command: {}", m.command_line.join(" "));
        }
        if let Some(model) = &m.model {
            let _ = writeln!(
                out,
                "model: {} ({} bytes, sha256 {})",
                model.path, model.size, model.sha256
            );
        }
        let _ = writeln!(
            out,
            "variant: {}  device: {}  dtype: {}",
            opt(&m.variant),
            opt(&m.device),
            opt(&m.dtype)
        );
        if !m.frameworks.is_empty() {
            let fw: Vec<String> = m
                .frameworks
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "frameworks: {}", fw.join(", "));
        }
        let _ = writeln!(out, "input sha256: {}", opt(&m.input_sha256));
        if let Some(input) = &m.input {
            let _ = writeln!(out, "input: {input}");
        }
    }
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.force_no_tty();
    t.set_header(vec![
        "#", "tensor", "native", "shape", "dtype", "min", "max", "mean", "std", "NaN", "Inf",
    ]);
    let num = |x: Option<f64>| {
        Cell::new(x.map_or_else(|| "-".into(), |v| sci(v, 3))).set_alignment(CellAlignment::Right)
    };
    for (k, s) in i.tensors.iter().enumerate() {
        let native = if s.native == s.name {
            ""
        } else {
            s.native.as_str()
        };
        t.add_row(vec![
            Cell::new(k),
            Cell::new(&s.name),
            Cell::new(native),
            Cell::new(format!("{:?}", s.shape)),
            Cell::new(&s.dtype),
            num(s.stats.min),
            num(s.stats.max),
            num(s.stats.mean),
            num(s.stats.std),
            Cell::new(s.stats.nan).set_alignment(CellAlignment::Right),
            Cell::new(s.stats.inf).set_alignment(CellAlignment::Right),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}
