//! What a text report shows, decided once for every format: the facts of a report, in words
//! (from [`super::words`]), grouped the way every text renderer presents them.
//!
//! Contract: a text renderer takes a [`DiffView`], [`TriangleView`] or [`InspectView`] apart
//! with an exhaustive pattern (no `..`), so a fact added here is a compile error (an unused
//! binding) in every renderer that does not show it yet. Renderers choose the layout and the
//! emphasis (colour, bold, markers), never what to show or how to say it.

use super::Options;
use super::words;
use crate::diff::{DiffReport, PairResult};
use crate::inspect::Inspection;
use crate::model::{BlockStage, Headline, Row, Stage};
use crate::triangulate::{Side, TriangleReport};
use std::collections::BTreeMap;

mod lists;
pub use lists::*;

/// A number that may be over tolerance (rendered with the format's emphasis when it is).
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub text: String,
    pub fails: bool,
}

/// A headline stage of one diff.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadlineRow {
    /// "CLS token", "pooled patches".
    pub label: &'static str,
    pub cosine: String,
    pub max_abs: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    /// The stage the cell shows.
    pub stage: Stage,
    /// The stage name, shown in the cell itself for the stem and head rows.
    pub label: Option<&'static str>,
    pub value: Value,
    /// The max|Δ| behind `value`, for a shade; `None` when the value is not a number (shapes
    /// differ, non-finite mismatches, integers that differ).
    pub max_abs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Column headers after the row-label column: the block stages.
    pub columns: Vec<&'static str>,
    /// (row label, cells); `None` cells: stage absent.
    pub rows: Vec<(String, Vec<Option<GridCell>>)>,
    /// The absolute tolerance, which anchors a shade scale.
    pub atol: f64,
}

/// Column headers of a diff's headline table, after the row-label column.
pub const HEADLINE_COLUMNS: [&str; 2] = ["cosine", "max|Δ|"];

/// Column headers of a triangle's headline table, after the row-label column.
pub const TRIANGLE_COLUMNS: [&str; 5] = [
    "CLS cosine",
    "CLS max|Δ|",
    "pooled cosine",
    "pooled max|Δ|",
    "verdict",
];

/// Column headers of the per-tensor table.
pub const FLAT_COLUMNS: [&str; 6] = ["tensor", "shape", "dtype", "max|Δ|", "mean|Δ|", "cosine"];

/// A pair that does not fit the stage grid (non-canonical name).
#[derive(Debug, Clone, PartialEq)]
pub struct FlatRow {
    /// The common name, or `a ⇔ b` when the two sides name it differently.
    pub tensor: String,
    pub shape: String,
    pub dtype: String,
    pub max_abs: Value,
    /// Empty on a shape mismatch.
    pub mean_abs: String,
    pub cosine: String,
}

/// Something the report says about particular pairs, after the tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A pair worth a closer look: `title` (e.g. "first over tolerance"), its name, its details.
    Detail {
        title: &'static str,
        tensor: String,
        lines: Vec<String>,
    },
    /// A sentence on its own.
    Sentence(String),
}

/// Tensors that found no partner.
#[derive(Debug, Clone, PartialEq)]
pub struct Strays {
    /// How many, on which side.
    pub summary: String,
    /// `(side name, tensor)`, only when asked for (`--list-unmatched`).
    pub listed: Vec<(String, String)>,
}

/// The facts of a two-way diff, in the order the table shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffView {
    pub pass: bool,
    /// A and B: (path, summary "meta, vits16, 262 tensors").
    pub dumps: [(String, String); 2],
    /// "input: same input (sha256 …)".
    pub input: String,
    pub headline: Vec<HeadlineRow>,
    pub grid: Option<Grid>,
    /// Pairs outside the grid (all pairs when there is no grid).
    pub flat: Vec<FlatRow>,
    pub notes: Vec<Note>,
    /// The largest differences, over tolerance first (empty when nothing differs).
    pub worst: Vec<RankedRow>,
    /// `--tokens` only.
    pub tokens: Option<TokenTable>,
    pub strays: Option<Strays>,
    pub verdict: String,
    /// One line: verdict, coverage, first divergence, CLS max|Δ| (a CI summary's first line).
    pub summary: String,
}

