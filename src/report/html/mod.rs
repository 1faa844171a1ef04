//! The HTML renderer (`dinodiff report`, `diff --html`): one self-contained page per report.
//!
//! Contract:
//! - the page shows the facts of [`super::view`] (taken apart whole, like every text format) and
//!   draws pictures of them: per pair, the block × stage heatmap ([`heatmap`]), the depth curves
//!   of the block outputs ([`curves`]); with [`Figures`] (computed from the dumps by
//!   [`crate::figures`]) also the per-token-category breakdown ([`tokens`]), the patch-grid error
//!   map over the input image ([`patchmap`]) and each dump's provenance;
//! - the page is offline: CSS inline, images as `data:` URIs, no script, no `http(s)://`
//!   reference anywhere in `src`, `href` or `url()`; the metric switch and the heat toggle are
//!   CSS (radio buttons, a checkbox);
//! - it holds no raw tensor: only per-stage numbers, per-category numbers, one value per patch
//!   for the patch maps and the input image, at most [`crate::figures::MAX_IMAGE_SIDE`] pixels a
//!   side — so a ViT-L triangle stays well under 8 MB.

mod curves;
mod heatmap;
mod page;
mod patchmap;
pub mod svg;
mod tokens;

use super::view::{self, DiffView, InspectView, SideBody, SideEnd, TriangleView};
use super::{Options, Renderer, words};
use crate::diff::DiffReport;
use crate::figures::{Figures, PairFigures};
use crate::inspect::Inspection;
use crate::triangulate::TriangleReport;
use heatmap::Scales;
use std::fmt::Write;

/// Renders reports as HTML pages; `figures` (from [`crate::figures`]) adds what needs the dumps.
#[derive(Default)]
pub struct HtmlRenderer<'f> {
    pub figures: Option<&'f Figures>,
}

impl HtmlRenderer<'_> {
    fn pair_figures(&self, k: usize) -> Option<&PairFigures> {
        self.figures.and_then(|f| f.pairs.get(k))
    }

    /// Patch maps of the pairs `(k, label)`, side by side.
    fn patch_maps(&self, pairs: &[(usize, String)]) -> String {
        let mut s = String::from(r#"<div class="row">"#);
        let mut any = false;
        for (k, label) in pairs {
            if let Some(map) = self.pair_figures(*k).and_then(|f| f.patch_map.as_ref()) {
                any = true;
                let input = self.figures.and_then(|f| f.input.as_ref());
                let _ = write!(
                    s,
                    "<div><h3>{}</h3>{}</div>",
                    svg::esc(label),
                    patchmap::patch_map(&format!("heat-{k}"), map, input)
                );
            }
        }
        s.push_str("</div>");
        if any {
            s
        } else {
            format!(
                r#"<p class="note">{}</p>"#,
                page::code_spans(&words::no_figures(self.figures.is_some()))
            )
        }
    }

    /// Token breakdowns of the pairs `(k, label)`.
    fn token_breakdowns(&self, pairs: &[(usize, String)], depth: usize) -> String {
        let mut s = String::new();
        for (k, label) in pairs {
            match self.pair_figures(*k) {
                Some(f) => {
                    let _ = write!(
                        s,
                        "<h3>{}</h3>{}",
                        svg::esc(label),
                        tokens::breakdown(f, depth)
                    );
                }
                None => {
                    let _ = write!(
                        s,
                        r#"<p class="note">{}</p>"#,
                        page::code_spans(&words::no_figures(false))
                    );
                    break;
                }
            }
        }
        s
    }

    fn provenance(&self, letters: &[&str]) -> Option<String> {
        self.figures.map(|f| page::provenance(&f.dumps, letters))
    }
}

