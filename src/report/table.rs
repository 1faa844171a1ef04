//! The terminal renderer (`--format table`, the default): comfy-table grids, colour on request.
//!
//! Lays out the facts of [`super::view`] in the order they are listed there. Cells over tolerance
//! are red when colour is on, and carry the marker [`MARK`] when it is off.
//!
//! Contract: no cell ever wraps (comfy-table never rearranges content here). With a width
//! ([`TableStyle::width`]) each table takes the first of its forms that fits: as is, then with its
//! headers broken at spaces (and a triangle side's two names on two lines); the stage grid goes from one table, to its attention and MLP halves,
//! to a grid of heat glyphs (`grid.rs`). A table that fits in none of its forms is printed in the
//! narrowest, and lines run long rather than cells breaking. Sentences are not wrapped.

mod grid;

use super::view::{
    self, DiffView, FlatRow, Grid, HeadlineRow, InspectView, Note, RankedRow, SideBody, SideEnd,
    SideRow, Strays, TokenTable, TriangleView, Value,
};
use super::{Options, Renderer, words};
use crate::diff::DiffReport;
use crate::inspect::Inspection;
use crate::triangulate::TriangleReport;
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use std::fmt::Write;
use unicode_width::UnicodeWidthStr;

/// Marks a cell over tolerance when colour is off.
pub const MARK: &str = "✗";

#[derive(Debug, Clone, Copy, Default)]
pub struct TableStyle {
    pub color: bool,
    /// Fit tables to this many columns (`None`: no limit).
    pub width: Option<usize>,
}

pub struct TableRenderer {
    pub style: TableStyle,
}

/// The display width of the widest line, ANSI colour sequences aside.
pub fn display_width(text: &str) -> usize {
    text.lines()
        .map(|line| strip_ansi(line).width())
        .max()
        .unwrap_or(0)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Header cells; `narrow` breaks each at its spaces (`CLS cosine` over two lines): a line break
/// the renderer chooses, not a wrap.
fn header<'a>(names: impl IntoIterator<Item = &'a str>, narrow: bool) -> Vec<Cell> {
    names
        .into_iter()
        .map(|n| {
            Cell::new(if narrow {
                n.replace(' ', "\n")
            } else {
                n.to_string()
            })
        })
        .collect()
}

fn right(s: &str) -> Cell {
    Cell::new(s).set_alignment(CellAlignment::Right)
}

