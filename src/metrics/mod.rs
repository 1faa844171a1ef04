//! Pure functions on tensor bytes: difference metrics between two tensors and summary statistics
//! of one.
//!
//! Contracts (the definitions `docs/alignment.md` documents):
//! - every element is decoded to `f64` and every sum accumulates in `f64`; results do not depend
//!   on the thread count (partial results are combined in a fixed order);
//! - NaN and ±Inf are counted per side and never enter a maximum or a sum. A position where the
//!   two sides are not the same non-finite value (NaN vs a number, +Inf vs -Inf, Inf vs a number)
//!   is a *non-finite mismatch*: it makes the pair fail whatever the tolerance. NaN vs NaN and
//!   Inf vs the same Inf are equal;
//! - `max_abs` is over positions where both sides are finite, with its flat index and both values;
//!   `mean_abs`, `rms` likewise; the relative error at a position is `|a-b| / max(|a|, |b|)` (0 when
//!   both are 0); `cosine` is `a·b / (|a| |b|)` over finite positions
//!   (1 when both are all zeros, 0 when exactly one is);
//! - a position is *over tolerance* when `|a-b| > atol + rtol * max(|a|, |b|)`;
//! - integer and bool tensors are compared exactly against integer and bool tensors: any
//!   differing element fails, whatever the tolerance; against a float tensor, by value with the
//!   tolerance; opaque dtypes (complex, packed F4/F6) are compared byte for byte; the 8-bit
//!   floats are floats (decoded exactly, `dump::fp8`).

mod kernel;
mod stats;
#[cfg(test)]
mod tests;
pub mod tokens;

use crate::dump::element::{ElementKind, decode_into, element_size};
use kernel::{Partial, SCRATCH, run_chunk};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
pub use stats::{Stats, stats};

/// Elements per work item: big enough to amortize scheduling, small enough to stay in L2.
/// Decode buffers live on the heap: rayon nests stolen jobs on one stack, so big stack arrays
/// could overflow its 2 MiB thread stacks.
const CHUNK: usize = 8 * 1024;
const LANES: usize = 16;

/// A tensor's bytes with their dtype.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub dtype: Dtype,
    pub data: &'a [u8],
}

