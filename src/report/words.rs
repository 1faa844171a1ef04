//! The wording of every report, in one place: number formats and the sentence for each fact
//! (input status, verdict, unmatched tensors, pair details, each diagnosis kind, …).
//!
//! Contract: these functions are the only place where report data becomes English; the text
//! renderers lay the sentences out (table, Markdown) and the JSON renderer quotes the diagnosis
//! sentence beside its data, so every format says a fact with the same words. Sentences are plain
//! text (a backtick-quoted stage name is part of the sentence); escaping for a format is the
//! renderer's job. A wording change here changes no data schema.

mod align;
mod deployed;
mod details;
mod eqx;
mod grid;
mod page;
mod sizes;
pub use align::*;
use deployed::deployed;
pub use deployed::{optimizer_effect, optimizer_finding};
pub use details::detail_lines;
pub use eqx::eqx_recording;
pub use grid::*;
pub use page::*;
pub use sizes::size_iec;

use crate::diff::{
    Coverage, CoverageBasis, DiffReport, DumpInfo, InputCheck, InputStatus, PairResult, Verdict,
};
use crate::inspect::Inspection;
use crate::metrics::Stats;
use crate::metrics::tokens::{TokenCategory, TokenLayout};
use crate::model::{Headline, Stage};
use crate::triangulate::{Diagnosis, FirstOver, Side, TriangleReport};

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

/// `5.0e-6`: two significant digits, the exponent as short as it goes (`1.2e3`, `6.4e-1`); `0`
/// for zero. The stage grid's and the token table's number.
pub fn compact(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return format!("{x}");
    }
    format!("{x:.1e}")
}

/// A cosine with 6 decimals; `n/a` when there is none.
pub fn cosine(c: Option<f64>) -> String {
    c.map_or_else(|| "n/a".into(), |c| format!("{c:.6}"))
}

/// What a stage-grid cell shows for a pair.
pub fn cell_value(p: &PairResult) -> String {
    match &p.metrics {
        None => "shape".into(),
        Some(m) if m.nonfinite_mismatches > 0 => format!("nan/inf×{}", m.nonfinite_mismatches),
        Some(m) if m.exact && m.over_tolerance > 0 => format!("≠×{}", m.over_tolerance),
        Some(m) => compact(m.max_abs),
    }
}

/// The max|Δ| of a pair in a per-tensor table: 4 significant digits, or what the grid cell says
/// when there is no plain number to show.
pub fn pair_max_abs(p: &PairResult) -> String {
    p.metrics
        .as_ref()
        .filter(|m| m.nonfinite_mismatches == 0 && !m.exact)
        .map_or_else(|| cell_value(p), |m| sci(m.max_abs, 3))
}

/// What a headline stage (given by its name) is called.
pub fn headline_label(name: &str) -> &'static str {
    match Stage::parse(name).and_then(Stage::headline) {
        Some(Headline::Cls) => "CLS token",
        Some(Headline::Pooled) => "pooled patches",
        None => "headline",
    }
}

/// `meta, vits16, 262 tensors`: what a dump is.
pub fn dump_summary(d: &DumpInfo) -> String {
    let mut s = d.source.to_string();
    if let Some(v) = &d.variant {
        s.push_str(&format!(", {v}"));
    }
    s.push_str(&format!(", {} tensors", d.tensors));
    if !d.has_manifest {
        s.push_str(", no manifest: canonical stage order, then file order");
    }
    s.push_str(&deployed(d));
    s
}

/// `input: same input (sha256 …)`, or why the inputs were not checked or differ.
pub fn input_status(i: &InputCheck) -> String {
    let status = match i.status {
        InputStatus::Match => format!(
            "same input (sha256 {})",
            i.a_sha256.as_deref().unwrap_or("").get(..16).unwrap_or("")
        ),
        InputStatus::MismatchAllowed => {
            "DIFFERENT inputs (allowed by --allow-input-mismatch)".to_string()
        }
        InputStatus::Unknown => "not checked (a dump records no input hash)".to_string(),
    };
    format!("input: {status}")
}

fn tolerance(r: &DiffReport) -> String {
    format!(
        "atol {}, rtol {}",
        sci(r.tolerance.atol, 0),
        sci(r.tolerance.rtol, 0)
    )
}