impl TableRenderer {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_style(presets::UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Disabled);
        if !self.style.color {
            t.force_no_tty();
        } else {
            t.enforce_styling();
        }
        t
    }

    fn fits(&self, text: &str) -> bool {
        self.style.width.is_none_or(|w| display_width(text) <= w)
    }

    /// The first candidate that fits the width, else the narrowest.
    fn first_fitting(&self, candidates: &[&dyn Fn() -> String]) -> String {
        let mut narrowest: Option<String> = None;
        for make in candidates {
            let text = make();
            if self.fits(&text) {
                return text;
            }
            if narrowest
                .as_ref()
                .is_none_or(|n| display_width(&text) < display_width(n))
            {
                narrowest = Some(text);
            }
        }
        narrowest.unwrap_or_default()
    }

    /// A table as is, else with its headers broken at spaces.
    fn fitted(&self, build: impl Fn(bool) -> Table) -> String {
        self.first_fitting(&[&|| build(false).to_string(), &|| build(true).to_string()])
    }

    fn value(&self, v: &Value) -> Cell {
        let cell = if v.fails && !self.style.color {
            Cell::new(format!("{} {MARK}", v.text))
        } else {
            Cell::new(&v.text)
        };
        let cell = cell.set_alignment(CellAlignment::Right);
        if v.fails && self.style.color {
            cell.fg(Color::Red).add_attribute(Attribute::Bold)
        } else {
            cell
        }
    }

    fn flat(&self, rows: &[FlatRow], narrow: bool) -> Table {
        let mut t = self.table();
        t.set_header(header(view::FLAT_COLUMNS, narrow));
        for FlatRow {
            tensor,
            shape,
            dtype,
            max_abs,
            mean_abs,
            cosine,
        } in rows
        {
            t.add_row(vec![
                Cell::new(tensor),
                Cell::new(shape),
                Cell::new(dtype),
                self.value(max_abs),
                right(mean_abs),
                right(cosine),
            ]);
        }
        t
    }

    fn headline(&self, rows: &[HeadlineRow], narrow: bool) -> Table {
        let mut t = self.table();
        t.set_header(header(
            [""].into_iter().chain(view::HEADLINE_COLUMNS),
            narrow,
        ));
        for HeadlineRow {
            label,
            cosine,
            max_abs,
        } in rows
        {
            t.add_row(vec![Cell::new(label), right(cosine), self.value(max_abs)]);
        }
        t
    }

    fn side_rows(&self, rows: &[SideRow], narrow: bool) -> Table {
        let mut t = self.table();
        t.set_header(header(
            [""].into_iter().chain(view::TRIANGLE_COLUMNS),
            narrow,
        ));
        for SideRow {
            label,
            headline,
            verdict,
        } in rows
        {
            // Narrow: each side's two names on lines of their own.
            let label = if narrow {
                label.replacen(" ⇔ ", " ⇔\n", 1)
            } else {
                label.clone()
            };
            let mut row = vec![Cell::new(label)];
            for h in headline {
                match h {
                    Some((cos, max)) => {
                        row.push(right(cos));
                        row.push(self.value(max));
                    }
                    None => row.extend([Cell::new("n/a"), Cell::new("n/a")]),
                }
            }
            row.push(self.value(verdict));
            t.add_row(row);
        }
        t
    }

    fn worst(&self, rows: &[RankedRow], narrow: bool) -> Table {
        let mut t = self.table();
        t.set_header(header(view::WORST_COLUMNS, narrow));
        for RankedRow {
            rank,
            stage,
            max_abs,
            rms,
            cosine,
        } in rows
        {
            t.add_row(vec![
                right(&rank.to_string()),
                Cell::new(stage),
                self.value(max_abs),
                right(rms),
                right(cosine),
            ]);
        }
        t
    }

    fn tokens(&self, tokens: &TokenTable, narrow: bool) -> Table {
        let TokenTable {
            layout: _,
            columns,
            rows,
            note: _,
        } = tokens;
        let mut t = self.table();
        let names: Vec<String> = columns.iter().map(|(c, m)| format!("{c} {m}")).collect();
        t.set_header(header(
            ["stage"]
                .into_iter()
                .chain(names.iter().map(String::as_str)),
            narrow,
        ));
        for (stage, cells) in rows {
            let mut row = vec![Cell::new(stage)];
            row.extend(cells.iter().map(|c| right(c)));
            t.add_row(row);
        }
        t
    }

    /// The largest differences, the stage grid's numbers when it shows glyphs.
    fn worst_section(&self, out: &mut String, label: &str, rows: &[RankedRow]) {
        if !rows.is_empty() {
            let table = self.fitted(|narrow| self.worst(rows, narrow));
            let title = words::worst_title(view::TOP_WORST);
            let _ = writeln!(out, "\n{label}{title}:\n{table}");
        }
    }

    fn tokens_section(&self, out: &mut String, label: &str, tokens: &Option<TokenTable>) {
        if let Some(t) = tokens {
            let table = self.fitted(|narrow| self.tokens(t, narrow));
            let _ = writeln!(
                out,
                "\n{label}max|Δ| and rms per token category ({}):\n{table}\n{}",
                t.layout, t.note
            );
        }
    }
}

fn notes(out: &mut String, notes: &[Note]) {
    for n in notes {
        match n {
            Note::Detail {
                title,
                tensor,
                lines,
            } => {
                let _ = writeln!(out, "{title}: {tensor}");
                for l in lines {
                    let _ = writeln!(out, "  {l}");
                }
            }
            Note::Sentence(s) => {
                let _ = writeln!(out, "{s}");
            }
        }
    }
}