/// One side of a triangle, as a row of its headline table.
#[derive(Debug, Clone, PartialEq)]
pub struct SideRow {
    pub label: String,
    /// (cosine, max|Δ|) of CLS, then of the pooled patches; `None`: not in both dumps.
    pub headline: Vec<Option<(String, Value)>>,
    pub verdict: Value,
}

/// A side of a triangle shown in detail (reference ⇔ port, port ⇔ export).
#[derive(Debug, Clone, PartialEq)]
pub struct SideBody {
    pub label: String,
    pub grid: Option<Grid>,
    pub flat: Vec<FlatRow>,
    pub notes: Vec<Note>,
    pub worst: Vec<RankedRow>,
    pub tokens: Option<TokenTable>,
}

/// The closing lines of one side of a triangle.
#[derive(Debug, Clone, PartialEq)]
pub struct SideEnd {
    /// Only when asked for (`--list-unmatched`) and there are any.
    pub strays: Option<Strays>,
    /// "Meta ⇔ ONNX: verdict: PASS: …".
    pub verdict: String,
}

/// The facts of a triangulation, in the order the table shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct TriangleView {
    pub pass: bool,
    /// "A: Meta — meta.st (reference, 262 tensors)", then B and C.
    pub dumps: Vec<String>,
    /// "input: same input in all three (sha256 …)".
    pub input: String,
    pub rows: Vec<SideRow>,
    pub bodies: Vec<SideBody>,
    /// "diagnosis: …".
    pub diagnosis: String,
    pub ends: Vec<SideEnd>,
    /// One line: verdict, diagnosis, first divergence, CLS max|Δ| (a CI summary's first line).
    pub summary: String,
}

/// Column headers of an inspection's tensor table, and whether each is a number.
pub const INSPECT_COLUMNS: [(&str, bool); 11] = [
    ("#", false),
    ("tensor", false),
    ("native", false),
    ("shape", false),
    ("dtype", false),
    ("min", true),
    ("max", true),
    ("mean", true),
    ("std", true),
    ("NaN", true),
    ("Inf", true),
];

/// The facts of an inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectView {
    /// The file, then its manifest.
    pub lines: Vec<String>,
    /// One row per tensor, in [`INSPECT_COLUMNS`] order.
    pub rows: Vec<[String; 11]>,
}

fn value(text: String, fails: bool) -> Value {
    Value { text, fails }
}

fn cell(stage: Stage, label: Option<&'static str>, p: &PairResult) -> GridCell {
    GridCell {
        stage,
        label,
        value: value(words::cell_value(p), p.fails),
        max_abs: p
            .metrics
            .as_ref()
            .filter(|m| m.nonfinite_mismatches == 0 && !(m.exact && m.over_tolerance > 0))
            .map(|m| m.max_abs),
    }
}

/// A stem or head row: the stages found, each labelled, left-aligned under the block columns.
fn labelled_row<'a>(found: impl Iterator<Item = (Stage, &'a PairResult)>) -> Vec<Option<GridCell>> {
    let mut cells: Vec<Option<GridCell>> = found
        .map(|(stage, p)| Some(cell(stage, Some(stage.column()), p)))
        .collect();
    cells.resize_with(BlockStage::ALL.len(), || None);
    cells
}

