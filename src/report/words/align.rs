//! The words of `dinodiff align`: its summary, a pair's evidence, the map file's comments.

use super::{cosine, sci};
use crate::align::PairedBy;
use crate::align::proposal::{Proposal, ProposedPair};

/// How a pair was found, in a word.
pub fn paired_by(by: PairedBy) -> &'static str {
    match by {
        PairedBy::Name => "name",
        PairedBy::MapPair => "map",
        PairedBy::MapRewrite => "rewrite",
        PairedBy::Value => "value",
    }
}

/// A score: 6 decimals (1 for equal values), `-` when there is none.
pub fn score(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |s| format!("{s:.6}"))
}

/// `paired 175 of A's 178 tensors (172 by value, 3 by name); unpaired: 3 in A, 1400 in B`.
pub fn align_summary(p: &Proposal) -> String {
    let count = |by: PairedBy| p.pairs.iter().filter(|q| q.paired_by == by).count();
    let how: Vec<String> = [
        PairedBy::Value,
        PairedBy::Name,
        PairedBy::MapPair,
        PairedBy::MapRewrite,
    ]
    .iter()
    .filter(|&&by| count(by) > 0)
    .map(|&by| format!("{} by {}", count(by), paired_by(by)))
    .collect();
    let layouts = p.pairs.iter().filter(|q| q.layout.is_some()).count();
    format!(
        "paired {} of A's {} tensors ({}){}; unpaired: {} in A, {} in B",
        p.pairs.len(),
        p.pairs.len() + p.unpaired_a.len(),
        if how.is_empty() {
            "none".to_string()
        } else {
            how.join(", ")
        },
        if layouts > 0 {
            format!(", {layouts} read through a layout")
        } else {
            String::new()
        },
        p.unpaired_a.len(),
        p.unpaired_b.len()
    )
}

/// The comment under a `[[pair]]`: `score 0.999999 · max|Δ| 2.4e-07 · cosine 1.000000 ·
/// runner-up "x" permute(0,2,1,3) (0.610000)`.
pub fn align_comment(q: &ProposedPair) -> String {
    let runner_up = match &q.runner_up {
        Some(r) => format!(
            "runner-up {:?}{} ({})",
            r.b,
            r.layout.as_ref().map_or(String::new(), |l| format!(" {l}")),
            score(Some(r.score))
        ),
        None => "no runner-up".into(),
    };
    format!(
        "{} · score {} · max|Δ| {} · cosine {} · {runner_up}",
        paired_by(q.paired_by),
        score(q.score),
        q.max_abs.map_or_else(|| "-".into(), |m| sci(m, 1)),
        cosine(q.cosine)
    )
}

/// A runner-up in a table cell: `name permute(0,2,1) (0.999800)`.
pub fn runner_up(r: &crate::align::RunnerUp) -> String {
    format!(
        "{}{} ({})",
        r.b,
        r.layout.as_ref().map_or(String::new(), |l| format!(" {l}")),
        score(Some(r.score))
    )
}

/// The comment lines at the top of the map file `align` writes to `path`.
pub fn align_map_header(p: &Proposal, path: &str) -> Vec<String> {
    vec![
        format!("dinodiff align {} {}", p.a, p.b),
        align_summary(p),
        "Review each [[pair]]: a score near 1 and a runner-up far below it are unambiguous.".into(),
        format!(
            "Pin it in CI: dinodiff diff {} {} --map {path} (pairs without searching again).",
            p.a, p.b
        ),
    ]
}
