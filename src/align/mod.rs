//! Pairing the tensors of two dumps (`docs/alignment.md`).
//!
//! Contract, in order of precedence:
//! 1. explicit pairs of the `--map` file (`[pairs]` and `[[pair]]`, name in A = name in B; a
//!    `[[pair]]` may read B through a layout, checked against both shapes) pair those tensors;
//! 2. every other tensor gets a *key*: its name, rewritten by the map file's `[[rewrite]]` rules
//!    that apply to its side (each rule in file order, regex replace-all); tensors of A and B
//!    with equal keys pair up. Two tensors of one side with the same key are an error;
//! 3. with [`Mode::Auto`] only: name pairs whose shapes differ are read through their best layout
//!    ([`value::best_layout`]), and the tensors still unpaired are paired by value ([`value`]);
//!    a value pair's key is A's name when it is a canonical stage, else B's when that is one,
//!    else A's name;
//! 4. everything else is unmatched and listed per side. Nothing is ever paired by position.
//!
//! Shapes: equal shapes compare as they are; shapes that differ only by leading singleton
//! dimensions (a batch of 1 that one side lacks) are reconciled and the pair says so; a pair
//! with a layout reads B through it; any other difference is a shape mismatch, reported and
//! counted as a failure.

pub mod layout;
pub mod map;
pub mod proposal;
pub mod value;

use crate::dump::Dump;
use crate::dump::element::ElementKind;
use crate::model::Stage;
use anyhow::{Result, bail};
use layout::Layout;
pub use map::{MAX_KEY_BYTES, MapPair, NameMap, Rewrite, Side, WrittenPair};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// How pairs are found: names (and the map) only, or names then values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Names,
    Auto,
}

/// How two tensors' shapes relate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ShapeRelation {
    Equal,
    /// Equal after dropping `dropped` leading singleton dims from side `side`.
    BatchReconciled {
        side: Side,
        dropped: usize,
    },
    /// B is read through a layout (`Pair::layout`) to give A's shape.
    Layout,
    Mismatch,
}

pub fn relate_shapes(a: &[usize], b: &[usize]) -> ShapeRelation {
    if a == b {
        return ShapeRelation::Equal;
    }
    let (longer, shorter, side) = if a.len() > b.len() {
        (a, b, Side::A)
    } else {
        (b, a, Side::B)
    };
    let extra = longer.len() - shorter.len();
    if extra > 0 && longer[..extra].iter().all(|&d| d == 1) && &longer[extra..] == shorter {
        ShapeRelation::BatchReconciled {
            side,
            dropped: extra,
        }
    } else {
        ShapeRelation::Mismatch
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedBy {
    Name,
    MapPair,
    MapRewrite,
    Value,
}

/// The best other B tensor of a value pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerUp {
    pub b: String,
    pub layout: Option<String>,
    pub score: f64,
}

/// What the value search measured for a pair (value pairs, and name pairs read through a layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub score: f64,
    pub max_abs: f64,
    pub cosine: Option<f64>,
    pub runner_up: Option<RunnerUp>,
}

#[derive(Debug, Clone)]
pub struct Pair {
    /// The common name: the key both sides share (A's name for explicit pairs; see the module
    /// contract for value pairs).
    pub key: String,
    pub a: String,
    pub b: String,
    pub by: PairedBy,
    pub shapes: ShapeRelation,
    /// How B is read to give A's layout; `None`: as stored.
    pub layout: Option<Layout>,
    pub evidence: Option<Evidence>,
}

#[derive(Debug, Default)]
pub struct Alignment {
    /// In A's execution order.
    pub pairs: Vec<Pair>,
    pub unmatched_a: Vec<String>,
    pub unmatched_b: Vec<String>,
}

/// Pairs two dumps' tensors in `mode` (see the module contract).
pub fn align_in(a: &Dump, b: &Dump, map: &NameMap, mode: Mode) -> Result<Alignment> {
    let mut alignment = align(a, b, map)?;
    if mode == Mode::Auto {
        reconcile_layouts(a, b, &mut alignment);
        pair_values(a, b, &mut alignment);
    }
    Ok(alignment)
}

