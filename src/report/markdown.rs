//! The Markdown renderer (`--format markdown`): for a CI job summary (`$GITHUB_STEP_SUMMARY`) or a
//! PR comment.
//!
//! Lays out the facts of [`super::view`], the conclusion first: the first line is a heading that
//! holds the one-line summary (verdict, coverage, first divergence, CLS max|Δ|; plain text, so it
//! reads the same as a link's text or a status line, and GitHub gives it an anchor), then a
//! diff's verdict or a triangle's diagnosis, the headline and the top five differences; long
//! grids and the token table sit inside `<details>` blocks. Values over tolerance are bold and
//! carry the marker [`MARK`]; `|` is escaped everywhere it would end a table cell.

use super::table::MARK;
use super::view::{
    self, DiffView, FlatRow, Grid, HeadlineRow, InspectView, Note, RankedRow, SideBody, SideEnd,
    SideRow, Strays, TokenTable, TriangleView, Value,
};
use super::{Options, Renderer, words};
use crate::diff::DiffReport;
use crate::inspect::Inspection;
use crate::triangulate::TriangleReport;
use std::fmt::Write;

pub struct MarkdownRenderer;

fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

fn mark(v: &Value) -> String {
    if v.fails {
        format!("**{} {MARK}**", v.text)
    } else {
        v.text.clone()
    }
}

fn status(pass: bool) -> &'static str {
    if pass { "✅" } else { "❌" }
}

/// A table: header, alignment row (`right[i]`: right-aligned), rows; cells escaped.
fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let cells: Vec<String> = cells
            .map(|c| {
                if c.is_empty() {
                    " ".into()
                } else {
                    format!(" {} ", esc(&c))
                }
            })
            .collect();
        format!("|{}|\n", cells.join("|"))
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()));
    let align: Vec<&str> = right
        .iter()
        .map(|&r| if r { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        out.push_str(&line(&mut row.iter().cloned()));
    }
    out
}

fn headline(rows: &[HeadlineRow]) -> String {
    let header = [&[""][..], &view::HEADLINE_COLUMNS].concat();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(
            |HeadlineRow {
                 label,
                 cosine,
                 max_abs,
             }| vec![label.to_string(), cosine.clone(), mark(max_abs)],
        )
        .collect();
    table(&header, &[false, true, true], &rows)
}

fn grid(g: &Grid) -> String {
    let header = [&[""][..], &g.columns].concat();
    let mut right = vec![true; header.len()];
    right[0] = false;
    let rows: Vec<Vec<String>> = g
        .rows
        .iter()
        .map(|(label, cells)| {
            let mut row = vec![label.clone()];
            row.extend(cells.iter().map(|c| match c {
                None => "·".into(),
                Some(c) => mark(&Value {
                    text: match c.label {
                        Some(l) => format!("{l}: {}", c.value.text),
                        None => c.value.text.clone(),
                    },
                    fails: c.value.fails,
                }),
            }));
            row
        })
        .collect();
    table(&header, &right, &rows)
}

fn flat(rows: &[FlatRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(
            |FlatRow {
                 tensor,
                 shape,
                 dtype,
                 max_abs,
                 mean_abs,
                 cosine,
             }| {
                vec![
                    format!("`{tensor}`"),
                    shape.clone(),
                    dtype.clone(),
                    mark(max_abs),
                    mean_abs.clone(),
                    cosine.clone(),
                ]
            },
        )
        .collect();
    let right = [false, false, false, true, true, true];
    table(&view::FLAT_COLUMNS, &right, &rows)
}

fn side_rows(rows: &[SideRow]) -> String {
    let header = [&[""][..], &view::TRIANGLE_COLUMNS].concat();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(
            |SideRow {
                 label,
                 headline,
                 verdict,
             }| {
                let mut row = vec![label.clone()];
                for h in headline {
                    match h {
                        Some((cos, max)) => row.extend([cos.clone(), mark(max)]),
                        None => row.extend(["n/a".to_string(), "n/a".to_string()]),
                    }
                }
                row.push(mark(verdict));
                row
            },
        )
        .collect();
    table(&header, &[false, true, true, true, true, false], &rows)
}

fn worst(out: &mut String, rows: &[RankedRow]) {
    if rows.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(
            |RankedRow {
                 rank,
                 stage,
                 max_abs,
                 rms,
                 cosine,
             }| {
                vec![
                    rank.to_string(),
                    format!("`{stage}`"),
                    mark(max_abs),
                    rms.clone(),
                    cosine.clone(),
                ]
            },
        )
        .collect();
    let title = words::worst_title(view::TOP_WORST);
    let right = [true, false, true, true, true];
    let _ = writeln!(
        out,
        "**{title}**\n\n{}",
        table(&view::WORST_COLUMNS, &right, &rows)
    );
}

fn tokens(out: &mut String, tokens: &Option<TokenTable>) {
    let Some(TokenTable {
        layout,
        columns,
        rows,
        note,
    }) = tokens
    else {
        return;
    };
    let names: Vec<String> = columns.iter().map(|(c, m)| format!("{c} {m}")).collect();
    let header: Vec<&str> = ["stage"]
        .into_iter()
        .chain(names.iter().map(String::as_str))
        .collect();
    let mut right = vec![true; header.len()];
    right[0] = false;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(stage, cells)| [vec![format!("`{stage}`")], cells.clone()].concat())
        .collect();
    let _ = writeln!(
        out,
        "<details><summary>max|Δ| and rms per token category ({})</summary>\n\n{}\n{}\n\n</details>\n",
        esc(layout),
        table(&header, &right, &rows),
        esc(note)
    );
}

