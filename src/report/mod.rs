//! Renderers of a [`DiffReport`]: one module per output format, sharing the number formatting
//! and the stage grid built here.
//!
//! Contract: every renderer shows the same facts — headline (cosine with 6 decimals, max|Δ| in
//! scientific notation), the stage grid (or the flat per-tensor table for dumps without canonical
//! names), the first and the worst failing pair with their details, the unmatched counts and the
//! verdict. Only `table` uses colour, and only when asked to.

pub mod json;
pub mod markdown;
pub mod table;
pub mod triangle;
pub mod vocabulary;

use crate::diff::{DiffReport, PairResult};
use crate::model::stages::{BLOCK, Group, HEAD, STEM, Stage};
use std::collections::BTreeMap;

/// `2.145e-06` (mantissa with `digits` decimals, two-digit exponent); `0` for zero.
pub fn sci(x: f64, digits: usize) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return format!("{x}");
    }
    let s = format!("{x:.digits$e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

pub fn cosine(c: Option<f64>) -> String {
    c.map_or_else(|| "n/a".into(), |c| format!("{c:.6}"))
}

/// What a grid cell shows for a pair.
pub fn cell_value(p: &PairResult) -> String {
    match &p.metrics {
        None => "shape".into(),
        Some(m) if m.nonfinite_mismatches > 0 => format!("nan/inf×{}", m.nonfinite_mismatches),
        Some(m) if m.exact && m.over_tolerance > 0 => format!("≠×{}", m.over_tolerance),
        Some(m) => sci(m.max_abs, 1),
    }
}

pub struct GridCell {
    /// The stage name, shown in the cell itself for the stem and head rows.
    pub label: Option<&'static str>,
    pub value: String,
    pub fails: bool,
}

pub struct Grid {
    /// Column headers after the row-label column: the block stages.
    pub columns: Vec<&'static str>,
    /// (row label, cells); `None` cells: stage absent.
    pub rows: Vec<(String, Vec<Option<GridCell>>)>,
}

/// The stage grid: a stem row, one row per block, a head row. `None` when no pair is canonical.
pub fn stage_grid(report: &DiffReport) -> Option<Grid> {
    let mut stem: BTreeMap<usize, &PairResult> = BTreeMap::new();
    let mut head: BTreeMap<usize, &PairResult> = BTreeMap::new();
    let mut blocks: BTreeMap<usize, BTreeMap<usize, &PairResult>> = BTreeMap::new();
    for p in &report.pairs {
        let Some(stage) = Stage::parse(&p.name) else {
            continue;
        };
        match stage.group {
            Group::Stem => stem.insert(stage.index, p),
            Group::Head => head.insert(stage.index, p),
            Group::Block(b) => blocks.entry(b).or_default().insert(stage.index, p),
        };
    }
    if stem.is_empty() && head.is_empty() && blocks.is_empty() {
        return None;
    }
    let cell = |label: Option<&'static str>, p: &PairResult| GridCell {
        label,
        value: cell_value(p),
        fails: p.fails,
    };
    let labelled_row = |names: &[&'static str], found: &BTreeMap<usize, &PairResult>| {
        let mut cells: Vec<Option<GridCell>> = found
            .iter()
            .map(|(&i, p)| Some(cell(Some(names[i]), p)))
            .collect();
        cells.resize_with(BLOCK.len(), || None);
        cells
    };
    let mut rows = Vec::new();
    if !stem.is_empty() {
        rows.push(("stem".to_string(), labelled_row(&STEM, &stem)));
    }
    let depth = blocks.keys().next_back().map_or(0, |&b| b + 1);
    for b in 0..depth {
        let found = blocks.get(&b);
        let cells = (0..BLOCK.len())
            .map(|i| found.and_then(|f| f.get(&i)).map(|p| cell(None, p)))
            .collect();
        rows.push((format!("block {b}"), cells));
    }
    if !head.is_empty() {
        rows.push(("head".to_string(), labelled_row(&HEAD, &head)));
    }
    Some(Grid {
        columns: BLOCK.to_vec(),
        rows,
    })
}

