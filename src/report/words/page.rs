//! The words of the HTML report's pictures (`report::html`): captions, notes, labels that are
//! sentences.

use super::sci;
use crate::model::Stage;

/// The label of the depth curves' tolerance line.
pub fn tolerance_line(atol: f64) -> String {
    format!("atol {} (+ rtol·|x| per element)", sci(atol, 0))
}

pub const NO_TOKEN_LAYOUT: &str = "no token breakdown: the dumps give no token layout (no \
     `patches` or `patch_embed` tensor nor a known variant, or no stage with a token axis)";
pub const HIDE_HEAT: &str = "hide the heat (show the input)";
pub const ALL_PATCHES_EQUAL: &str = "every patch is equal here: max|Δ| 0";

/// The tooltip of the worst patch.
pub fn worst_patch(row: usize, col: usize, max_abs: f64) -> String {
    format!(
        "worst patch: row {row}, column {col}, max|Δ| {}",
        sci(max_abs, 3)
    )
}

/// What a patch map shows and why that stage.
pub fn patch_map_caption(
    stage: Stage,
    chosen: crate::figures::StageChoice,
    h: usize,
    w: usize,
    worst: Option<(usize, usize, f64)>,
) -> String {
    use crate::figures::StageChoice;
    let why = match chosen {
        StageChoice::Asked => "the stage asked for (--stage)",
        StageChoice::FirstOver => "the first stage over tolerance with a token axis",
        StageChoice::Worst => "nothing with a token axis is over tolerance: the largest max|Δ|",
    };
    let mut s = format!("per-patch max|Δ| at `{stage}` ({why}), {h} × {w} patches");
    if let Some((r, c, v)) = worst {
        s.push_str(&format!("; {}", worst_patch(r, c, v)));
    }
    s
}

/// How the input image was brought back to pixels.
pub fn input_scaling(img: &crate::figures::InputImage) -> String {
    use crate::figures::InputScaling;
    let [h, w] = img.tensor_size;
    let how = match &img.scaling {
        InputScaling::Recorded { mean, std } => {
            let three = |v: &[f64; 3]| format!("[{:.4}, {:.4}, {:.4}]", v[0], v[1], v[2]);
            format!(
                "un-normalized with the recorded mean {} and std {}",
                three(mean),
                three(std)
            )
        }
        InputScaling::MinMax { min, max } => format!(
            "no normalization recorded: its values {} .. {} mapped to black .. white",
            sci(*min, 2),
            sci(*max, 2)
        ),
    };
    let shown = if [img.height, img.width] == [h, w] {
        String::new()
    } else {
        format!(", shown at {} × {}", img.width, img.height)
    };
    format!("input: the `input` tensor ({w} × {h}{shown}), {how}")
}

pub const NO_MANIFEST: &str =
    "none: a plain safetensors file (canonical stage order, then file order)";

/// `A ⇔ B`.
pub fn side_pair_label(a: &str, b: &str) -> String {
    format!("{a} ⇔ {b}")
}

/// The title of a report page.
pub fn page_title(pass: bool, triangle: bool) -> String {
    format!(
        "dinodiff {}: {}",
        if triangle { "triangulation" } else { "diff" },
        if pass { "PASS" } else { "FAIL" }
    )
}

/// Why a page has no token figures: made without the dumps, or no token layout in them.
pub fn no_figures(had_dumps: bool) -> String {
    if had_dumps {
        NO_TOKEN_LAYOUT.to_string()
    } else {
        "token figures need the dumps: `dinodiff report` computes them".to_string()
    }
}
