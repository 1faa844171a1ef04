//! The data `dinodiff report` draws beyond a diff's numbers: each pair's differences split by
//! token category for every stage with a token axis, the per-patch max|Δ| of one chosen stage,
//! the model input as an image, and each dump's provenance. Data only: `report::html` draws it.
//!
//! Contract:
//! - the token layout (R storage tokens, hw patches) is read off the first dump of a pair as
//!   `diff --tokens` reads it ([`crate::diff::tokens::layout_of`]); the h × w grid from `input`
//!   [1, 3, H, W] (square patches: H·W / hw must be p² with p dividing H and W), else a square
//!   hw, else one row. Without a layout a pair gets no token figures and no patch map;
//! - token figures ([`metrics::tokens`]) are computed for every compared pair whose stage has a
//!   token axis; pairs of mismatched shapes, opaque dtypes or another token count are left out;
//! - the patch map's stage is the one asked for, else the first stage over tolerance with a token
//!   axis, else the one with the largest max|Δ| ([`StageChoice`]); asking for a stage the pair
//!   does not have, or one without a token axis, is an error naming the stages that would do;
//! - the input image is the `input` tensor of the first dump that holds one (F32 [1, 3, H, W]),
//!   un-normalized with the mean/std its manifest records (`input.mean`/`input.std`, or under
//!   `input.prep` for a capture), else scaled from its min..max; no side of it exceeds
//!   [`MAX_IMAGE_SIDE`] pixels (box-averaged down by an integer factor);
//! - provenance is each dump's manifest without its per-tensor `order`/`tensors` lists.

use crate::diff::{DiffReport, PairResult};
use crate::dump::{Dump, Manifest};
use crate::metrics::View;
use crate::metrics::tokens::{self, TokenDeltas, TokenLayout};
use crate::model::Stage;
use crate::triangulate::TriangleReport;
use anyhow::{Result, bail};
use safetensors::Dtype;
use serde_json::Value;

/// The longest side of the input image kept in a report.
pub const MAX_IMAGE_SIDE: usize = 448;

#[derive(Debug, Clone, Default)]
pub struct FigureOptions {
    /// The stage of the patch maps (`--stage`); default: see [`StageChoice`].
    pub stage: Option<Stage>,
}

/// Why the patch map shows its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageChoice {
    /// `--stage`.
    Asked,
    /// The first stage over tolerance that has a token axis.
    FirstOver,
    /// Nothing with a token axis is over tolerance: the one with the largest max|Δ|.
    Worst,
}

/// The patch grid: `h` rows of `w` patches, row-major as `patch_embed` flattens them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    pub h: usize,
    pub w: usize,
}

/// Per-patch max|Δ| of one stage, row-major over the [`PatchGrid`].
#[derive(Debug, Clone, PartialEq)]
pub struct PatchMap {
    pub stage: Stage,
    pub chosen: StageChoice,
    pub grid: PatchGrid,
    pub values: Vec<f64>,
}

/// The token figures of one pair of dumps.
#[derive(Debug, Clone, Default)]
pub struct PairFigures {
    pub layout: Option<TokenLayout>,
    /// Every compared stage with a token axis, in execution order.
    pub tokens: Vec<(Stage, TokenDeltas)>,
    pub patch_map: Option<PatchMap>,
}

/// How the input image was brought back to pixels.
#[derive(Debug, Clone, PartialEq)]
pub enum InputScaling {
    /// `x · std + mean`, the normalization the manifest records.
    Recorded { mean: [f64; 3], std: [f64; 3] },
    /// No normalization recorded: the tensor's min..max mapped to 0..255.
    MinMax { min: f64, max: f64 },
}

/// The model input as RGB pixels (row-major, 3 bytes a pixel).
#[derive(Debug, Clone, PartialEq)]
pub struct InputImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// The tensor's [H, W].
    pub tensor_size: [usize; 2],
    pub scaling: InputScaling,
}

/// A dump's provenance: its manifest without the per-tensor lists.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub path: String,
    pub has_manifest: bool,
    pub manifest: Manifest,
}

/// Everything a report draws beyond the diff numbers; `pairs` in the report's order (a diff: one;
/// a triangle: its sides in `TriangleReport::sides` order).
#[derive(Debug, Clone)]
pub struct Figures {
    pub dumps: Vec<Provenance>,
    pub input: Option<InputImage>,
    pub pairs: Vec<PairFigures>,
}

pub fn for_diff(a: &Dump, b: &Dump, r: &DiffReport, o: &FigureOptions) -> Result<Figures> {
    Ok(Figures {
        dumps: vec![provenance(a), provenance(b)],
        input: input_image(&[a, b]),
        pairs: vec![pair_figures(a, b, r, o)?],
    })
}