/// The one-line verdict.
pub fn verdict(r: &DiffReport) -> String {
    let v = &r.verdict;
    let tol = tolerance(r);
    let partial = partial_coverage(&v.coverage);
    if v.incomplete {
        let c = &v.coverage;
        return format!(
            "verdict: INCOMPLETE: only {} of {} {} paired ({:.1}%, below --min-coverage {}%); \
             {} of {} compared pairs over tolerance ({tol}). Pair more tensors (--map, \
             docs/alignment.md) or lower --min-coverage",
            c.paired,
            c.comparable,
            coverage_unit(c),
            100.0 * c.fraction,
            100.0 * c.min_coverage,
            v.failed,
            v.compared + v.shape_mismatches
        );
    }
    if v.pass {
        return format!(
            "verdict: PASS: {} tensor pairs compared{partial}, all within tolerance ({tol})",
            v.compared
        );
    }
    let mut why = format!(
        "{} of {} tensor pairs over tolerance",
        v.failed,
        v.compared + v.shape_mismatches
    );
    if v.shape_mismatches > 0 {
        why.push_str(&format!(" ({} with mismatched shapes)", v.shape_mismatches));
    }
    format!("verdict: FAIL: {why}{partial} ({tol})")
}

fn coverage_unit(c: &Coverage) -> &'static str {
    match c.basis {
        CoverageBasis::CanonicalStages => "canonical stages",
        CoverageBasis::SmallerDump => "tensors of the smaller dump",
    }
}

/// ` (coverage 30 of 38 canonical stages)` when something comparable was not paired, else "".
fn partial_coverage(c: &Coverage) -> String {
    if c.comparable == 0 || c.paired >= c.comparable {
        return String::new();
    }
    format!(
        " (coverage {} of {} {})",
        c.paired,
        c.comparable,
        coverage_unit(c)
    )
}

fn status(v: &Verdict) -> &'static str {
    if v.incomplete {
        "INCOMPLETE"
    } else if v.pass {
        "PASS"
    } else {
        "FAIL"
    }
}

/// `coverage 100% (38 of 38 canonical stages)`; the percentage is rounded down, so 100% means all.
fn coverage_figure(c: &Coverage) -> String {
    format!(
        "coverage {}% ({} of {} {})",
        (100.0 * c.fraction).floor(),
        c.paired,
        c.comparable,
        coverage_unit(c)
    )
}

/// `blocks.1.ls2 (max|Δ| 1.0e-2)`: a pair and what it differs by.
fn pair_figure(p: &PairResult) -> String {
    match &p.metrics {
        None => format!("{} (shapes differ)", p.name),
        Some(_) => format!("{} (max|Δ| {})", p.name, cell_value(p)),
    }
}

/// The one-line summary of a diff: verdict, coverage, first divergence, CLS max|Δ|. Plain text
/// with no markup (it reads the same as a link's text, a commit status or a chat message).
pub fn summary(r: &DiffReport) -> String {
    let mut parts = vec![
        format!("dinodiff {}", status(&r.verdict)),
        coverage_figure(&r.verdict.coverage),
        match r.first_over {
            Some(i) => format!("first divergence {}", pair_figure(&r.pairs[i])),
            None => "no divergence".into(),
        },
    ];
    parts.extend(cls_figure(r));
    parts.join(" · ")
}

fn cls_figure(r: &DiffReport) -> Option<String> {
    let cls = Headline::Cls.stage().to_string();
    let h = r.headline.iter().find(|h| h.name == cls)?;
    Some(format!("CLS max|Δ| {}", compact(h.max_abs)))
}

/// What a triangle found, in a few words.
fn finding_short(d: &Diagnosis) -> &'static str {
    match d {
        Diagnosis::AllAgree => "all three agree",
        Diagnosis::Accumulated(_) => "differences add up across the triangle",
        Diagnosis::ExportDrifts(_) => "the export drifts",
        Diagnosis::PortDiverges(_) => "the port diverges",
        Diagnosis::BothDiverge { .. } => "port and export both depart",
        Diagnosis::Incomplete(_) => "too little paired to diagnose",
    }
}

/// The one-line summary of a triangle: verdict, finding, first divergence (with its side), the
/// reference ⇔ export CLS max|Δ|, the lowest coverage of the three sides.
pub fn triangle_summary(t: &TriangleReport) -> String {
    let verdict = if t.pass { "PASS" } else { "FAIL" };
    let mut parts = vec![
        format!("dinodiff triangulation {verdict}"),
        finding_short(&t.diagnosis).to_string(),
    ];
    if let Some(f) = t.diagnosis.first_over().first() {
        let figure = f.max_abs.map_or_else(
            || "shapes differ".to_string(),
            |m| format!("max|Δ| {}", compact(m)),
        );
        parts.push(format!(
            "first divergence {} ({}, {figure})",
            f.stage,
            side_label(t, f.side)
        ));
    }
    let reference_export = t.side(Side::ReferenceExport);
    if let Some(cls) = cls_figure(reference_export) {
        parts.push(format!("{}: {cls}", side_label(t, Side::ReferenceExport)));
    }
    if let Some(c) = t
        .sides
        .iter()
        .map(|s| &s.report.verdict.coverage)
        .min_by(|x, y| x.fraction.total_cmp(&y.fraction))
    {
        parts.push(coverage_figure(c));
    }
    parts.join(" · ")
}