/// Checks the explicit pairs of `map` against the dumps: both names exist, no B tensor twice,
/// layouts fit both shapes.
fn explicit_pairs<'m>(
    a: &Dump,
    b: &Dump,
    map: &'m NameMap,
) -> Result<HashMap<&'m str, &'m MapPair>> {
    let mut explicit: HashMap<&str, &MapPair> = HashMap::new();
    let mut used_b: HashSet<&str> = HashSet::new();
    let missing = |p: &MapPair, name: &str, d: &Dump| match p.line {
        None => anyhow::anyhow!(
            "{} pairs {:?} with {:?}, but {} has no tensor {name:?}; fix its [pairs] (`dinodiff \
             inspect` lists a dump's tensors)",
            map.shown(),
            p.a,
            p.b,
            d.path().display()
        ),
        Some(_) => anyhow::anyhow!(
            "{}: {} names {name:?}, but {} has no tensor {name:?}; fix it (`dinodiff inspect` \
             lists a dump's tensors)",
            map.shown(),
            p.shown(),
            d.path().display()
        ),
    };
    for p in &map.pairs {
        let (x, y) = (p.a.as_str(), p.b.as_str());
        let ta = a.get(x).ok_or_else(|| missing(p, x, a))?;
        let tb = b.get(y).ok_or_else(|| missing(p, y, b))?;
        if !used_b.insert(y) {
            bail!(
                "{} pairs {y:?} of {} with more than one tensor of {}; keep one of its [pairs]",
                map.shown(),
                b.path().display(),
                a.path().display()
            );
        }
        if let Some(l) = &p.layout {
            let problem = if !ElementKind::decodable(ta.dtype) || !ElementKind::decodable(tb.dtype)
            {
                Some(format!(
                    "{} against {} is compared byte for byte, as stored",
                    ta.dtype, tb.dtype
                ))
            } else {
                l.resolve(&tb.shape, &ta.shape).err()
            };
            if let Some(problem) = problem {
                bail!("{}: {}: layout {l}: {problem}", map.shown(), p.shown());
            }
        }
        explicit.insert(x, p);
    }
    Ok(explicit)
}

