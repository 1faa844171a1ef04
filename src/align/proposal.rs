//! `dinodiff align`: the proposed pairing of two dumps, as data (`docs/alignment.md`, schema
//! [`SCHEMA`]), and the map file that pins it.
//!
//! Contract:
//! - the pairing is [`super::align_in`] in [`super::Mode::Auto`]; every pair carries its score,
//!   max|Δ| and cosine (B read through the pair's layout; `None` when the pair is not compared by
//!   value: a shape mismatch, a non-float or constant tensor), value pairs also their runner-up;
//! - [`map_text`] writes the seed map's rules and one `[[pair]]` per value pair and per pair read
//!   through a layout, in A's execution order, so `diff --map` gives the same pairs and metrics.

use super::value::{self, signature::Moments};
use super::{Alignment, Mode, NameMap, PairedBy, RunnerUp, ShapeRelation, WrittenPair};
use crate::dump::Dump;
use crate::metrics::View;
use rayon::prelude::*;
use serde::Serialize;

pub const SCHEMA: &str = "dinodiff.align/1";

#[derive(Debug, Clone, Serialize)]
pub struct ProposedPair {
    pub a: String,
    pub b: String,
    /// The common name `diff` reports the pair under.
    pub name: String,
    pub layout: Option<String>,
    pub paired_by: PairedBy,
    pub score: Option<f64>,
    pub max_abs: Option<f64>,
    pub cosine: Option<f64>,
    pub runner_up: Option<RunnerUp>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    pub schema: &'static str,
    pub a: String,
    pub b: String,
    /// In A's execution order.
    pub pairs: Vec<ProposedPair>,
    pub unpaired_a: Vec<String>,
    pub unpaired_b: Vec<String>,
}

/// The score of a pair found by name, when it can be compared by value.
fn name_evidence(
    (a, b): (&Dump, &Dump),
    (ia, ib): (usize, usize),
    p: &super::Pair,
) -> Option<value::Scored> {
    if p.shapes == ShapeRelation::Mismatch {
        return None;
    }
    let (ta, tb) = (&a.tensors()[ia], &b.tensors()[ib]);
    let float = |t: &crate::dump::TensorEntry| {
        crate::dump::element::ElementKind::of(t.dtype) == crate::dump::element::ElementKind::Float
    };
    if !float(ta) || !float(tb) {
        return None;
    }
    let (ma, mb) = (Moments::of(View::of(a, ta)), Moments::of(View::of(b, tb)));
    let layout = p.layout.clone().unwrap_or_default();
    value::exact(a, b, (ia, ib), &layout, (&ma, &mb))
}

/// Proposes the pairing of A's tensors with B's (module contract).
pub fn propose(a: &Dump, b: &Dump, map: &NameMap) -> anyhow::Result<Proposal> {
    let Alignment {
        pairs,
        unmatched_a,
        unmatched_b,
    } = super::align_in(a, b, map, Mode::Auto)?;
    let (pa, pb) = (super::positions(a), super::positions(b));
    let pairs = pairs
        .par_iter()
        .map(|p| {
            let (score, max_abs, cosine, runner_up) = match &p.evidence {
                Some(e) => (
                    Some(e.score),
                    Some(e.max_abs),
                    e.cosine,
                    e.runner_up.clone(),
                ),
                None => name_evidence((a, b), (pa[p.a.as_str()], pb[p.b.as_str()]), p).map_or(
                    (None, None, None, None),
                    |s| {
                        (
                            Some(s.score),
                            Some(s.metrics.max_abs),
                            s.metrics.cosine,
                            None,
                        )
                    },
                ),
            };
            ProposedPair {
                a: p.a.clone(),
                b: p.b.clone(),
                name: p.key.clone(),
                layout: p.layout.as_ref().map(ToString::to_string),
                paired_by: p.by,
                score,
                max_abs,
                cosine,
                runner_up,
            }
        })
        .collect();
    Ok(Proposal {
        schema: SCHEMA,
        a: a.path().display().to_string(),
        b: b.path().display().to_string(),
        pairs,
        unpaired_a: unmatched_a,
        unpaired_b: unmatched_b,
    })
}

/// The map file of a proposal (module contract); `comment` words a pair's evidence.
pub fn map_text(
    p: &Proposal,
    seed: &NameMap,
    header: &[String],
    comment: impl Fn(&ProposedPair) -> String,
) -> String {
    let bracketed: std::collections::HashSet<&str> = seed
        .pairs
        .iter()
        .filter(|s| s.line.is_some())
        .map(|s| s.a.as_str())
        .collect();
    let written: Vec<WrittenPair> = p
        .pairs
        .iter()
        .filter(|q| {
            q.paired_by == PairedBy::Value || q.layout.is_some() || bracketed.contains(q.a.as_str())
        })
        .map(|q| WrittenPair {
            a: q.a.clone(),
            b: q.b.clone(),
            layout: q
                .layout
                .as_ref()
                .map(|l| l.parse().expect("layouts print in their grammar")),
            comment: comment(q),
        })
        .collect();
    super::map::write(header, seed, &written)
}
