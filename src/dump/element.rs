//! Element decoding: raw little-endian tensor bytes to `f64`, the type every metric accumulates in.
//!
//! Contract: [`ElementKind::of`] says how a dtype is compared: floats (F16, BF16, F32, F64 and the
//! 8-bit floats, decoded exactly by [`super::fp8`]) by value with NaN/Inf tracked, integers and
//! booleans exactly, anything else (the packed FP4/FP6 formats, complex) byte for byte. [`decode_into`] fills `out` with `out.len()` elements starting at element 0 of
//! `bytes`; integers above 2^53 lose precision there, which is why exactness for integers is
//! decided on the raw values, not on the decoded ones.

use safetensors::Dtype;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementKind {
    Float,
    Integer,
    Bool,
    /// Compared byte for byte only.
    Opaque,
}

impl ElementKind {
    pub fn of(dtype: Dtype) -> ElementKind {
        match dtype {
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 => ElementKind::Float,
            Dtype::F8_E4M3
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
            | Dtype::F8_E8M0 => ElementKind::Float,
            Dtype::I8
            | Dtype::U8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64 => ElementKind::Integer,
            Dtype::BOOL => ElementKind::Bool,
            _ => ElementKind::Opaque,
        }
    }

    /// Whether [`decode_into`] supports the dtype.
    pub fn decodable(dtype: Dtype) -> bool {
        ElementKind::of(dtype) != ElementKind::Opaque
    }
}

/// Bytes per element for decodable dtypes.
pub fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

/// Decodes `out.len()` elements of `dtype` from the start of `bytes`.
///
/// Panics if `bytes` is shorter than `out.len()` elements or the dtype is not decodable; callers
/// check both (the reader validated byte counts).
#[inline(always)] // so that each caller compiled for AVX2 gets a vectorized decode
pub fn decode_into(dtype: Dtype, bytes: &[u8], out: &mut [f64]) {
    macro_rules! decode {
        ($t:ty, $conv:expr) => {{
            const N: usize = std::mem::size_of::<$t>();
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
                let v = <$t>::from_le_bytes(c.try_into().unwrap());
                *o = $conv(v);
            }
        }};
    }
    assert!(bytes.len() >= out.len() * element_size(dtype).max(1));
    match dtype {
        Dtype::F32 => decode!(f32, f64::from),
        Dtype::F64 => decode!(f64, |v| v),
        Dtype::F16 => decode!(u16, |v| f64::from(half::f16::from_bits(v))),
        Dtype::BF16 => decode!(u16, |v| f64::from(half::bf16::from_bits(v))),
        Dtype::I8 => decode!(i8, f64::from),
        Dtype::U8 => decode!(u8, f64::from),
        Dtype::I16 => decode!(i16, f64::from),
        Dtype::U16 => decode!(u16, f64::from),
        Dtype::I32 => decode!(i32, f64::from),
        Dtype::U32 => decode!(u32, f64::from),
        Dtype::I64 => decode!(i64, |v| v as f64),
        Dtype::U64 => decode!(u64, |v| v as f64),
        Dtype::BOOL => decode!(u8, |v: u8| f64::from(u8::from(v != 0))),
        other => match super::fp8::table_of(other) {
            Some(table) => decode!(u8, |v: u8| table[usize::from(v)]),
            None => panic!("decode_into: {other} is not decodable"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_half_types_and_ints() {
        let mut out = [0.0; 2];
        let h: Vec<u8> = [half::f16::from_f32(1.5), half::f16::NEG_INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        decode_into(Dtype::F16, &h, &mut out);
        assert_eq!(out, [1.5, f64::NEG_INFINITY]);
        let b: Vec<u8> = [half::bf16::from_f32(-2.0), half::bf16::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        decode_into(Dtype::BF16, &b, &mut out);
        assert_eq!(out[0], -2.0);
        assert!(out[1].is_nan());
        decode_into(Dtype::I16, &(-3i16).to_le_bytes().repeat(2), &mut out);
        assert_eq!(out, [-3.0, -3.0]);
        decode_into(Dtype::BOOL, &[0, 7], &mut out);
        assert_eq!(out, [0.0, 1.0]);
    }
}
