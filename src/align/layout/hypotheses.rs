//! The layout hypotheses between two shapes of one element count (see [`super`]'s contract).
//!
//! Every hypothesis has one canonical form: B's dims (singletons dropped) split into *atoms* in
//! B's order, a permutation of the atoms, and a merge of adjacent permuted atoms into A's dims.
//! The forms are found by permuting both shapes' dims (σ for A, τ for B) and refining the two
//! permuted shapes into common atoms when their cumulative products divide each other; atoms that
//! stay adjacent and in order are merged, so two readings that put elements in the same order
//! have the same form.

use super::{Layout, Step, squeeze};
use std::collections::BTreeSet;

/// At most this many hypotheses per pair of shapes.
pub const MAX_HYPOTHESES: usize = 16;
/// Shapes of more non-singleton dims than this are only read as is or reshaped.
pub const MAX_PERMUTED_RANK: usize = 5;

/// The canonical form: atom sizes in B's order, and the permutation `q` (A order → B order).
type Form = (Vec<usize>, Vec<usize>);

/// The layouts that read B's shape as A's, simplest first (see the module docs).
pub fn hypotheses(b_shape: &[usize], a_shape: &[usize]) -> Vec<Layout> {
    let (sb, sa) = (squeeze(b_shape), squeeze(a_shape));
    if sb.iter().product::<usize>() != sa.iter().product::<usize>() {
        return vec![];
    }
    let orders = |rank: usize| {
        if rank <= MAX_PERMUTED_RANK {
            permutations(rank)
        } else {
            vec![(0..rank).collect()]
        }
    };
    let mut forms: BTreeSet<(usize, Form)> = BTreeSet::new();
    for tau in orders(sb.len()) {
        for sigma in orders(sa.len()) {
            if let Some(form) = canonical(&sb, &tau, &sa, &sigma) {
                forms.insert((disorder(&form.1), form));
            }
        }
    }
    forms
        .into_iter()
        .take(MAX_HYPOTHESES)
        .map(|(_, (atoms, q))| pretty(&atoms, &q, b_shape, a_shape))
        .collect()
}

/// How far a permutation is from the identity: its count of inversions.
fn disorder(q: &[usize]) -> usize {
    (0..q.len())
        .map(|i| (i + 1..q.len()).filter(|&j| q[j] < q[i]).count())
        .sum()
}

/// All permutations of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn extend(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix.clone());
            return;
        }
        for k in 0..n {
            if !prefix.contains(&k) {
                prefix.push(k);
                extend(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(&mut Vec::with_capacity(n), n, &mut out);
    out
}

/// One atom of a refinement: its size, the B dim and the A dim it lies in, its rank in the
/// refinement (B permuted by τ).
#[derive(Clone, Copy)]
struct Atom {
    size: usize,
    b_dim: usize,
    a_dim: usize,
    rank: usize,
}

/// The common refinement of B permuted by `tau` and A permuted by `sigma`, when their cumulative
/// products divide each other; then the canonical form.
fn canonical(sb: &[usize], tau: &[usize], sa: &[usize], sigma: &[usize]) -> Option<Form> {
    let tb: Vec<usize> = tau.iter().map(|&k| sb[k]).collect();
    let ta: Vec<usize> = sigma.iter().map(|&k| sa[k]).collect();
    let mut atoms = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut rb, mut ra) = (tb.first().copied(), ta.first().copied());
    while let (Some(b), Some(a)) = (rb, ra) {
        let (small, large) = (a.min(b), a.max(b));
        if !large.is_multiple_of(small) {
            return None;
        }
        atoms.push(Atom {
            size: small,
            b_dim: tau[i],
            a_dim: sigma[j],
            rank: atoms.len(),
        });
        rb = Some(b / small).filter(|&r| r > 1).or_else(|| {
            i += 1;
            tb.get(i).copied()
        });
        ra = Some(a / small).filter(|&r| r > 1).or_else(|| {
            j += 1;
            ta.get(j).copied()
        });
    }
    let mut in_b = atoms.clone();
    in_b.sort_by_key(|t| (t.b_dim, t.rank));
    let mut in_a = atoms;
    in_a.sort_by_key(|t| (t.a_dim, t.rank));
    let position = |t: &Atom| {
        in_b.iter()
            .position(|u| u.rank == t.rank)
            .expect("same atoms")
    };
    let q: Vec<usize> = in_a.iter().map(position).collect();
    Some(merge_runs(&in_b, &q))
}

/// Merges the atoms that stay adjacent and in order (runs of `q` that count up by one).
fn merge_runs(in_b: &[Atom], q: &[usize]) -> Form {
    let mut runs: Vec<(usize, usize)> = Vec::new(); // (first B position, last B position)
    for &p in q {
        match runs.last_mut() {
            Some(run) if run.1 + 1 == p => run.1 = p,
            _ => runs.push((p, p)),
        }
    }
    let mut by_b: Vec<usize> = (0..runs.len()).collect();
    by_b.sort_by_key(|&r| runs[r].0);
    let atoms: Vec<usize> = by_b
        .iter()
        .map(|&r| in_b[runs[r].0..=runs[r].1].iter().map(|t| t.size).product())
        .collect();
    let q: Vec<usize> = (0..runs.len())
        .map(|r| by_b.iter().position(|&x| x == r).expect("every run"))
        .collect();
    (atoms, q)
}

/// The layout text of a canonical form: a plain permute of B's dims when no dim is split or
/// merged, else `reshape(atoms)|permute(q)`, then a reshape to A's shape when still needed.
fn pretty(atoms: &[usize], q: &[usize], b_shape: &[usize], a_shape: &[usize]) -> Layout {
    let (sb, sa) = (squeeze(b_shape), squeeze(a_shape));
    let identity = q.iter().enumerate().all(|(k, &p)| k == p);
    if identity {
        return Layout {
            steps: if sb == sa {
                vec![]
            } else {
                vec![Step::Reshape(a_shape.to_vec())]
            },
        };
    }
    let mut steps = Vec::new();
    let permuted: Vec<usize>;
    if let Some(q) = whole_dims(atoms, q, &sb) {
        let whole: Vec<usize> = (0..b_shape.len()).filter(|&k| b_shape[k] != 1).collect();
        let mut p: Vec<usize> = (0..b_shape.len()).collect();
        for (slot, &from) in whole.iter().zip(&q) {
            p[*slot] = whole[from];
        }
        permuted = p.iter().map(|&k| b_shape[k]).collect();
        steps.push(Step::Permute(p));
    } else {
        permuted = q.iter().map(|&k| atoms[k]).collect();
        steps.push(Step::Reshape(atoms.to_vec()));
        steps.push(Step::Permute(q.to_vec()));
    }
    if squeeze(&permuted) != sa {
        steps.push(Step::Reshape(a_shape.to_vec()));
    }
    Layout { steps }
}

/// When every atom is a run of whole B dims (nothing split), the permutation of B's dims
/// (singletons dropped) it amounts to.
fn whole_dims(atoms: &[usize], q: &[usize], sb: &[usize]) -> Option<Vec<usize>> {
    let mut spans = Vec::with_capacity(atoms.len()); // B dims of each atom
    let mut next = 0;
    for &atom in atoms {
        let start = next;
        let mut size = 1;
        while size < atom {
            size *= sb.get(next)?;
            next += 1;
        }
        if size != atom {
            return None;
        }
        spans.push(start..next);
    }
    Some(q.iter().flat_map(|&k| spans[k].clone()).collect())
}
