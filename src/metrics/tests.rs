//! Unit tests of the metrics, against values computed by hand.

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

#[test]
fn f32_against_bf16_read_in_place_equals_the_decoded_path() {
    // Values with every kind of element: normal, tiny, zero, NaN, infinities, over 2 chunks.
    let n = 2 * CHUNK + 37;
    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        f32::from_bits(0x3f80_0000 | (state >> 9)) - 1.5
    };
    let mut a: Vec<f32> = (0..n).map(|_| next() * 7.0).collect();
    let mut b: Vec<half::bf16> = a
        .iter()
        .map(|&x| half::bf16::from_f32(x + next() * 1e-3))
        .collect();
    (a[3], b[3]) = (f32::NAN, half::bf16::NAN);
    (a[5], b[5]) = (1.0, half::bf16::INFINITY);
    (a[8], b[8]) = (1e-40, half::bf16::from_bits(1));
    let a_bytes = f32s(&a);
    let b_bytes: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    // The same bytes one byte off their alignment take the decoding path.
    let shifted = |bytes: &[u8]| [&[0u8][..], bytes].concat();
    for (x, y, xd, yd) in [
        (&a_bytes[..], &b_bytes[..], Dtype::F32, Dtype::BF16),
        (&b_bytes[..], &a_bytes[..], Dtype::BF16, Dtype::F32),
        (&b_bytes[..], &b_bytes[..], Dtype::BF16, Dtype::BF16),
    ] {
        let (x_off, y_off) = (shifted(x), shifted(y));
        let aligned = compare(
            View { dtype: xd, data: x },
            View { dtype: yd, data: y },
            TOL,
        );
        let decoded = compare(
            View {
                dtype: xd,
                data: &x_off[1..],
            },
            View {
                dtype: yd,
                data: &y_off[1..],
            },
            TOL,
        );
        assert_eq!(aligned, decoded, "{xd} vs {yd}");
    }
}
