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
//! - integer and bool tensors are compared exactly: any differing element fails, whatever the
//!   tolerance; opaque dtypes (FP8, complex, ...) are compared byte for byte.

use crate::dump::element::{ElementKind, decode_into, element_size};
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;

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

impl View<'_> {
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

#[derive(Debug, Clone, Copy, Default)]
struct Partial {
    max_abs: f64,
    /// chunk index of max_abs
    max_chunk: usize,
    sum_abs: f64,
    sum_sq: f64,
    dot: f64,
    norm_a: f64,
    norm_b: f64,
    max_rel: f64,
    finite_pairs: u64,
    nan_a: u64,
    nan_b: u64,
    inf_a: u64,
    inf_b: u64,
    mismatches: u64,
    over: u64,
}

impl Partial {
    fn merge(mut self, o: &Partial) -> Partial {
        if o.max_abs > self.max_abs {
            self.max_abs = o.max_abs;
            self.max_chunk = o.max_chunk;
        }
        self.sum_abs += o.sum_abs;
        self.sum_sq += o.sum_sq;
        self.dot += o.dot;
        self.norm_a += o.norm_a;
        self.norm_b += o.norm_b;
        self.max_rel = self.max_rel.max(o.max_rel);
        self.finite_pairs += o.finite_pairs;
        self.nan_a += o.nan_a;
        self.nan_b += o.nan_b;
        self.inf_a += o.inf_a;
        self.inf_b += o.inf_b;
        self.mismatches += o.mismatches;
        self.over += o.over;
        self
    }
}

/// The float kernel over one decoded chunk: lane-wise and branch-free so that it vectorizes.
/// Non-finite values are rare, so the hot loop only counts positions that are not finite on
/// both sides; a second, scalar pass classifies them when there are any.
#[inline(always)]
fn float_chunk_body<A: Elem, B: Elem>(
    a: &[A],
    b: &[B],
    tol: Tolerance,
    chunk_index: usize,
) -> Partial {
    let mut max = [0f64; LANES];
    let mut sum_abs = [0f64; LANES];
    let mut sum_sq = [0f64; LANES];
    let mut dot = [0f64; LANES];
    let mut na = [0f64; LANES];
    let mut nb = [0f64; LANES];
    let mut max_rel = [0f64; LANES];
    let mut not_both = [0u64; LANES];
    let mut over = [0u64; LANES];
    let mut ai = a.chunks_exact(LANES);
    let mut bi = b.chunks_exact(LANES);
    macro_rules! step {
        ($x:expr, $y:expr, $l:expr) => {{
            let (x, y, l) = ($x, $y, $l);
            let both = x.is_finite() & y.is_finite();
            let xs = if both { x } else { 0.0 };
            let ys = if both { y } else { 0.0 };
            let d = (xs - ys).abs();
            let scale = xs.abs().max(ys.abs());
            let rel = if scale > 0.0 { d / scale } else { 0.0 };
            max[l] = if d > max[l] { d } else { max[l] };
            max_rel[l] = if rel > max_rel[l] { rel } else { max_rel[l] };
            sum_abs[l] += d;
            sum_sq[l] += d * d;
            dot[l] += xs * ys;
            na[l] += xs * xs;
            nb[l] += ys * ys;
            not_both[l] += u64::from(!both);
            over[l] += u64::from(d > tol.atol + tol.rtol * scale);
        }};
    }
    for (ca, cb) in (&mut ai).zip(&mut bi) {
        for l in 0..LANES {
            step!(ca[l].to_f64(), cb[l].to_f64(), l);
        }
    }
    for (&x, &y) in ai.remainder().iter().zip(bi.remainder()) {
        step!(x.to_f64(), y.to_f64(), 0);
    }
    let not_both: u64 = not_both.iter().sum();
    let mut p = Partial {
        max_abs: max.iter().copied().fold(0.0, f64::max),
        max_chunk: chunk_index,
        sum_abs: sum_abs.iter().sum(),
        sum_sq: sum_sq.iter().sum(),
        dot: dot.iter().sum(),
        norm_a: na.iter().sum(),
        norm_b: nb.iter().sum(),
        max_rel: max_rel.iter().copied().fold(0.0, f64::max),
        finite_pairs: a.len() as u64 - not_both,
        over: over.iter().sum(),
        ..Partial::default()
    };
    if not_both > 0 {
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (x.to_f64(), y.to_f64());
            p.nan_a += u64::from(x.is_nan());
            p.nan_b += u64::from(y.is_nan());
            p.inf_a += u64::from(x.is_infinite());
            p.inf_b += u64::from(y.is_infinite());
            let both = x.is_finite() & y.is_finite();
            let same_nonfinite = (x == y) | (x.is_nan() & y.is_nan());
            p.mismatches += u64::from(!both & !same_nonfinite);
        }
    }
    p
}

