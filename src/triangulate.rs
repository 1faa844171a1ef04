//! Three-way comparison (`dinodiff diff A B C`): a reference (A, Meta's model), a port of it
//! (B, the Equinox reimplementation) and an export of the port (C, its ONNX file).
//!
//! Contract: the three pairwise diffs are computed with the same options (A⇔C, A⇔B, B⇔C; each
//! refuses dumps of different inputs as a two-way diff does). The diagnosis reads them as a
//! triangle: if A⇔B is clean but C departs, the export is at fault and the first stage over
//! tolerance in B⇔C (else A⇔C) is named; if A⇔B diverges, the port is at fault and its first
//! stage over tolerance is named, with its amplification against the stage before it; B⇔C says
//! whether the export also drifts on its own. The verdict passes only when all three pass.

use crate::diff::{DiffOptions, DiffReport, diff};
use crate::dump::{Dump, SourceKind};
use serde::Serialize;

pub const SCHEMA: &str = "dinodiff.triangle/1";

/// Which side of the triangle a pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A ⇔ C: reference against the export (what users ship).
    ReferenceExport,
    /// A ⇔ B: reference against the port.
    ReferencePort,
    /// B ⇔ C: the port against its export.
    PortExport,
}

impl Side {
    /// Indices (into A, B, C) of the pair's two dumps, in the pair's order.
    pub fn ends(self) -> (usize, usize) {
        match self {
            Side::ReferenceExport => (0, 2),
            Side::ReferencePort => (0, 1),
            Side::PortExport => (1, 2),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SidePair {
    pub side: Side,
    /// "Meta ⇔ ONNX".
    pub label: String,
    pub report: DiffReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// All three agree within tolerance.
    AllAgree,
    /// The port matches the reference; the export departs from it.
    ExportDrifts,
    /// The port departs from the reference; the export follows the port.
    PortDiverges,
    /// The port departs from the reference and the export departs from the port.
    BothDiverge,
    /// A ⇔ B and B ⇔ C pass but A ⇔ C does not (differences that add up across the triangle).
    Accumulated,
}

/// The first tensor over tolerance on one side.
#[derive(Debug, Clone, Serialize)]
pub struct FirstOver {
    pub side: Side,
    pub stage: String,
    pub max_abs: Option<f64>,
    pub amplification: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub finding: Finding,
    /// The stages to look at, most telling first.
    pub first_over: Vec<FirstOver>,
    /// The diagnosis in plain words.
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TriangleReport {
    pub schema: &'static str,
    /// A, B, C names ("Meta", "Equinox", "ONNX", or the file name for other dumps).
    pub names: [String; 3],
    /// In display order: A⇔C, A⇔B, B⇔C.
    pub sides: Vec<SidePair>,
    pub diagnosis: Diagnosis,
    pub pass: bool,
}

impl TriangleReport {
    pub fn pair(&self, side: Side) -> &SidePair {
        self.sides
            .iter()
            .find(|s| s.side == side)
            .expect("all three sides are present")
    }

    pub fn side(&self, side: Side) -> &DiffReport {
        &self.pair(side).report
    }
}

/// The name a dump goes by in the diagnosis.
fn name_of(d: &Dump) -> String {
    match d.manifest().source {
        SourceKind::Meta => "Meta".into(),
        SourceKind::Eqx => "Equinox".into(),
        SourceKind::Onnx => "ONNX".into(),
        _ => d.path().file_name().map_or_else(
            || d.path().display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    }
}

fn first_over(side: Side, r: &DiffReport) -> Option<FirstOver> {
    r.first_over.map(|i| {
        let p = &r.pairs[i];
        FirstOver {
            side,
            stage: p.name.clone(),
            max_abs: p.metrics.as_ref().map(|m| m.max_abs),
            amplification: p.amplification,
        }
    })
}

fn describe(f: &FirstOver) -> String {
    let mut s = format!("`{}`", f.stage);
    match f.max_abs {
        Some(m) => s.push_str(&format!(" (max|Δ| {}", crate::report::sci(m, 2))),
        None => s.push_str(" (shapes differ"),
    }
    if let Some(a) = f.amplification {
        s.push_str(&format!(", {a:.1}× the stage before it"));
    }
    s.push(')');
    s
}

pub fn triangulate(
    a: &Dump,
    b: &Dump,
    c: &Dump,
    opts: &DiffOptions,
) -> anyhow::Result<TriangleReport> {
    let names = [name_of(a), name_of(b), name_of(c)];
    let [na, nb, nc] = &names;
    let ac = diff(a, c, opts)?;
    let ab = diff(a, b, opts)?;
    let bc = diff(b, c, opts)?;
    let (ab_ok, bc_ok, ac_ok) = (ab.verdict.pass, bc.verdict.pass, ac.verdict.pass);
    let f_ab = first_over(Side::ReferencePort, &ab);
    let f_bc = first_over(Side::PortExport, &bc);
    let f_ac = first_over(Side::ReferenceExport, &ac);
    let (finding, first, text) = match (ab_ok, bc_ok, ac_ok) {
        (true, true, true) => (
            Finding::AllAgree,
            vec![],
            format!(
                "all three agree within tolerance: {nb} reproduces {na}, and {nc} reproduces {nb}."
            ),
        ),
        (true, true, false) => {
            let f = f_ac.clone().expect("a failing side has a first stage");
            (
                Finding::Accumulated,
                vec![f.clone()],
                format!(
                    "{na} ⇔ {nb} and {nb} ⇔ {nc} are each within tolerance, but their \
                     differences add up: {na} ⇔ {nc} is over tolerance first at {}. Tighten \
                     either side, or widen the tolerance.",
                    describe(&f)
                ),
            )
        }
        (true, false, _) => {
            let f = f_bc.clone().expect("a failing side has a first stage");
            (
                Finding::ExportDrifts,
                vec![f.clone()],
                format!(
                    "{na} ⇔ {nb} is clean, but {nc} drifts from {nb}: the export is at fault, \
                     not the port. {nc} departs from {nb} first at {}.",
                    describe(&f)
                ),
            )
        }
        (false, true, _) => {
            let f = f_ab.clone().expect("a failing side has a first stage");
            (
                Finding::PortDiverges,
                vec![f.clone()],
                format!(
                    "{na} ⇔ {nb} diverges: the port is at fault. The first stage over tolerance \
                     is {}; fix {nb} there. {nc} follows {nb} faithfully ({nb} ⇔ {nc} is clean), \
                     so it inherits the difference.",
                    describe(&f)
                ),
            )
        }
        (false, false, _) => {
            let fa = f_ab.clone().expect("a failing side has a first stage");
            let fb = f_bc.clone().expect("a failing side has a first stage");
            (
                Finding::BothDiverge,
                vec![fa.clone(), fb.clone()],
                format!(
                    "both the port and the export depart: {na} ⇔ {nb} diverges first at {} (fix \
                     {nb} there), and {nc} also drifts from {nb}, first at {}.",
                    describe(&fa),
                    describe(&fb)
                ),
            )
        }
    };
    let pass = ab_ok && bc_ok && ac_ok;
    let label = |x: &str, y: &str| format!("{x} ⇔ {y}");
    Ok(TriangleReport {
        schema: SCHEMA,
        sides: vec![
            SidePair {
                side: Side::ReferenceExport,
                label: label(na, nc),
                report: ac,
            },
            SidePair {
                side: Side::ReferencePort,
                label: label(na, nb),
                report: ab,
            },
            SidePair {
                side: Side::PortExport,
                label: label(nb, nc),
                report: bc,
            },
        ],
        names: names.clone(),
        diagnosis: Diagnosis {
            finding,
            first_over: first,
            text,
        },
        pass,
    })
}
