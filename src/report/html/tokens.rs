//! The per-token-category breakdown of one pair: CLS / storage / patches max|Δ| over depth (a
//! chart of the block outputs), and every stage with a token axis in a table (max|Δ| and rms per
//! category, cells shaded on the page's log scale), folded away in `<details>`.

use super::curves::{COLORS, Series, line_chart};
use super::svg::{LogScale, esc};
use crate::figures::PairFigures;
use crate::metrics::tokens::{CategoryDelta, TokenCategory, TokenDeltas};
use crate::model::{BlockStage, Stage};
use crate::report::words;
use std::fmt::Write;

fn label(c: TokenCategory) -> &'static str {
    match c {
        TokenCategory::Cls => "CLS",
        TokenCategory::Storage => "storage",
        TokenCategory::Patches => "patches",
    }
}

/// max|Δ| of each category at each block's output.
fn chart(f: &PairFigures, depth: usize) -> String {
    let at = |i: usize| {
        let want = Stage::Block(i, BlockStage::Output);
        f.tokens.iter().find(|(s, _)| *s == want).map(|(_, d)| d)
    };
    let series: Vec<Series> = TokenCategory::ALL
        .iter()
        .enumerate()
        .filter(|(_, c)| f.tokens.iter().any(|(_, d)| d.get(**c).is_some()))
        .map(|(k, &c)| Series {
            label: format!("{} max|Δ|", label(c)),
            color: COLORS[k],
            dashed: false,
            points: (0..depth)
                .map(|i| at(i).and_then(|d| d.get(c)).map(|c| c.max_abs))
                .collect(),
        })
        .collect();
    line_chart(&series, depth, None)
}

fn shaded(scale: Option<&LogScale>, v: f64) -> String {
    let fill = scale.map_or_else(|| super::svg::ZERO_FILL.to_string(), |s| s.fill(Some(v)));
    let dark = scale.and_then(|s| s.t(v)).is_some_and(|t| t < 0.6);
    format!(
        r#"<td class="num{}" style="background:{fill}">{}</td>"#,
        if dark { " dark" } else { "" },
        words::sci(v, 2)
    )
}

fn row(stage: Stage, d: &TokenDeltas, scale: Option<&LogScale>) -> String {
    let mut s = format!("<tr><td><code>{}</code></td>", esc(&stage.to_string()));
    for c in TokenCategory::ALL {
        match d.get(c) {
            Some(CategoryDelta { max_abs, rms, .. }) => {
                s.push_str(&shaded(scale, *max_abs));
                s.push_str(&shaded(scale, *rms));
            }
            None => s.push_str(r#"<td class="num">·</td><td class="num">·</td>"#),
        }
    }
    s.push_str("</tr>");
    s
}

/// The breakdown of one pair; `depth`: the model's block count.
pub fn breakdown(f: &PairFigures, depth: usize) -> String {
    if f.tokens.is_empty() {
        return format!(
            r#"<p class="note">{}</p>"#,
            super::page::code_spans(words::NO_TOKEN_LAYOUT)
        );
    }
    let scale = LogScale::covering(f.tokens.iter().flat_map(|(_, d)| {
        TokenCategory::ALL
            .iter()
            .filter_map(|c| d.get(*c))
            .flat_map(|c| [c.max_abs, c.rms])
            .collect::<Vec<_>>()
    }));
    let mut s = String::new();
    if let Some(l) = f.layout {
        let _ = write!(s, r#"<p class="note">{}</p>"#, esc(&words::token_layout(l)));
    }
    if depth > 0 {
        s.push_str(&chart(f, depth));
    }
    let _ = write!(
        s,
        r#"<details><summary>every stage with a token axis ({} stages)</summary><table class="tokens"><thead><tr><th rowspan="2">stage</th>"#,
        f.tokens.len()
    );
    for c in TokenCategory::ALL {
        let _ = write!(s, r#"<th colspan="2">{}</th>"#, label(c));
    }
    s.push_str("</tr><tr>");
    for _ in TokenCategory::ALL {
        s.push_str("<th>max|Δ|</th><th>rms</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for (stage, d) in &f.tokens {
        s.push_str(&row(*stage, d, scale.as_ref()));
    }
    s.push_str("</tbody></table></details>");
    s
}
