//! `dinodiff diff`: compares two dumps and builds a [`DiffReport`], which the renderers of
//! [`crate::report`] print. The report is also the JSON output, so its field names are the
//! stable schema documented in `docs/diff-json.md` (`schema` = [`SCHEMA`]).
//!
//! Contract:
//! - dumps whose manifests record different input hashes are refused ([`InputMismatch`]) unless
//!   the caller allows it; a dump that records no input hash is never refused, the report says
//!   the check could not be made;
//! - pairs come from [`crate::align`]; every pair is compared in full (no sampling), in parallel;
//! - `first_over` is the first failing pair in A's execution order, `worst` the failing pair with
//!   the largest max|Δ| (or, when nothing fails, the pair with the largest max|Δ|);
//! - a pair's amplification is its max|Δ| over that of the previous compared pair in execution
//!   order (absent when that one is 0);
//! - coverage ([`Coverage`]): when the two dumps' canonical stage names (`input` aside) exist, the
//!   share of their union that was paired; otherwise the pairs over the smaller dump's tensor
//!   count. Below `min_coverage` the verdict is INCOMPLETE: a diff that compares almost nothing
//!   proves nothing;
//! - the verdict passes when no pair fails, no pair has mismatched shapes and coverage is
//!   complete enough;
//! - with `tokens`, each compared pair of a stage with a token axis also carries its differences
//!   per token category (CLS / storage / patches, [`tokens`]), and the report the layout it used;
//!   they never change the verdict.

pub mod tokens;

use crate::align::layout::Strided;
use crate::align::{self, NameMap, PairedBy, ShapeRelation};
use crate::dump::{Dump, OptimizerEffect, SourceKind, TensorEntry};
use crate::metrics::tokens::{TokenDeltas, TokenLayout};
use crate::metrics::{self, Comparison, Gather, Tolerance, View};
use crate::model::Stage;
use rayon::prelude::*;
use serde::Serialize;

pub const SCHEMA: &str = "dinodiff.diff/1";

#[derive(Debug, Clone, Serialize)]
pub struct DumpInfo {
    pub path: String,
    pub source: SourceKind,
    pub has_manifest: bool,
    pub variant: Option<String>,
    pub model_sha256: Option<String>,
    pub input_sha256: Option<String>,
    pub created: Option<String>,
    pub tensors: usize,
    /// An ONNX capture's optimizer effect (the deployed run against the graph as exported).
    pub optimizer_effect: Option<OptimizerEffect>,
    /// Whether the dump holds deployed headline tensors (`deployed/<stage>`).
    pub deployed_headline: bool,
}

