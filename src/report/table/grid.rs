//! The stage grid in the terminal, in the first of three forms that fits the width:
//! 1. one table, a column per block stage, a row per block (stem and head rows labelled);
//! 2. the same split in two tables: the attention half (`norm1` … `residual1`, with the stem and
//!    head rows) and the MLP half (`norm2` … `output`);
//! 3. a grid of heat glyphs: one cell per block stage, shaded by the decade of its max|Δ| on a
//!    scale anchored at the tolerance, the row's largest max|Δ| at the end of each row, the stem
//!    and head stages as numbers on lines of their own (broken between stages), a legend below.

use super::{MARK, TableRenderer, header};
use crate::model::BlockStage;
use crate::report::view::{Grid, GridCell, Value};
use crate::report::words;
use comfy_table::{Cell, CellAlignment, Table};
use std::fmt::Write;
use std::ops::Range;
use unicode_width::UnicodeWidthStr;

/// The shades, light to dark.
const GLYPHS: [char; 4] = ['░', '▒', '▓', '█'];
/// A max|Δ| of exactly 0.
const ZERO: char = '·';
/// A cell with no number (shapes differ, non-finite mismatches, integers that differ).
const NOT_A_NUMBER: char = '!';

pub(super) fn render(t: &TableRenderer, g: &Grid) -> String {
    let all = 0..g.columns.len();
    t.first_fitting(&[
        &|| table(t, g, all.clone()).to_string(),
        &|| halves(t, g),
        &|| glyphs(t, g),
    ])
}

/// The grid's columns `range` as one table; rows with nothing in `range` are left out.
fn table(t: &TableRenderer, g: &Grid, range: Range<usize>) -> Table {
    let mut table = t.table();
    let columns = g.columns[range.clone()].iter().copied();
    table.set_header(header([""].into_iter().chain(columns), false));
    for (label, cells) in &g.rows {
        let cells = &cells[range.clone()];
        if cells.iter().all(Option::is_none) {
            continue;
        }
        let mut row = vec![Cell::new(label)];
        row.extend(cells.iter().map(|c| match c {
            None => Cell::new("·").set_alignment(CellAlignment::Center),
            Some(c) => t.value(&Value {
                text: match c.label {
                    Some(l) => format!("{l}\n{}", c.value.text),
                    None => c.value.text.clone(),
                },
                fails: c.value.fails,
            }),
        }));
        table.add_row(row);
    }
    table
}

fn halves(t: &TableRenderer, g: &Grid) -> String {
    let n = g.columns.len();
    let split = g
        .columns
        .iter()
        .position(|c| *c == BlockStage::Norm2.name())
        .unwrap_or(n / 2);
    let mut out = String::new();
    for (range, attention) in [(0..split, true), (split..n, false)] {
        if range.is_empty() {
            continue;
        }
        let title = words::half_title(g.columns[range.start], g.columns[range.end - 1], attention);
        let _ = writeln!(out, "{title}\n{}", table(t, g, range));
    }
    out.pop();
    out
}

/// Whether a row is the stem's or the head's (its cells carry their stage's name).
fn labelled(cells: &[Option<GridCell>]) -> bool {
    cells.iter().flatten().any(|c| c.label.is_some())
}

/// Decades of max|Δ| to glyphs: the darkest glyph holds the decade of the largest value or of
/// the tolerance, whichever is higher; each glyph spans `per` decades, the lightest everything
/// below.
struct Scale {
    top: i32,
    per: i32,
}

fn decade(x: f64) -> i32 {
    x.log10().floor() as i32
}

impl Scale {
    fn of(g: &Grid) -> Scale {
        let decades: Vec<i32> = g
            .rows
            .iter()
            .filter(|(_, cells)| !labelled(cells))
            .flat_map(|(_, cells)| cells.iter().flatten())
            .filter_map(|c| c.max_abs.filter(|x| *x > 0.0 && x.is_finite()))
            .map(decade)
            .collect();
        let tolerance = (g.atol > 0.0).then(|| decade(g.atol));
        let top = decades.iter().copied().chain(tolerance).max().unwrap_or(0);
        let bottom = decades.iter().copied().min().unwrap_or(top).min(top - 3);
        let per = (top - bottom + 1 + 3) / 4;
        Scale { top, per }
    }