/// Pairs that do not fit the grid (non-canonical names), in execution order.
pub fn flat_pairs(report: &DiffReport, with_grid: bool) -> Vec<&PairResult> {
    report
        .pairs
        .iter()
        .filter(|p| !with_grid || !p.canonical)
        .collect()
}

/// Detail lines for one pair (first over tolerance, worst).
pub fn detail_lines(p: &PairResult) -> Vec<String> {
    let mut out = Vec::new();
    let shape = |s: &[usize]| format!("{s:?}");
    if p.a != p.b {
        out.push(format!("A tensor {:?}, B tensor {:?}", p.a, p.b));
    }
    match &p.metrics {
        None => out.push(format!(
            "shapes differ: A {} {} vs B {} {}; not compared",
            p.dtype_a,
            shape(&p.shape_a),
            p.dtype_b,
            shape(&p.shape_b)
        )),
        Some(m) => {
            let at = match (&p.argmax_index, m.a_at_max, m.b_at_max) {
                (Some(idx), Some(x), Some(y)) => {
                    format!(" at {idx:?}: A {}, B {}", sci(x, 9), sci(y, 9))
                }
                _ => String::new(),
            };
            out.push(format!("max|Δ| {}{at}", sci(m.max_abs, 3)));
            out.push(format!(
                "mean|Δ| {}  rms {}  max rel {}  cosine {}",
                sci(m.mean_abs, 3),
                sci(m.rms, 3),
                sci(m.max_rel, 3),
                cosine(m.cosine)
            ));
            out.push(format!(
                "{} of {} elements over tolerance; NaN A {} B {}, Inf A {} B {}, non-finite mismatches {}",
                m.over_tolerance, m.elements, m.nan_a, m.nan_b, m.inf_a, m.inf_b, m.nonfinite_mismatches
            ));
            if let Some(r) = p.amplification {
                out.push(format!("amplification {r:.2}× against the stage before it"));
            }
            if p.shape_a != p.shape_b {
                out.push(format!(
                    "shapes reconciled: A {} vs B {} (leading singleton dims)",
                    shape(&p.shape_a),
                    shape(&p.shape_b)
                ));
            }
        }
    }
    out
}

/// The one-line verdict.
pub fn verdict_line(r: &DiffReport) -> String {
    let v = &r.verdict;
    let tol = format!(
        "atol {}, rtol {}",
        sci(r.tolerance.atol, 0),
        sci(r.tolerance.rtol, 0)
    );
    if v.pass {
        format!(
            "verdict: PASS: {} tensor pairs compared, all within tolerance ({tol})",
            v.compared
        )
    } else {
        let mut why = format!(
            "{} of {} tensor pairs over tolerance",
            v.failed,
            v.compared + v.shape_mismatches
        );
        if v.shape_mismatches > 0 {
            why.push_str(&format!(" ({} with mismatched shapes)", v.shape_mismatches));
        }
        format!("verdict: FAIL: {why} ({tol})")
    }
}

pub fn unmatched_line(r: &DiffReport) -> Option<String> {
    let (a, b) = (r.unmatched.a.len(), r.unmatched.b.len());
    (a + b > 0).then(|| {
        format!("unmatched: {a} tensors only in A, {b} only in B (--list-unmatched lists them)")
    })
}

#[cfg(test)]
mod tests {
    use super::sci;

    #[test]
    fn scientific_notation_has_two_digit_exponents() {
        assert_eq!(sci(2.1449e-6, 3), "2.145e-06");
        assert_eq!(sci(12345.0, 1), "1.2e+04");
        assert_eq!(sci(0.0, 3), "0");
        assert_eq!(sci(1e-100, 0), "1e-100");
        assert_eq!(sci(f64::INFINITY, 2), "inf");
    }
}
