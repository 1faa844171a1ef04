//! The comparison kernel: per-chunk partial sums over decoded elements, vectorized (AVX2 when the
//! CPU has it), combined in a fixed order by [`super::compare`].

use super::{CHUNK, LANES, Tolerance, View};
use crate::dump::element::{decode_into, element_size};
use safetensors::Dtype;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Partial {
    pub(super) max_abs: f64,
    /// chunk index of max_abs
    pub(super) max_chunk: usize,
    pub(super) sum_abs: f64,
    pub(super) sum_sq: f64,
    pub(super) dot: f64,
    pub(super) norm_a: f64,
    pub(super) norm_b: f64,
    pub(super) max_rel: f64,
    pub(super) finite_pairs: u64,
    pub(super) nan_a: u64,
    pub(super) nan_b: u64,
    pub(super) inf_a: u64,
    pub(super) inf_b: u64,
    pub(super) mismatches: u64,
    pub(super) over: u64,
}

impl Partial {
    pub(super) fn merge(mut self, o: &Partial) -> Partial {
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
impl Elem for half::bf16 {
    /// bf16 is the upper half of an f32: widening is a shift, exact, and branch-free (so it
    /// vectorizes, unlike `half`'s conversion). Every value but NaN payloads converts as
    /// `decode_into` does, and the kernel only asks whether a NaN is one.
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(f32::from_bits(u32::from(self.to_bits()) << 16))
    }
}

/// `bytes` as elements of `T` in place, when they are aligned for it.
fn in_place<T: bytemuck::Pod>(bytes: &[u8]) -> Option<&[T]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// Runs the kernel on one chunk. F32 / F32, F64 / F64 and pairs of F32 and BF16 (a model run
/// against its bf16 run) whose bytes are aligned are read in place; everything else is decoded
/// into `xa` / `xb` (the chunk's length) first.
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
    use half::bf16;
    let in_place = match (a.dtype, b.dtype) {
        (Dtype::F32, Dtype::F32) => in_place::<f32>(ra)
            .zip(in_place::<f32>(rb))
            .map(|(x, y)| float_chunk_body(x, y, tol, index)),
        (Dtype::F64, Dtype::F64) => in_place::<f64>(ra)
            .zip(in_place::<f64>(rb))
            .map(|(x, y)| float_chunk_body(x, y, tol, index)),
        (Dtype::F32, Dtype::BF16) => in_place::<f32>(ra)
            .zip(in_place::<bf16>(rb))
            .map(|(x, y)| float_chunk_body(x, y, tol, index)),
        (Dtype::BF16, Dtype::F32) => in_place::<bf16>(ra)
            .zip(in_place::<f32>(rb))
            .map(|(x, y)| float_chunk_body(x, y, tol, index)),
        (Dtype::BF16, Dtype::BF16) => in_place::<bf16>(ra)
            .zip(in_place::<bf16>(rb))
            .map(|(x, y)| float_chunk_body(x, y, tol, index)),
        _ => None,
    };
    if let Some(p) = in_place {
        return p;
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

pub(super) fn run_chunk(
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
    pub(super) static SCRATCH: std::cell::RefCell<(Vec<f64>, Vec<f64>)> =
        std::cell::RefCell::new((vec![0.0; CHUNK], vec![0.0; CHUNK]));
}
