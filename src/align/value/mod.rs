//! Pairing by value: the tensors names did not pair, matched by what they hold
//! (`docs/alignment.md`, "Value alignment").
//!
//! Contract:
//! - only *eligible* tensors take part: float dtypes, at least [`MIN_ELEMENTS`] elements, finite
//!   values that are not all equal ([`signature::Moments::informative`]), and not an ONNX
//!   capture's copies of its deployed run (`deployed/…`, `unmarked/…`: another run, outside the
//!   execution order);
//! - candidates are the B tensors of A's element count, under every layout of
//!   [`crate::align::layout::hypotheses`]. They are pruned by their moments (a necessary
//!   condition, never a true partner lost), ranked by a sampled comparison, and the best of each A
//!   tensor (within [`SAMPLED_MARGIN`] of its best, at most [`EXACT_PER_TENSOR`], at least two B
//!   tensors when there are) are compared exactly with [`crate::metrics::compare_through`]: B read
//!   through the layout chunk by chunk, nothing of B held decoded;
//! - [`score`] = cosine − rms(Δ)/max(rms) − max|Δ|/max(|·|max), the rms and magnitudes being each
//!   tensor's own; a pair needs at least [`MIN_SCORE`], and at least its A tensor's best score
//!   less [`BEST_MARGIN`];
//! - the assignment ([`assign`]) is one-to-one and monotone in both execution orders between the
//!   anchors (pairs already made), then confident leftovers ([`OUT_OF_ORDER_SCORE`]) may cross;
//!   among equal values the simplest layout wins, then the names of the shallowest scope
//!   ([`scope_depth`] of both names: a module's output as its parent sees it, not its copy
//!   inside the next module), then the earlier B tensor;
//! - results do not depend on the thread count.

pub mod assign;
pub mod signature;

use crate::align::layout::{Layout, Strided, hypotheses};
use crate::dump::Dump;
use crate::dump::element::ElementKind;
use crate::metrics::{self, Comparison, Gather, Tolerance, View};
use assign::{Candidate, Weight};
use rayon::prelude::*;
use signature::Moments;
use std::collections::HashMap;

/// The least score of a value pair.
pub const MIN_SCORE: f64 = 0.5;
/// The least score of a pair made outside execution order ([`assign::leftovers`]).
pub const OUT_OF_ORDER_SCORE: f64 = 0.9;
/// Fewer elements than this carry too little evidence.
pub const MIN_ELEMENTS: usize = 4;
/// A pair must score within this of the best its A tensor reaches with any B tensor: a tensor
/// whose true partner went to an equal A tensor (a chain of copies in A) stays unpaired rather
/// than take a look-alike.
pub const BEST_MARGIN: f64 = 0.02;
/// Sampled candidates below this score are dropped.
pub const SAMPLED_FLOOR: f64 = 0.3;
/// Candidates within this of an A tensor's best sampled score are compared exactly.
pub const SAMPLED_MARGIN: f64 = 0.05;
/// At most this many exact comparisons per A tensor.
pub const EXACT_PER_TENSOR: usize = 12;

/// Score quantization: scores equal to 1e-6 weigh the same.
const QUANTUM: f64 = 1e6;

/// The score of a comparison (module contract): 1 for equal values.
pub fn score(cosine: f64, rms_delta: f64, max_delta: f64, a: &Moments, b: &Moments) -> f64 {
    let relative = |d: f64, scale: f64| {
        if scale > 0.0 {
            d / scale
        } else if d == 0.0 {
            0.0
        } else {
            1.0
        }
    };
    cosine - relative(rms_delta, a.rms.max(b.rms)) - relative(max_delta, a.peak.max(b.peak))
}

/// How deeply a name is scoped: its `/` and `.` separators (`/blocks.3/attn/Reshape_output_0`,
/// `VisionTransformer_1/Block_1/LayerNorm_0`, `blocks.3.attn.v`).
pub fn scope_depth(name: &str) -> usize {
    name.chars().filter(|&c| c == '/' || c == '.').count()
}

/// An exact comparison of A's tensor with a B tensor read through a layout.
#[derive(Debug, Clone)]
pub struct Scored {
    /// B's tensor, by its position in B's execution order.
    pub b: usize,
    pub layout: Layout,
    pub score: f64,
    pub metrics: Comparison,
}

/// A value pair: A's tensor (position in A's order), its partner, the best other B tensor.
#[derive(Debug, Clone)]
pub struct Found {
    pub a: usize,
    pub chosen: Scored,
    pub runner_up: Option<Scored>,
}

/// Whether a tensor may take part (module contract; moments aside).
fn eligible(t: &crate::dump::TensorEntry) -> bool {
    let bookkeeping = [crate::dump::DEPLOYED_PREFIX, crate::dump::UNMARKED_PREFIX];
    !bookkeeping.iter().any(|p| t.name.starts_with(p))
        && ElementKind::of(t.dtype) == ElementKind::Float
        && t.shape.iter().product::<usize>() >= MIN_ELEMENTS
}

