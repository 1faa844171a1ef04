//! Renderers of a [`TriangleReport`] (`dinodiff diff A B C`).
//!
//! Contract: every format shows the three pairwise headlines (cosine and max|Δ| of CLS and the
//! pooled patches), the per-block stage grids of reference ⇔ port and port ⇔ export, the
//! diagnosis in plain words and the verdict. JSON is the report itself, schema
//! `dinodiff.triangle/1`, each side carrying its full `dinodiff.diff/1` report.

use super::table::{TableStyle, grid_table, new_table, value_cell};
use super::{cosine, sci, stage_grid, verdict_line};
use crate::diff::DiffReport;
use crate::triangulate::{Side, TriangleReport};
use comfy_table::{Cell, CellAlignment};
use std::fmt::Write;

fn headline(r: &DiffReport, name: &str) -> Option<(String, String, bool)> {
    r.headline
        .iter()
        .find(|h| h.name == name)
        .map(|h| (cosine(h.cosine), sci(h.max_abs, 3), h.fails))
}

fn input_line(t: &TriangleReport) -> String {
    let hashes: Vec<Option<&str>> = t
        .sides
        .iter()
        .flat_map(|s| {
            [
                s.report.input.a_sha256.as_deref(),
                s.report.input.b_sha256.as_deref(),
            ]
        })
        .collect();
    match hashes.first().copied().flatten() {
        Some(h) if hashes.iter().all(|x| *x == Some(h)) => {
            format!(
                "same input in all three (sha256 {})",
                h.get(..16).unwrap_or(h)
            )
        }
        _ => "inputs not all checked or not all equal (see --format json)".into(),
    }
}

pub fn render_table(t: &TriangleReport, style: &TableStyle) -> String {
    let mut out = String::new();
    let ac = t.side(Side::ReferenceExport);
    let roles = ["reference", "port", "export"];
    let infos = [&ac.a, &t.side(Side::ReferencePort).b, &ac.b];
    for (i, (info, role)) in infos.iter().zip(roles).enumerate() {
        let _ = writeln!(
            out,
            "{}: {} — {} ({}, {} tensors)",
            ["A", "B", "C"][i],
            t.names[i],
            info.path,
            role,
            info.tensors
        );
    }
    let _ = writeln!(out, "input: {}\n", input_line(t));
    let mut h = new_table(style);
    h.set_header(vec![
        "",
        "CLS cosine",
        "CLS max|Δ|",
        "pooled cosine",
        "pooled max|Δ|",
        "verdict",
    ]);
    for s in &t.sides {
        let mut row = vec![Cell::new(&s.label)];
        for name in crate::diff::HEADLINE {
            match headline(&s.report, name) {
                Some((cos, max, fails)) => {
                    row.push(Cell::new(cos).set_alignment(CellAlignment::Right));
                    row.push(value_cell(max, fails, style));
                }
                None => {
                    row.push(Cell::new("n/a"));
                    row.push(Cell::new("n/a"));
                }
            }
        }
        let v = &s.report.verdict;
        row.push(value_cell(
            if v.pass {
                "PASS".into()
            } else {
                format!("FAIL ({} of {})", v.failed, v.compared + v.shape_mismatches)
            },
            !v.pass,
            style,
        ));
        h.add_row(row);
    }
    let _ = writeln!(out, "{h}");
    for side in [Side::ReferencePort, Side::PortExport] {
        let s = t.pair(side);
        if let Some(g) = stage_grid(&s.report) {
            let _ = writeln!(out, "\n{}, max|Δ| per stage:", s.label);
            let _ = writeln!(out, "{}", grid_table(&g, style));
        }
    }
    let _ = writeln!(out, "\ndiagnosis: {}", t.diagnosis.text);
    for s in &t.sides {
        let (a, b) = s.side.ends();
        let (a, b) = (&t.names[a], &t.names[b]);
        let unmatched = &s.report.unmatched;
        if style.list_unmatched && unmatched.a.len() + unmatched.b.len() > 0 {
            let _ = writeln!(
                out,
                "{}: {} tensors only in {a}, {} only in {b}",
                s.label,
                unmatched.a.len(),
                unmatched.b.len()
            );
            for n in &unmatched.a {
                let _ = writeln!(out, "  only in {a}: {n}");
            }
            for n in &unmatched.b {
                let _ = writeln!(out, "  only in {b}: {n}");
            }
        }
        let _ = writeln!(out, "{}: {}", s.label, verdict_line(&s.report));
    }
    out
}

pub fn render_markdown(t: &TriangleReport) -> String {
    let mut out = String::new();
    let status = if t.pass { "PASS ✅" } else { "FAIL ❌" };
    let _ = writeln!(out, "### dinodiff triangulation: {status}\n");
    let _ = writeln!(out, "{}\n", t.diagnosis.text.replace('|', "\\|"));
    let _ = writeln!(
        out,
        "| | CLS cosine | CLS max\\|Δ\\| | pooled cosine | pooled max\\|Δ\\| | verdict |\n|---|---:|---:|---:|---:|---|"
    );
    for s in &t.sides {
        let cell = |name| {
            headline(&s.report, name).map_or(("n/a".into(), "n/a".into()), |(c, m, f)| {
                (c, if f { format!("**{m} ✗**") } else { m })
            })
        };
        let (cc, cm) = cell("cls");
        let (pc, pm) = cell("pooled");
        let v = if s.report.verdict.pass {
            "PASS"
        } else {
            "**FAIL**"
        };
        let _ = writeln!(out, "| {} | {cc} | {cm} | {pc} | {pm} | {v} |", s.label);
    }
    out.push('\n');
    for side in [Side::ReferencePort, Side::PortExport] {
        let s = t.pair(side);
        let body = super::markdown::render(&s.report);
        let _ = writeln!(
            out,
            "<details><summary>{}</summary>\n\n{body}\n</details>\n",
            s.label
        );
    }
    out
}

pub fn render_json(t: &TriangleReport) -> String {
    let mut s = serde_json::to_string_pretty(t).expect("a report always serializes");
    s.push('\n');
    s
}
