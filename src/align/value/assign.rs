//! The global assignment of value candidates: one-to-one, respecting execution order on both
//! sides.
//!
//! Contract:
//! - `anchors` are the pairs already made (by name or map), as (A position, B position). The
//!   longest chain of them increasing on both sides (ties go to the earlier B positions) splits both dumps into segments; a candidate may only pair tensors of the same
//!   segment, so value pairs never cross a chained anchor;
//! - [`monotone`] picks the set of candidates, increasing in A and in B, whose total [`Weight`]
//!   is largest (lexicographically: the sum of quantized scores, then the sum of layout
//!   simplicities, then of scope shallowness, then the earlier B positions). Chains of equal values and repeated blocks
//!   therefore never cross: a pairing that crosses is not a candidate set;
//! - [`leftovers`] then pairs, in A's order, an A tensor left out with its best candidate whose B
//!   tensor is still free, when that candidate's score is at least [`super::OUT_OF_ORDER_SCORE`]:
//!   independent values may be computed in another order (RoPE tables before the patch
//!   embedding), and such a pair is unambiguous.

/// What a candidate is worth: quantized score (1e-6 steps, so that equal values read through
/// different layouts weigh the same), then layout simplicity (higher is simpler), then how
/// shallow B's name is scoped (higher is shallower: a module's output as its parent sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Weight {
    pub score: i64,
    pub simplicity: i64,
    pub shallowness: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Position in A's execution order.
    pub i: usize,
    /// Position in B's execution order.
    pub j: usize,
    pub weight: Weight,
}

/// The sum a chain is ranked by: scores, simplicities, shallowness, then earlier B positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Total(i64, i64, i64, i64);

impl Total {
    fn plus(self, c: &Candidate) -> Total {
        Total(
            self.0 + c.weight.score,
            self.1 + c.weight.simplicity,
            self.2 + c.weight.shallowness,
            self.3 - c.j as i64,
        )
    }
}

/// The longest chain of anchors increasing in both positions (anchors given in any order).
pub fn anchor_chain(anchors: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut sorted = anchors.to_vec();
    sorted.sort_unstable();
    // Patience sorting over the B positions, with predecessors.
    let mut tails: Vec<usize> = Vec::new(); // index into sorted of the smallest tail per length
    let mut previous = vec![usize::MAX; sorted.len()];
    for (k, &(_, j)) in sorted.iter().enumerate() {
        let len = tails.partition_point(|&t| sorted[t].1 < j);
        if len > 0 {
            previous[k] = tails[len - 1];
        }
        if len == tails.len() {
            tails.push(k);
        } else if j < sorted[tails[len]].1 {
            tails[len] = k;
        }
    }
    let mut chain = Vec::new();
    let mut at = tails.last().copied();
    while let Some(k) = at {
        chain.push(sorted[k]);
        at = (previous[k] != usize::MAX).then_some(previous[k]);
    }
    chain.reverse();
    chain
}

/// Indices of the chosen candidates (see the module contract), in A's order.
pub fn monotone(candidates: &[Candidate], anchors: &[(usize, usize)]) -> Vec<usize> {
    let chain = anchor_chain(anchors);
    let segment_a = |i: usize| chain.partition_point(|&(x, _)| x < i);
    let segment_b = |j: usize| chain.partition_point(|&(_, y)| y < j);
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&k| segment_a(candidates[k].i) == segment_b(candidates[k].j))
        .collect();
    order.sort_by_key(|&k| (candidates[k].i, candidates[k].j));
    let width = candidates.iter().map(|c| c.j + 1).max().unwrap_or(0);
    // Fenwick tree over B positions: the best chain ending strictly before each position.
    let mut tree: Vec<Option<(Total, usize)>> = vec![None; width + 1];
    let best_before = |tree: &[Option<(Total, usize)>], j: usize| {
        let mut at = j; // positions 0..j, 1-based index j
        let mut best: Option<(Total, usize)> = None;
        while at > 0 {
            best = better(best, tree[at]);
            at &= at - 1;
        }
        best
    };
    let mut ending: Vec<Option<(Total, usize)>> = vec![None; candidates.len()];
    let mut group = 0;
    while group < order.len() {
        let i = candidates[order[group]].i;
        let end = group + order[group..].partition_point(|&k| candidates[k].i == i);
        for &k in &order[group..end] {
            let c = &candidates[k];
            let (base, previous) =
                best_before(&tree, c.j).map_or((Total::default(), usize::MAX), |b| b);
            ending[k] = Some((base.plus(c), previous));
        }
        for &k in &order[group..end] {
            let mut at = candidates[k].j + 1;
            let entry = ending[k].map(|(total, _)| (total, k));
            while at <= width {
                tree[at] = better(tree[at], entry);
                at += at & at.wrapping_neg();
            }
        }
        group = end;
    }
    let last = order
        .iter()
        .filter_map(|&k| ending[k].map(|(t, _)| (t, k)))
        .fold(None, |best, entry| better(best, Some(entry)));
    let mut chosen = Vec::new();
    let mut at = last.map(|(_, k)| k);
    while let Some(k) = at {
        chosen.push(k);
        let previous = ending[k].expect("on the chain").1;
        at = (previous != usize::MAX).then_some(previous);
    }
    chosen.reverse();
    chosen
}