/// Pairs by the map and by name (steps 1 and 2 of the module contract).
pub fn align(a: &Dump, b: &Dump, map: &NameMap) -> Result<Alignment> {
    let explicit_a = explicit_pairs(a, b, map)?;
    let used_b: HashSet<&str> = explicit_a.values().map(|p| p.b.as_str()).collect();
    let mut b_by_key: HashMap<String, &str> = HashMap::new();
    for t in b.tensors() {
        if used_b.contains(t.name.as_str()) {
            continue;
        }
        let key = map.key(&t.name, Side::B)?;
        if let Some(other) = b_by_key.insert(key.clone(), &t.name) {
            bail!(
                "{}: tensors {other:?} and {:?} both map to the name {key:?}; fix the [[rewrite]] \
                 rules of {}",
                b.path().display(),
                t.name,
                map.shown()
            );
        }
    }
    let mut seen_a_keys: HashMap<String, &str> = HashMap::new();
    let mut out = Alignment::default();
    for t in a.tensors() {
        let (key, b_name, by, layout) = if let Some(p) = explicit_a.get(t.name.as_str()) {
            (
                t.name.clone(),
                Some(p.b.as_str()),
                PairedBy::MapPair,
                p.layout.clone(),
            )
        } else {
            let key = map.key(&t.name, Side::A)?;
            if let Some(other) = seen_a_keys.insert(key.clone(), &t.name) {
                bail!(
                    "{}: tensors {other:?} and {:?} both map to the name {key:?}; fix the [[rewrite]] \
                 rules of {}",
                    a.path().display(),
                    t.name,
                    map.shown()
                );
            }
            let by = if key == t.name {
                PairedBy::Name
            } else {
                PairedBy::MapRewrite
            };
            let found = b_by_key.remove(&key);
            let by = match found {
                Some(y) if y != key && by == PairedBy::Name => PairedBy::MapRewrite,
                _ => by,
            };
            (key, found, by, None)
        };
        match b_name {
            Some(y) => {
                let tb = b.get(y).expect("names come from B");
                out.pairs.push(Pair {
                    key,
                    a: t.name.clone(),
                    b: y.to_string(),
                    by,
                    shapes: if layout.is_some() {
                        ShapeRelation::Layout
                    } else {
                        relate_shapes(&t.shape, &tb.shape)
                    },
                    layout,
                    evidence: None,
                });
            }
            None => out.unmatched_a.push(t.name.clone()),
        }
    }
    let remaining: HashSet<&str> = b_by_key.values().copied().collect();
    out.unmatched_b = b
        .tensors()
        .iter()
        .filter(|t| remaining.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    Ok(out)
}

/// Positions of a dump's tensors in its execution order, by name.
fn positions(d: &Dump) -> HashMap<&str, usize> {
    d.tensors()
        .iter()
        .enumerate()
        .map(|(k, t)| (t.name.as_str(), k))
        .collect()
}

fn evidence(s: &value::Scored, runner_up: Option<&value::Scored>, b: &Dump) -> Evidence {
    Evidence {
        score: s.score,
        max_abs: s.metrics.max_abs,
        cosine: s.metrics.cosine,
        runner_up: runner_up.map(|r| RunnerUp {
            b: b.tensors()[r.b].name.clone(),
            layout: (!r.layout.is_identity()).then(|| r.layout.to_string()),
            score: r.score,
        }),
    }
}

/// The layout a pair is recorded with, and its shape relation: as stored when the shapes relate
/// as today, else the layout (an as-is reading of shapes that differ by inner singleton dims is
/// written as a reshape to A's shape).
fn recorded(layout: &Layout, a: &[usize], b: &[usize]) -> (Option<Layout>, ShapeRelation) {
    let relation = relate_shapes(a, b);
    match (layout.is_identity(), relation) {
        (true, ShapeRelation::Mismatch) => (
            Some(Layout {
                steps: vec![layout::Step::Reshape(a.to_vec())],
            }),
            ShapeRelation::Layout,
        ),
        (true, relation) => (None, relation),
        (false, _) => (Some(layout.clone()), ShapeRelation::Layout),
    }
}

/// Name pairs whose shapes differ read through their best layout, when one scores.
fn reconcile_layouts(a: &Dump, b: &Dump, alignment: &mut Alignment) {
    let (pa, pb) = (positions(a), positions(b));
    for p in alignment
        .pairs
        .iter_mut()
        .filter(|p| p.shapes == ShapeRelation::Mismatch)
    {
        if let Some(s) = value::best_layout(a, b, pa[p.a.as_str()], pb[p.b.as_str()]) {
            let (ta, tb) = (a.get(&p.a).expect("paired"), b.get(&p.b).expect("paired"));
            (p.layout, p.shapes) = recorded(&s.layout, &ta.shape, &tb.shape);
            p.evidence = Some(evidence(&s, None, b));
        }
    }
}

/// The common name of a value pair (module contract).
fn common_name(a: &str, b: &str) -> String {
    if Stage::parse(a).is_some() || Stage::parse(b).is_none() {
        a.to_string()
    } else {
        b.to_string()
    }
}

/// Pairs the unmatched tensors by value, in place.
fn pair_values(a: &Dump, b: &Dump, alignment: &mut Alignment) {
    let (pa, pb) = (positions(a), positions(b));
    let free_a: Vec<usize> = alignment
        .unmatched_a
        .iter()
        .map(|n| pa[n.as_str()])
        .collect();
    let free_b: Vec<usize> = alignment
        .unmatched_b
        .iter()
        .map(|n| pb[n.as_str()])
        .collect();
    let anchors: Vec<(usize, usize)> = alignment
        .pairs
        .iter()
        .map(|p| (pa[p.a.as_str()], pb[p.b.as_str()]))
        .collect();
    let found = value::pair_by_value(a, b, &free_a, &free_b, &anchors);
    let mut taken_a = HashSet::new();
    let mut taken_b = HashSet::new();
    for f in &found {
        let (ta, tb) = (&a.tensors()[f.a], &b.tensors()[f.chosen.b]);
        let (layout, shapes) = recorded(&f.chosen.layout, &ta.shape, &tb.shape);
        alignment.pairs.push(Pair {
            key: common_name(&ta.name, &tb.name),
            a: ta.name.clone(),
            b: tb.name.clone(),
            by: PairedBy::Value,
            shapes,
            layout,
            evidence: Some(evidence(&f.chosen, f.runner_up.as_ref(), b)),
        });
        taken_a.insert(ta.name.as_str());
        taken_b.insert(tb.name.as_str());
    }
    alignment.pairs.sort_by_key(|p| pa[p.a.as_str()]);
    alignment
        .unmatched_a
        .retain(|n| !taken_a.contains(n.as_str()));
    alignment
        .unmatched_b
        .retain(|n| !taken_b.contains(n.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_singletons_reconcile_other_differences_do_not() {
        assert_eq!(relate_shapes(&[1, 5, 3], &[1, 5, 3]), ShapeRelation::Equal);
        assert_eq!(
            relate_shapes(&[5, 3], &[1, 5, 3]),
            ShapeRelation::BatchReconciled {
                side: Side::B,
                dropped: 1
            }
        );
        assert_eq!(
            relate_shapes(&[1, 1, 5, 3], &[5, 3]),
            ShapeRelation::BatchReconciled {
                side: Side::A,
                dropped: 2
            }
        );
        assert_eq!(relate_shapes(&[2, 5, 3], &[5, 3]), ShapeRelation::Mismatch);
        assert_eq!(relate_shapes(&[3, 5], &[5, 3]), ShapeRelation::Mismatch);
    }
}
