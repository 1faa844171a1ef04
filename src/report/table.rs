//! The terminal renderer (`--format table`, the default): comfy-table grids, colour on request.
//!
//! Lays out the facts of [`super::view`] in the order they are listed there. Cells over tolerance
//! are red when colour is on, and carry the marker [`MARK`] when it is off.

use super::view::{
    self, DiffView, FlatRow, Grid, HeadlineRow, InspectView, Note, SideBody, SideEnd, SideRow,
    Strays, TriangleView, Value,
};
use super::{Options, Renderer};
use crate::diff::DiffReport;
use crate::inspect::Inspection;
use crate::triangulate::TriangleReport;
use comfy_table::{Attribute, Cell, CellAlignment, Color, ContentArrangement, Table, presets};
use std::fmt::Write;

/// Marks a cell over tolerance when colour is off.
pub const MARK: &str = "✗";

#[derive(Debug, Clone, Copy, Default)]
pub struct TableStyle {
    pub color: bool,
    /// Wrap to the terminal's width (only when stdout is a terminal).
    pub wrap: bool,
}

pub struct TableRenderer {
    pub style: TableStyle,
}

impl TableRenderer {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_style(presets::UTF8_FULL_CONDENSED);
        t.set_content_arrangement(if self.style.wrap {
            ContentArrangement::Dynamic
        } else {
            ContentArrangement::Disabled
        });
        if !self.style.color {
            t.force_no_tty();
        } else {
            t.enforce_styling();
        }
        t
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

    fn grid(&self, grid: &Grid) -> Table {
        let mut t = self.table();
        let mut header = vec![Cell::new("")];
        header.extend(grid.columns.iter().map(|c| Cell::new(*c)));
        t.set_header(header);
        for (label, cells) in &grid.rows {
            let mut row = vec![Cell::new(label)];
            row.extend(cells.iter().map(|c| match c {
                None => Cell::new("·").set_alignment(CellAlignment::Center),
                Some(c) => {
                    let text = match c.label {
                        Some(l) => format!("{l}\n{}", c.value.text),
                        None => c.value.text.clone(),
                    };
                    self.value(&Value {
                        text,
                        fails: c.value.fails,
                    })
                }
            }));
            t.add_row(row);
        }
        t
    }

    fn flat(&self, rows: &[FlatRow]) -> Table {
        let mut t = self.table();
        t.set_header(view::FLAT_COLUMNS.to_vec());
        let right = |s: &str| Cell::new(s).set_alignment(CellAlignment::Right);
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

    fn headline(&self, rows: &[HeadlineRow]) -> Table {
        let mut t = self.table();
        let mut header = vec![""];
        header.extend(view::HEADLINE_COLUMNS);
        t.set_header(header);
        for HeadlineRow {
            label,
            cosine,
            max_abs,
        } in rows
        {
            t.add_row(vec![
                Cell::new(label),
                Cell::new(cosine).set_alignment(CellAlignment::Right),
                self.value(max_abs),
            ]);
        }
        t
    }

    fn side_rows(&self, rows: &[SideRow]) -> Table {
        let mut t = self.table();
        let mut header = vec![""];
        header.extend(view::TRIANGLE_COLUMNS);
        t.set_header(header);
        for SideRow {
            label,
            headline,
            verdict,
        } in rows
        {
            let mut row = vec![Cell::new(label)];
            for h in headline {
                match h {
                    Some((cos, max)) => {
                        row.push(Cell::new(cos).set_alignment(CellAlignment::Right));
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
            let _ = writeln!(out, "  {}", super::words::only_in(side, tensor));
        }
    }
}

impl TableRenderer {
    fn side_body(&self, out: &mut String, body: &SideBody) {
        let SideBody {
            label,
            grid,
            flat,
            notes: side_notes,
        } = body;
        if let Some(g) = grid {
            let _ = writeln!(out, "\n{label}, max|Δ| per stage:\n{}", self.grid(g));
        }
        if !flat.is_empty() {
            let _ = writeln!(out, "\n{label}, other tensors:\n{}", self.flat(flat));
        }
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
            strays: diff_strays,
            verdict,
        } = view::diff(r, o);
        let mut out = String::new();
        for (letter, (path, summary)) in ["A", "B"].iter().zip(&dumps) {
            let _ = writeln!(out, "{letter}: {path} ({summary})");
        }
        let _ = writeln!(out, "{input}");
        if !headline.is_empty() {
            let _ = writeln!(out, "\n{}", self.headline(&headline));
        }
        if let Some(g) = &grid {
            let _ = writeln!(out, "\nmax|Δ| per stage:\n{}", self.grid(g));
        }
        if !flat.is_empty() {
            let title = if grid.is_some() {
                "other tensors:\n"
            } else {
                ""
            };
            let _ = writeln!(out, "\n{title}{}", self.flat(&flat));
        }
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
        } = view::triangle(t, o);
        let mut out = String::new();
        for d in &dumps {
            let _ = writeln!(out, "{d}");
        }
        let _ = writeln!(out, "{input}\n");
        let _ = writeln!(out, "{}", self.side_rows(&rows));
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