pub fn for_triangle(dumps: [&Dump; 3], t: &TriangleReport, o: &FigureOptions) -> Result<Figures> {
    let pairs = t
        .sides
        .iter()
        .map(|s| {
            let (i, j) = s.side.ends();
            pair_figures(dumps[i], dumps[j], &s.report, o)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Figures {
        dumps: dumps.iter().map(|d| provenance(d)).collect(),
        input: input_image(&dumps),
        pairs,
    })
}

fn provenance(d: &Dump) -> Provenance {
    let mut manifest = d.manifest().clone();
    manifest.order.clear();
    manifest.tensors.clear();
    Provenance {
        path: d.path().display().to_string(),
        has_manifest: d.has_manifest(),
        manifest,
    }
}

/// The canonical stage of a compared pair with a token axis, and that axis.
fn token_stage(p: &PairResult) -> Option<(Stage, usize)> {
    p.metrics.as_ref()?;
    let stage = Stage::parse(&p.name)?;
    Some((stage, tokens::token_axis(stage, p.shape_a.len())?))
}

fn pair_figures(a: &Dump, b: &Dump, r: &DiffReport, o: &FigureOptions) -> Result<PairFigures> {
    let Some((layout, grid)) = layout_of(a) else {
        if let Some(stage) = o.stage {
            bail!(
                "--stage {stage}: {} has no token layout (no `patches` or `patch_embed` tensor \
                 giving the patch count, nor a variant in its manifest), so there is no patch map \
                 to draw",
                a.path().display()
            );
        }
        return Ok(PairFigures::default());
    };
    let mut per_stage = Vec::new();
    for p in &r.pairs {
        let Some((stage, axis)) = token_stage(p) else {
            continue;
        };
        let (Some(ta), Some(tb)) = (a.get(&p.a), b.get(&p.b)) else {
            continue;
        };
        let Some(data) = crate::diff::b_in_a_order(b, tb, &ta.shape, p.layout.as_deref()) else {
            continue;
        };
        let vb = View {
            dtype: tb.dtype,
            data: &data,
        };
        if let Ok(per) = tokens::per_token(View::of(a, ta), vb, &p.shape_a, axis, layout) {
            per_stage.push((stage, p, per));
        }
    }
    let patch_map = choose_stage(&per_stage, o, a)?.map(|(i, chosen)| {
        let (stage, _, per) = &per_stage[i];
        PatchMap {
            stage: *stage,
            chosen,
            grid,
            values: per.patch_max_abs(),
        }
    });
    Ok(PairFigures {
        layout: Some(layout),
        tokens: per_stage
            .iter()
            .map(|(s, _, per)| (*s, per.categories()))
            .collect(),
        patch_map,
    })
}

type StageFigures<'a> = (Stage, &'a PairResult, tokens::PerToken);