impl DumpInfo {
    fn of(d: &Dump) -> DumpInfo {
        let m = d.manifest();
        DumpInfo {
            path: d.path().display().to_string(),
            source: m.source,
            has_manifest: d.has_manifest(),
            variant: m.variant.clone(),
            model_sha256: m.model.as_ref().map(|f| f.sha256.clone()),
            input_sha256: m.input_sha256.clone(),
            created: (!m.created.is_empty()).then(|| m.created.clone()),
            tensors: d.tensors().len(),
            optimizer_effect: m.optimizer_effect(),
            deployed_headline: d
                .tensors()
                .iter()
                .any(|t| t.name.starts_with(crate::dump::DEPLOYED_PREFIX)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputStatus {
    Match,
    /// Hashes differ; the user allowed it.
    MismatchAllowed,
    /// At least one dump records no input hash.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputCheck {
    pub status: InputStatus,
    pub a_sha256: Option<String>,
    pub b_sha256: Option<String>,
}

/// Refuses pairs whose dtypes cannot be compared (exit 2), naming the first and how many. Pairs
/// of mismatched shapes are not compared at all, so they are reported as such, not refused.
fn refuse_incomparable(a: &Dump, b: &Dump, alignment: &align::Alignment) -> anyhow::Result<()> {
    let refused: Vec<(String, String)> = alignment
        .pairs
        .iter()
        .filter(|p| p.shapes != ShapeRelation::Mismatch)
        .filter_map(|p| {
            let (ta, tb) = (a.get(&p.a)?, b.get(&p.b)?);
            let why = metrics::incomparable(ta.dtype, tb.dtype)?;
            Some((p.key.clone(), why))
        })
        .collect();
    if let Some((name, why)) = refused.first() {
        let more = match refused.len() {
            1 => String::new(),
            n => format!(" (and {} more pairs)", n - 1),
        };
        anyhow::bail!(
            "cannot compare tensor {name:?} of {} and {}{more}: {why}",
            a.path().display(),
            b.path().display()
        );
    }
    Ok(())
}

/// The refusal of two dumps of different inputs.
#[derive(Debug, thiserror::Error)]
#[error(
    "{a} and {b} were captured from different inputs (input sha256 {ha} vs {hb}); their tensors \
     are not comparable. Capture both from the same input.st, or pass --allow-input-mismatch to \
     compare anyway"
)]
pub struct InputMismatch {
    pub a: String,
    pub b: String,
    pub ha: String,
    pub hb: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// The common name (canonical stage name when there is one).
    pub name: String,
    pub a: String,
    pub b: String,
    pub paired_by: PairedBy,
    /// Whether `name` is a canonical stage.
    pub canonical: bool,
    pub shape_a: Vec<usize>,
    pub shape_b: Vec<usize>,
    pub dtype_a: String,
    pub dtype_b: String,
    pub shapes: ShapeRelation,
    /// How B is read to give A's layout (`--align auto`, or a map's `[[pair]]`); absent: as
    /// stored. Metrics, `argmax_index` and tokens are in A's layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Absent on a shape mismatch.
    pub metrics: Option<Comparison>,
    /// Multi-dimensional index of `metrics.argmax` in A's shape.
    pub argmax_index: Option<Vec<usize>>,
    pub amplification: Option<f64>,
    pub fails: bool,
    /// Per token category (`--tokens` only; absent for stages without a token axis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenDeltas>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub name: String,
    pub cosine: Option<f64>,
    pub max_abs: f64,
    pub fails: bool,
    /// Whether A's (B's) side is its deployed session's tensor (`deployed/<stage>`) rather
    /// than the captured stage.
    pub a_deployed: bool,
    pub b_deployed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unmatched {
    pub a: Vec<String>,
    pub b: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub compared: usize,
    pub failed: usize,
    pub shape_mismatches: usize,
    /// Coverage below `min_coverage`: the diff compared too little to say PASS.
    pub incomplete: bool,
    pub coverage: Coverage,
}

/// How much of what could be compared was.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// `canonical_stages` or `smaller_dump` (see the module docs).
    pub basis: CoverageBasis,
    pub paired: usize,
    pub comparable: usize,
    /// paired / comparable (0 when nothing is comparable).
    pub fraction: f64,
    pub min_coverage: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageBasis {
    CanonicalStages,
    SmallerDump,
}

/// The default `--min-coverage`.
pub const DEFAULT_MIN_COVERAGE: f64 = 0.5;

fn coverage(a: &Dump, b: &Dump, pairs: &[PairResult], min_coverage: f64) -> Coverage {
    let canonical = |d: &Dump| -> std::collections::BTreeSet<String> {
        d.tensors()
            .iter()
            .filter(|t| Stage::parse(&t.name).is_some_and(|s| s != Stage::INPUT))
            .map(|t| t.name.clone())
            .collect()
    };
    let union: std::collections::BTreeSet<String> =
        canonical(a).union(&canonical(b)).cloned().collect();
    let (basis, paired, comparable) = if union.is_empty() {
        let smaller = a.tensors().len().min(b.tensors().len());
        (CoverageBasis::SmallerDump, pairs.len(), smaller)
    } else {
        let paired = pairs.iter().filter(|p| union.contains(&p.name)).count();
        (CoverageBasis::CanonicalStages, paired, union.len())
    };
    let fraction = if comparable == 0 {
        0.0
    } else {
        paired as f64 / comparable as f64
    };
    Coverage {
        basis,
        paired,
        comparable,
        fraction,
        min_coverage,
    }
}

fn verdict(pairs: &[PairResult], failing: usize, coverage: Coverage) -> Verdict {
    let shape_mismatches = pairs.iter().filter(|p| p.metrics.is_none()).count();
    let incomplete = coverage.fraction < coverage.min_coverage;
    Verdict {
        pass: failing == 0 && !incomplete,
        compared: pairs.len() - shape_mismatches,
        failed: failing,
        shape_mismatches,
        incomplete,
        coverage,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub schema: &'static str,
    pub a: DumpInfo,
    pub b: DumpInfo,
    pub tolerance: Tolerance,
    pub input: InputCheck,
    pub headline: Vec<Headline>,
    /// In A's execution order.
    pub pairs: Vec<PairResult>,
    pub unmatched: Unmatched,
    /// Indices into `pairs`.
    pub first_over: Option<usize>,
    pub worst: Option<usize>,
    pub verdict: Verdict,
    /// The token layout of the per-category breakdown (`--tokens` only, when it can be told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_layout: Option<TokenLayout>,
}

pub struct DiffOptions {
    pub tolerance: Tolerance,
    pub allow_input_mismatch: bool,
    pub map: NameMap,
    /// Below this coverage the verdict is INCOMPLETE ([`DEFAULT_MIN_COVERAGE`]).
    pub min_coverage: f64,
    /// Split each pair's differences by token category (`--tokens`).
    pub tokens: bool,
    /// Pair by names only, or by names then values (`--align`).
    pub align: align::Mode,
}

pub fn check_inputs(a: &Dump, b: &Dump, allow: bool) -> Result<InputCheck, InputMismatch> {
    let (ha, hb) = (
        a.manifest().input_sha256.clone(),
        b.manifest().input_sha256.clone(),
    );
    let status = match (&ha, &hb) {
        (Some(x), Some(y)) if x == y => InputStatus::Match,
        (Some(x), Some(y)) => {
            if !allow {
                return Err(InputMismatch {
                    a: a.path().display().to_string(),
                    b: b.path().display().to_string(),
                    ha: x.clone(),
                    hb: y.clone(),
                });
            }
            InputStatus::MismatchAllowed
        }
        _ => InputStatus::Unknown,
    };
    Ok(InputCheck {
        status,
        a_sha256: ha,
        b_sha256: hb,
    })
}

/// B's bytes in A's order: as stored, or gathered through the pair's layout (one tensor, for the
/// token breakdown, which reads whole tensors).
fn reordered<'b>(b: View<'b>, order: Option<&Strided>) -> std::borrow::Cow<'b, [u8]> {
    match order {
        None => std::borrow::Cow::Borrowed(b.data),
        Some(o) => {
            let size = crate::dump::element::element_size(b.dtype);
            let mut out = vec![0u8; b.data.len()];
            o.gather(b.data, size, 0, o.elements(), &mut out);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// B's tensor `tb` in A's layout (A's shape `a_shape`): as stored without a layout, else gathered
/// through the pair's `layout` (its text in a [`PairResult`]). For readers of whole tensors (the
/// report's figures); `None` when the layout does not fit.
pub fn b_in_a_order<'b>(
    b: &'b Dump,
    tb: &TensorEntry,
    a_shape: &[usize],
    layout: Option<&str>,
) -> Option<std::borrow::Cow<'b, [u8]>> {
    let order = match layout {
        None => None,
        Some(text) => {
            let l: crate::align::layout::Layout = text.parse().ok()?;
            Some(l.resolve(&tb.shape, a_shape).ok()?)
        }
    };
    Some(reordered(View::of(b, tb), order.as_ref()))
}

/// Compares one aligned pair (and splits it by token when there is a layout).
fn compare_pair(
    a: &Dump,
    b: &Dump,
    p: &align::Pair,
    tolerance: Tolerance,
    token_layout: Option<TokenLayout>,
) -> PairResult {
    let (ta, tb) = (a.get(&p.a).expect("aligned"), b.get(&p.b).expect("aligned"));
    let (va, vb) = (View::of(a, ta), View::of(b, tb));
    let order = p.layout.as_ref().map(|l| {
        l.resolve(&tb.shape, &ta.shape)
            .expect("alignment checked the layout")
    });
    let order = order.filter(|o| !o.is_contiguous());
    let comparable = p.shapes != ShapeRelation::Mismatch;
    let metrics = comparable.then(|| {
        metrics::compare_through(va, vb, order.as_ref().map(|o| o as &dyn Gather), tolerance)
    });
    let tokens = token_layout.filter(|_| comparable).and_then(|layout| {
        let data = reordered(vb, order.as_ref());
        let vb = View {
            dtype: vb.dtype,
            data: &data,
        };
        tokens::pair_tokens(&p.key, &ta.shape, va, vb, layout)
    });
    let argmax_index = metrics
        .as_ref()
        .and_then(|m| m.argmax)
        .map(|i| unravel(i, &ta.shape));
    let fails = metrics.as_ref().is_none_or(Comparison::fails);
    PairResult {
        name: p.key.clone(),
        a: p.a.clone(),
        b: p.b.clone(),
        paired_by: p.by,
        canonical: Stage::parse(&p.key).is_some(),
        shape_a: ta.shape.clone(),
        shape_b: tb.shape.clone(),
        dtype_a: ta.dtype.to_string(),
        dtype_b: tb.dtype.to_string(),
        shapes: p.shapes.clone(),
        layout: p.layout.as_ref().map(ToString::to_string),
        metrics,
        argmax_index,
        amplification: None,
        fails,
        tokens,
    }
}

pub fn diff(a: &Dump, b: &Dump, opts: &DiffOptions) -> anyhow::Result<DiffReport> {
    diff_aliased(a, b, opts, &std::collections::HashMap::new())
}

/// [`diff`], with stage names for A's tensors that do not bear one (`aliases`: A's tensor name →
/// stage name; a triangle's port side takes them from the reference ⇔ port alignment): a pair
/// whose common name is not a stage is reported under its A tensor's alias.
pub fn diff_aliased(
    a: &Dump,
    b: &Dump,
    opts: &DiffOptions,
    aliases: &std::collections::HashMap<String, String>,
) -> anyhow::Result<DiffReport> {
    let input = check_inputs(a, b, opts.allow_input_mismatch)?;
    let mut alignment = align::align_in(a, b, &opts.map, opts.align)?;
    for p in &mut alignment.pairs {
        if Stage::parse(&p.key).is_none()
            && let Some(stage) = aliases.get(&p.a)
        {
            p.key = stage.clone();
        }
    }
    refuse_incomparable(a, b, &alignment)?;
    a.advise_sequential();
    b.advise_sequential();
    let progress = crate::progress::bytes_bar(
        alignment
            .pairs
            .iter()
            .map(|p| a.get(&p.a).map_or(0, |t| (t.end - t.start) as u64))
            .sum(),
        "comparing",
    );
    let token_layout = opts
        .tokens
        .then(|| tokens::layout_of(a).or_else(|| tokens::layout_of(b)))
        .flatten();
    let mut pairs: Vec<PairResult> = alignment
        .pairs
        .par_iter()
        .map(|p| {
            let result = compare_pair(a, b, p, opts.tolerance, token_layout);
            progress.inc(a.get(&p.a).map_or(0, |t| (t.end - t.start) as u64));
            result
        })
        .collect();
    progress.finish_and_clear();
    let mut previous: Option<f64> = None;
    for p in &mut pairs {
        if let Some(m) = &p.metrics {
            p.amplification = previous.filter(|&x| x > 0.0).map(|x| m.max_abs / x);
            previous = Some(m.max_abs);
        }
    }
    let headline = headlines(a, b, &pairs, opts.tolerance);
    let first_over = pairs.iter().position(|p| p.fails);
    let by_max = |i: &usize, j: &usize| {
        let m = |k: usize| {
            pairs[k]
                .metrics
                .as_ref()
                .map_or(f64::INFINITY, |m| m.max_abs)
        };
        m(*i).total_cmp(&m(*j)).then(j.cmp(i))
    };
    let failing: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i].fails).collect();
    let worst = if failing.is_empty() {
        (0..pairs.len()).max_by(by_max)
    } else {
        failing.iter().copied().max_by(by_max)
    };
    let verdict = verdict(
        &pairs,
        failing.len(),
        coverage(a, b, &pairs, opts.min_coverage),
    );
    Ok(DiffReport {
        schema: SCHEMA,
        a: DumpInfo::of(a),
        b: DumpInfo::of(b),
        tolerance: opts.tolerance,
        input,
        headline,
        pairs,
        unmatched: Unmatched {
            a: alignment.unmatched_a,
            b: alignment.unmatched_b,
        },
        first_over,
        worst,
        verdict,
        token_layout,
    })
}

/// The headline stages compared, each side's deployed tensor (`deployed/<stage>`) taking the
/// place of its captured stage when the dump has one of the same shape.
fn headlines(a: &Dump, b: &Dump, pairs: &[PairResult], tolerance: Tolerance) -> Vec<Headline> {
    crate::model::Headline::ALL
        .iter()
        .map(|role| role.stage().to_string())
        .filter_map(|name| pairs.iter().find(|p| p.name == name))
        .filter_map(|p| {
            if p.layout.is_some() {
                let m = p.metrics.as_ref()?;
                return Some(Headline {
                    name: p.name.clone(),
                    cosine: m.cosine,
                    max_abs: m.max_abs,
                    fails: m.fails(),
                    a_deployed: false,
                    b_deployed: false,
                });
            }
            let stage = (p.paired_by == PairedBy::Value).then_some(p.name.as_str());
            let (ta, a_deployed) = deployed_or(a, &p.a, stage);
            let (tb, b_deployed) = deployed_or(b, &p.b, stage);
            let m = if a_deployed || b_deployed {
                Some(metrics::compare(
                    View::of(a, ta),
                    View::of(b, tb),
                    tolerance,
                ))
            } else {
                p.metrics.clone()
            }?;
            Some(Headline {
                name: p.name.clone(),
                cosine: m.cosine,
                max_abs: m.max_abs,
                fails: m.fails(),
                a_deployed,
                b_deployed,
            })
        })
        .collect()
}

/// The dump's `deployed/<name>` when it has one shaped as `name`'s tensor, else
/// `deployed/<stage>` (a value pair's stage name, which the tensor need not bear), else
/// `name`'s own tensor.
fn deployed_or<'d>(d: &'d Dump, name: &str, stage: Option<&str>) -> (&'d TensorEntry, bool) {
    let own = d.get(name).expect("paired tensors exist");
    let deployed = std::iter::once(name)
        .chain(stage)
        .filter_map(|n| d.get(&crate::dump::deployed_name(n)))
        .find(|t| t.shape == own.shape && t.dtype == own.dtype);
    match deployed {
        Some(t) => (t, true),
        None => (own, false),
    }
}

/// Flat row-major index to a multi-dimensional one.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = flat % dim;
            flat /= dim;
        }
    }
    index
}

#[cfg(test)]
mod tests {
    use super::unravel;

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(7, &[1, 2, 4]), vec![0, 1, 3]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }
}