/// The metrics of each token category in the `--tokens` table.
pub const TOKEN_METRICS: [&str; 2] = ["max|Δ|", "rms"];

/// A token category's column header.
pub fn token_category(c: TokenCategory) -> &'static str {
    match c {
        TokenCategory::Cls => "CLS",
        TokenCategory::Storage => "storage",
        TokenCategory::Patches => "patches",
    }
}

/// `tokens: 1 CLS, 4 storage, 196 patches`.
pub fn token_layout(l: TokenLayout) -> String {
    format!(
        "tokens: 1 CLS, {} storage, {} patches",
        l.storage, l.patches
    )
}

/// Which stages the `--tokens` table shows.
pub const TOKEN_ROWS: &str =
    "rows: residual stream, first and worst pairs; all stages in --format json";

/// The title of the top-N list of the largest differences.
pub fn worst_title(n: usize) -> String {
    format!("largest differences (over tolerance first, top {n})")
}

/// `PASS`, or `FAIL (7 of 38)`: a verdict in a table cell.
pub fn verdict_short(v: &Verdict) -> String {
    if v.incomplete {
        format!(
            "INCOMPLETE ({} of {})",
            v.coverage.paired, v.coverage.comparable
        )
    } else if v.pass {
        "PASS".into()
    } else {
        format!("FAIL ({} of {})", v.failed, v.compared + v.shape_mismatches)
    }
}

/// The count of tensors that found no partner, when there are any.
pub fn unmatched(r: &DiffReport) -> Option<String> {
    let (a, b) = (r.unmatched.a.len(), r.unmatched.b.len());
    (a + b > 0).then(|| {
        format!("unmatched: {a} tensors only in A, {b} only in B (--list-unmatched lists them)")
    })
}

/// `only in A: encoder.bias`: one tensor without a partner.
pub fn only_in(side: &str, tensor: &str) -> String {
    format!("only in {side}: {tensor}")
}

/// Titles of the pairs a report details.
pub const FIRST_AND_WORST: &str = "first and worst over tolerance";
pub const FIRST: &str = "first over tolerance";
pub const WORST: &str = "worst";
pub const LARGEST: &str = "largest difference";
/// Said instead of a detail when nothing differs at all.
pub const ALL_EQUAL: &str = "every compared pair is equal: max|Δ| 0 everywhere";

/// The roles of A, B and C in a triangle.
pub const ROLES: [&str; 3] = ["reference", "port", "export"];
/// The letters of A, B and C.
pub const LETTERS: [&str; 3] = ["A", "B", "C"];

/// `Meta ⇔ ONNX`: a side of the triangle.
pub fn side_label(t: &TriangleReport, side: Side) -> String {
    let (a, b) = side.ends();
    format!("{} ⇔ {}", t.names[a], t.names[b])
}

/// `A: Meta — meta.st (reference, 262 tensors)`: one dump of a triangle (`i` = 0, 1, 2).
pub fn triangle_dump(t: &TriangleReport, i: usize, info: &DumpInfo) -> String {
    format!(
        "{}: {} — {} ({}, {} tensors{})",
        LETTERS[i],
        t.names[i],
        info.path,
        ROLES[i],
        info.tensors,
        deployed(info)
    )
}

/// Whether the three dumps were captured from one input.
pub fn triangle_input(t: &TriangleReport) -> String {
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
        Some(h) if hashes.iter().all(|x| *x == Some(h)) => format!(
            "input: same input in all three (sha256 {})",
            h.get(..16).unwrap_or(h)
        ),
        _ => "input: inputs not all checked or not all equal (see --format json)".into(),
    }
}

/// `Meta ⇔ ONNX: 0 tensors only in Meta, 2 only in ONNX`: one side's count of strays.
pub fn side_unmatched(t: &TriangleReport, side: Side, r: &DiffReport) -> String {
    let (a, b) = side.ends();
    format!(
        "{}: {} tensors only in {}, {} only in {}",
        side_label(t, side),
        r.unmatched.a.len(),
        t.names[a],
        r.unmatched.b.len(),
        t.names[b]
    )
}