/// Compares A's tensor with B's through `layout` exactly; `None` when the layout does not fit.
pub fn exact(
    a: &Dump,
    b: &Dump,
    (ia, ib): (usize, usize),
    layout: &Layout,
    moments: (&Moments, &Moments),
) -> Option<Scored> {
    let (ta, tb) = (&a.tensors()[ia], &b.tensors()[ib]);
    let order = layout.resolve(&tb.shape, &ta.shape).ok()?;
    let gather: Option<&dyn Gather> = (!order.is_contiguous()).then_some(&order as &dyn Gather);
    let m = metrics::compare_through(View::of(a, ta), View::of(b, tb), gather, Tolerance::DEFAULT);
    let s = score(m.cosine?, m.rms, m.max_abs, moments.0, moments.1);
    Some(Scored {
        b: ib,
        layout: layout.clone(),
        score: s,
        metrics: m,
    })
}

/// The moments of the given tensors of a dump (position → moments), one pass each, in parallel.
fn moments_of(d: &Dump, positions: &[usize]) -> HashMap<usize, Moments> {
    positions
        .par_iter()
        .map(|&k| (k, Moments::of(View::of(d, &d.tensors()[k]))))
        .collect()
}

/// The B tensors (with layouts) worth an exact comparison with A's tensor `ia`.
fn shortlist(
    a: &Dump,
    b: &Dump,
    ia: usize,
    bucket: &[usize],
    moments: (&HashMap<usize, Moments>, &HashMap<usize, Moments>),
) -> Vec<(usize, Layout)> {
    let ta = &a.tensors()[ia];
    let Some(ma) = moments.0.get(&ia).filter(|m| m.informative()) else {
        return vec![];
    };
    let at = signature::positions(ta.shape.iter().product());
    let values = signature::sample(View::of(a, ta), &at);
    let mut layouts: HashMap<&[usize], Vec<(Layout, Strided)>> = HashMap::new();
    let mut ranked: Vec<(f64, usize, usize, Layout)> = Vec::new();
    for &ib in bucket {
        let tb = &b.tensors()[ib];
        let Some(mb) = moments
            .1
            .get(&ib)
            .filter(|m| m.informative() && ma.may_pass(m))
        else {
            continue;
        };
        let readings = layouts.entry(&tb.shape).or_insert_with(|| {
            hypotheses(&tb.shape, &ta.shape)
                .into_iter()
                .filter_map(|l| Some((l.clone(), l.resolve(&tb.shape, &ta.shape).ok()?)))
                .collect()
        });
        for (layout, order) in readings.iter() {
            let s = signature::sampled(&values, &at, View::of(b, tb), order, (ma, mb));
            if s >= SAMPLED_FLOOR {
                ranked.push((s, layout.cost(), ib, layout.clone()));
            }
        }
    }
    // Best first, in the order ties are broken later: layout, scope, B position.
    let depth = |ib: usize| scope_depth(&b.tensors()[ib].name);
    ranked.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then(depth(x.2).cmp(&depth(y.2)))
            .then(x.2.cmp(&y.2))
    });
    let Some(best) = ranked.first().map(|r| r.0) else {
        return vec![];
    };
    // The close ones (at most EXACT_PER_TENSOR), and the best of another B tensor, so that a
    // runner-up is measured too.
    let mut out: Vec<(usize, Layout)> = Vec::new();
    for (s, _, ib, layout) in ranked {
        let close = s >= best - SAMPLED_MARGIN && out.len() < EXACT_PER_TENSOR;
        let other_b = out.iter().all(|o| o.0 == out[0].0) && out.first().is_some_and(|o| o.0 != ib);
        if close || other_b {
            out.push((ib, layout));
        } else if s < best - SAMPLED_MARGIN {
            break;
        }
    }
    out
}

