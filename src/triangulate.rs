//! Three-way comparison (`dinodiff diff A B C`): a reference (A, Meta's model), a port of it
//! (B, the Equinox reimplementation) and an export of the port (C, its ONNX file).
//!
//! Contract: the three pairwise diffs are computed with the same options (A⇔C, A⇔B, B⇔C; each
//! refuses dumps of different inputs as a two-way diff does). With `--align auto`, B's tensors
//! that bear no stage name but were paired with one of A's stages are shown under that stage in
//! B⇔C too. The diagnosis reads them as a
//! triangle: if A⇔B is clean but C departs, the export is at fault and the first stage over
//! tolerance in B⇔C (else A⇔C) is named; if A⇔B diverges, the port is at fault and its first
//! stage over tolerance is named, with its amplification against the stage before it; B⇔C says
//! whether the export also drifts on its own. A side that fails with no pair over tolerance (it
//! paired too little: coverage) makes the diagnosis `Incomplete`. The verdict passes only when all
//! three pass.
//!
//! Everything here is data: the [`Diagnosis`] is its kind and the figures of the stages it names,
//! never prose. [`crate::report`] words it (one sentence per kind, the same in every format); the
//! JSON form (schema [`SCHEMA`], `docs/diff-json.md`) carries the data beside that sentence.

use crate::diff::{DiffOptions, DiffReport, diff, diff_aliased};
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

/// One side of the triangle: the two-way diff of its two dumps.
#[derive(Debug, Clone)]
pub struct SidePair {
    pub side: Side,
    pub report: DiffReport,
}

/// The kind of a [`Diagnosis`], without its figures (the JSON `finding`).
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
    /// A side fails without a pair over tolerance: it compared too little (coverage).
    Incomplete,
}

/// The first tensor over tolerance on one side, with the figures the diagnosis quotes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirstOver {
    pub side: Side,
    pub stage: String,
    /// Absent when the two tensors' shapes differ (they were not compared).
    pub max_abs: Option<f64>,
    /// max|Δ| over that of the stage before it on the same side.
    pub amplification: Option<f64>,
}

/// What the triangle says: which part is at fault, and where it first shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Diagnosis {
    /// All three sides pass.
    AllAgree,
    /// Only A ⇔ C fails: the first stage over tolerance there (side reference_export).
    Accumulated(FirstOver),
    /// A ⇔ B passes, B ⇔ C fails: the export is at fault; its first stage (side port_export).
    ExportDrifts(FirstOver),
    /// A ⇔ B fails, B ⇔ C passes: the port is at fault; its first stage (side reference_port).
    PortDiverges(FirstOver),
    /// A ⇔ B and B ⇔ C both fail: the first stage of each.
    BothDiverge { port: FirstOver, export: FirstOver },
    /// A side fails only because it paired too little to say PASS (its coverage is below the
    /// minimum): nothing to diagnose until more is paired. The first such side (A⇔B, B⇔C, A⇔C).
    Incomplete(Side),
}

impl Diagnosis {
    pub fn finding(&self) -> Finding {
        match self {
            Diagnosis::AllAgree => Finding::AllAgree,
            Diagnosis::Accumulated(_) => Finding::Accumulated,
            Diagnosis::ExportDrifts(_) => Finding::ExportDrifts,
            Diagnosis::PortDiverges(_) => Finding::PortDiverges,
            Diagnosis::BothDiverge { .. } => Finding::BothDiverge,
            Diagnosis::Incomplete(_) => Finding::Incomplete,
        }
    }

    /// The stages to look at, most telling first (the port's before the export's).
    pub fn first_over(&self) -> Vec<&FirstOver> {
        match self {
            Diagnosis::AllAgree | Diagnosis::Incomplete(_) => vec![],
            Diagnosis::Accumulated(f) | Diagnosis::ExportDrifts(f) | Diagnosis::PortDiverges(f) => {
                vec![f]
            }
            Diagnosis::BothDiverge { port, export } => vec![port, export],
        }
    }
}

#[derive(Debug, Clone)]
pub struct TriangleReport {
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

/// The first pair over tolerance of a failing side.
fn first_over(side: Side, r: &DiffReport) -> FirstOver {
    let i = r.first_over.expect("a failing side has a first stage");
    let p = &r.pairs[i];
    FirstOver {
        side,
        stage: p.name.clone(),
        max_abs: p.metrics.as_ref().map(|m| m.max_abs),
        amplification: p.amplification,
    }
}

/// Reads the three sides as a triangle (see the module contract).
pub fn diagnose(ac: &DiffReport, ab: &DiffReport, bc: &DiffReport) -> Diagnosis {
    let sides = [
        (Side::ReferencePort, ab),
        (Side::PortExport, bc),
        (Side::ReferenceExport, ac),
    ];
    if let Some((side, _)) = sides
        .iter()
        .find(|(_, r)| !r.verdict.pass && r.first_over.is_none())
    {
        return Diagnosis::Incomplete(*side);
    }
    match (ab.verdict.pass, bc.verdict.pass, ac.verdict.pass) {
        (true, true, true) => Diagnosis::AllAgree,
        (true, true, false) => Diagnosis::Accumulated(first_over(Side::ReferenceExport, ac)),
        (true, false, _) => Diagnosis::ExportDrifts(first_over(Side::PortExport, bc)),
        (false, true, _) => Diagnosis::PortDiverges(first_over(Side::ReferencePort, ab)),
        (false, false, _) => Diagnosis::BothDiverge {
            port: first_over(Side::ReferencePort, ab),
            export: first_over(Side::PortExport, bc),
        },
    }
}

/// The stage names of the port's tensors that bear none, from the reference ⇔ port pairs
/// (`--align auto` only: then the port side of the triangle shows the reference's stages).
fn port_stages(ab: &DiffReport, opts: &DiffOptions) -> std::collections::HashMap<String, String> {
    if opts.align != crate::align::Mode::Auto {
        return Default::default();
    }
    ab.pairs
        .iter()
        .filter(|p| p.canonical && crate::model::Stage::parse(&p.b).is_none())
        .map(|p| (p.b.clone(), p.name.clone()))
        .collect()
}

pub fn triangulate(
    a: &Dump,
    b: &Dump,
    c: &Dump,
    opts: &DiffOptions,
) -> anyhow::Result<TriangleReport> {
    let ac = diff(a, c, opts)?;
    let ab = diff(a, b, opts)?;
    let bc = diff_aliased(b, c, opts, &port_stages(&ab, opts))?;
    let diagnosis = diagnose(&ac, &ab, &bc);
    let pass = ab.verdict.pass && bc.verdict.pass && ac.verdict.pass;
    let side = |side, report| SidePair { side, report };
    Ok(TriangleReport {
        names: [name_of(a), name_of(b), name_of(c)],
        sides: vec![
            side(Side::ReferenceExport, ac),
            side(Side::ReferencePort, ab),
            side(Side::PortExport, bc),
        ],
        diagnosis,
        pass,
    })
}