fn notes(out: &mut String, notes: &[Note]) {
    for n in notes {
        match n {
            Note::Detail {
                title,
                tensor,
                lines,
            } => {
                let _ = writeln!(out, "**{title}: `{tensor}`**\n");
                for l in lines {
                    let _ = writeln!(out, "- {}", esc(l));
                }
                out.push('\n');
            }
            Note::Sentence(s) => {
                let _ = writeln!(out, "{}\n", esc(s));
            }
        }
    }
}

/// Tensors without a partner: the count, then the list. With an `item` marker (`- `) the count
/// is a list item and the list nested under it; without, the list follows as a paragraph of its own.
fn strays(out: &mut String, strays: &Option<Strays>, item: &str) {
    if let Some(Strays { summary, listed }) = strays {
        let _ = writeln!(out, "{item}{}", esc(summary));
        let indent = if item.is_empty() { "" } else { "  " };
        if item.is_empty() && !listed.is_empty() {
            out.push('\n');
        }
        for (side, tensor) in listed {
            let _ = writeln!(
                out,
                "{indent}- {}",
                esc(&words::only_in(side, &format!("`{tensor}`")))
            );
        }
    }
}

fn side_body(out: &mut String, body: &SideBody) {
    let SideBody {
        label,
        grid: side_grid,
        flat: side_flat,
        notes: side_notes,
        worst: side_worst,
        tokens: side_tokens,
    } = body;
    let what = if side_grid.is_some() {
        "max|Δ| per stage"
    } else {
        "other tensors"
    };
    let _ = writeln!(out, "<details><summary>{label}, {what}</summary>\n");
    if let Some(g) = side_grid {
        let _ = writeln!(out, "{}", grid(g));
    }
    if !side_flat.is_empty() {
        if side_grid.is_some() {
            let _ = writeln!(out, "other tensors:\n");
        }
        let _ = writeln!(out, "{}", flat(side_flat));
    }
    worst(out, side_worst);
    tokens(out, side_tokens);
    notes(out, side_notes);
    let _ = writeln!(out, "</details>\n");
}

impl Renderer for MarkdownRenderer {
    fn diff(&self, r: &DiffReport, o: &Options) -> String {
        let DiffView {
            pass,
            dumps: [(pa, sa), (pb, sb)],
            input,
            headline: rows,
            grid: stage_grid,
            flat: flat_rows,
            notes: diff_notes,
            worst: diff_worst,
            tokens: diff_tokens,
            strays: diff_strays,
            verdict,
            summary,
        } = view::diff(r, o);
        let mut out = String::new();
        let _ = writeln!(out, "### {} {summary}\n", status(pass));
        let _ = writeln!(out, "`{pa}` ({sa}) ⇔ `{pb}` ({sb})\n");
        let _ = writeln!(out, "{}\n", esc(&input));
        let _ = writeln!(out, "{}\n", esc(&verdict));
        if !rows.is_empty() {
            let _ = writeln!(out, "{}", headline(&rows));
        }
        worst(&mut out, &diff_worst);
        if let Some(g) = &stage_grid {
            let _ = writeln!(out, "<details><summary>max|Δ| per stage</summary>\n");
            let _ = writeln!(out, "{}\n</details>\n", grid(g));
        }
        if !flat_rows.is_empty() {
            let _ = writeln!(out, "{}", flat(&flat_rows));
        }
        tokens(&mut out, &diff_tokens);
        notes(&mut out, &diff_notes);
        strays(&mut out, &diff_strays, "");
        out
    }

    fn triangle(&self, t: &TriangleReport, o: &Options) -> String {
        let TriangleView {
            pass,
            dumps,
            input,
            rows,
            bodies,
            diagnosis,
            ends,
            summary,
        } = view::triangle(t, o);
        let mut out = String::new();
        let _ = writeln!(out, "### {} {summary}\n", status(pass));
        let _ = writeln!(out, "{}\n", esc(&diagnosis));
        for d in &dumps {
            let _ = writeln!(out, "- {}", esc(d));
        }
        let _ = writeln!(out, "- {}\n", esc(&input));
        let _ = writeln!(out, "{}", side_rows(&rows));
        for body in &bodies {
            side_body(&mut out, body);
        }
        for SideEnd {
            strays: side_strays,
            verdict,
        } in &ends
        {
            strays(&mut out, side_strays, "- ");
            let _ = writeln!(out, "- {}", esc(verdict));
        }
        out
    }

    fn inspect(&self, i: &Inspection) -> String {
        let InspectView { lines, rows } = view::inspect(i);
        let mut out = String::from("### dinodiff inspect\n\n");
        for l in &lines {
            let _ = writeln!(out, "- {}", esc(l));
        }
        let header: Vec<&str> = view::INSPECT_COLUMNS.iter().map(|(h, _)| *h).collect();
        let right: Vec<bool> = view::INSPECT_COLUMNS.iter().map(|(_, n)| *n).collect();
        let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
        let _ = writeln!(out, "\n{}", table(&header, &right, &rows));
        out
    }
}
