//! Cheap signatures that prune value candidates before any exact comparison.
//!
//! Contract:
//! - [`Moments`] come from one streaming pass over a tensor (decoded chunk by chunk, nothing
//!   held): finite count, sum, sum of squares, min, max, largest magnitude. They do not depend on
//!   the layout, so they are compared before any layout is tried;
//! - [`Moments::may_pass`] is a *necessary* condition for a candidate to reach a score of
//!   [`super::MIN_SCORE`]: when the score is at least that, rms(Δ) and max|Δ| are at most
//!   (1 − MIN_SCORE) of the larger rms and magnitude, which bounds how far the two means, rms,
//!   minima and maxima can be apart (triangle inequality). It never rejects a true partner;
//! - [`sampled`] compares a fixed pseudo-random sample of A's positions with B read through a
//!   layout: the same statistics as the exact score, on [`SAMPLES`] positions, without reading
//!   either tensor in full. It ranks candidates; only the best go on to the exact comparison.

use super::score;
use crate::align::layout::Strided;
use crate::dump::element::{ElementKind, decode_into, element_size};
use crate::metrics::View;

/// Positions a sampled comparison reads.
pub const SAMPLES: usize = 256;
const CHUNK: usize = 8 * 1024;

/// What one pass over a tensor tells (finite values only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    pub finite: u64,
    pub mean: f64,
    pub rms: f64,
    pub min: f64,
    pub max: f64,
    /// max |x|.
    pub peak: f64,
}

impl Moments {
    /// One streaming pass over a decodable tensor.
    pub fn of(v: View<'_>) -> Moments {
        debug_assert!(ElementKind::decodable(v.dtype));
        let n = v.elements();
        let size = element_size(v.dtype);
        let mut buf = vec![0f64; CHUNK.min(n)];
        let (mut finite, mut sum, mut sum_sq) = (0u64, 0f64, 0f64);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for lo in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - lo);
            decode_into(v.dtype, &v.data[lo * size..], &mut buf[..len]);
            for &x in buf[..len].iter().filter(|x| x.is_finite()) {
                finite += 1;
                sum += x;
                sum_sq += x * x;
                min = min.min(x);
                max = max.max(x);
            }
        }
        let count = finite.max(1) as f64;
        Moments {
            finite,
            mean: sum / count,
            rms: (sum_sq / count).sqrt(),
            min,
            max,
            peak: min.abs().max(max.abs()),
        }
    }

    /// Whether the tensor carries evidence: finite values that are not all equal.
    pub fn informative(&self) -> bool {
        self.finite > 0 && self.min < self.max
    }

    /// A necessary condition for a score of at least [`super::MIN_SCORE`] (module docs).
    pub fn may_pass(&self, other: &Moments) -> bool {
        let slack = 1.0 - super::MIN_SCORE;
        let rms = self.rms.max(other.rms) * slack;
        let peak = self.peak.max(other.peak) * slack;
        // A little room for rounding and for positions finite on one side only.
        let (rms, peak) = (rms * 1.01 + 1e-30, peak * 1.01 + 1e-30);
        (self.mean - other.mean).abs() <= rms
            && (self.rms - other.rms).abs() <= rms
            && (self.min - other.min).abs() <= peak
            && (self.max - other.max).abs() <= peak
    }
}

/// The sample positions for tensors of `n` elements: [`SAMPLES`] of them (all when fewer),
/// pseudo-random but fixed by `n`, ascending.
pub fn positions(n: usize) -> Vec<usize> {
    if n <= SAMPLES {
        return (0..n).collect();
    }
    let mut state = (n as u64) ^ 0x9E37_79B9_7F4A_7C15;
    let mut out: Vec<usize> = (0..SAMPLES)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % n as u64) as usize
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One element of a tensor, decoded.
fn element(v: View<'_>, index: usize) -> f64 {
    let size = element_size(v.dtype);
    let mut x = [0f64; 1];
    decode_into(v.dtype, &v.data[index * size..(index + 1) * size], &mut x);
    x[0]
}

/// A's values at `at` (see [`positions`]), decoded once per A tensor.
pub fn sample(a: View<'_>, at: &[usize]) -> Vec<f64> {
    at.iter().map(|&i| element(a, i)).collect()
}

