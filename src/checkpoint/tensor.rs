//! A tensor as `torch.save` describes it: a strided view into one storage of the archive.
//!
//! Contract:
//! - a [`TensorRef`] is checked when it is made ([`TensorRef::new`]): every element it addresses
//!   lies inside its storage (offsets and strides in elements, all arithmetic checked), and an
//!   empty view starts at most at the storage's end, so reading it later cannot go out of bounds;
//! - [`TensorRef::is_contiguous`] is row-major contiguity (dimensions of size 1 and empty
//!   tensors are contiguous whatever their strides);
//! - [`contiguous_bytes`] gives the row-major contiguous bytes of a tensor in little-endian order:
//!   a borrowed slice of the storage when the tensor is contiguous and the archive little-endian,
//!   else a copy (gathered element by element, bytes swapped for a big-endian archive).

use safetensors::Dtype;
use std::borrow::Cow;

/// One tensor of the checkpoint: dtype, shape and strides (in elements) of a view into the
/// storage `storage` (the archive's `data/<storage>` entry), starting `storage_offset` elements in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub storage_offset: usize,
    pub storage: String,
}

/// The byte width of one element (every dtype torch writes is a whole number of bytes).
pub fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize().div_ceil(8)
}

impl TensorRef {
    /// Checks that the view lies inside a storage of `storage_elements` elements.
    pub fn new(
        dtype: Dtype,
        shape: Vec<usize>,
        strides: Vec<usize>,
        storage_offset: usize,
        storage: String,
        storage_elements: usize,
    ) -> Result<TensorRef, String> {
        if shape.len() != strides.len() {
            return Err(format!(
                "size {shape:?} and stride {strides:?} have different lengths"
            ));
        }
        let t = TensorRef {
            dtype,
            shape,
            strides,
            storage_offset,
            storage,
        };
        let numel = t.numel().ok_or("its element count overflows")?;
        if numel == 0 {
            // An empty view may start at the storage's end (`x[n:]`), not past it.
            if storage_offset > storage_elements {
                return Err(format!(
                    "it is empty but starts at element {storage_offset} of storage `{}`, which \
                     has {storage_elements} elements",
                    t.storage
                ));
            }
            return Ok(t);
        }
        let last = t
            .shape
            .iter()
            .zip(&t.strides)
            .try_fold(storage_offset, |acc, (&n, &s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            })
            .ok_or("its extent overflows")?;
        if last >= storage_elements {
            return Err(format!(
                "it reaches element {last} of storage `{}`, which has {storage_elements} elements \
                 (offset {storage_offset}, size {:?}, stride {:?})",
                t.storage, t.shape, t.strides
            ));
        }
        Ok(t)
    }

    /// The number of elements (`None` on overflow).
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n))
    }

    /// The size in bytes of the tensor's values (row-major contiguous).
    pub fn nbytes(&self) -> usize {
        // `new` checked that the elements fit in a storage, so this cannot overflow.
        self.numel().unwrap_or(0) * element_size(self.dtype)
    }

    /// Row-major contiguous (a copy-free view of the storage).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n == 0 {
                return true;
            }
            if n != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }
}

