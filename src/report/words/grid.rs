//! The words of the terminal's stage grid in its narrow forms (halves, heat glyphs): titles,
//! short column names and the legend.

use crate::model::BlockStage;

/// Titles of the two halves of a split grid, over the columns they hold.
pub fn half_title(first: &str, last: &str, attention: bool) -> String {
    let half = if attention { "attention" } else { "MLP" };
    format!("{half} ({first} … {last}):")
}

/// A block stage's column in the glyph grid: short enough for a 80-column terminal.
pub fn stage_code(name: &str) -> &'static str {
    match BlockStage::ALL.iter().copied().find(|s| s.name() == name) {
        Some(BlockStage::Norm1) => "n1",
        Some(BlockStage::AttnQkv) => "qkv",
        Some(BlockStage::AttnQ) => "q",
        Some(BlockStage::AttnK) => "k",
        Some(BlockStage::AttnV) => "v",
        Some(BlockStage::AttnSdpa) => "sdpa",
        Some(BlockStage::Attn) => "attn",
        Some(BlockStage::Ls1) => "ls1",
        Some(BlockStage::Residual1) => "res1",
        Some(BlockStage::Norm2) => "n2",
        Some(BlockStage::MlpHidden) => "hid",
        Some(BlockStage::Mlp) => "mlp",
        Some(BlockStage::Ls2) => "ls2",
        Some(BlockStage::Output) => "out",
        None => "?",
    }
}

/// The header of the glyph grid's last column.
pub const ROW_MAX: &str = "row max";

/// What the short column names stand for, as items the renderer lays out.
pub const CODE_KEY: [&str; 6] = [
    "columns: n1 = norm1",
    "qkv q k v sdpa attn = attn.*",
    "res1 = residual1",
    "n2 = norm2",
    "hid = mlp.hidden",
    "out = output",
];

/// `1e-6`: a decade bound in the legend.
fn decade(exponent: i32) -> String {
    format!("1e{exponent}")
}

/// The legend of the glyph grid as separate items (the renderer lays them out): `zero` marks
/// 0, `glyphs` the shades from light to dark, `bounds` the decades where each shade after the
/// first begins; then the markers (`mark`: the marker over tolerance, `None` when colour shows it).
pub fn glyph_legend(
    zero: char,
    glyphs: &[char],
    bounds: &[i32],
    mark: Option<&str>,
) -> Vec<String> {
    let mut items = vec![format!("shade = log10 max|Δ|: {zero} 0")];
    for (k, g) in glyphs.iter().enumerate() {
        let (lo, hi) = (k.checked_sub(1).and_then(|i| bounds.get(i)), bounds.get(k));
        items.push(match (lo, hi) {
            (None, Some(h)) => format!("{g} <{}", decade(*h)),
            (Some(l), Some(h)) => format!("{g} {}…{}", decade(*l), decade(*h)),
            (Some(l), None) => format!("{g} ≥{}", decade(*l)),
            (None, None) => format!("{g} >0"),
        });
    }
    items.push(match mark {
        Some(m) => format!("{m} over tolerance"),
        None => "red: over tolerance".into(),
    });
    items.push("! shapes differ / NaN, Inf / integers differ".into());
    items.push("blank: not in both dumps".into());
    items
}