/// The score of A's sample against B read through `order` at the same A positions; the
/// magnitudes are the tensors' own ([`Moments::peak`], [`Moments::rms`]).
pub fn sampled(
    a_values: &[f64],
    at: &[usize],
    b: View<'_>,
    order: &Strided,
    moments: (&Moments, &Moments),
) -> f64 {
    let (mut dot, mut na, mut nb, mut sum_sq, mut max, mut finite) = (0.0, 0.0, 0.0, 0.0, 0f64, 0);
    for (&x, &i) in a_values.iter().zip(at) {
        let y = element(b, order.offset(i));
        if x.is_finite() && y.is_finite() {
            let d = (x - y).abs();
            dot += x * y;
            na += x * x;
            nb += y * y;
            sum_sq += d * d;
            max = max.max(d);
            finite += 1;
        }
    }
    if finite == 0 {
        return f64::NEG_INFINITY;
    }
    let cosine = if na > 0.0 && nb > 0.0 {
        dot / (na * nb).sqrt()
    } else {
        0.0
    };
    let rms = (sum_sq / f64::from(finite)).sqrt();
    score(cosine, rms, max, moments.0, moments.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn view(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn moments(values: &[f32]) -> Moments {
        Moments::of(View {
            dtype: Dtype::F32,
            data: &view(values),
        })
    }

    #[test]
    fn moments_skip_non_finite_values() {
        let m = moments(&[1.0, -3.0, f32::NAN, 2.0, f32::INFINITY]);
        assert_eq!((m.finite, m.min, m.max, m.peak), (3, -3.0, 2.0, 3.0));
        assert_eq!(m.mean, 0.0);
        assert!((m.rms - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(!moments(&[0.5; 8]).informative());
        assert!(!moments(&[f32::NAN; 8]).informative());
    }

    /// The pruning is a necessary condition: a partner that scores ≥ MIN_SCORE passes it, one
    /// whose moments are further apart than the score allows does not.
    #[test]
    fn moment_pruning_keeps_drifted_partners_and_drops_others() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let drifted: Vec<f32> = x.iter().map(|v| v * 1.01 + 0.01).collect();
        let (mx, md) = (moments(&x), moments(&drifted));
        assert!(mx.may_pass(&md) && md.may_pass(&mx));
        let shifted: Vec<f32> = x.iter().map(|v| v + 3.0).collect();
        assert!(!mx.may_pass(&moments(&shifted)));
        let scaled: Vec<f32> = x.iter().map(|v| v * 3.0).collect();
        assert!(!mx.may_pass(&moments(&scaled)));
    }

    #[test]
    fn sample_positions_are_fixed_by_the_count_and_ascending() {
        assert_eq!(positions(5), vec![0, 1, 2, 3, 4]);
        let p = positions(77_184);
        assert_eq!(p, positions(77_184));
        assert!(p.windows(2).all(|w| w[0] < w[1]) && p.len() > SAMPLES - 4);
        assert!(*p.last().unwrap() < 77_184);
    }

    /// The sampled score of a tensor against itself under the permutation that makes it equal is
    /// 1; under the wrong permutation it is low.
    #[test]
    fn sampled_scores_tell_the_right_reading() {
        let x: Vec<f32> = (0..600)
            .map(|i| ((i * 7919 % 613) as f32) / 100.0 - 3.0)
            .collect();
        // B = x.transpose(1, 0) of shape [20, 30] -> [30, 20].
        let b: Vec<f32> = (0..600).map(|k| x[(k % 20) * 30 + k / 20]).collect();
        let (bytes_a, bytes_b) = (view(&x), view(&b));
        let (va, vb) = (
            View {
                dtype: Dtype::F32,
                data: &bytes_a,
            },
            View {
                dtype: Dtype::F32,
                data: &bytes_b,
            },
        );
        let at = positions(600);
        let values = sample(va, &at);
        let (ma, mb) = (moments(&x), moments(&b));
        let right: crate::align::layout::Layout = "permute(1,0)".parse().unwrap();
        let right = right.resolve(&[30, 20], &[20, 30]).unwrap();
        assert_eq!(sampled(&values, &at, vb, &right, (&ma, &mb)), 1.0);
        let wrong: crate::align::layout::Layout = "reshape(20,30)".parse().unwrap();
        let wrong = wrong.resolve(&[30, 20], &[20, 30]).unwrap();
        assert!(sampled(&values, &at, vb, &wrong, (&ma, &mb)) < 0.5);
    }
}