/// `` `blocks.1.ls2` (max|Δ| 1.00e-02, 3322.2× the stage before it) ``.
fn stage_figures(f: &FirstOver) -> String {
    let mut s = format!("`{}`", f.stage);
    match f.max_abs {
        Some(m) => s.push_str(&format!(" (max|Δ| {}", sci(m, 2))),
        None => s.push_str(" (shapes differ"),
    }
    if let Some(a) = f.amplification {
        s.push_str(&format!(", {a:.1}× the stage before it"));
    }
    s.push(')');
    s
}

/// The diagnosis in plain words: one sentence per kind, naming the dumps as the report does.
pub fn diagnosis(names: &[String; 3], d: &Diagnosis) -> String {
    let [na, nb, nc] = names;
    match d {
        Diagnosis::AllAgree => format!(
            "all three agree within tolerance: {nb} reproduces {na}, and {nc} reproduces {nb}."
        ),
        Diagnosis::Accumulated(f) => format!(
            "{na} ⇔ {nb} and {nb} ⇔ {nc} are each within tolerance, but their differences add \
             up: {na} ⇔ {nc} is over tolerance first at {}. Tighten either side, or widen the \
             tolerance.",
            stage_figures(f)
        ),
        Diagnosis::ExportDrifts(f) => format!(
            "{na} ⇔ {nb} is clean, but {nc} drifts from {nb}: the export is at fault, not the \
             port. {nc} departs from {nb} first at {}.",
            stage_figures(f)
        ),
        Diagnosis::PortDiverges(f) => format!(
            "{na} ⇔ {nb} diverges: the port is at fault. The first stage over tolerance is {}; \
             fix {nb} there. {nc} follows {nb} faithfully ({nb} ⇔ {nc} is clean), so it inherits \
             the difference.",
            stage_figures(f)
        ),
        Diagnosis::Incomplete(side) => {
            let (x, y) = side.ends();
            format!(
                "{} ⇔ {} compares too little to diagnose (coverage below --min-coverage): pair \
                 more of their tensors (--align auto, --map) or lower --min-coverage.",
                names[x], names[y]
            )
        }
        Diagnosis::BothDiverge { port, export } => format!(
            "both the port and the export depart: {na} ⇔ {nb} diverges first at {} (fix {nb} \
             there), and {nc} also drifts from {nb}, first at {}.",
            stage_figures(port),
            stage_figures(export)
        ),
    }
}

/// `diagnosis: …`: the diagnosis as a report line.
pub fn diagnosis_line(t: &TriangleReport) -> String {
    format!("diagnosis: {}", diagnosis(&t.names, &t.diagnosis))
}

/// The lines above an inspection's tensor table: the file, then its manifest.
pub fn inspect_lines(i: &Inspection) -> Vec<String> {
    let mut out = vec![format!(
        "{} ({} bytes, {} tensors)",
        i.path,
        i.file_size,
        i.tensors.len()
    )];
    if !i.has_manifest {
        out.push(
            "no dinodiff manifest: a plain safetensors file (order: canonical stage names in \
             stage order, then the others in file order)"
                .into(),
        );
        return out;
    }
    let m = &i.manifest;
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    out.push(format!(
        "source: {}  (dinodiff {}, format {})",
        m.source, m.dinodiff_version, m.format_version
    ));
    out.push(format!("created: {} on {}", m.created, m.host));
    if !m.command_line.is_empty() {
        out.push(format!("command: {}", m.command_line.join(" ")));
    }
    if let Some(model) = &m.model {
        out.push(format!(
            "model: {} ({} bytes, sha256 {})",
            model.path, model.size, model.sha256
        ));
    }
    out.push(format!(
        "variant: {}  device: {}  dtype: {}",
        opt(&m.variant),
        opt(&m.device),
        opt(&m.dtype)
    ));
    if !m.frameworks.is_empty() {
        let fw: Vec<String> = m
            .frameworks
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push(format!("frameworks: {}", fw.join(", ")));
    }
    out.push(format!("input sha256: {}", opt(&m.input_sha256)));
    if let Some(input) = &m.input {
        out.push(format!("input: {input}"));
    }
    out
}

/// A statistic of a tensor: 4 significant digits, `-` when there is none.
pub fn stat(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| sci(v, 3))
}

/// min, max, mean, std, NaN count, Inf count of a tensor.
pub fn stats(s: &Stats) -> [String; 6] {
    [
        stat(s.min),
        stat(s.max),
        stat(s.mean),
        stat(s.std),
        s.nan.to_string(),
        s.inf.to_string(),
    ]
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