/// The stage grid: a stem row, one row per block, a head row. `None` when no pair is canonical.
pub fn stage_grid(report: &DiffReport) -> Option<Grid> {
    let mut by_row: BTreeMap<Row, BTreeMap<Stage, &PairResult>> = BTreeMap::new();
    for p in &report.pairs {
        if let Some(stage) = Stage::parse(&p.name) {
            by_row.entry(stage.row()).or_default().insert(stage, p);
        }
    }
    if by_row.is_empty() {
        return None;
    }
    let depth = by_row
        .keys()
        .filter_map(|r| match r {
            Row::Block(b) => Some(b + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let labelled = |row: Row| {
        let found = by_row.get(&row)?;
        Some(labelled_row(found.iter().map(|(&s, &p)| (s, p))))
    };
    let mut rows = Vec::new();
    if let Some(cells) = labelled(Row::Stem) {
        rows.push(("stem".to_string(), cells));
    }
    for b in 0..depth {
        let found = by_row.get(&Row::Block(b));
        let cells = BlockStage::ALL
            .iter()
            .map(|&s| {
                found
                    .and_then(|f| f.get(&Stage::Block(b, s)))
                    .map(|p| cell(Stage::Block(b, s), None, p))
            })
            .collect();
        rows.push((format!("block {b}"), cells));
    }
    if let Some(cells) = labelled(Row::Head) {
        rows.push(("head".to_string(), cells));
    }
    Some(Grid {
        columns: BlockStage::ALL.iter().map(|s| s.name()).collect(),
        rows,
        atol: report.tolerance.atol,
    })
}

fn flat_row(p: &PairResult) -> FlatRow {
    let (mean_abs, cosine) = p
        .metrics
        .as_ref()
        .map_or((String::new(), String::new()), |m| {
            (words::sci(m.mean_abs, 3), words::cosine(m.cosine))
        });
    FlatRow {
        tensor: if p.a == p.b {
            p.name.clone()
        } else {
            format!("{} ⇔ {}", p.a, p.b)
        },
        shape: format!("{:?}", p.shape_a),
        dtype: if p.dtype_a == p.dtype_b {
            p.dtype_a.clone()
        } else {
            format!("{}/{}", p.dtype_a, p.dtype_b)
        },
        max_abs: value(words::pair_max_abs(p), p.fails),
        mean_abs,
        cosine,
    }
}

/// Pairs that do not fit the grid (non-canonical names), in execution order.
fn flat_rows(r: &DiffReport, with_grid: bool) -> Vec<FlatRow> {
    r.pairs
        .iter()
        .filter(|p| !with_grid || !p.canonical)
        .map(flat_row)
        .collect()
}

/// The first and the worst pair over tolerance; when none is, the largest difference (or that
/// nothing differs at all).
pub fn notes(r: &DiffReport) -> Vec<Note> {
    let detail = |title, i: usize| Note::Detail {
        title,
        tensor: r.pairs[i].name.clone(),
        lines: words::detail_lines(&r.pairs[i]),
    };
    match (r.first_over, r.worst) {
        (Some(f), Some(w)) if f == w => vec![detail(words::FIRST_AND_WORST, f)],
        (Some(f), Some(w)) => vec![detail(words::FIRST, f), detail(words::WORST, w)],
        (None, Some(w))
            if r.pairs[w]
                .metrics
                .as_ref()
                .is_some_and(|m| m.max_abs == 0.0 && m.nonfinite_mismatches == 0) =>
        {
            vec![Note::Sentence(words::ALL_EQUAL.into())]
        }
        (None, Some(w)) => vec![detail(words::LARGEST, w)],
        _ => vec![],
    }
}

fn listed(r: &DiffReport, names: [&str; 2], o: &Options) -> Vec<(String, String)> {
    if !o.list_unmatched {
        return vec![];
    }
    let side = |name: &str, tensors: &[String]| -> Vec<(String, String)> {
        tensors
            .iter()
            .map(|t| (name.to_string(), t.clone()))
            .collect()
    };
    [
        side(names[0], &r.unmatched.a),
        side(names[1], &r.unmatched.b),
    ]
    .concat()
}

fn headline_rows(r: &DiffReport) -> Vec<HeadlineRow> {
    r.headline
        .iter()
        .map(|h| HeadlineRow {
            label: words::headline_label(&h.name),
            cosine: words::cosine(h.cosine),
            max_abs: value(words::sci(h.max_abs, 3), h.fails),
        })
        .collect()
}

pub fn diff(r: &DiffReport, o: &Options) -> DiffView {
    let grid = stage_grid(r);
    let flat = flat_rows(r, grid.is_some());
    DiffView {
        pass: r.verdict.pass,
        dumps: [
            (r.a.path.clone(), words::dump_summary(&r.a)),
            (r.b.path.clone(), words::dump_summary(&r.b)),
        ],
        input: words::input_status(&r.input),
        headline: headline_rows(r),
        grid,
        flat,
        notes: notes(r)
            .into_iter()
            .chain(
                optimizer_findings(&[&r.a, &r.b])
                    .into_iter()
                    .map(Note::Sentence),
            )
            .collect(),
        worst: worst_rows(r),
        tokens: token_table(r),
        strays: words::unmatched(r).map(|summary| Strays {
            summary,
            listed: listed(r, ["A", "B"], o),
        }),
        verdict: words::verdict(r),
        summary: words::summary(r),
    }
}

/// The dumps whose ONNX Runtime optimizations change the outputs beyond tolerance.
fn optimizer_findings(dumps: &[&crate::diff::DumpInfo]) -> Vec<String> {
    dumps
        .iter()
        .filter_map(|d| words::optimizer_finding(&d.path, d.optimizer_effect.as_ref()?))
        .collect()
}

fn side_row(t: &TriangleReport, side: Side) -> SideRow {
    let r = t.side(side);
    SideRow {
        label: words::side_label(t, side),
        headline: Headline::ALL
            .iter()
            .map(|role| {
                let name = role.stage().to_string();
                let h = r.headline.iter().find(|h| h.name == name)?;
                Some((
                    words::cosine(h.cosine),
                    value(words::compact(h.max_abs), h.fails),
                ))
            })
            .collect(),
        verdict: value(words::verdict_short(&r.verdict), !r.verdict.pass),
    }
}

fn side_body(t: &TriangleReport, side: Side) -> SideBody {
    let r = t.side(side);
    let grid = stage_grid(r);
    SideBody {
        label: words::side_label(t, side),
        flat: flat_rows(r, grid.is_some()),
        grid,
        notes: notes(r),
        worst: worst_rows(r),
        tokens: token_table(r),
    }
}

fn side_end(t: &TriangleReport, side: Side, o: &Options) -> SideEnd {
    let r = t.side(side);
    let (a, b) = side.ends();
    let any = r.unmatched.a.len() + r.unmatched.b.len() > 0;
    SideEnd {
        strays: (o.list_unmatched && any).then(|| Strays {
            summary: words::side_unmatched(t, side, r),
            listed: listed(r, [&t.names[a], &t.names[b]], o),
        }),
        verdict: format!("{}: {}", words::side_label(t, side), words::verdict(r)),
    }
}

pub fn triangle(t: &TriangleReport, o: &Options) -> TriangleView {
    let infos = [
        &t.side(Side::ReferenceExport).a,
        &t.side(Side::ReferencePort).b,
        &t.side(Side::ReferenceExport).b,
    ];
    let shown = [Side::ReferencePort, Side::PortExport];
    TriangleView {
        pass: t.pass,
        dumps: (0..3)
            .map(|i| words::triangle_dump(t, i, infos[i]))
            .collect(),
        input: words::triangle_input(t),
        rows: t.sides.iter().map(|s| side_row(t, s.side)).collect(),
        bodies: shown.iter().map(|&s| side_body(t, s)).collect(),
        diagnosis: std::iter::once(words::diagnosis_line(t))
            .chain(optimizer_findings(&infos))
            .collect::<Vec<_>>()
            .join(" "),
        ends: t.sides.iter().map(|s| side_end(t, s.side, o)).collect(),
        summary: words::triangle_summary(t),
    }
}

pub fn inspect(i: &Inspection) -> InspectView {
    let rows = i
        .tensors
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let native = if s.native == s.name { "" } else { &s.native };
            let [min, max, mean, std, nan, inf] = words::stats(&s.stats);
            [
                k.to_string(),
                s.name.clone(),
                native.to_string(),
                format!("{:?}", s.shape),
                s.dtype.clone(),
                min,
                max,
                mean,
                std,
                nan,
                inf,
            ]
        })
        .collect();
    InspectView {
        lines: words::inspect_lines(i),
        rows,
    }
}
