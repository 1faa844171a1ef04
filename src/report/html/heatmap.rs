//! The block × stage heatmap of one pair: the stage grid of [`super::super::view`] (a stem row,
//! one row per block, a head row; one cell per compared stage) filled by log10 of max|Δ|, rms or
//! the cosine distance 1 − cos (radio buttons switch, CSS only), cells over tolerance outlined,
//! the first stage over tolerance marked.
//!
//! Contract: every cell is a `<g class="cell" data-stage="…">` (the test counts them against the
//! report's canonical pairs); the three metrics share one colour scale per metric across the
//! page ([`Scales`]), so two sides of a triangle can be compared by colour.

use super::svg::{self, LogScale, esc};
use crate::diff::{DiffReport, PairResult};
use crate::model::Stage;
use crate::report::view::Grid;
use crate::report::words;
use std::collections::HashMap;
use std::fmt::Write;

/// The metrics a heatmap can show: (CSS class, radio label, colour-bar title).
pub const METRICS: [(&str, &str, &str); 3] = [
    ("max", "max|Δ|", "log10 max|Δ|"),
    ("rms", "rms", "log10 rms of Δ"),
    ("cos", "cosine distance", "log10 (1 − cosine)"),
];

const LABEL_W: f64 = 74.0;
const CELL_W: f64 = 68.0;
const CELL_H: f64 = 20.0;
const NAMED_H: f64 = 30.0;
const HEADER_H: f64 = 22.0;

/// The three numbers of a compared pair, in [`METRICS`] order (`None`: not defined).
pub fn numbers(p: &PairResult) -> [Option<f64>; 3] {
    match &p.metrics {
        None => [None; 3],
        Some(m) if m.exact => [Some(m.max_abs), None, None],
        Some(m) => [
            Some(m.max_abs),
            Some(m.rms),
            m.cosine.map(|c| (1.0 - c).max(0.0)),
        ],
    }
}

/// One colour scale per metric, over every pair of the page.
#[derive(Debug, Clone, Copy)]
pub struct Scales(pub [Option<LogScale>; 3]);

impl Scales {
    pub fn of(reports: &[&DiffReport]) -> Scales {
        let metric = |k: usize| {
            LogScale::covering(
                reports
                    .iter()
                    .flat_map(|r| &r.pairs)
                    .filter_map(|p| numbers(p)[k]),
            )
        };
        Scales([metric(0), metric(1), metric(2)])
    }
}

/// The text a cell shows for metric `k`: the grid's own words for max|Δ|.
fn cell_text(k: usize, p: &PairResult, shown: &str) -> String {
    match (k, numbers(p)[k]) {
        (0, _) => shown.to_string(),
        (_, Some(v)) => words::sci(v, 1),
        (_, None) => "n/a".into(),
    }
}

fn tooltip(stage: Stage, p: &PairResult) -> String {
    let mut t = stage.to_string();
    for (k, (_, label, _)) in METRICS.iter().enumerate() {
        let v = numbers(p)[k].map_or("n/a".to_string(), |v| words::sci(v, 3));
        let _ = write!(t, "\n{label}: {v}");
    }
    if p.fails {
        t.push_str("\nover tolerance");
    }
    t
}