/// A float element the kernel reads in place (no decode buffer).
trait Elem: Copy + bytemuck::Pod {
    fn to_f64(self) -> f64;
}
impl Elem for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}
impl Elem for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}

/// Runs the kernel on one chunk. Same-dtype F32 and F64 pairs whose bytes are aligned are read
/// in place; everything else is decoded into `xa` / `xb` (the chunk's length) first.
#[inline(always)]
fn chunk_body(
    a: View<'_>,
    b: View<'_>,
    lo: usize,
    xa: &mut [f64],
    xb: &mut [f64],
    tol: Tolerance,
) -> Partial {
    let len = xa.len();
    let index = lo / CHUNK;
    let (sa, sb) = (element_size(a.dtype), element_size(b.dtype));
    let (ra, rb) = (
        &a.data[lo * sa..(lo + len) * sa],
        &b.data[lo * sb..(lo + len) * sb],
    );
    match (a.dtype, b.dtype) {
        (Dtype::F32, Dtype::F32) => {
            if let (Ok(x), Ok(y)) = (
                bytemuck::try_cast_slice::<u8, f32>(ra),
                bytemuck::try_cast_slice::<u8, f32>(rb),
            ) {
                return float_chunk_body(x, y, tol, index);
            }
        }
        (Dtype::F64, Dtype::F64) => {
            if let (Ok(x), Ok(y)) = (
                bytemuck::try_cast_slice::<u8, f64>(ra),
                bytemuck::try_cast_slice::<u8, f64>(rb),
            ) {
                return float_chunk_body(x, y, tol, index);
            }
        }
        _ => {}
    }
    decode_into(a.dtype, ra, xa);
    decode_into(b.dtype, rb, xb);
    float_chunk_body(&*xa, &*xb, tol, index)
}

/// `chunk_body` compiled for a wider instruction set (AVX2: 4 f64 lanes per instruction,
/// AVX-512: 8, instead of SSE2's 2). Results are identical: Rust never contracts or reorders
/// float operations.
macro_rules! chunk_for_target {
    ($name:ident, $feature:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        fn $name(
            a: View<'_>,
            b: View<'_>,
            lo: usize,
            xa: &mut [f64],
            xb: &mut [f64],
            tol: Tolerance,
        ) -> Partial {
            chunk_body(a, b, lo, xa, xb, tol)
        }
    };
}
chunk_for_target!(chunk_avx2, "avx2");
chunk_for_target!(chunk_avx512, "avx512f");

fn run_chunk(
    a: View<'_>,
    b: View<'_>,
    lo: usize,
    xa: &mut [f64],
    xb: &mut [f64],
    tol: Tolerance,
) -> Partial {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { chunk_avx512(a, b, lo, xa, xb, tol) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { chunk_avx2(a, b, lo, xa, xb, tol) };
    }
    chunk_body(a, b, lo, xa, xb, tol)
}

thread_local! {
    /// Per-thread decode buffers, reused across chunks (no allocation or zeroing per chunk).
    static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> =
        std::cell::RefCell::new((vec![0.0; CHUNK], vec![0.0; CHUNK]));
}

/// Why two dtypes cannot be compared, if they cannot: an opaque dtype (FP8, complex, ...) is
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