/// The index (into `per_stage`) of the patch map's stage, and why (module contract).
fn choose_stage(
    per_stage: &[StageFigures<'_>],
    o: &FigureOptions,
    a: &Dump,
) -> Result<Option<(usize, StageChoice)>> {
    if let Some(asked) = o.stage {
        return match per_stage.iter().position(|(s, _, _)| *s == asked) {
            Some(i) => Ok(Some((i, StageChoice::Asked))),
            None => {
                let some: Vec<String> = per_stage
                    .iter()
                    .take(4)
                    .map(|(s, _, _)| s.to_string())
                    .collect();
                bail!(
                    "--stage {asked}: the pair with {} has no compared tensor of that stage with a \
                     token axis; a patch map needs a stage such as {} (`dinodiff stages` lists \
                     them)",
                    a.path().display(),
                    if some.is_empty() {
                        "blocks.0.output".to_string()
                    } else {
                        some.join(", ")
                    }
                )
            }
        };
    }
    if let Some(i) = per_stage.iter().position(|(_, p, _)| p.fails) {
        return Ok(Some((i, StageChoice::FirstOver)));
    }
    let max_abs = |p: &PairResult| p.metrics.as_ref().map_or(0.0, |m| m.max_abs);
    Ok((0..per_stage.len())
        .max_by(|&i, &j| {
            max_abs(per_stage[i].1)
                .total_cmp(&max_abs(per_stage[j].1))
                .then(j.cmp(&i))
        })
        .map(|i| (i, StageChoice::Worst)))
}

fn shape_of(d: &Dump, stage: Stage) -> Option<&[usize]> {
    d.get(&stage.to_string()).map(|t| t.shape.as_slice())
}

/// The token layout ([`crate::diff::tokens::layout_of`], as `diff --tokens` reads it) and the
/// patch grid of a dump (module contract), if they can be read off.
pub fn layout_of(d: &Dump) -> Option<(TokenLayout, PatchGrid)> {
    let layout = crate::diff::tokens::layout_of(d)?;
    Some((layout, grid_of(shape_of(d, Stage::INPUT), layout.patches)))
}

fn grid_of(input: Option<&[usize]>, hw: usize) -> PatchGrid {
    if let Some(&[_, _, h, w]) = input
        && hw > 0
        && (h * w) % hw == 0
    {
        let p = ((h * w / hw) as f64).sqrt().round() as usize;
        if p > 0 && p * p * hw == h * w && h % p == 0 && w % p == 0 {
            return PatchGrid { h: h / p, w: w / p };
        }
    }
    let side = (hw as f64).sqrt().round() as usize;
    if side * side == hw {
        PatchGrid { h: side, w: side }
    } else {
        PatchGrid { h: 1, w: hw }
    }
}

/// `[f64; 3]` from a JSON array of three numbers.
fn triple(v: Option<&Value>) -> Option<[f64; 3]> {
    let a = v?.as_array()?;
    match a.as_slice() {
        [x, y, z] => Some([x.as_f64()?, y.as_f64()?, z.as_f64()?]),
        _ => None,
    }
}

/// The mean/std a manifest records for its input (prep's, or a capture's `prep` inside it).
pub fn recorded_normalization(m: &Manifest) -> Option<([f64; 3], [f64; 3])> {
    let input = m.input.as_ref()?;
    [Some(input), input.get("prep")]
        .into_iter()
        .flatten()
        .find_map(|v| Some((triple(v.get("mean"))?, triple(v.get("std"))?)))
}

fn input_image(dumps: &[&Dump]) -> Option<InputImage> {
    let (d, t) = dumps.iter().find_map(|d| {
        let t = d.get(&Stage::INPUT.to_string())?;
        (t.dtype == Dtype::F32 && matches!(t.shape[..], [1, 3, _, _])).then_some((d, t))
    })?;
    let (h, w) = (t.shape[2], t.shape[3]);
    let x: Vec<f32> = bytemuck::pod_collect_to_vec(d.data(t));
    let scaling = match recorded_normalization(d.manifest()) {
        Some((mean, std)) => InputScaling::Recorded { mean, std },
        None => {
            let finite = || x.iter().map(|&v| f64::from(v)).filter(|v| v.is_finite());
            InputScaling::MinMax {
                min: finite().fold(f64::INFINITY, f64::min),
                max: finite().fold(f64::NEG_INFINITY, f64::max),
            }
        }
    };
    let level = |c: usize, v: f32| -> f64 {
        let v = f64::from(v);
        let unit = match &scaling {
            InputScaling::Recorded { mean, std } => v * std[c] + mean[c],
            InputScaling::MinMax { min, max } if max > min => (v - min) / (max - min),
            InputScaling::MinMax { .. } => 0.5,
        };
        if unit.is_finite() {
            unit.clamp(0.0, 1.0) * 255.0
        } else {
            0.0
        }
    };
    let factor = h.max(w).div_ceil(MAX_IMAGE_SIDE).max(1);
    let (oh, ow) = (h / factor, w / factor);
    let mut rgb = vec![0u8; oh * ow * 3];
    for (i, out) in rgb.iter_mut().enumerate() {
        let (y, xo, c) = (i / 3 / ow, i / 3 % ow, i % 3);
        let sum: f64 = (0..factor * factor)
            .map(|k| {
                let (py, px) = (y * factor + k / factor, xo * factor + k % factor);
                level(c, x[c * h * w + py * w + px])
            })
            .sum();
        *out = (sum / (factor * factor) as f64).round() as u8;
    }
    Some(InputImage {
        width: ow,
        height: oh,
        rgb,
        tensor_size: [h, w],
        scaling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grids_follow_the_input_shape() {
        assert_eq!(
            grid_of(Some(&[1, 3, 224, 224]), 196),
            PatchGrid { h: 14, w: 14 }
        );
        assert_eq!(
            grid_of(Some(&[1, 3, 224, 320]), 280),
            PatchGrid { h: 14, w: 20 }
        );
        assert_eq!(grid_of(Some(&[1, 3, 32, 32]), 4), PatchGrid { h: 2, w: 2 });
        // No input, or one that does not tile: a square when hw is one, else a row.
        assert_eq!(grid_of(None, 16), PatchGrid { h: 4, w: 4 });
        assert_eq!(grid_of(None, 6), PatchGrid { h: 1, w: 6 });
        assert_eq!(grid_of(Some(&[1, 3, 30, 32]), 16), PatchGrid { h: 4, w: 4 });
    }

    #[test]
    fn normalization_is_found_where_prep_and_captures_record_it() {
        let mut m = Manifest::implied(&[]);
        assert_eq!(recorded_normalization(&m), None);
        m.input = Some(json!({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}));
        assert_eq!(recorded_normalization(&m), Some(([0.5; 3], [0.25; 3])));
        m.input =
            Some(json!({"from": "in.st", "prep": {"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}}));
        assert_eq!(
            recorded_normalization(&m),
            Some(([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]))
        );
        m.input = Some(json!({"mean": [0.5, 0.5], "std": [0.25, 0.25, 0.25]}));
        assert_eq!(recorded_normalization(&m), None);
    }
}