impl Renderer for HtmlRenderer<'_> {
    fn diff(&self, r: &DiffReport, o: &Options) -> String {
        let DiffView {
            pass,
            dumps,
            input,
            headline,
            grid,
            flat,
            notes,
            strays,
            verdict,
            worst,
            tokens: token_table,
            summary,
        } = view::diff(r, o);
        let scales = Scales::of(&[r]);
        let mut top = format!("<h1>dinodiff diff: {}</h1>", page::status(pass));
        top.push_str(&page::verdict_box(&verdict, pass));
        let _ = write!(top, "<p>{}</p>", page::code_spans(&summary));
        top.push_str("<ul>");
        for (letter, (path, summary)) in ["A", "B"].iter().zip(&dumps) {
            let _ = write!(
                top,
                "<li>{letter}: <code>{}</code> ({})</li>",
                svg::esc(path),
                svg::esc(summary)
            );
        }
        let _ = write!(
            top,
            "<li>{}</li></ul>{}",
            page::code_spans(&input),
            page::headline(&headline)
        );
        let mut stages = match &grid {
            Some(g) => heatmap::heatmap("metric-0", g, r, &scales) + &page::heatmap_key(),
            None => String::new(),
        };
        stages.push_str(&page::worst(&worst));
        stages.push_str(&page::notes(&notes));
        stages.push_str(&page::flat(&flat));
        stages.push_str(&page::strays(&strays));
        let only = [(0, words::side_pair_label("A", "B"))];
        let mut sections = vec![
            ("summary", "summary", top),
            ("stages", "stages", stages),
            (
                "depth",
                "depth curves",
                curves::depth_curves(&[(only[0].1.clone(), r)]),
            ),
            ("patches", "patch map", self.patch_maps(&only)),
            (
                "tokens",
                "tokens",
                self.token_breakdowns(&only, curves::depth(&[r]))
                    + &page::token_table(&token_table),
            ),
        ];
        if let Some(p) = self.provenance(&["A", "B"]) {
            sections.push(("provenance", "provenance", p));
        }
        page::document(&words::page_title(pass, false), &sections)
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
        let reports: Vec<&DiffReport> = t.sides.iter().map(|s| &s.report).collect();
        let scales = Scales::of(&reports);
        let labels: Vec<(usize, String)> = t
            .sides
            .iter()
            .enumerate()
            .map(|(k, s)| (k, words::side_label(t, s.side)))
            .collect();
        let mut top = format!("<h1>dinodiff triangulation: {}</h1>", page::status(pass));
        top.push_str(&page::verdict_box(&diagnosis, pass));
        let _ = write!(top, "<p>{}</p>", page::code_spans(&summary));
        top.push_str("<ul>");
        for d in &dumps {
            let _ = write!(top, "<li>{}</li>", page::code_spans(d));
        }
        let _ = write!(
            top,
            "<li>{}</li></ul>{}",
            page::code_spans(&input),
            page::side_rows(&rows)
        );
        let mut stages = String::new();
        for (k, label) in &labels {
            let side = t.sides[*k].side;
            let body = bodies.iter().find(|b| b.label == *label);
            let grid = body.map_or_else(|| view::stage_grid(t.side(side)), |b| b.grid.clone());
            let _ = write!(stages, "<h3>{}</h3>", svg::esc(label));
            if let Some(g) = &grid {
                stages.push_str(&heatmap::heatmap(
                    &format!("metric-{k}"),
                    g,
                    t.side(side),
                    &scales,
                ));
            }
            if let Some(SideBody {
                label: _,
                grid: _,
                flat,
                notes,
                worst,
                tokens,
            }) = body
            {
                stages.push_str(&page::worst(worst));
                stages.push_str(&page::notes(notes));
                stages.push_str(&page::flat(flat));
                stages.push_str(&page::token_table(tokens));
            }
        }
        stages.push_str(&page::heatmap_key());
        let mut verdicts = String::new();
        for SideEnd { strays, verdict } in &ends {
            verdicts.push_str(&page::strays(strays));
            let _ = write!(verdicts, "<p>{}</p>", page::code_spans(verdict));
        }
        let curve_pairs: Vec<(String, &DiffReport)> = labels
            .iter()
            .map(|(k, l)| (l.clone(), reports[*k]))
            .collect();
        let mut sections = vec![
            ("summary", "summary", top),
            ("stages", "stages", stages),
            ("depth", "depth curves", curves::depth_curves(&curve_pairs)),
            ("patches", "patch maps", self.patch_maps(&labels)),
            (
                "tokens",
                "tokens",
                self.token_breakdowns(&labels, curves::depth(&reports)),
            ),
            ("verdicts", "verdicts", verdicts),
        ];
        if let Some(p) = self.provenance(&words::LETTERS) {
            sections.push(("provenance", "provenance", p));
        }
        page::document(&words::page_title(pass, true), &sections)
    }

    fn inspect(&self, i: &Inspection) -> String {
        let InspectView { lines, rows } = view::inspect(i);
        let mut s = String::from("<ul>");
        for l in &lines {
            let _ = write!(s, "<li>{}</li>", page::code_spans(l));
        }
        s.push_str("</ul><table><tr>");
        for (name, _) in view::INSPECT_COLUMNS {
            let _ = write!(s, "<th>{}</th>", svg::esc(name));
        }
        s.push_str("</tr>");
        for row in &rows {
            s.push_str("<tr>");
            for (text, (_, number)) in row.iter().zip(view::INSPECT_COLUMNS) {
                let class = if number { r#" class="num""# } else { "" };
                let _ = write!(s, "<td{class}>{}</td>", svg::esc(text));
            }
            s.push_str("</tr>");
        }
        s.push_str("</table>");
        page::document("dinodiff inspect", &[("inspect", "inspect", s)])
    }
}