/// The SVG of one cell at (x, y), `h` high; `label`: the stage name shown in stem/head cells.
fn cell(
    (x, y, h): (f64, f64, f64),
    stage: Stage,
    label: Option<&str>,
    shown: &str,
    p: &PairResult,
    (scales, first): (&Scales, bool),
) -> String {
    let fills: Vec<String> = (0..3)
        .map(|k| {
            let n = numbers(p)[k];
            scales.0[k].map_or_else(
                || {
                    if n == Some(0.0) {
                        svg::ZERO_FILL.to_string()
                    } else {
                        svg::MISSING_FILL.to_string()
                    }
                },
                |s| s.fill(n),
            )
        })
        .collect();
    let mut s = format!(
        r#"<g class="cell{}{}" data-stage="{stage}"><title>{}</title><rect class="c" x="{x}" y="{y}" width="{w}" height="{h}" style="--max:{};--rms:{};--cos:{}"/>"#,
        if p.fails { " over" } else { "" },
        if first { " first" } else { "" },
        esc(&tooltip(stage, p)),
        fills[0],
        fills[1],
        fills[2],
        w = CELL_W - 2.0,
        h = h - 2.0
    );
    let cx = x + (CELL_W - 2.0) / 2.0;
    if let Some(l) = label {
        let _ = write!(
            s,
            r#"<text class="n" x="{cx}" y="{:.1}">{}</text>"#,
            y + 10.0,
            esc(l)
        );
    }
    let ty = y + h - 7.0;
    for (k, (class, _, _)) in METRICS.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="v {class}" x="{cx}" y="{ty:.1}">{}</text>"#,
            esc(&cell_text(k, p, shown))
        );
    }
    if p.fails {
        let _ = write!(
            s,
            r#"<rect class="o" x="{:.1}" y="{:.1}" width="{}" height="{}"/>"#,
            x + 1.0,
            y + 1.0,
            CELL_W - 4.0,
            h - 4.0
        );
    }
    if first {
        let _ = write!(s, r#"<path class="f" d="M{x} {y} h10 l-10 10 z"/>"#);
    }
    s.push_str("</g>");
    s
}

/// The switch (radio buttons) and colour bars above a heatmap; `id` names the radio group.
fn switch(id: &str, scales: &Scales) -> String {
    let mut s = String::from(r#"<div class="switch">"#);
    for (k, (class, label, _)) in METRICS.iter().enumerate() {
        let _ = write!(
            s,
            r#"<input type="radio" name="{id}" id="{id}-{class}" class="m-{class}"{}><label for="{id}-{class}">{}</label>"#,
            if k == 0 { " checked" } else { "" },
            esc(label)
        );
    }
    for (k, (class, _, title)) in METRICS.iter().enumerate() {
        let bar = scales.0[k].map_or_else(
            || "all zero".to_string(),
            |scale| svg::color_bar(&scale, 260.0, title),
        );
        let _ = write!(s, r#"<span class="bar {class}">{bar}</span>"#);
    }
    s
}

/// The heatmap of one pair: its switch, then the SVG. `id` must be unique in the page.
pub fn heatmap(id: &str, grid: &Grid, r: &DiffReport, scales: &Scales) -> String {
    let by_stage: HashMap<Stage, &PairResult> = r
        .pairs
        .iter()
        .filter_map(|p| Some((Stage::parse(&p.name)?, p)))
        .collect();
    let first = r.first_over.and_then(|i| Stage::parse(&r.pairs[i].name));
    let heights: Vec<f64> = grid
        .rows
        .iter()
        .map(|(_, cells)| {
            let named = cells.iter().flatten().any(|c| c.label.is_some());
            if named { NAMED_H } else { CELL_H }
        })
        .collect();
    let width = LABEL_W + CELL_W * grid.columns.len() as f64;
    let height = HEADER_H + heights.iter().sum::<f64>();
    let mut s = switch(id, scales);
    let _ = write!(
        s,
        r#"<svg class="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="block by stage heatmap">"#
    );
    for (c, name) in grid.columns.iter().enumerate() {
        let x = LABEL_W + CELL_W * c as f64 + CELL_W / 2.0 - 1.0;
        let _ = write!(s, r#"<text class="h" x="{x}" y="15">{}</text>"#, esc(name));
    }
    let mut y = HEADER_H;
    for ((label, cells), h) in grid.rows.iter().zip(&heights) {
        let _ = write!(
            s,
            r#"<text class="r" x="{}" y="{:.1}">{}</text>"#,
            LABEL_W - 6.0,
            y + h / 2.0 + 4.0,
            esc(label)
        );
        for (c, gc) in cells.iter().enumerate() {
            let Some(gc) = gc else { continue };
            let Some(p) = by_stage.get(&gc.stage) else {
                continue;
            };
            let x = LABEL_W + CELL_W * c as f64;
            s.push_str(&cell(
                (x, y, *h),
                gc.stage,
                gc.label,
                &gc.value.text,
                p,
                (scales, first == Some(gc.stage)),
            ));
        }
        y += h;
    }
    s.push_str("</svg></div>");
    s
}
