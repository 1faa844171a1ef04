//! Layouts: how B's tensor is read to give A's layout (`docs/alignment.md`, "Map file").
//!
//! Contract:
//! - a [`Layout`] is a chain of [`Step`]s applied left to right to B's shape: `reshape(d…)` (same
//!   element order and count) and `permute(p…)` (numpy `transpose` axes); the empty chain reads B
//!   as is. Its text form (`reshape(201,6,64)|permute(1,0,2)`) parses back to the same chain
//!   ([`Layout::from_str`] is strict: nothing else is accepted, errors say what is wrong);
//! - [`Layout::resolve`] checks a chain against B's and A's shapes and gives a [`Strided`] read:
//!   the B element offset of every A position, as strided dims (no index table). The chain's
//!   result, singleton dims dropped, must equal A's shape with singleton dims dropped; a reshape
//!   that follows a permute must split or merge the permuted dims (it cannot reorder elements);
//! - [`hypotheses`] lists the layouts that turn B's shape into A's by splitting and merging dims
//!   and permuting them, simplest first (as is, then a pure reshape, then permutes), deduplicated
//!   by the element order they give, and bounded ([`MAX_HYPOTHESES`]; ranks over [`MAX_PERMUTED_RANK`]
//!   get the as-is and reshape readings only). Nothing here knows DINOv3.

use std::collections::BTreeSet;
use std::fmt;

mod hypotheses;
#[cfg(test)]
mod tests;
pub use hypotheses::{MAX_HYPOTHESES, MAX_PERMUTED_RANK, hypotheses};

/// One step of a layout chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Reshape(Vec<usize>),
    Permute(Vec<usize>),
}

/// A chain of steps (B → A); empty = as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Layout {
    pub steps: Vec<Step>,
}

fn list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Reshape(d) => format!("reshape({})", list(d)),
                Step::Permute(p) => format!("permute({})", list(p)),
            })
            .collect();
        f.write_str(&steps.join("|"))
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(text: &str) -> Result<Layout, String> {
        if text.trim().is_empty() {
            return Err("an empty layout; leave `layout` out to read B as is".into());
        }
        let steps = text
            .split('|')
            .map(|step| parse_step(step.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layout { steps })
    }
}

fn parse_step(step: &str) -> Result<Step, String> {
    let (op, rest) = step
        .split_once('(')
        .ok_or_else(|| format!("step {step:?} is not `reshape(…)` or `permute(…)`"))?;
    let args = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("step {step:?} does not end with `)`"))?;
    let numbers = if args.trim().is_empty() {
        vec![]
    } else {
        args.split(',')
            .map(|n| {
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{:?} in step {step:?} is not a whole number", n.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    match op.trim() {
        "reshape" => Ok(Step::Reshape(numbers)),
        "permute" => {
            let distinct: BTreeSet<usize> = numbers.iter().copied().collect();
            if distinct.len() != numbers.len() || numbers.iter().any(|&p| p >= numbers.len()) {
                return Err(format!(
                    "step {step:?}: the axes are not a permutation of 0..{}",
                    numbers.len()
                ));
            }
            Ok(Step::Permute(numbers))
        }
        other => Err(format!(
            "unknown step {other:?} in {step:?}; a layout has only `reshape(…)` and `permute(…)` steps"
        )),
    }
}

/// A shape with its singleton dims dropped.
pub fn squeeze(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}

/// How B's elements are read in A's order: strided dims, outermost first; the B element offset of
/// A's flat position `i` is `Σ index_k · stride_k` over the row-major unravelling of `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strided {
    /// `(size, stride)` per dim, singleton dims dropped, adjacent contiguous dims merged.
    pub dims: Vec<(usize, usize)>,
}

impl Strided {
    /// Whether A's order is B's order (nothing to gather).
    pub fn is_contiguous(&self) -> bool {
        self.dims.len() <= 1 && self.dims.first().is_none_or(|&(_, s)| s == 1)
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().map(|d| d.0).product()
    }

    /// The B element offset of A's flat position `flat`.
    pub fn offset(&self, mut flat: usize) -> usize {
        let mut offset = 0;
        for &(size, stride) in self.dims.iter().rev() {
            offset += (flat % size) * stride;
            flat /= size;
        }
        offset
    }

    /// Copies the elements of A's positions `lo..lo + count` out of B's bytes (`size` bytes per
    /// element) into `out`, in A's order.
    pub fn gather(&self, b: &[u8], size: usize, lo: usize, count: usize, out: &mut [u8]) {
        if count == 0 {
            return;
        }
        if self.is_contiguous() {
            out[..count * size].copy_from_slice(&b[lo * size..(lo + count) * size]);
            return;
        }
        let rank = self.dims.len();
        let mut index = vec![0usize; rank];
        let mut rest = lo;
        for k in (0..rank).rev() {
            index[k] = rest % self.dims[k].0;
            rest /= self.dims[k].0;
        }
        let (inner_size, inner_stride) = self.dims[rank - 1];
        let mut written = 0;
        while written < count {
            let base: usize = (0..rank - 1).map(|k| index[k] * self.dims[k].1).sum();
            let run = (inner_size - index[rank - 1]).min(count - written);
            for r in 0..run {
                let from = (base + (index[rank - 1] + r) * inner_stride) * size;
                let to = (written + r) * size;
                out[to..to + size].copy_from_slice(&b[from..from + size]);
            }
            written += run;
            index[rank - 1] = 0;
            for k in (0..rank - 1).rev() {
                index[k] += 1;
                if index[k] < self.dims[k].0 {
                    break;
                }
                index[k] = 0;
            }
        }
    }
}