fn strays(out: &mut String, strays: &Option<Strays>) {
    if let Some(Strays { summary, listed }) = strays {
        let _ = writeln!(out, "{summary}");
        for (side, tensor) in listed {
            let _ = writeln!(out, "  {}", words::only_in(side, tensor));
        }
    }
}

impl TableRenderer {
    fn grid_section(&self, out: &mut String, label: &str, g: &Grid) {
        let _ = writeln!(out, "\n{label}max|Δ| per stage:\n{}", grid::render(self, g));
    }

    fn side_body(&self, out: &mut String, body: &SideBody) {
        let SideBody {
            label,
            grid,
            flat,
            notes: side_notes,
            worst,
            tokens,
        } = body;
        let label = format!("{label}, ");
        if let Some(g) = grid {
            self.grid_section(out, &label, g);
        }
        if !flat.is_empty() {
            let table = self.fitted(|narrow| self.flat(flat, narrow));
            let _ = writeln!(out, "\n{label}other tensors:\n{table}");
        }
        self.worst_section(out, &label, worst);
        self.tokens_section(out, &label, tokens);
        notes(out, side_notes);
    }
}

impl Renderer for TableRenderer {
    fn diff(&self, r: &DiffReport, o: &Options) -> String {
        let DiffView {
            pass: _,
            dumps,
            input,
            headline,
            grid,
            flat,
            notes: diff_notes,
            worst,
            tokens,
            strays: diff_strays,
            verdict,
            // The verdict, the grid and the notes say it all already.
            summary: _,
        } = view::diff(r, o);
        let mut out = String::new();
        for (letter, (path, summary)) in ["A", "B"].iter().zip(&dumps) {
            let _ = writeln!(out, "{letter}: {path} ({summary})");
        }
        let _ = writeln!(out, "{input}");
        if !headline.is_empty() {
            let table = self.fitted(|narrow| self.headline(&headline, narrow));
            let _ = writeln!(out, "\n{table}");
        }
        if let Some(g) = &grid {
            self.grid_section(&mut out, "", g);
        }
        if !flat.is_empty() {
            let title = if grid.is_some() {
                "other tensors:\n"
            } else {
                ""
            };
            let table = self.fitted(|narrow| self.flat(&flat, narrow));
            let _ = writeln!(out, "\n{title}{table}");
        }
        self.worst_section(&mut out, "", &worst);
        self.tokens_section(&mut out, "", &tokens);
        out.push('\n');
        notes(&mut out, &diff_notes);
        strays(&mut out, &diff_strays);
        let _ = writeln!(out, "{verdict}");
        out
    }

    fn triangle(&self, t: &TriangleReport, o: &Options) -> String {
        let TriangleView {
            pass: _,
            dumps,
            input,
            rows,
            bodies,
            diagnosis,
            ends,
            // The diagnosis and the verdicts say it all already.
            summary: _,
        } = view::triangle(t, o);
        let mut out = String::new();
        for d in &dumps {
            let _ = writeln!(out, "{d}");
        }
        let _ = writeln!(out, "{input}\n");
        let table = self.fitted(|narrow| self.side_rows(&rows, narrow));
        let _ = writeln!(out, "{table}");
        for body in &bodies {
            self.side_body(&mut out, body);
        }
        let _ = writeln!(out, "\n{diagnosis}");
        for SideEnd {
            strays: side_strays,
            verdict,
        } in &ends
        {
            strays(&mut out, side_strays);
            let _ = writeln!(out, "{verdict}");
        }
        out
    }

    fn inspect(&self, i: &Inspection) -> String {
        let InspectView { lines, rows } = view::inspect(i);
        let mut out = String::new();
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let mut t = self.table();
        t.set_header(view::INSPECT_COLUMNS.iter().map(|(name, _)| *name));
        for row in &rows {
            t.add_row(
                row.iter()
                    .zip(view::INSPECT_COLUMNS)
                    .map(|(text, (_, number))| {
                        let cell = Cell::new(text);
                        if number {
                            cell.set_alignment(CellAlignment::Right)
                        } else {
                            cell
                        }
                    }),
            );
        }
        let _ = writeln!(out, "{t}");
        out
    }
}