/// Compares two tensors element by element. Both must hold the same number of elements
/// (alignment checks shapes before calling) and be comparable ([`incomparable`]); dtypes may differ between floats (an f16 port
/// against an f32 reference), in which case the comparison is by value.
pub fn compare(a: View<'_>, b: View<'_>, tol: Tolerance) -> Comparison {
    let n = a.elements();
    assert_eq!(n, b.elements(), "compare: element counts differ");
    let exact = ElementKind::of(a.dtype) != ElementKind::Float
        || ElementKind::of(b.dtype) != ElementKind::Float;
    if !ElementKind::decodable(a.dtype) || !ElementKind::decodable(b.dtype) {
        return compare_bytes(a, b);
    }
    let (sa, sb) = (element_size(a.dtype), element_size(b.dtype));
    let chunks = n.div_ceil(CHUNK);
    let bounds = |c: usize| (c * CHUNK, CHUNK.min(n - c * CHUNK));
    let chunk_partial = |c: usize, tol: Tolerance| {
        let (lo, len) = bounds(c);
        SCRATCH.with(|scratch| {
            let (xa, xb) = &mut *scratch.borrow_mut();
            run_chunk(a, b, lo, &mut xa[..len], &mut xb[..len], tol)
        })
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
        decode_into(b.dtype, &b.data[lo * sb..], &mut xb);
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
        let (differing, first) = raw_element_differences(a, b);
        total.over = differing;
        if total.max_abs == 0.0 && differing > 0 {
            let mut x = [0f64; 1];
            let mut y = [0f64; 1];
            let i = first.expect("a difference exists");
            decode_into(a.dtype, &a.data[i * sa..], &mut x);
            decode_into(b.dtype, &b.data[i * sb..], &mut y);
            (argmax, a_at, b_at) = (Some(i), Some(x[0]), Some(y[0]));
        }
    }
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

/// Elements whose raw bytes differ (same dtype on both sides), and the first of them.
fn raw_element_differences(a: View<'_>, b: View<'_>) -> (u64, Option<usize>) {
    let size = element_size(a.dtype).max(1);
    let per_chunk = CHUNK * size;
    let counts: Vec<(u64, Option<usize>)> = a
        .data
        .par_chunks(per_chunk)
        .zip(b.data.par_chunks(per_chunk))
        .enumerate()
        .map(|(c, (x, y))| {
            let mut n = 0;
            let mut first = None;
            for (i, (p, q)) in x.chunks_exact(size).zip(y.chunks_exact(size)).enumerate() {
                if p != q {
                    n += 1;
                    first.get_or_insert(c * CHUNK + i);
                }
            }
            (n, first)
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

/// Summary statistics of one tensor: min, max, mean, std over finite elements; NaN/Inf counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub elements: usize,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Population standard deviation (ddof = 0).
    pub std: Option<f64>,
    pub nan: u64,
    pub inf: u64,
}

#[derive(Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    nan: u64,
    inf: u64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        n: 0.0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        nan: 0,
        inf: 0,
    };

    /// Chan et al.'s parallel combination of (count, mean, M2).
    fn merge(self, o: Moments) -> Moments {
        if o.n == 0.0 {
            return Moments {
                nan: self.nan + o.nan,
                inf: self.inf + o.inf,
                ..self
            };
        }
        if self.n == 0.0 {
            return Moments {
                nan: self.nan + o.nan,
                inf: self.inf + o.inf,
                ..o
            };
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * o.n / n,
            m2: self.m2 + o.m2 + delta * delta * self.n * o.n / n,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            nan: self.nan + o.nan,
            inf: self.inf + o.inf,
        }
    }
}

pub fn stats(v: View<'_>) -> Stats {
    if !ElementKind::decodable(v.dtype) {
        return Stats {
            elements: v.elements(),
            min: None,
            max: None,
            mean: None,
            std: None,
            nan: 0,
            inf: 0,
        };
    }
    let n = v.elements();
    let size = element_size(v.dtype);
    let parts: Vec<Moments> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let lo = c * CHUNK;
            let len = CHUNK.min(n - lo);
            let mut x = vec![0f64; len];
            decode_into(v.dtype, &v.data[lo * size..], &mut x);
            let x = &x[..];
            let mut m = Moments::EMPTY;
            let mut sum = 0.0;
            for &e in x {
                if e.is_finite() {
                    m.n += 1.0;
                    sum += e;
                    m.min = m.min.min(e);
                    m.max = m.max.max(e);
                } else if e.is_nan() {
                    m.nan += 1;
                } else {
                    m.inf += 1;
                }
            }
            if m.n > 0.0 {
                m.mean = sum / m.n;
                m.m2 = x
                    .iter()
                    .filter(|e| e.is_finite())
                    .map(|e| (e - m.mean) * (e - m.mean))
                    .sum();
            }
            m
        })
        .collect();
    let m = parts.into_iter().fold(Moments::EMPTY, Moments::merge);
    let some = m.n > 0.0;
    Stats {
        elements: n,
        min: some.then_some(m.min),
        max: some.then_some(m.max),
        mean: some.then_some(m.mean),
        std: some.then(|| (m.m2 / m.n).sqrt()),
        nan: m.nan,
        inf: m.inf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    const TOL: Tolerance = Tolerance {
        atol: 1e-3,
        rtol: 0.0,
    };

    #[test]
    fn identical_tensors_are_zero_and_cosine_one() {
        let a = f32s(&[1.0, -2.0, 3.0]);
        let c = compare(
            View {
                dtype: Dtype::F32,
                data: &a,
            },
            View {
                dtype: Dtype::F32,
                data: &a,
            },
            TOL,
        );
        assert_eq!(c.max_abs, 0.0);
        assert_eq!(c.cosine, Some(1.0));
        assert!(!c.fails());
    }

    #[test]
    fn nan_on_one_side_is_a_mismatch_not_a_nan_maximum() {
        let a = f32s(&[1.0, f32::NAN, f32::INFINITY, f32::NAN]);
        let b = f32s(&[1.5, 2.0, f32::INFINITY, f32::NAN]);
        let c = compare(
            View {
                dtype: Dtype::F32,
                data: &a,
            },
            View {
                dtype: Dtype::F32,
                data: &b,
            },
            TOL,
        );
        assert_eq!(c.max_abs, 0.5);
        assert_eq!(c.argmax, Some(0));
        assert_eq!(c.nan_a, 2);
        assert_eq!(c.nan_b, 1);
        assert_eq!(c.inf_a, 1);
        assert_eq!(c.nonfinite_mismatches, 1);
        assert!(c.fails());
    }

    #[test]
    fn integers_compare_exactly_whatever_the_tolerance() {
        let a: Vec<u8> = [1i64, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = [1i64, 2, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let loose = Tolerance {
            atol: 10.0,
            rtol: 1.0,
        };
        let c = compare(
            View {
                dtype: Dtype::I64,
                data: &a,
            },
            View {
                dtype: Dtype::I64,
                data: &b,
            },
            loose,
        );
        assert!(c.exact && c.fails());
        assert_eq!(c.over_tolerance, 1);
        assert_eq!(c.argmax, Some(2));
    }

    #[test]
    fn argmax_found_across_chunks() {
        let n = CHUNK * 3 + 17;
        let a = vec![0f32; n];
        let mut b = vec![0f32; n];
        b[CHUNK * 2 + 5] = -7.0;
        let (a, b) = (f32s(&a), f32s(&b));
        let c = compare(
            View {
                dtype: Dtype::F32,
                data: &a,
            },
            View {
                dtype: Dtype::F32,
                data: &b,
            },
            TOL,
        );
        assert_eq!(c.argmax, Some(CHUNK * 2 + 5));
        assert_eq!(c.b_at_max, Some(-7.0));
        assert_eq!(c.cosine, Some(0.0));
    }

    #[test]
    fn stats_skip_nonfinite() {
        let a = f32s(&[1.0, 3.0, f32::NAN, f32::NEG_INFINITY]);
        let s = stats(View {
            dtype: Dtype::F32,
            data: &a,
        });
        assert_eq!(
            (s.min, s.max, s.mean, s.std),
            (Some(1.0), Some(3.0), Some(2.0), Some(1.0))
        );
        assert_eq!((s.nan, s.inf), (1, 1));
    }
}
