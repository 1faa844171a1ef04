//! The shapes recognized stage values are written with, and the byte work of assembling them:
//! [`reshaped`] (prepend the batch, squeeze an axis), [`patch_rows`] (the last hw rows of a
//! per-token table), [`concat_last`] (pieces concatenated along the last axis).

use super::rules::Reshape;

/// The shape a recognized value is written with.
pub fn reshaped(shape: &[usize], r: Reshape) -> Vec<usize> {
    match r {
        Reshape::AsIs => shape.to_vec(),
        Reshape::PrependBatch if shape.len() == 2 => vec![1, shape[0], shape[1]],
        Reshape::PrependBatch => shape.to_vec(),
        Reshape::Squeeze(axis) if shape.get(axis) == Some(&1) => {
            let mut s = shape.to_vec();
            s.remove(axis);
            s
        }
        Reshape::Squeeze(_) => shape.to_vec(),
        // The rows are cut by the caller, who knows hw ([`patch_rows`]).
        Reshape::PatchRows => shape.to_vec(),
    }
}

/// The last `hw` rows of a per-token table ([1, N, 1, hd] or [N, hd], `element` bytes per
/// value), as ([hw, hd], bytes); `None` when the shape is not such a table.
pub fn patch_rows(
    shape: &[usize],
    bytes: &[u8],
    element: usize,
    hw: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let (n, hd) = match shape {
        [1, n, 1, hd] | [n, hd] => (*n, *hd),
        _ => return None,
    };
    if hw > n || bytes.len() != n * hd * element {
        return None;
    }
    Some((vec![hw, hd], bytes[(n - hw) * hd * element..].to_vec()))
}

/// Concatenates pieces ([.., d_k], same leading dims) along the last axis.
pub fn concat_last(
    pieces: &[(Vec<usize>, Vec<u8>)],
    element: usize,
) -> Option<(Vec<usize>, Vec<u8>)> {
    let first = &pieces.first()?.0;
    let lead = &first[..first.len().checked_sub(1)?];
    if pieces
        .iter()
        .any(|(s, _)| s.len() != first.len() || &s[..lead.len()] != lead)
    {
        return None;
    }
    let rows: usize = lead.iter().product();
    let widths: Vec<usize> = pieces
        .iter()
        .map(|(s, _)| s[lead.len()] * element)
        .collect();
    let mut bytes = Vec::with_capacity(rows * widths.iter().sum::<usize>());
    for r in 0..rows {
        for ((_, b), w) in pieces.iter().zip(&widths) {
            bytes.extend_from_slice(&b[r * w..(r + 1) * w]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(widths.iter().sum::<usize>() / element);
    Some((shape, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshapes_only_change_the_shape_they_can() {
        assert_eq!(reshaped(&[201, 384], Reshape::PrependBatch), [1, 201, 384]);
        assert_eq!(
            reshaped(&[1, 201, 384], Reshape::PrependBatch),
            [1, 201, 384]
        );
        assert_eq!(reshaped(&[1, 1, 384], Reshape::Squeeze(1)), [1, 384]);
        assert_eq!(reshaped(&[1, 2, 384], Reshape::Squeeze(1)), [1, 2, 384]);
    }

    #[test]
    fn patch_rows_keep_the_last_rows() {
        let bytes: Vec<u8> = (0..12).collect(); // N = 3 tokens, hd = 4, 1-byte elements
        assert_eq!(
            patch_rows(&[1, 3, 1, 4], &bytes, 1, 2),
            Some((vec![2, 4], (4..12).collect()))
        );
        assert_eq!(
            patch_rows(&[3, 4], &bytes, 1, 3),
            Some((vec![3, 4], bytes.clone()))
        );
        assert_eq!(patch_rows(&[3, 4], &bytes, 1, 4), None);
        assert_eq!(patch_rows(&[1, 3, 2, 2], &bytes, 1, 2), None);
    }

    #[test]
    fn concat_along_the_last_axis() {
        let a = (vec![2, 1], vec![1u8, 2]);
        let b = (vec![2, 2], vec![3u8, 4, 5, 6]);
        assert_eq!(
            concat_last(&[a.clone(), b], 1),
            Some((vec![2, 3], vec![1, 3, 4, 2, 5, 6]))
        );
        assert_eq!(concat_last(&[a, (vec![3, 1], vec![0; 3])], 1), None);
    }
}
