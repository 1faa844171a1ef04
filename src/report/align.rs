//! The plain-text view of `dinodiff align` (its JSON is the serde form of
//! [`crate::align::proposal::Proposal`]): the two dumps, a summary line, one row per pair in
//! A's execution order, then the unpaired tensors of A.

use super::words;
use crate::align::proposal::Proposal;
use std::fmt::Write;

/// Column headers of the pair table.
const COLUMNS: [&str; 7] = [
    "A tensor",
    "B tensor",
    "layout",
    "by",
    "score",
    "max|Δ|",
    "runner-up",
];

pub fn table(p: &Proposal) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A  {}\nB  {}", p.a, p.b);
    let _ = writeln!(out, "{}", words::align_summary(p));
    let rows: Vec<[String; 7]> = p
        .pairs
        .iter()
        .map(|q| {
            [
                q.a.clone(),
                if q.a == q.b { "=".into() } else { q.b.clone() },
                q.layout.clone().unwrap_or_default(),
                words::paired_by(q.paired_by).into(),
                words::score(q.score),
                q.max_abs.map_or_else(|| "-".into(), |m| words::sci(m, 1)),
                q.runner_up.as_ref().map_or(String::new(), words::runner_up),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain(std::iter::once(COLUMNS[c].chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "\n{}", line(&COLUMNS));
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    if !p.unpaired_a.is_empty() {
        let _ = writeln!(out, "\nunpaired in A: {}", p.unpaired_a.join(", "));
    }
    out
}
