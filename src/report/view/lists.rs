//! The lists of a diff beside its grid: the largest differences, and the `--tokens` table.

use super::{Value, value};
use crate::diff::{DiffReport, PairResult};
use crate::model::{BlockStage, Stage};
use crate::report::words;

/// How many of the largest differences a report lists.
pub const TOP_WORST: usize = 5;

/// Column headers of the list of the largest differences.
pub const WORST_COLUMNS: [&str; 5] = ["#", "stage", "max|Δ|", "rms", "cosine"];

/// One of the [`TOP_WORST`] pairs with the largest differences (over tolerance first).
#[derive(Debug, Clone, PartialEq)]
pub struct RankedRow {
    pub rank: usize,
    pub stage: String,
    pub max_abs: Value,
    /// Empty on a shape mismatch.
    pub rms: String,
    pub cosine: String,
}

/// The per-token-category breakdown (`--tokens`): one row per stage shown.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTable {
    /// "tokens: 1 CLS, 4 storage, 196 patches".
    pub layout: String,
    /// Headers after the stage column, each (category, metric): ("CLS", "max|Δ|").
    pub columns: Vec<(&'static str, &'static str)>,
    /// (stage, one value per column).
    pub rows: Vec<(String, Vec<String>)>,
    /// Which stages the rows are, and where the others are.
    pub note: String,
}

/// The [`TOP_WORST`] pairs with the largest max|Δ|, those over tolerance first (a shape mismatch
/// counts as the largest); pairs that do not differ at all are left out.
pub fn worst_rows(r: &DiffReport) -> Vec<RankedRow> {
    let max_abs = |p: &PairResult| p.metrics.as_ref().map_or(f64::INFINITY, |m| m.max_abs);
    let mut ranked: Vec<&PairResult> = r
        .pairs
        .iter()
        .filter(|p| p.fails || max_abs(p) > 0.0)
        .collect();
    // Stable: equal pairs keep execution order.
    ranked.sort_by(|x, y| {
        y.fails
            .cmp(&x.fails)
            .then(max_abs(y).total_cmp(&max_abs(x)))
    });
    ranked
        .iter()
        .take(TOP_WORST)
        .enumerate()
        .map(|(i, p)| {
            let (rms, cosine) = p
                .metrics
                .as_ref()
                .map_or((String::new(), String::new()), |m| {
                    (words::compact(m.rms), words::cosine(m.cosine))
                });
            RankedRow {
                rank: i + 1,
                stage: p.name.clone(),
                max_abs: value(words::cell_value(p), p.fails),
                rms,
                cosine,
            }
        })
        .collect()
}

/// Whether a stage belongs in the token table: the residual stream (`tokens`, each block's
/// `output`, `norm`), plus the first pair over tolerance and the worst one.
fn token_row_shown(r: &DiffReport, i: usize) -> bool {
    let stream = |s: Stage| {
        s == Stage::Stem(crate::model::StemStage::Tokens)
            || s == Stage::NORM
            || matches!(s, Stage::Block(_, BlockStage::Output))
    };
    Some(i) == r.first_over
        || Some(i) == r.worst
        || Stage::parse(&r.pairs[i].name).is_some_and(stream)
}

/// The `--tokens` table, when the report has a token layout.
pub fn token_table(r: &DiffReport) -> Option<TokenTable> {
    use crate::metrics::tokens::TokenCategory;
    let layout = r.token_layout?;
    let categories: Vec<TokenCategory> = TokenCategory::ALL
        .into_iter()
        .filter(|c| *c != TokenCategory::Storage || layout.storage > 0)
        .collect();
    let columns = categories
        .iter()
        .flat_map(|&c| words::TOKEN_METRICS.map(|m| (words::token_category(c), m)))
        .collect();
    let rows = (0..r.pairs.len())
        .filter(|&i| token_row_shown(r, i))
        .filter_map(|i| {
            let deltas = r.pairs[i].tokens.as_ref()?;
            let cells = categories
                .iter()
                .flat_map(|&c| match deltas.get(c) {
                    Some(d) => [words::compact(d.max_abs), words::compact(d.rms)],
                    None => [String::new(), String::new()],
                })
                .collect();
            Some((r.pairs[i].name.clone(), cells))
        })
        .collect();
    Some(TokenTable {
        layout: words::token_layout(layout),
        columns,
        rows,
        note: words::TOKEN_ROWS.into(),
    })
}
