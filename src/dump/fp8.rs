//! Exact decoding of the 8-bit float formats safetensors names: each of the 256 byte values of a
//! format maps to one `f64` (every FP8 value is exactly representable), through a table built
//! once from the format's definition.
//!
//! Contract (the formats as `ml_dtypes` defines them; cross-checked in
//! `tests/python/test_foreign_dumps.py`):
//! - `F8_E4M3` (OCP `e4m3fn`): bias 7, no infinities, `S.1111.111` is NaN, max 448;
//! - `F8_E5M2`: bias 15, IEEE-like (exponent 31: infinity when the mantissa is 0, else NaN);
//! - `F8_E4M3FNUZ` / `F8_E5M2FNUZ`: bias 8 / 16, no infinities, no negative zero: `0x80` is NaN;
//! - `F8_E8M0` (OCP scale, `e8m0fnu`): unsigned, `2^(e - 127)`, `0xff` is NaN.

use safetensors::Dtype;
use std::sync::LazyLock;

type Table = [f64; 256];

/// Sign, exponent and mantissa layout of a small float with a sign bit.
struct Layout {
    mantissa_bits: u32,
    bias: i32,
    /// NaN/Inf rules.
    specials: Specials,
}

enum Specials {
    /// Only `S.1…1.1…1` is NaN (e4m3fn).
    AllOnesNan,
    /// IEEE: the top exponent is Inf (mantissa 0) or NaN.
    Ieee,
    /// `0x80` (negative zero's pattern) is the only NaN (fnuz).
    NegativeZeroNan,
}

fn value(byte: u8, l: &Layout) -> f64 {
    let exp_bits = 7 - l.mantissa_bits;
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((byte >> l.mantissa_bits) & ((1 << exp_bits) - 1));
    let mant = f64::from(byte & ((1 << l.mantissa_bits) - 1));
    let top = (1 << exp_bits) - 1;
    match l.specials {
        Specials::NegativeZeroNan if byte == 0x80 => return f64::NAN,
        Specials::AllOnesNan if byte & 0x7f == 0x7f => return f64::NAN,
        Specials::Ieee if exp == top => {
            return if mant == 0.0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            };
        }
        _ => {}
    }
    let scale = f64::from(1u32 << l.mantissa_bits);
    if exp == 0 {
        sign * (mant / scale) * 2f64.powi(1 - l.bias)
    } else {
        sign * (1.0 + mant / scale) * 2f64.powi(exp - l.bias)
    }
}

fn table(l: Layout) -> Table {
    std::array::from_fn(|b| value(b as u8, &l))
}

static E4M3: LazyLock<Table> = LazyLock::new(|| {
    table(Layout {
        mantissa_bits: 3,
        bias: 7,
        specials: Specials::AllOnesNan,
    })
});
static E5M2: LazyLock<Table> = LazyLock::new(|| {
    table(Layout {
        mantissa_bits: 2,
        bias: 15,
        specials: Specials::Ieee,
    })
});
static E4M3_FNUZ: LazyLock<Table> = LazyLock::new(|| {
    table(Layout {
        mantissa_bits: 3,
        bias: 8,
        specials: Specials::NegativeZeroNan,
    })
});
static E5M2_FNUZ: LazyLock<Table> = LazyLock::new(|| {
    table(Layout {
        mantissa_bits: 2,
        bias: 16,
        specials: Specials::NegativeZeroNan,
    })
});
static E8M0: LazyLock<Table> = LazyLock::new(|| {
    std::array::from_fn(|b| {
        if b == 0xff {
            f64::NAN
        } else {
            2f64.powi(b as i32 - 127)
        }
    })
});

/// The decoding table of an 8-bit float dtype, `None` for any other dtype.
pub fn table_of(dtype: Dtype) -> Option<&'static Table> {
    Some(match dtype {
        Dtype::F8_E4M3 => &E4M3,
        Dtype::F8_E5M2 => &E5M2,
        Dtype::F8_E4M3FNUZ => &E4M3_FNUZ,
        Dtype::F8_E5M2FNUZ => &E5M2_FNUZ,
        Dtype::F8_E8M0 => &E8M0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landmark_values_of_each_format() {
        let e4m3 = table_of(Dtype::F8_E4M3).unwrap();
        assert_eq!(e4m3[0x7e], 448.0); // max
        assert_eq!(e4m3[0x01], 2f64.powi(-9)); // smallest subnormal
        assert_eq!(e4m3[0x38], 1.0);
        assert!(e4m3[0x7f].is_nan() && e4m3[0xff].is_nan());
        assert_eq!(e4m3[0x80], 0.0); // negative zero
        let e5m2 = table_of(Dtype::F8_E5M2).unwrap();
        assert_eq!(e5m2[0x7b], 57344.0);
        assert_eq!(e5m2[0x7c], f64::INFINITY);
        assert_eq!(e5m2[0xfc], f64::NEG_INFINITY);
        assert!(e5m2[0x7d].is_nan());
        assert_eq!(e5m2[0x3c], 1.0);
        let fnuz = table_of(Dtype::F8_E4M3FNUZ).unwrap();
        assert!(fnuz[0x80].is_nan());
        assert_eq!(fnuz[0x7f], 240.0);
        let e8m0 = table_of(Dtype::F8_E8M0).unwrap();
        assert_eq!((e8m0[127], e8m0[0]), (1.0, 2f64.powi(-127)));
        assert!(e8m0[255].is_nan());
        assert!(table_of(Dtype::F16).is_none());
    }
}
