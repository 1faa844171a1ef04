//! The Markdown renderer (`--format markdown`): for a CI job summary (`$GITHUB_STEP_SUMMARY`) or a
//! PR comment. Verdict first, headline table, the stage grid inside a `<details>` block, details of
//! the first and worst failing pairs. Cells over tolerance are bold and carry the marker.

use super::table::MARK;
use super::{
    cell_value, cosine, detail_lines, flat_pairs, sci, stage_grid, unmatched_line, verdict_line,
};
use crate::diff::DiffReport;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

fn mark(text: String, fails: bool) -> String {
    if fails {
        format!("**{text} {MARK}**")
    } else {
        text
    }
}

pub fn render(r: &DiffReport) -> String {
    let mut out = String::new();
    let status = if r.verdict.pass {
        "PASS ✅"
    } else {
        "FAIL ❌"
    };
    let _ = writeln!(out, "### dinodiff: {status}\n");
    let _ = writeln!(
        out,
        "`{}` ({}) ⇔ `{}` ({})\n",
        r.a.path, r.a.source, r.b.path, r.b.source
    );
    let _ = writeln!(out, "{}\n", esc(&verdict_line(r)));
    if !r.headline.is_empty() {
        let _ = writeln!(out, "| | cosine | max\\|Δ\\| |\n|---|---:|---:|");
        for h in &r.headline {
            let label = if h.name == "cls" {
                "CLS token"
            } else {
                "pooled patches"
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                cosine(h.cosine),
                mark(sci(h.max_abs, 3), h.fails)
            );
        }
        out.push('\n');
    }
    let grid = stage_grid(r);
    if let Some(g) = &grid {
        let _ = writeln!(out, "<details><summary>max|Δ| per stage</summary>\n");
        let _ = writeln!(out, "| | {} |", g.columns.join(" | "));
        let _ = writeln!(out, "|---|{}", "---:|".repeat(g.columns.len()));
        for (label, cells) in &g.rows {
            let cells: Vec<String> = cells
                .iter()
                .map(|c| match c {
                    None => "·".into(),
                    Some(c) => {
                        let v = match c.label {
                            Some(l) => format!("{l}: {}", c.value),
                            None => c.value.clone(),
                        };
                        mark(v, c.fails)
                    }
                })
                .collect();
            let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
        }
        let _ = writeln!(out, "\n</details>\n");
    }
    let flat = flat_pairs(r, grid.is_some());
    if !flat.is_empty() {
        let _ = writeln!(
            out,
            "| tensor | shape | dtype | max\\|Δ\\| | cosine |\n|---|---|---|---:|---:|"
        );
        for p in flat {
            let cos = p
                .metrics
                .as_ref()
                .map_or(String::new(), |m| cosine(m.cosine));
            let _ = writeln!(
                out,
                "| `{}` | {:?} | {} | {} | {cos} |",
                esc(&p.name),
                p.shape_a,
                p.dtype_a,
                mark(cell_value(p), p.fails)
            );
        }
        out.push('\n');
    }
    let mut detail = |title: &str, i: usize| {
        let p = &r.pairs[i];
        let _ = writeln!(out, "**{title}: `{}`**\n", p.name);
        for l in detail_lines(p) {
            let _ = writeln!(out, "- {}", esc(&l));
        }
        out.push('\n');
    };
    match (r.first_over, r.worst) {
        (Some(f), Some(w)) if f == w => detail("first and worst over tolerance", f),
        (Some(f), Some(w)) => {
            detail("first over tolerance", f);
            detail("worst", w);
        }
        _ => {}
    }
    if let Some(u) = unmatched_line(r) {
        let _ = writeln!(out, "{}", esc(&u));
    }
    out
}