/// The tensor's values, row-major contiguous and little-endian; `storage` is the whole storage's
/// bytes (the checked [`TensorRef::new`] guarantees the view lies inside it).
pub fn contiguous_bytes<'a>(t: &TensorRef, storage: &'a [u8], big_endian: bool) -> Cow<'a, [u8]> {
    let width = element_size(t.dtype);
    if t.numel() == Some(0) {
        return Cow::Borrowed(&[]);
    }
    let start = t.storage_offset * width;
    if t.is_contiguous() {
        let slice = &storage[start..start + t.nbytes()];
        if !big_endian || width == 1 {
            return Cow::Borrowed(slice);
        }
        let mut out = slice.to_vec();
        out.chunks_exact_mut(width).for_each(<[u8]>::reverse);
        return Cow::Owned(out);
    }
    let mut out = Vec::with_capacity(t.nbytes());
    let mut index = vec![0usize; t.shape.len()];
    for _ in 0..t.numel().unwrap_or(0) {
        let element: usize = t.storage_offset
            + index
                .iter()
                .zip(&t.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let at = element * width;
        let bytes = &storage[at..at + width];
        if big_endian {
            out.extend(bytes.iter().rev());
        } else {
            out.extend_from_slice(bytes);
        }
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], strides: &[usize], offset: usize, elements: usize) -> TensorRef {
        TensorRef::new(
            Dtype::I16,
            shape.to_vec(),
            strides.to_vec(),
            offset,
            "0".into(),
            elements,
        )
        .unwrap()
    }

    fn storage(n: i16) -> Vec<u8> {
        (0..n).flat_map(i16::to_le_bytes).collect()
    }

    fn values(b: &[u8]) -> Vec<i16> {
        b.chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    /// An empty view may start at its storage's end (`x[2:]` of two elements), not past it: a
    /// checkpoint saying offset 3 into 2 elements made `dinodiff checkpoint --format json` panic
    /// (found by fuzzing, fuzz/regressions/checkpoint/).
    #[test]
    fn empty_views_start_at_most_at_the_storage_end() {
        let s = storage(2);
        let at_end = t(&[0], &[1], 2, 2);
        assert!(contiguous_bytes(&at_end, &s, false).is_empty());
        assert!(contiguous_bytes(&at_end, &s, true).is_empty());
        let e = TensorRef::new(Dtype::F32, vec![0], vec![0], 3, "2".into(), 2).unwrap_err();
        assert_eq!(
            e,
            "it is empty but starts at element 3 of storage `2`, which has 2 elements"
        );
    }

    #[test]
    fn views_transposes_and_offsets() {
        let s = storage(12);
        let full = t(&[3, 4], &[4, 1], 0, 12);
        assert!(full.is_contiguous());
        assert!(matches!(
            contiguous_bytes(&full, &s, false),
            Cow::Borrowed(_)
        ));
        let tr = t(&[4, 3], &[1, 4], 0, 12);
        assert!(!tr.is_contiguous());
        assert_eq!(
            values(&contiguous_bytes(&tr, &s, false)),
            [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
        );
        let rows = t(&[2, 4], &[4, 1], 4, 12);
        assert_eq!(
            values(&contiguous_bytes(&rows, &s, false)),
            [4, 5, 6, 7, 8, 9, 10, 11]
        );
        let col = t(&[3], &[4], 1, 12);
        assert_eq!(values(&contiguous_bytes(&col, &s, false)), [1, 5, 9]);
        let scalar = t(&[], &[], 7, 12);
        assert_eq!(values(&contiguous_bytes(&scalar, &s, false)), [7]);
        let empty = t(&[0, 4], &[4, 1], 0, 0);
        assert!(contiguous_bytes(&empty, &[], false).is_empty());
        let broadcast = t(&[1, 3], &[99, 1], 0, 12);
        assert!(broadcast.is_contiguous());
    }

    #[test]
    fn big_endian_storages_are_swapped() {
        let s: Vec<u8> = (0..4i16).flat_map(i16::to_be_bytes).collect();
        let full = t(&[4], &[1], 0, 4);
        assert_eq!(values(&contiguous_bytes(&full, &s, true)), [0, 1, 2, 3]);
        let rev = t(&[2], &[2], 1, 4);
        assert_eq!(values(&contiguous_bytes(&rev, &s, true)), [1, 3]);
    }

    #[test]
    fn views_outside_their_storage_are_refused() {
        let e = TensorRef::new(Dtype::F32, vec![3, 4], vec![4, 1], 1, "7".into(), 12);
        assert!(e.unwrap_err().contains("reaches element 12 of storage `7`"));
        let e = TensorRef::new(Dtype::F32, vec![2], vec![usize::MAX], 1, "7".into(), 12);
        assert!(e.unwrap_err().contains("overflows"));
        let e = TensorRef::new(
            Dtype::F32,
            vec![usize::MAX, 4],
            vec![1, 1],
            0,
            "7".into(),
            1,
        );
        assert!(e.unwrap_err().contains("overflows"));
        let e = TensorRef::new(Dtype::F32, vec![2], vec![1, 1], 0, "7".into(), 12);
        assert!(e.unwrap_err().contains("different lengths"));
    }
}
