//! Rendering: report data ([`DiffReport`], [`TriangleReport`], [`Inspection`]) to text, one
//! [`Renderer`] per output format.
//!
//! Contract:
//! - the library computes data only; this module is the only place that turns it into words.
//!   The wording lives in [`words`] (one sentence per fact, shared by every format); what a text
//!   report shows is decided once in [`view`], which every text renderer takes apart whole;
//! - every text format shows the same facts: for a diff, the two dumps, the input status, the
//!   headline (cosine with 6 decimals, max|Δ| in scientific notation), the stage grid (or the
//!   per-tensor table for dumps without canonical names), the first and worst pair over tolerance
//!   (or the largest difference), the unmatched tensors (listed with
//!   [`Options::list_unmatched`]) and the verdict; for a triangle, the three dumps and their
//!   input, the three pairwise headlines, the reference ⇔ port and port ⇔ export grids with
//!   their notable pairs, the diagnosis, each side's strays on request and each side's verdict;
//!   for an inspection, the manifest and the per-tensor statistics;
//! - JSON is the data itself (schemas in `docs/diff-json.md`), plus the diagnosis sentence;
//! - only [`table`] uses colour, and only when asked to.
//!
//! A new format is one more [`Renderer`] implementation. [`html`] is one too, and also draws
//! what only the dumps hold ([`crate::figures`]) when given it.

pub mod align;
pub mod checkpoint;
pub mod html;
pub mod json;
pub mod markdown;
pub mod table;
pub mod view;
pub mod vocabulary;
pub mod words;

#[cfg(test)]
mod tests;

use crate::diff::DiffReport;
use crate::inspect::Inspection;
use crate::triangulate::TriangleReport;

pub use html::HtmlRenderer;
pub use json::JsonRenderer;
pub use markdown::MarkdownRenderer;
pub use table::{TableRenderer, TableStyle};

/// What to show, whatever the format.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// List the tensors that found no partner (JSON always carries them).
    pub list_unmatched: bool,
}

/// One output format: turns report data into the text printed on stdout (newline-terminated).
pub trait Renderer {
    /// `dinodiff diff A B`.
    fn diff(&self, r: &DiffReport, o: &Options) -> String;
    /// `dinodiff diff A B C`.
    fn triangle(&self, t: &TriangleReport, o: &Options) -> String;
    /// `dinodiff inspect`.
    fn inspect(&self, i: &Inspection) -> String;
}