    fn glyph(&self, x: f64) -> char {
        if x == 0.0 {
            return ZERO;
        }
        let steps = ((self.top - decade(x)) / self.per).clamp(0, 3);
        GLYPHS[3 - steps as usize]
    }

    /// The decade where each glyph after the lightest begins.
    fn bounds(&self) -> Vec<i32> {
        (1..4).map(|k| self.top - (4 - k) * self.per + 1).collect()
    }
}

impl TableRenderer {
    fn paint(&self, text: String, fails: bool) -> String {
        if fails && self.style.color {
            format!("\x1b[1;31m{text}\x1b[0m")
        } else {
            text
        }
    }

    /// A glyph cell: two glyphs and the marker when over tolerance (colour off).
    fn glyph_cell(&self, scale: &Scale, cell: &Option<GridCell>) -> (String, bool) {
        let Some(c) = cell else {
            return (String::new(), false);
        };
        let g = c.max_abs.map_or(NOT_A_NUMBER, |x| scale.glyph(x));
        let mark = if c.value.fails && !self.style.color {
            MARK
        } else {
            ""
        };
        (format!("{g}{g}{mark}"), c.value.fails)
    }

    /// `stem: input 0 · patch_embed 1.0e-6 ✗ · …`, broken between stages at the width.
    fn stage_items(&self, label: &str, cells: &[Option<GridCell>]) -> String {
        let items: Vec<String> = cells
            .iter()
            .flatten()
            .map(|c| {
                let mark = if c.value.fails && !self.style.color {
                    format!(" {MARK}")
                } else {
                    String::new()
                };
                let text = format!("{}{mark}", c.value.text);
                let name = c.label.unwrap_or("");
                format!("{name} {}", self.paint(text, c.value.fails))
            })
            .collect();
        self.flow(&format!("{label}: "), &items, " · ")
    }

    /// Items on lines of at most the width, separated by `sep`, continuation lines indented.
    fn flow(&self, first: &str, items: &[String], sep: &str) -> String {
        let width = self.style.width.unwrap_or(usize::MAX);
        let indent = "  ";
        let mut out = first.to_string();
        let mut line = super::display_width(first);
        for (i, item) in items.iter().enumerate() {
            let w = super::display_width(item);
            let (sep, sep_width) = if i == 0 { ("", 0) } else { (sep, sep.width()) };
            if i > 0 && line + sep_width + w > width {
                let _ = write!(out, "{}\n{indent}{item}", sep.trim_end());
                line = indent.len() + w;
            } else {
                let _ = write!(out, "{sep}{item}");
                line += sep_width + w;
            }
        }
        out
    }
}

fn pad(text: &str, width: usize) -> String {
    let w = super::display_width(text);
    format!("{text}{}", " ".repeat(width.saturating_sub(w)))
}

/// The row's largest max|Δ| (with the marker when any cell fails).
fn row_max(t: &TableRenderer, cells: &[Option<GridCell>]) -> String {
    let present: Vec<&GridCell> = cells.iter().flatten().collect();
    let fails = present.iter().any(|c| c.value.fails);
    let max = present
        .iter()
        .filter_map(|c| c.max_abs)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let text = match (max, present.iter().any(|c| c.max_abs.is_none())) {
        (_, true) => NOT_A_NUMBER.to_string(),
        (Some(m), false) => words::compact(m),
        (None, false) => String::new(),
    };
    let mark = if fails && !t.style.color {
        format!(" {MARK}")
    } else {
        String::new()
    };
    t.paint(format!("{text}{mark}"), fails)
}