/// Pairs the free tensors of A (`free_a`) and B (`free_b`), given as positions in each dump's
/// execution order, by value; `anchors` are the pairs already made. In A's order.
pub fn pair_by_value(
    a: &Dump,
    b: &Dump,
    free_a: &[usize],
    free_b: &[usize],
    anchors: &[(usize, usize)],
) -> Vec<Found> {
    let count = |d: &Dump, k: usize| d.tensors()[k].shape.iter().product::<usize>();
    let mut buckets: HashMap<usize, Vec<usize>> = HashMap::new();
    for &ib in free_b.iter().filter(|&&k| eligible(&b.tensors()[k])) {
        buckets.entry(count(b, ib)).or_default().push(ib);
    }
    let wanted_a: Vec<usize> = free_a
        .iter()
        .copied()
        .filter(|&k| eligible(&a.tensors()[k]) && buckets.contains_key(&count(a, k)))
        .collect();
    let needed: std::collections::BTreeSet<usize> = wanted_a.iter().map(|&k| count(a, k)).collect();
    let wanted_b: Vec<usize> = buckets
        .iter()
        .filter(|(n, _)| needed.contains(n))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let (ma, mb) = (moments_of(a, &wanted_a), moments_of(b, &wanted_b));
    let shortlists: Vec<(usize, Vec<(usize, Layout)>)> = wanted_a
        .par_iter()
        .map(|&ia| (ia, shortlist(a, b, ia, &buckets[&count(a, ia)], (&ma, &mb))))
        .collect();
    let jobs: Vec<(usize, usize, &Layout)> = shortlists
        .iter()
        .flat_map(|(ia, list)| list.iter().map(move |(ib, l)| (*ia, *ib, l)))
        .collect();
    let scored: Vec<(usize, Scored)> = jobs
        .par_iter()
        .filter_map(|&(ia, ib, layout)| {
            Some((ia, exact(a, b, (ia, ib), layout, (&ma[&ia], &mb[&ib]))?))
        })
        .collect();
    assign_scored((a, b), scored, anchors)
}

/// The best reading per (A, B) pair, then the assignment; each pair with its runner-up.
fn assign_scored(
    (a, b): (&Dump, &Dump),
    scored: Vec<(usize, Scored)>,
    anchors: &[(usize, usize)],
) -> Vec<Found> {
    let rank = |s: &Scored| {
        (
            (s.score * QUANTUM).round() as i64,
            -(s.layout.cost() as i64),
        )
    };
    let mut best: HashMap<(usize, usize), Scored> = HashMap::new();
    for (ia, s) in scored {
        match best.get(&(ia, s.b)) {
            Some(old) if rank(old) >= rank(&s) => {}
            _ => {
                best.insert((ia, s.b), s);
            }
        }
    }
    let mut all: Vec<(usize, Scored)> = best.into_iter().map(|((ia, _), s)| (ia, s)).collect();
    all.sort_by_key(|(ia, s)| (*ia, s.b));
    let mut best_of_a: HashMap<usize, f64> = HashMap::new();
    for (ia, s) in &all {
        let best = best_of_a.entry(*ia).or_insert(f64::NEG_INFINITY);
        *best = best.max(s.score);
    }
    let passing: Vec<usize> = (0..all.len())
        .filter(|&k| {
            let (ia, s) = &all[k];
            s.score >= MIN_SCORE && s.score >= best_of_a[ia] - BEST_MARGIN
        })
        .collect();
    let candidates: Vec<Candidate> = passing
        .iter()
        .map(|&k| {
            let (score, simplicity) = rank(&all[k].1);
            Candidate {
                i: all[k].0,
                j: all[k].1.b,
                weight: Weight {
                    score,
                    simplicity,
                    shallowness: -((scope_depth(&a.tensors()[all[k].0].name)
                        + scope_depth(&b.tensors()[all[k].1.b].name))
                        as i64),
                },
            }
        })
        .collect();
    let mut chosen = assign::monotone(&candidates, anchors);
    let min = (OUT_OF_ORDER_SCORE * QUANTUM).round() as i64;
    chosen.extend(assign::leftovers(&candidates, &chosen, min));
    let mut found: Vec<Found> = chosen
        .into_iter()
        .map(|c| {
            let (ia, pick) = &all[passing[c]];
            let runner_up = all
                .iter()
                .filter(|(i, s)| i == ia && s.b != pick.b)
                .max_by(|x, y| rank(&x.1).cmp(&rank(&y.1)).then(y.1.b.cmp(&x.1.b)))
                .map(|(_, s)| s.clone());
            Found {
                a: *ia,
                chosen: pick.clone(),
                runner_up,
            }
        })
        .collect();
    found.sort_by_key(|f| f.a);
    found
}

/// The best reading of a name pair whose shapes differ (element counts equal): every layout
/// hypothesis compared exactly; `None` below [`MIN_SCORE`] or for ineligible tensors.
pub fn best_layout(a: &Dump, b: &Dump, ia: usize, ib: usize) -> Option<Scored> {
    let (ta, tb) = (&a.tensors()[ia], &b.tensors()[ib]);
    if !eligible(ta) || !eligible(tb) {
        return None;
    }
    let (ma, mb) = (Moments::of(View::of(a, ta)), Moments::of(View::of(b, tb)));
    hypotheses(&tb.shape, &ta.shape)
        .iter()
        .filter_map(|l| exact(a, b, (ia, ib), l, (&ma, &mb)))
        .filter(|s| s.score >= MIN_SCORE)
        .max_by(|x, y| {
            let q = |s: &Scored| {
                (
                    (s.score * QUANTUM).round() as i64,
                    -(s.layout.cost() as i64),
                )
            };
            q(x).cmp(&q(y))
        })
}
