//! The terminal renderer (`--format table`, the default): comfy-table grids, colour on request.
//!
//! Cells over tolerance are red when colour is on, and carry the marker [`MARK`] when it is off.

use super::{
    Grid, cell_value, cosine, detail_lines, flat_pairs, sci, stage_grid, unmatched_line,
    verdict_line,
};
use crate::diff::{DiffReport, InputStatus, PairResult};
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use std::fmt::Write;

/// Marks a cell over tolerance when colour is off.
pub const MARK: &str = "✗";

pub struct TableStyle {
    pub color: bool,
    /// Wrap to the terminal's width (only when stdout is a terminal).
    pub wrap: bool,
    pub list_unmatched: bool,
}

pub(crate) fn new_table(style: &TableStyle) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(if style.wrap {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    });
    if !style.color {
        t.force_no_tty();
    } else {
        t.enforce_styling();
    }
    t
}

pub(crate) fn value_cell(text: String, fails: bool, style: &TableStyle) -> Cell {
    let cell = if fails && !style.color {
        Cell::new(format!("{text} {MARK}"))
    } else {
        Cell::new(text)
    };
    let cell = cell.set_alignment(CellAlignment::Right);
    if fails && style.color {
        cell.fg(Color::Red).add_attribute(Attribute::Bold)
    } else {
        cell
    }
}

pub(crate) fn grid_table(grid: &Grid, style: &TableStyle) -> Table {
    let mut t = new_table(style);
    let mut header = vec![Cell::new("")];
    header.extend(grid.columns.iter().map(|c| Cell::new(*c)));
    t.set_header(header);
    for (label, cells) in &grid.rows {
        let mut row = vec![Cell::new(label)];
        row.extend(cells.iter().map(|c| match c {
            None => Cell::new("·").set_alignment(CellAlignment::Center),
            Some(c) => {
                let text = match c.label {
                    Some(l) => format!("{l}\n{}", c.value),
                    None => c.value.clone(),
                };
                value_cell(text, c.fails, style)
            }
        }));
        t.add_row(row);
    }
    t
}

fn flat_table(pairs: &[&PairResult], style: &TableStyle) -> Table {
    let mut t = new_table(style);
    t.set_header(vec![
        "tensor", "shape", "dtype", "max|Δ|", "mean|Δ|", "cosine",
    ]);
    for p in pairs {
        let name = if p.a == p.b {
            p.name.clone()
        } else {
            format!("{} ⇔ {}", p.a, p.b)
        };
        let dtype = if p.dtype_a == p.dtype_b {
            p.dtype_a.clone()
        } else {
            format!("{}/{}", p.dtype_a, p.dtype_b)
        };
        let (mean, cos) = p.metrics.as_ref().map_or(("".into(), "".into()), |m| {
            (sci(m.mean_abs, 3), cosine(m.cosine))
        });
        t.add_row(vec![
            Cell::new(name),
            Cell::new(format!("{:?}", p.shape_a)),
            Cell::new(dtype),
            value_cell(
                p.metrics
                    .as_ref()
                    .filter(|m| m.nonfinite_mismatches == 0 && !m.exact)
                    .map_or_else(|| cell_value(p), |m| sci(m.max_abs, 3)),
                p.fails,
                style,
            ),
            Cell::new(mean).set_alignment(CellAlignment::Right),
            Cell::new(cos).set_alignment(CellAlignment::Right),
        ]);
    }
    t
}

pub fn render(r: &DiffReport, style: &TableStyle) -> String {
    let mut out = String::new();
    let side = |d: &crate::diff::DumpInfo| {
        let mut s = format!("{} ({}", d.path, d.source);
        if let Some(v) = &d.variant {
            s.push_str(&format!(", {v}"));
        }
        s.push_str(&format!(", {} tensors)", d.tensors));
        s
    };
    let _ = writeln!(out, "A: {}", side(&r.a));
    let _ = writeln!(out, "B: {}", side(&r.b));
    let input = match r.input.status {
        InputStatus::Match => format!(
            "same input (sha256 {})",
            r.input
                .a_sha256
                .as_deref()
                .unwrap_or("")
                .get(..16)
                .unwrap_or("")
        ),
        InputStatus::MismatchAllowed => {
            "DIFFERENT inputs (allowed by --allow-input-mismatch)".to_string()
        }
        InputStatus::Unknown => "not checked (a dump records no input hash)".to_string(),
    };
    let _ = writeln!(out, "input: {input}");
    if !r.headline.is_empty() {
        out.push('\n');
        let mut t = new_table(style);
        t.set_header(vec!["", "cosine", "max|Δ|"]);
        for h in &r.headline {
            let label = if h.name == "cls" {
                "CLS token"
            } else {
                "pooled patches"
            };
            t.add_row(vec![
                Cell::new(label),
                Cell::new(cosine(h.cosine)).set_alignment(CellAlignment::Right),
                value_cell(sci(h.max_abs, 3), h.fails, style),
            ]);
        }
        let _ = writeln!(out, "{t}");
    }
    let grid = stage_grid(r);
    if let Some(g) = &grid {
        out.push('\n');
        let _ = writeln!(out, "max|Δ| per stage:");
        let _ = writeln!(out, "{}", grid_table(g, style));
    }
    let flat = flat_pairs(r, grid.is_some());
    if !flat.is_empty() {
        out.push('\n');
        if grid.is_some() {
            let _ = writeln!(out, "other tensors:");
        }
        let _ = writeln!(out, "{}", flat_table(&flat, style));
    }
    out.push('\n');
    let mut detail = |title: &str, i: usize| {
        let p = &r.pairs[i];
        let _ = writeln!(out, "{title}: {}", p.name);
        for l in detail_lines(p) {
            let _ = writeln!(out, "  {l}");
        }
    };
    match (r.first_over, r.worst) {
        (Some(f), Some(w)) if f == w => detail("first and worst over tolerance", f),
        (Some(f), Some(w)) => {
            detail("first over tolerance", f);
            detail("worst", w);
        }
        (None, Some(w))
            if r.pairs[w]
                .metrics
                .as_ref()
                .is_some_and(|m| m.max_abs == 0.0 && m.nonfinite_mismatches == 0) =>
        {
            let _ = writeln!(out, "every compared pair is equal: max|Δ| 0 everywhere");
        }
        (None, Some(w)) => detail("largest difference", w),
        _ => {}
    }
    if let Some(u) = unmatched_line(r) {
        let _ = writeln!(out, "{u}");
        if style.list_unmatched {
            for n in &r.unmatched.a {
                let _ = writeln!(out, "  only in A: {n}");
            }
            for n in &r.unmatched.b {
                let _ = writeln!(out, "  only in B: {n}");
            }
        }
    }
    let _ = writeln!(out, "{}", verdict_line(r));
    out
}
