//! The page around the pictures: the document shell (inline CSS, no script, no external
//! reference), sections, and the facts of [`crate::report::view`] as HTML (dumps, headline
//! tables, notes, per-tensor tables, strays, verdicts) plus each dump's provenance.

use super::svg::esc;
use crate::figures::Provenance;
use crate::report::view::{
    FlatRow, HeadlineRow, Note, RankedRow, SideRow, Strays, TokenTable, Value,
};
use crate::report::{view, words};
use std::fmt::Write;

const CSS: &str = r#"
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;background:#f6f6f7}
body{margin:0 auto;max-width:1360px;padding:18px 24px 60px}
h1{font-size:1.5em;margin:.2em 0 .4em}h2{font-size:1.2em;margin:0 0 .6em}h3{font-size:1em;margin:1em 0 .4em}
section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:14px 18px;margin:14px 0}
nav a{margin-right:14px;color:#245;text-decoration:none}nav a:hover{text-decoration:underline}
.pass{color:#0a7a2f}.fail{color:#c01818}.status{font-weight:700}
.verdict{font-size:1.05em;padding:8px 12px;border-radius:6px;background:#f0f7f1;border-left:5px solid #0a7a2f}
.verdict.bad{background:#fbf0f0;border-left-color:#c01818}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.over,span.over{color:#c01818;font-weight:700}td.dark{color:#fff}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
pre{background:#f6f6f7;padding:8px;overflow:auto;font-size:12px;max-height:320px}
.note{color:#555;font-size:13px}.row{display:flex;flex-wrap:wrap;gap:22px;align-items:flex-start}
.switch input{margin-left:10px}.switch label{font-size:13px;margin-right:4px}
.switch .bar{display:none;margin-left:18px;vertical-align:middle}
.switch .m-max:checked~.bar.max,.switch .m-rms:checked~.bar.rms,.switch .m-cos:checked~.bar.cos{display:inline-block}
svg text{font-size:10px;fill:#222}svg .tick{font-size:10px;fill:#444}svg .axis{font-size:11px;fill:#333}
.heatmap{display:block;margin-top:6px}
.heatmap .c{fill:var(--max);stroke:#fff;stroke-width:1}
.switch .m-rms:checked~svg .c{fill:var(--rms)}.switch .m-cos:checked~svg .c{fill:var(--cos)}
.heatmap .v,.heatmap .n{text-anchor:middle;fill:#fff;paint-order:stroke;stroke:#000;stroke-opacity:.55;stroke-width:2px}
.heatmap .n{font-size:8px}.heatmap .rms,.heatmap .cos{display:none}
.switch .m-rms:checked~svg .v.max,.switch .m-cos:checked~svg .v.max{display:none}
.switch .m-rms:checked~svg .v.rms,.switch .m-cos:checked~svg .v.cos{display:inline}
.heatmap .h{text-anchor:middle;font-size:10px;font-weight:600}.heatmap .r{text-anchor:end;font-size:11px}
.heatmap .o{fill:none;stroke:#ff2d2d;stroke-width:2.5}.heatmap .f{fill:#fff;stroke:#000;stroke-width:1}
.heatmap .first .o{stroke:#000;stroke-dasharray:3 2}
.chart .frame{fill:none;stroke:#999}.chart .grid{stroke:#e4e4e4}.chart .line{fill:none;stroke-width:1.8}
.chart .dashed{stroke-dasharray:5 4}.chart .tol{stroke:#c01818;stroke-dasharray:2 3;fill:#c01818;text-anchor:end;font-size:10px}
.legend{font-size:12px;color:#333;margin:2px 0 8px}.legend span{margin-right:14px;white-space:nowrap}
.patches{margin:0}.patches figcaption{font-size:13px;margin-bottom:6px;max-width:700px}
.patchmap{image-rendering:pixelated;border:1px solid #ccc;margin:4px 8px 4px 0}
.patchmap .heat.over{opacity:.62}.patchmap .worst{fill:none;stroke:#ff2d2d;stroke-width:2}
.hide-heat:checked~svg .heat{opacity:0}.overlay{display:inline-block;font-size:12px}
.key{font-size:12px;color:#444}.key b{display:inline-block;width:14px;height:10px;vertical-align:middle;margin:0 4px 0 10px}
table.tokens td{padding:2px 6px}details{margin:8px 0}summary{cursor:pointer;font-size:13px}
"#;

/// The whole document: `title`, a navigation bar over `sections` (id, heading, body).
pub fn document(title: &str, sections: &[(&str, &str, String)]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"generator\" content=\"dinodiff {}\"><title>{}</title><style>{CSS}</style></head><body>",
        env!("CARGO_PKG_VERSION"),
        esc(title)
    );
    s.push_str("<nav>");
    for (id, heading, _) in sections.iter().skip(1) {
        let _ = write!(s, r##"<a href="#{id}">{}</a>"##, esc(heading));
    }
    s.push_str("</nav>");
    for (id, heading, body) in sections {
        let _ = write!(
            s,
            r#"<section id="{id}"><h2>{}</h2>{body}</section>"#,
            esc(heading)
        );
    }
    s.push_str("</body></html>\n");
    s
}

pub fn status(pass: bool) -> String {
    format!(
        r#"<span class="status {}">{}</span>"#,
        if pass { "pass" } else { "fail" },
        if pass { "PASS" } else { "FAIL" }
    )
}

/// A sentence in its box (the verdict, the diagnosis), red when `pass` is false.
pub fn verdict_box(text: &str, pass: bool) -> String {
    format!(
        r#"<p class="verdict{}">{}</p>"#,
        if pass { "" } else { " bad" },
        code_spans(text)
    )
}

/// Escapes a sentence and turns its `backtick` spans into `<code>`.
pub fn code_spans(text: &str) -> String {
    esc(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_string()
            }
        })
        .collect()
}

fn value_cell(v: &Value) -> String {
    format!(
        r#"<td class="num{}">{}</td>"#,
        if v.fails { " over" } else { "" },
        esc(&v.text)
    )
}

fn header_row(cells: &[&str]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr>");
    s
}

pub fn headline(rows: &[HeadlineRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from("<table>");
    s.push_str(&header_row(&[&[""][..], &view::HEADLINE_COLUMNS].concat()));
    for HeadlineRow {
        label,
        cosine,
        max_abs,
    } in rows
    {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td class="num">{}</td>{}</tr>"#,
            esc(label),
            esc(cosine),
            value_cell(max_abs)
        );
    }
    s.push_str("</table>");
    s
}

pub fn side_rows(rows: &[SideRow]) -> String {
    let mut s = String::from("<table>");
    s.push_str(&header_row(&[&[""][..], &view::TRIANGLE_COLUMNS].concat()));
    for SideRow {
        label,
        headline,
        verdict,
    } in rows
    {
        let _ = write!(s, "<tr><td>{}</td>", esc(label));
        for h in headline {
            match h {
                Some((cos, max)) => {
                    let _ = write!(s, r#"<td class="num">{}</td>{}"#, esc(cos), value_cell(max));
                }
                None => s.push_str(r#"<td class="num">n/a</td><td class="num">n/a</td>"#),
            }
        }
        let _ = write!(s, "{}</tr>", value_cell(verdict));
    }
    s.push_str("</table>");
    s
}

pub fn flat(rows: &[FlatRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from("<table>");
    s.push_str(&header_row(&view::FLAT_COLUMNS));
    for FlatRow {
        tensor,
        shape,
        dtype,
        max_abs,
        mean_abs,
        cosine,
    } in rows
    {
        let _ = write!(
            s,
            r#"<tr><td><code>{}</code></td><td>{}</td><td>{}</td>{}<td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(tensor),
            esc(shape),
            esc(dtype),
            value_cell(max_abs),
            esc(mean_abs),
            esc(cosine)
        );
    }
    s.push_str("</table>");
    s
}

/// The largest differences, ranked (over tolerance first).
pub fn worst(rows: &[RankedRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<h3>{}</h3><table>{}",
        esc(&words::worst_title(view::TOP_WORST)),
        header_row(&view::WORST_COLUMNS)
    );
    for RankedRow {
        rank,
        stage,
        max_abs,
        rms,
        cosine,
    } in rows
    {
        let _ = write!(
            s,
            r#"<tr><td class="num">{rank}</td><td><code>{}</code></td>{}<td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(stage),
            value_cell(max_abs),
            esc(rms),
            esc(cosine)
        );
    }
    s.push_str("</table>");
    s
}

/// The `--tokens` table of `diff --tokens --html` (the page's own breakdown covers every stage).
pub fn token_table(table: &Option<TokenTable>) -> String {
    let Some(TokenTable {
        layout,
        columns,
        rows,
        note,
    }) = table
    else {
        return String::new();
    };
    let mut s = format!(
        "<details><summary>--tokens: {}</summary><table><tr><th>stage</th>",
        esc(layout)
    );
    for (category, metric) in columns {
        let _ = write!(s, "<th>{} {}</th>", esc(category), esc(metric));
    }
    s.push_str("</tr>");
    for (stage, cells) in rows {
        let _ = write!(s, "<tr><td><code>{}</code></td>", esc(stage));
        for c in cells {
            let _ = write!(s, r#"<td class="num">{}</td>"#, esc(c));
        }
        s.push_str("</tr>");
    }
    let _ = write!(s, r#"</table><p class="note">{}</p></details>"#, esc(note));
    s
}

pub fn notes(notes: &[Note]) -> String {
    let mut s = String::new();
    for n in notes {
        match n {
            Note::Detail {
                title,
                tensor,
                lines,
            } => {
                let _ = write!(
                    s,
                    "<h3>{}: <code>{}</code></h3><ul>",
                    esc(title),
                    esc(tensor)
                );
                for l in lines {
                    let _ = write!(s, "<li>{}</li>", code_spans(l));
                }
                s.push_str("</ul>");
            }
            Note::Sentence(t) => {
                let _ = write!(s, "<p>{}</p>", code_spans(t));
            }
        }
    }
    s
}

pub fn strays(strays: &Option<Strays>) -> String {
    let Some(Strays { summary, listed }) = strays else {
        return String::new();
    };
    let mut s = format!("<p>{}</p>", code_spans(summary));
    if !listed.is_empty() {
        s.push_str("<ul>");
        for (side, tensor) in listed {
            let _ = write!(s, "<li>{}</li>", code_spans(&words::only_in(side, tensor)));
        }
        s.push_str("</ul>");
    }
    s
}

/// The legend of the heatmap's marks.
pub fn heatmap_key() -> String {
    format!(
        r##"<p class="key"><b style="background:{}"></b>exactly 0 <b style="background:{}"></b>not compared (shape) <b style="border:2.5px solid #ff2d2d;background:none"></b>over tolerance <b style="border:2px dashed #000;background:none"></b>◤ first over tolerance · hover a cell for all three metrics</p>"##,
        super::svg::ZERO_FILL,
        super::svg::MISSING_FILL
    )
}

/// Each dump's manifest, one table per dump (`letters`: A, B, C).
pub fn provenance(dumps: &[Provenance], letters: &[&str]) -> String {
    let mut s = String::from(r#"<div class="row">"#);
    for (letter, p) in letters.iter().zip(dumps) {
        let m = &p.manifest;
        let _ = write!(
            s,
            "<div><h3>{letter}: <code>{}</code></h3><table>",
            esc(&p.path)
        );
        let mut row = |k: &str, v: String| {
            if !v.is_empty() {
                let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
            }
        };
        if !p.has_manifest {
            row("manifest", esc(words::NO_MANIFEST));
        }
        row("source", esc(&m.source.to_string()));
        row("variant", m.variant.as_deref().map(esc).unwrap_or_default());
        row("created", esc(&m.created));
        row("host", esc(&m.host));
        row("dinodiff", esc(&m.dinodiff_version));
        row("device", m.device.as_deref().map(esc).unwrap_or_default());
        row("dtype", m.dtype.as_deref().map(esc).unwrap_or_default());
        let frameworks: Vec<String> = m
            .frameworks
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        row("frameworks", esc(&frameworks.join(", ")));
        if let Some(f) = &m.model {
            row(
                "model",
                format!(
                    "<code>{}</code><br>{} bytes, sha256 <code>{}</code>",
                    esc(&f.path),
                    f.size,
                    esc(&f.sha256)
                ),
            );
        }
        row(
            "input sha256",
            m.input_sha256
                .as_deref()
                .map(|h| format!("<code>{}</code>", esc(h)))
                .unwrap_or_default(),
        );
        row(
            "command line",
            format!("<code>{}</code>", esc(&m.command_line.join(" "))),
        );
        for (k, v) in [("input", m.input.as_ref())]
            .into_iter()
            .chain(m.extra.iter().map(|(k, v)| (k.as_str(), Some(v))))
        {
            if let Some(v) = v {
                let json = serde_json::to_string_pretty(v).unwrap_or_default();
                row(k, format!("<pre>{}</pre>", esc(&json)));
            }
        }
        s.push_str("</table></div>");
    }
    s.push_str("</div>");
    s
}