impl<'a> View<'a> {
    /// The tensor `t` of dump `d`, in place.
    pub fn of(d: &'a crate::dump::Dump, t: &crate::dump::TensorEntry) -> View<'a> {
        View {
            dtype: t.dtype,
            data: d.data(t),
        }
    }

    pub fn elements(&self) -> usize {
        if ElementKind::decodable(self.dtype) {
            self.data.len() / element_size(self.dtype)
        } else {
            self.data.len()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    /// `diff`'s default: atol = rtol = 1e-4.
    pub const DEFAULT: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-4,
    };
}

/// Differences between two tensors of the same element count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub elements: usize,
    /// Max |a-b| over positions where both are finite (0 if there is none).
    pub max_abs: f64,
    /// Flat index of `max_abs` (first occurrence), with the two values there.
    pub argmax: Option<usize>,
    pub a_at_max: Option<f64>,
    pub b_at_max: Option<f64>,
    pub mean_abs: f64,
    pub rms: f64,
    pub max_rel: f64,
    /// None when no position is finite on both sides.
    pub cosine: Option<f64>,
    pub nan_a: u64,
    pub nan_b: u64,
    pub inf_a: u64,
    pub inf_b: u64,
    pub nonfinite_mismatches: u64,
    /// Positions over tolerance (for integers/bools/opaque: positions that differ).
    pub over_tolerance: u64,
    /// True when the comparison was exact (integer, bool or opaque dtypes).
    pub exact: bool,
}

impl Comparison {
    /// Whether this pair fails the tolerance (or differs at all, for exact kinds).
    pub fn fails(&self) -> bool {
        self.over_tolerance > 0 || self.nonfinite_mismatches > 0
    }
}

/// Why two dtypes cannot be compared, if they cannot: an opaque dtype (complex, F4, F6) is
/// compared byte for byte, so only with the same dtype. [`compare`] needs this to be `None`.
pub fn incomparable(a: Dtype, b: Dtype) -> Option<String> {
    let opaque = |d| !ElementKind::decodable(d);
    (a != b && (opaque(a) || opaque(b))).then(|| {
        format!(
            "{a} against {b}: dinodiff compares {} tensors only with tensors of the same dtype \
             (byte for byte); convert one side to the other's dtype",
            if opaque(a) { a } else { b }
        )
    })
}

/// How B's elements are read in A's order when B has another layout (`align::layout::Strided`).
pub trait Gather: Sync {
    /// Copies B's elements at A's positions `lo..lo + count` (`size` bytes each) out of `b` into
    /// `out`, in A's order.
    fn gather(&self, b: &[u8], size: usize, lo: usize, count: usize, out: &mut [u8]);
}

/// Compares two tensors element by element. Both must hold the same number of elements
/// (alignment checks shapes before calling) and be comparable ([`incomparable`]). Dtypes may
/// differ: floats of two widths (an f16 port against an f32 reference) and integers against
/// floats are compared by value with the tolerance; integers and bools against each other
/// exactly.
pub fn compare(a: View<'_>, b: View<'_>, tol: Tolerance) -> Comparison {
    compare_through(a, b, None, tol)
}

/// [`compare`] with B read through `order` (its elements in A's order; `None`: as stored).
/// Every metric, the argmax included, is in A's order. A reordered B must be decodable.
pub fn compare_through(
    a: View<'_>,
    b: View<'_>,
    order: Option<&dyn Gather>,
    tol: Tolerance,
) -> Comparison {
    let n = a.elements();
    assert_eq!(n, b.elements(), "compare: element counts differ");
    // Exact when neither side is a float; an integer or bool tensor against a float one (a
    // quantized run against its reference) is compared by value, with the tolerance.
    let exact = ElementKind::of(a.dtype) != ElementKind::Float
        && ElementKind::of(b.dtype) != ElementKind::Float;
    if !ElementKind::decodable(a.dtype) || !ElementKind::decodable(b.dtype) {
        assert!(order.is_none(), "opaque dtypes are compared as stored");
        return compare_bytes(a, b);
    }
    let sa = element_size(a.dtype);
    let chunks = n.div_ceil(CHUNK);
    let bounds = |c: usize| (c * CHUNK, CHUNK.min(n - c * CHUNK));
    let a_chunk = |lo: usize, len: usize| View {
        dtype: a.dtype,
        data: &a.data[lo * sa..(lo + len) * sa],
    };
    let chunk_partial = |c: usize, tol: Tolerance| {
        let (lo, len) = bounds(c);
        let mut p = with_b_chunk(b, order, lo, len, &mut |vb| {
            SCRATCH.with(|scratch| {
                let (xa, xb) = &mut *scratch.borrow_mut();
                run_chunk(a_chunk(lo, len), vb, 0, &mut xa[..len], &mut xb[..len], tol)
            })
        });
        p.max_chunk = c;
        p
    };
    // Exact kinds fail on any difference: tolerance zero.
    let tol = if exact {
        Tolerance {
            atol: 0.0,
            rtol: 0.0,
        }
    } else {
        tol
    };
    let partials: Vec<Partial> = (0..chunks)
        .into_par_iter()
        .map(|c| chunk_partial(c, tol))
        .collect();
    let mut total = partials
        .iter()
        .fold(Partial::default(), |acc, p| acc.merge(p));
    // Locate the maximum inside the chunk that holds it (one more decode of one chunk).
    let (argmax, a_at, b_at) = if total.finite_pairs == 0 {
        (None, None, None)
    } else {
        let (lo, len) = bounds(total.max_chunk);
        let (mut xa, mut xb) = (vec![0f64; len], vec![0f64; len]);
        decode_into(a.dtype, &a.data[lo * sa..], &mut xa);
        with_b_chunk(b, order, lo, len, &mut |vb| {
            decode_into(b.dtype, vb.data, &mut xb)
        });
        let pos = (0..len)
            .find(|&i| {
                xa[i].is_finite() && xb[i].is_finite() && (xa[i] - xb[i]).abs() == total.max_abs
            })
            .expect("the chunk holding the maximum contains it");
        (
            Some(total.max_chunk * CHUNK + pos),
            Some(xa[pos]),
            Some(xb[pos]),
        )
    };
    // Integers of one dtype are exact on their raw values: f64 cannot tell 2^62 from 2^62 + 1.
    let (mut argmax, mut a_at, mut b_at) = (argmax, a_at, b_at);
    if exact && a.dtype == b.dtype {
        let (differing, first) = raw_element_differences(a, b, order);
        total.over = differing;
        if total.max_abs == 0.0 && differing > 0 {
            let mut x = [0f64; 1];
            let mut y = [0f64; 1];
            let i = first.expect("a difference exists");
            decode_into(a.dtype, &a.data[i * sa..], &mut x);
            with_b_chunk(b, order, i, 1, &mut |vb| {
                decode_into(b.dtype, vb.data, &mut y)
            });
            (argmax, a_at, b_at) = (Some(i), Some(x[0]), Some(y[0]));
        }
    }
    finish(n, &total, (argmax, a_at, b_at), exact)
}

/// Calls `f` with B's elements at A's positions `lo..lo + len`: a slice of B's bytes as stored,
/// or gathered through `order` into a per-thread buffer (8-byte aligned, so the kernel reads it in
/// place).
fn with_b_chunk<R>(
    b: View<'_>,
    order: Option<&dyn Gather>,
    lo: usize,
    len: usize,
    f: &mut dyn FnMut(View<'_>) -> R,
) -> R {
    let size = element_size(b.dtype);
    let Some(order) = order else {
        return f(View {
            dtype: b.dtype,
            data: &b.data[lo * size..(lo + len) * size],
        });
    };
    GATHERED.with(|buffer| {
        let mut words = buffer.borrow_mut();
        words.resize((len * size).div_ceil(8), 0);
        let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len * size];
        order.gather(b.data, size, lo, len, bytes);
        f(View {
            dtype: b.dtype,
            data: bytes,
        })
    })
}

thread_local! {
    /// Per-thread buffer of B's elements gathered in A's order.
    static GATHERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The comparison from the merged partial sums.
fn finish(
    n: usize,
    total: &Partial,
    (argmax, a_at, b_at): (Option<usize>, Option<f64>, Option<f64>),
    exact: bool,
) -> Comparison {
    let finite = total.finite_pairs as f64;
    let cosine = (total.finite_pairs > 0).then(|| {
        let denom = (total.norm_a * total.norm_b).sqrt();
        if denom > 0.0 {
            total.dot / denom
        } else if total.norm_a == 0.0 && total.norm_b == 0.0 {
            1.0
        } else {
            0.0
        }
    });
    Comparison {
        elements: n,
        max_abs: total.max_abs,
        argmax,
        a_at_max: a_at,
        b_at_max: b_at,
        mean_abs: if finite > 0.0 {
            total.sum_abs / finite
        } else {
            0.0
        },
        rms: if finite > 0.0 {
            (total.sum_sq / finite).sqrt()
        } else {
            0.0
        },
        max_rel: total.max_rel,
        cosine,
        nan_a: total.nan_a,
        nan_b: total.nan_b,
        inf_a: total.inf_a,
        inf_b: total.inf_b,
        nonfinite_mismatches: total.mismatches,
        over_tolerance: total.over,
        exact,
    }
}

/// Elements whose raw bytes differ (same dtype on both sides, B read through `order`), and the
/// first of them.
fn raw_element_differences(
    a: View<'_>,
    b: View<'_>,
    order: Option<&dyn Gather>,
) -> (u64, Option<usize>) {
    let size = element_size(a.dtype).max(1);
    let n = a.elements();
    let counts: Vec<(u64, Option<usize>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (lo, len) = (c * CHUNK, CHUNK.min(n - c * CHUNK));
            let x = &a.data[lo * size..(lo + len) * size];
            with_b_chunk(b, order, lo, len, &mut |vb| {
                let mut count = 0;
                let mut first = None;
                for (i, (p, q)) in x
                    .chunks_exact(size)
                    .zip(vb.data.chunks_exact(size))
                    .enumerate()
                {
                    if p != q {
                        count += 1;
                        first.get_or_insert(lo + i);
                    }
                }
                (count, first)
            })
        })
        .collect();
    let total = counts.iter().map(|c| c.0).sum();
    (total, counts.iter().find_map(|c| c.1))
}

fn compare_bytes(a: View<'_>, b: View<'_>) -> Comparison {
    let differing = a
        .data
        .par_chunks(CHUNK)
        .zip(b.data.par_chunks(CHUNK))
        .map(|(x, y)| x.iter().zip(y).filter(|(p, q)| p != q).count() as u64)
        .sum();
    let first = a.data.iter().zip(b.data).position(|(p, q)| p != q);
    Comparison {
        elements: a.data.len(),
        max_abs: if differing > 0 { f64::NAN } else { 0.0 },
        argmax: first,
        a_at_max: first.map(|i| f64::from(a.data[i])),
        b_at_max: first.map(|i| f64::from(b.data[i])),
        mean_abs: 0.0,
        rms: 0.0,
        max_rel: 0.0,
        cosine: None,
        nan_a: 0,
        nan_b: 0,
        inf_a: 0,
        inf_b: 0,
        nonfinite_mismatches: 0,
        over_tolerance: differing,
        exact: true,
    }
}
