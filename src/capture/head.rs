//! The head views of the final norm, for backends whose model does not produce them as values.
//!
//! Contract: from `norm` [1, N, D] (F32) with R storage tokens, [`derive()`] gives `cls` =
//! `norm[:, 0]` [1, D], `storage` = `norm[:, 1:1+R]` [1, R, D] (when R > 0), `patches` =
//! `norm[:, 1+R:]` [1, hw, D] — exact copies of the bytes — and `pooled` = the mean of `patches`
//! over tokens [1, D], accumulated in f64 and rounded once to f32 (so it is within an ulp of any
//! f32 implementation's mean). Anything else (batch > 1, another dtype, too few tokens) gives
//! nothing: the caller then writes no derived tensors.

use anyhow::Result;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::HashMap;

use crate::dump::manifest::TensorRecord;
use crate::dump::writer::DumpWriter;
use crate::model::{HeadStage, Stage, StemStage};

/// (stage, how it was derived, (shape, F32 bytes)) for each derived stage.
pub type Derived = (HeadStage, &'static str, (Vec<usize>, Vec<u8>));

pub fn derive(shape: &[usize], bytes: &[u8], dtype: Dtype, storage_tokens: usize) -> Vec<Derived> {
    let [b, n, d] = shape[..] else {
        return Vec::new();
    };
    if dtype != Dtype::F32 || b != 1 || n <= 1 + storage_tokens || bytes.len() != n * d * 4 {
        return Vec::new();
    }
    let rows = |from: usize, to: usize| bytes[from * d * 4..to * d * 4].to_vec();
    let hw = n - 1 - storage_tokens;
    let pooled = mean_over_tokens(&bytes[(1 + storage_tokens) * d * 4..], hw, d);
    let mut out: Vec<Derived> = vec![(HeadStage::Cls, "norm[:, 0]", (vec![1, d], rows(0, 1)))];
    if storage_tokens > 0 {
        out.push((
            HeadStage::Storage,
            "norm[:, 1:1+R]",
            (vec![1, storage_tokens, d], rows(1, 1 + storage_tokens)),
        ));
    }
    out.push((
        HeadStage::Patches,
        "norm[:, 1+R:]",
        (vec![1, hw, d], rows(1 + storage_tokens, n)),
    ));
    out.push((
        HeadStage::Pooled,
        "mean of patches over tokens (f64 accumulation)",
        (vec![1, d], pooled),
    ));
    out
}

/// The mean over `tokens` rows of `d` little-endian f32 values each, accumulated in f64 and
/// rounded once to f32: the bytes of a [1, d] tensor.
pub fn mean_over_tokens(bytes: &[u8], tokens: usize, d: usize) -> Vec<u8> {
    let value = |i: usize| f32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let mean: Vec<f32> = (0..d)
        .map(|j| ((0..tokens).map(|t| value(t * d + j) as f64).sum::<f64>() / tokens as f64) as f32)
        .collect();
    bytemuck::cast_slice(&mean).to_vec()
}

/// The storage-token count R = N - 1 - hw of a `norm` of shape [1, N, D], hw from the `patches`
/// stage, else from `patch_embed`, as `written` (canonical stage -> shape) has them; `None`
/// without either, or when N ≤ hw.
pub fn storage_tokens(norm_shape: &[usize], written: &HashMap<Stage, Vec<usize>>) -> Option<usize> {
    let patch_tokens = [
        Stage::Head(HeadStage::Patches),
        Stage::Stem(StemStage::PatchEmbed),
    ]
    .iter()
    .find_map(|s| written.get(s).and_then(|shape| shape.get(1)).copied())?;
    norm_shape.get(1)?.checked_sub(1 + patch_tokens)
}

/// Derives the head views from `norm` (shape, bytes, dtype) and writes each one `written` (canonical
/// stage -> shape already in the dump) lacks, recording `derived` = how; returns the stages
/// written. The storage-token count R = N - 1 - hw takes hw from the `patches` stage, else from
/// `patch_embed` (never from a default); without either, or when N ≤ hw, nothing is derived.
pub fn write_derived(
    writer: &mut DumpWriter,
    norm: (&[usize], &[u8], Dtype),
    written: &HashMap<Stage, Vec<usize>>,
) -> Result<Vec<Stage>> {
    let (shape, bytes, dtype) = norm;
    let Some(storage_tokens) = storage_tokens(shape, written) else {
        return Ok(Vec::new());
    };
    let mut derived = Vec::new();
    for (head, how, (shape, bytes)) in derive(shape, bytes, dtype, storage_tokens) {
        let stage = Stage::Head(head);
        if written.contains_key(&stage) {
            continue;
        }
        let name = stage.to_string();
        writer.write(
            &name,
            TensorRecord {
                extra: [("derived".to_string(), Value::String(how.into()))]
                    .into_iter()
                    .collect(),
                ..TensorRecord::of_stage(stage, Stage::NORM.to_string())
            },
            Dtype::F32,
            &shape,
            &bytes,
        )?;
        derived.push(stage);
    }
    Ok(derived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_sliced_and_pooled_from_norm() {
        // N = 1 + 1 storage + 2 patches, D = 2.
        let v: Vec<f32> = vec![1., 2., 3., 4., 5., 6., 7., 9.];
        let head = derive(&[1, 4, 2], bytemuck::cast_slice(&v), Dtype::F32, 1);
        let get = |s: HeadStage| {
            let (shape, bytes) = &head.iter().find(|(n, _, _)| *n == s).unwrap().2;
            let vals: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
            (shape.clone(), vals)
        };
        assert_eq!(get(HeadStage::Cls), (vec![1, 2], vec![1., 2.]));
        assert_eq!(get(HeadStage::Storage), (vec![1, 1, 2], vec![3., 4.]));
        assert_eq!(
            get(HeadStage::Patches),
            (vec![1, 2, 2], vec![5., 6., 7., 9.])
        );
        assert_eq!(get(HeadStage::Pooled), (vec![1, 2], vec![6., 7.5]));
    }

    #[test]
    fn nothing_from_what_is_not_a_batch_one_f32_norm() {
        let v = [0f32; 8];
        assert!(derive(&[2, 2, 2], bytemuck::cast_slice(&v), Dtype::F32, 0).is_empty());
        assert!(derive(&[1, 4, 2], bytemuck::cast_slice(&v), Dtype::F64, 0).is_empty());
        assert!(derive(&[1, 2, 4], bytemuck::cast_slice(&v), Dtype::F32, 1).is_empty());
    }
}
