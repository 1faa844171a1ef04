//! The JSON renderer (`--format json`): the data itself. A diff is its [`DiffReport`] (schema
//! `dinodiff.diff/1`), an inspection its [`Inspection`] (`dinodiff.inspect/1`), a triangle its
//! [`TriangleReport`] (`dinodiff.triangle/1`) with each side's label and the diagnosis sentence
//! beside the diagnosis data. Schemas: `docs/diff-json.md`. Non-finite numbers become `null`;
//! fields are only ever added within a schema version. `--list-unmatched` changes nothing here:
//! the unmatched tensors are always listed.

use super::{Options, Renderer, words};
use crate::diff::DiffReport;
use crate::inspect::Inspection;
use crate::triangulate::{self, Finding, FirstOver, Side, TriangleReport};
use serde::Serialize;

pub struct JsonRenderer;

/// The triangle as printed: [`TriangleReport`] plus the words a consumer should not have to
/// rebuild (side labels, the diagnosis sentence).
#[derive(Serialize)]
struct TriangleJson<'a> {
    schema: &'static str,
    names: &'a [String; 3],
    sides: Vec<SideJson<'a>>,
    diagnosis: DiagnosisJson<'a>,
    pass: bool,
}

#[derive(Serialize)]
struct SideJson<'a> {
    side: Side,
    /// "Meta ⇔ ONNX".
    label: String,
    report: &'a DiffReport,
}

#[derive(Serialize)]
struct DiagnosisJson<'a> {
    /// The diagnosis kind.
    finding: Finding,
    /// The stages it names, most telling first, with their figures.
    first_over: Vec<&'a FirstOver>,
    /// The diagnosis sentence the other formats print.
    text: String,
}

fn pretty(value: &impl Serialize) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("a report always serializes");
    s.push('\n');
    s
}

impl Renderer for JsonRenderer {
    fn diff(&self, r: &DiffReport, _: &Options) -> String {
        pretty(r)
    }

    fn triangle(&self, t: &TriangleReport, _: &Options) -> String {
        pretty(&TriangleJson {
            schema: triangulate::SCHEMA,
            names: &t.names,
            sides: t
                .sides
                .iter()
                .map(|s| SideJson {
                    side: s.side,
                    label: words::side_label(t, s.side),
                    report: &s.report,
                })
                .collect(),
            diagnosis: DiagnosisJson {
                finding: t.diagnosis.finding(),
                first_over: t.diagnosis.first_over(),
                text: words::diagnosis(&t.names, &t.diagnosis),
            },
            pass: t.pass,
        })
    }

    fn inspect(&self, i: &Inspection) -> String {
        pretty(i)
    }
}