impl crate::metrics::Gather for Strided {
    fn gather(&self, b: &[u8], size: usize, lo: usize, count: usize, out: &mut [u8]) {
        Strided::gather(self, b, size, lo, count, out);
    }
}

/// The dims of a chain being resolved: fine `(size, stride)` dims, grouped into the logical dims.
struct Grouped {
    fine: Vec<(usize, usize)>,
    /// Per logical dim, how many consecutive fine dims it spans.
    groups: Vec<usize>,
}

impl Grouped {
    fn contiguous(shape: &[usize]) -> Grouped {
        let mut stride = 1;
        let mut fine = vec![(0, 0); shape.len()];
        for (k, &d) in shape.iter().enumerate().rev() {
            fine[k] = (d, stride);
            stride *= d;
        }
        Grouped {
            fine,
            groups: vec![1; shape.len()],
        }
    }

    /// Whether the fine dims read B in its own order.
    fn is_row_major(&self) -> bool {
        let mut expected = 1;
        for &(size, stride) in self.fine.iter().rev().filter(|f| f.0 != 1) {
            if stride != expected {
                return false;
            }
            expected *= size;
        }
        true
    }

    fn shape(&self) -> Vec<usize> {
        let mut at = 0;
        self.groups
            .iter()
            .map(|&g| {
                let d = self.fine[at..at + g].iter().map(|f| f.0).product();
                at += g;
                d
            })
            .collect()
    }

    fn permute(&mut self, p: &[usize]) -> Result<(), String> {
        if p.len() != self.groups.len() {
            return Err(format!(
                "permute({}) has {} axes but the shape {:?} has {}",
                list(p),
                p.len(),
                self.shape(),
                self.groups.len()
            ));
        }
        let mut starts = Vec::with_capacity(self.groups.len());
        let mut at = 0;
        for &g in &self.groups {
            starts.push(at);
            at += g;
        }
        let mut fine = Vec::with_capacity(self.fine.len());
        for &axis in p {
            fine.extend_from_slice(&self.fine[starts[axis]..starts[axis] + self.groups[axis]]);
        }
        self.groups = p.iter().map(|&axis| self.groups[axis]).collect();
        self.fine = fine;
        Ok(())
    }

    /// Regroups the fine dims as `shape`, splitting fine dims where a new boundary falls inside one.
    fn reshape(&mut self, shape: &[usize]) -> Result<(), String> {
        let (have, want) = (
            self.fine.iter().map(|f| f.0).product::<usize>(),
            shape.iter().product::<usize>(),
        );
        if have != want {
            return Err(format!(
                "reshape({}) needs {want} elements but the shape {:?} holds {have}",
                list(shape),
                self.shape()
            ));
        }
        if self.is_row_major() {
            // Elements in B's own order: any reshape of the same count is a plain regrouping.
            *self = Grouped::contiguous(shape);
            return Ok(());
        }
        let mut fine: Vec<(usize, usize)> = Vec::new();
        let mut groups = Vec::with_capacity(shape.len());
        let mut source = self.fine.iter().copied().filter(|f| f.0 != 1);
        let mut pending: Option<(usize, usize)> = None;
        for &d in shape {
            let mut need = d;
            let mut count = 0;
            while need > 1 {
                let (size, stride) = match pending.take().or_else(|| source.next()) {
                    Some(f) => f,
                    None => unreachable!("element counts agree"),
                };
                if size <= need && need.is_multiple_of(size) {
                    fine.push((size, stride));
                    need /= size;
                } else if size.is_multiple_of(need) {
                    // Split: the outer part (`need` of it) belongs to this dim, the rest to the next.
                    let inner = size / need;
                    fine.push((need, stride * inner));
                    pending = Some((inner, stride));
                    need = 1;
                } else {
                    return Err(format!(
                        "reshape({}) does not split or merge the dims of {:?} (after a permute a \
                         reshape cannot reorder elements)",
                        list(shape),
                        self.shape()
                    ));
                }
                count += 1;
            }
            groups.push(count);
        }
        self.fine = fine;
        self.groups = groups;
        Ok(())
    }
}

impl Layout {
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// How far from "as is" the layout is, for tie-breaks: 2 per permute, 1 per reshape.
    pub fn cost(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Permute(_) => 2,
                Step::Reshape(_) => 1,
            })
            .sum()
    }

    /// Checks the chain against B's and A's shapes; the strided read of B in A's order.
    pub fn resolve(&self, b_shape: &[usize], a_shape: &[usize]) -> Result<Strided, String> {
        let mut g = Grouped::contiguous(b_shape);
        for step in &self.steps {
            match step {
                Step::Reshape(d) => g.reshape(d)?,
                Step::Permute(p) => g.permute(p)?,
            }
        }
        let result = g.shape();
        if squeeze(&result) != squeeze(a_shape) {
            return Err(format!(
                "reading B {b_shape:?} through {self} gives {result:?}, not A's shape {a_shape:?} \
                 (singleton dims aside)"
            ));
        }
        let mut dims: Vec<(usize, usize)> = Vec::new();
        for (size, stride) in g.fine.into_iter().filter(|f| f.0 != 1) {
            match dims.last_mut() {
                Some(last) if last.1 == size * stride => *last = (last.0 * size, stride),
                _ => dims.push((size, stride)),
            }
        }
        Ok(Strided { dims })
    }
}