/// The larger total; on equal totals the earlier candidate index (a fixed, input-ordered rule).
fn better(x: Option<(Total, usize)>, y: Option<(Total, usize)>) -> Option<(Total, usize)> {
    match (x, y) {
        (Some(p), Some(q)) => Some(if q.0 > p.0 || (q.0 == p.0 && q.1 < p.1) {
            q
        } else {
            p
        }),
        (p, None) => p,
        (None, q) => q,
    }
}

/// The out-of-order pass (module contract): indices of further candidates, in A's order.
pub fn leftovers(candidates: &[Candidate], chosen: &[usize], min_score: i64) -> Vec<usize> {
    let mut used_a: std::collections::HashSet<usize> =
        chosen.iter().map(|&k| candidates[k].i).collect();
    let mut used_b: std::collections::HashSet<usize> =
        chosen.iter().map(|&k| candidates[k].j).collect();
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&k| candidates[k].weight.score >= min_score)
        .collect();
    // Per A position, best first: score, simplicity, shallowness, earlier B.
    order.sort_by_key(|&k| {
        let c = &candidates[k];
        (
            c.i,
            std::cmp::Reverse(c.weight.score),
            std::cmp::Reverse(c.weight.simplicity),
            std::cmp::Reverse(c.weight.shallowness),
            c.j,
        )
    });
    let mut extra = Vec::new();
    for k in order {
        let c = &candidates[k];
        if !used_a.contains(&c.i) && !used_b.contains(&c.j) {
            used_a.insert(c.i);
            used_b.insert(c.j);
            extra.push(k);
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(i: usize, j: usize, score: i64) -> Candidate {
        Candidate {
            i,
            j,
            weight: Weight {
                score,
                ..Weight::default()
            },
        }
    }

    fn pairs(cands: &[Candidate], chosen: &[usize]) -> Vec<(usize, usize)> {
        chosen.iter().map(|&k| (cands[k].i, cands[k].j)).collect()
    }

    /// Two repeated blocks whose tensors look alike across blocks: the pairing keeps the order.
    #[test]
    fn repeated_blocks_do_not_cross() {
        // A: x0 y0 x1 y1; B: X0 Y0 X1 Y1. x0 also resembles X1 a little more than X0 (noise).
        let cands = vec![
            c(0, 0, 990),
            c(0, 2, 995),
            c(1, 1, 990),
            c(2, 2, 990),
            c(2, 0, 995),
            c(3, 3, 990),
        ];
        assert_eq!(
            pairs(&cands, &monotone(&cands, &[])),
            vec![(0, 0), (1, 1), (2, 2), (3, 3)]
        );
    }

    /// A chain of equal values in B (Identity, Reshape): each A tensor takes one, in order, the
    /// shallower name, then the earlier B position on a tie.
    #[test]
    fn equal_chains_pair_in_order_and_earliest() {
        // A: p q; B: P P' P'' Q, P* equal.
        let cands = vec![c(0, 0, 1000), c(0, 1, 1000), c(0, 2, 1000), c(1, 3, 1000)];
        assert_eq!(pairs(&cands, &monotone(&cands, &[])), vec![(0, 0), (1, 3)]);
        // Scope, then simplicity break the tie before position.
        let mut cands = cands;
        cands[1].weight.shallowness = 1;
        assert_eq!(pairs(&cands, &monotone(&cands, &[])), vec![(0, 1), (1, 3)]);
        cands[2].weight.simplicity = 1;
        assert_eq!(pairs(&cands, &monotone(&cands, &[])), vec![(0, 2), (1, 3)]);
    }

    #[test]
    fn anchors_split_the_search_and_crossing_anchors_are_dropped() {
        // Anchor (2, 2): candidate (1, 3) would cross it.
        let cands = vec![c(1, 3, 1000), c(1, 1, 600), c(3, 4, 1000)];
        assert_eq!(
            pairs(&cands, &monotone(&cands, &[(2, 2)])),
            vec![(1, 1), (3, 4)]
        );
        assert_eq!(
            anchor_chain(&[(0, 5), (1, 1), (2, 2)]),
            vec![(1, 1), (2, 2)]
        );
    }

    #[test]
    fn leftovers_pair_confident_tensors_out_of_order() {
        // RoPE (A 2) computed first in B (position 0): the monotone pass keeps the majority.
        let cands = vec![c(0, 1, 1000), c(1, 2, 1000), c(2, 0, 1000), c(3, 3, 700)];
        let chosen = monotone(&cands, &[]);
        assert_eq!(pairs(&cands, &chosen), vec![(0, 1), (1, 2), (3, 3)]);
        let extra = leftovers(&cands, &chosen, 900);
        assert_eq!(pairs(&cands, &extra), vec![(2, 0)]);
    }
}