fn glyphs(t: &TableRenderer, g: &Grid) -> String {
    let scale = Scale::of(g);
    let codes: Vec<&str> = g.columns.iter().map(|c| words::stage_code(c)).collect();
    let widths: Vec<usize> = codes.iter().map(|c| c.width().max(3)).collect();
    let label_width = g.rows.iter().map(|(l, _)| l.width()).max().unwrap_or(0);
    let mut out = String::new();
    let mut head_lines = Vec::new();
    let mut header_line = pad("", label_width);
    for (code, w) in codes.iter().zip(&widths) {
        let _ = write!(header_line, " {}", pad(code, *w));
    }
    let _ = write!(header_line, "  {}", words::ROW_MAX);
    let mut grid_lines = vec![header_line];
    for (label, cells) in &g.rows {
        if labelled(cells) {
            let line = t.stage_items(label, cells);
            if grid_lines.len() == 1 {
                let _ = writeln!(out, "{line}");
            } else {
                head_lines.push(line);
            }
            continue;
        }
        let mut line = pad(label, label_width);
        for (cell, w) in cells.iter().zip(&widths) {
            let (text, fails) = t.glyph_cell(&scale, cell);
            let _ = write!(line, " {}", t.paint(pad(&text, *w), fails));
        }
        let _ = write!(line, "  {}", row_max(t, cells));
        grid_lines.push(line);
    }
    for l in grid_lines.iter().chain(&head_lines) {
        let _ = writeln!(out, "{}", l.trim_end());
    }
    let mark = (!t.style.color).then_some(MARK);
    let legend = words::glyph_legend(ZERO, &GLYPHS, &scale.bounds(), mark);
    let _ = writeln!(out, "{}", t.flow("", &legend, "   "));
    let key: Vec<String> = words::CODE_KEY.iter().map(|k| k.to_string()).collect();
    let _ = write!(out, "{}", t.flow("", &key, ", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(values: &[f64], atol: f64) -> Grid {
        let cells = values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                Some(GridCell {
                    stage: crate::model::Stage::Block(i, crate::model::BlockStage::Norm1),
                    label: None,
                    value: Value {
                        text: words::compact(x),
                        fails: x > atol,
                    },
                    max_abs: Some(x),
                })
            })
            .collect();
        Grid {
            columns: vec!["norm1"; values.len()],
            rows: vec![("block 0".into(), cells)],
            atol,
        }
    }

    #[test]
    fn the_darkest_shade_starts_at_the_tolerance_when_all_is_below_it() {
        let s = Scale::of(&grid(&[3e-6, 2e-7], 1e-4));
        assert_eq!((s.top, s.per), (-4, 1));
        assert_eq!(s.bounds(), vec![-6, -5, -4]);
        assert_eq!(s.glyph(3e-6), '▒');
        assert_eq!(s.glyph(2e-7), '░');
        assert_eq!(s.glyph(5e-5), '▓');
        assert_eq!(s.glyph(0.0), ZERO);
    }

    #[test]
    fn a_wide_range_spreads_several_decades_per_shade() {
        // Decades -8 … -1: 8 decades, 2 per shade.
        let s = Scale::of(&grid(&[1e-8, 5e-1], 1e-4));
        assert_eq!((s.top, s.per), (-1, 2));
        assert_eq!(s.glyph(5e-1), '█');
        assert_eq!(s.glyph(1e-2), '█');
        assert_eq!(s.glyph(5e-3), '▓');
        assert_eq!(s.glyph(1e-8), '░');
        assert_eq!(s.bounds(), vec![-6, -4, -2]);
    }

    #[test]
    fn items_break_between_stages_never_inside() {
        let t = TableRenderer {
            style: super::super::TableStyle {
                color: false,
                width: Some(20),
            },
        };
        let items: Vec<String> = ["aaaa 1", "bbbb 2", "cccc 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            t.flow("x: ", &items, " · "),
            "x: aaaa 1 · bbbb 2 ·\n  cccc 3"
        );
    }
}
