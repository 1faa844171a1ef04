//! The JSON renderer (`--format json`): the [`DiffReport`] itself, schema `dinodiff.diff/1`
//! (`docs/diff-json.md`). Non-finite numbers become `null`; fields are only ever added within a
//! schema version.

use crate::diff::DiffReport;

pub fn render(r: &DiffReport) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("a report always serializes");
    s.push('\n');
    s
}
