//! Line charts over depth on a log axis: the depth curves (max|Δ| and rms of each block's output,
//! one colour per pair, the tolerance as a line) and, through [`line_chart`], the per-token-
//! category curves of [`super::tokens`].
//!
//! Contract: x is the block index; a value of exactly 0 cannot sit on a log axis, so it is drawn
//! as a hollow marker on the axis floor (the legend says so); missing blocks leave a gap.

use super::svg::{LogScale, decade_label, esc};
use crate::diff::DiffReport;
use crate::model::{BlockStage, Stage};
use std::fmt::Write;

/// Colours of the series, in order (a pair each, or a token category each).
pub const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line: `points[i]` is the value at block `i` (`None`: not compared).
pub struct Series {
    pub label: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<Option<f64>>,
}

const W: f64 = 660.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 36.0;

/// A chart of `series` over `blocks` blocks; `reference`: a horizontal line (value, label).
pub fn line_chart(series: &[Series], blocks: usize, reference: Option<(f64, String)>) -> String {
    let values = series
        .iter()
        .flat_map(|s| s.points.iter().flatten().copied())
        .chain(reference.as_ref().map(|r| r.0));
    let Some(scale) = LogScale::covering(values) else {
        return r#"<p class="note">every value is 0: nothing to draw on a log axis.</p>"#.into();
    };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |i: usize| LEFT + pw * (i as f64 + 0.5) / blocks.max(1) as f64;
    let y = |v: f64| TOP + ph * (1.0 - scale.t(v).unwrap_or(0.0));
    let mut s =
        format!(r#"<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">"#);
    axes(&mut s, &scale, blocks, &x);
    if let Some((v, label)) = &reference {
        let _ = write!(
            s,
            r#"<line class="tol" x1="{LEFT}" x2="{:.1}" y1="{yv:.1}" y2="{yv:.1}"/><text class="tol" x="{:.1}" y="{:.1}">{}</text>"#,
            W - RIGHT,
            W - RIGHT - 4.0,
            y(*v) - 4.0,
            esc(label),
            yv = y(*v)
        );
    }
    for se in series {
        draw_series(&mut s, se, &x, &y);
    }
    s.push_str("</svg>");
    s.push_str(&legend(series));
    s
}

fn axes(s: &mut String, scale: &LogScale, blocks: usize, x: &dyn Fn(usize) -> f64) {
    let ph = H - TOP - BOTTOM;
    for e in scale.decades() {
        let yy = TOP + ph * (1.0 - (f64::from(e) - scale.lo) / (scale.hi - scale.lo));
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            decade_label(e)
        );
    }
    let every = blocks.div_ceil(16).max(1);
    for i in (0..blocks).filter(|i| i % every == 0 || i + 1 == blocks) {
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{i}</text>"#,
            x(i),
            H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        s,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{:.1}" height="{ph:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">block</text>"#,
        W - LEFT - RIGHT,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 4.0
    );
}

fn draw_series(s: &mut String, se: &Series, x: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64) {
    let mut path = String::new();
    let mut pen_down = false;
    for (i, v) in se.points.iter().enumerate() {
        match v {
            Some(v) => {
                let _ = write!(
                    path,
                    "{}{:.1} {:.1} ",
                    if pen_down { "L" } else { "M" },
                    x(i),
                    y(*v)
                );
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let _ = write!(
        s,
        r#"<path class="line{}" d="{}" stroke="{}"><title>{}</title></path>"#,
        if se.dashed { " dashed" } else { "" },
        path.trim_end(),
        se.color,
        esc(&se.label)
    );
    for (i, v) in se.points.iter().enumerate() {
        if let Some(v) = v {
            let _ = write!(
                s,
                r#"<circle class="{}" cx="{:.1}" cy="{:.1}" r="2.6" stroke="{c}" fill="{}"><title>{} · block {i}: {}</title></circle>"#,
                if *v == 0.0 { "zero" } else { "pt" },
                x(i),
                y(*v),
                if *v == 0.0 { "white" } else { se.color },
                esc(&se.label),
                crate::report::words::sci(*v, 3),
                c = se.color
            );
        }
    }
}

fn legend(series: &[Series]) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for se in series {
        let _ = write!(
            s,
            r#"<span><svg width="26" height="10"><line x1="1" x2="25" y1="5" y2="5" stroke="{}" stroke-width="2"{}/></svg>{}</span>"#,
            se.color,
            if se.dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
            esc(&se.label)
        );
    }
    s.push_str(
        r##"<span><svg width="12" height="10"><circle cx="6" cy="5" r="3" fill="white" stroke="#555"/></svg>exactly 0 (on the axis floor)</span></div>"##,
    );
    s
}

/// The model depth: one more than the largest block index among the pairs.
pub fn depth(reports: &[&DiffReport]) -> usize {
    reports
        .iter()
        .flat_map(|r| &r.pairs)
        .filter_map(|p| match Stage::parse(&p.name)? {
            Stage::Block(i, _) => Some(i + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The value of `metric` of `blocks.i.output` for every block (`None`: not compared).
fn block_outputs(
    r: &DiffReport,
    depth: usize,
    metric: fn(&crate::metrics::Comparison) -> f64,
) -> Vec<Option<f64>> {
    (0..depth)
        .map(|i| {
            let name = Stage::Block(i, BlockStage::Output).to_string();
            let p = r.pairs.iter().find(|p| p.name == name)?;
            p.metrics.as_ref().map(metric)
        })
        .collect()
}

/// The depth curves of `pairs` (label, report): max|Δ| solid, rms dashed, atol as a line.
pub fn depth_curves(pairs: &[(String, &DiffReport)]) -> String {
    let reports: Vec<&DiffReport> = pairs.iter().map(|(_, r)| *r).collect();
    let depth = depth(&reports);
    if depth == 0 {
        return r#"<p class="note">no block outputs (<code>blocks.N.output</code>) were compared.</p>"#.into();
    }
    let mut series = Vec::new();
    for (k, (label, r)) in pairs.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        series.push(Series {
            label: format!("{label}: max|Δ|"),
            color,
            dashed: false,
            points: block_outputs(r, depth, |m| m.max_abs),
        });
        series.push(Series {
            label: format!("{label}: rms"),
            color,
            dashed: true,
            points: block_outputs(r, depth, |m| m.rms),
        });
    }
    let atol = reports
        .first()
        .map(|r| r.tolerance.atol)
        .filter(|a| *a > 0.0);
    line_chart(
        &series,
        depth,
        atol.map(|a| (a, crate::report::words::tolerance_line(a))),
    )
}
