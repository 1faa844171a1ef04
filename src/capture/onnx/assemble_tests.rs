//! Unit tests of [`super::StageAssembler`] and its shape helpers, driven with hand-made f32
//! tensors and recognition results (no ONNX Runtime).

use super::*;
use crate::dump::{Dump, DumpWriter, Manifest, SourceKind};

/// A canonical stage by name.
fn st(name: &str) -> crate::model::Stage {
    name.parse().unwrap()
}

fn f32s(values: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(values).to_vec()
}

fn tensor(shape: &[usize], values: &[f32]) -> Extracted<'static> {
    Extracted {
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes: Cow::Owned(f32s(values)),
    }
}

fn stage(stage: &str, reshape: Reshape) -> Recognized {
    Recognized {
        stage: st(stage),
        reshape,
        rule: "test rule",
        part: None,
    }
}

fn piece(stage: &str, k: usize, n: usize) -> Recognized {
    Recognized {
        part: Some((k, n)),
        ..self::stage(stage, Reshape::PrependBatch)
    }
}

fn recognition(entries: &[(&str, Recognized)]) -> HashMap<String, Recognized> {
    entries
        .iter()
        .map(|(v, r)| (v.to_string(), r.clone()))
        .collect()
}

#[test]
fn unrecognized_values_are_written_as_captured() {
    let stages = recognition(&[]);
    let mut a = StageAssembler::new(&stages);
    let p = a.place("v_1", tensor(&[2, 2], &[1., 2., 3., 4.]));
    assert_eq!(p.completed, None);
    assert_eq!(p.value.stage, None);
    assert_eq!(p.value.shape, [2, 2]);
    assert_eq!(p.value.bytes.as_ref(), f32s(&[1., 2., 3., 4.]));
    assert_eq!((p.value.onnx_shape, p.value.sliced), (None, false));
    assert!(a.written_stages().is_empty());
}

#[test]
fn recognized_values_take_their_stage_and_its_shape() {
    let stages = recognition(&[
        ("sdpa", stage("blocks.0.attn.sdpa", Reshape::PrependBatch)),
        ("cls", stage("cls", Reshape::Squeeze(1))),
        ("mlp", stage("blocks.0.mlp", Reshape::AsIs)),
    ]);
    let mut a = StageAssembler::new(&stages);
    let sdpa = a.place("sdpa", tensor(&[2, 3], &[0.; 6]));
    assert_eq!(sdpa.value.stage, Some(&stages["sdpa"]));
    assert_eq!(sdpa.value.shape, [1, 2, 3]);
    assert_eq!(sdpa.value.onnx_shape, Some(vec![2, 3]));
    let cls = a.place("cls", tensor(&[1, 1, 3], &[1., 2., 3.]));
    assert_eq!(cls.value.shape, [1, 3]);
    assert_eq!(cls.value.onnx_shape, Some(vec![1, 1, 3]));
    assert_eq!(cls.value.bytes.as_ref(), f32s(&[1., 2., 3.]));
    let mlp = a.place("mlp", tensor(&[1, 2, 3], &[0.; 6]));
    assert_eq!(
        (mlp.value.shape.clone(), mlp.value.onnx_shape),
        (vec![1, 2, 3], None)
    );
    let written = a.written_stages();
    assert_eq!(written[&st("blocks.0.attn.sdpa")], [1, 2, 3]);
    assert_eq!(written[&st("cls")], [1, 3]);
    assert_eq!(written[&st("blocks.0.mlp")], [1, 2, 3]);
}

#[test]
fn qkv_is_concatenated_once_its_last_piece_is_in() {
    let stages = recognition(&[
        ("gemm_q", piece("blocks.0.attn.qkv", 0, 3)),
        ("gemm_k", piece("blocks.0.attn.qkv", 1, 3)),
        ("gemm_v", piece("blocks.0.attn.qkv", 2, 3)),
    ]);
    let mut a = StageAssembler::new(&stages);
    // [N = 2, D = 2] each; arriving out of piece order.
    let k = a.place("gemm_k", tensor(&[2, 2], &[3., 4., 13., 14.]));
    assert_eq!((k.completed, k.value.stage), (None, None));
    let q = a.place("gemm_q", tensor(&[2, 2], &[1., 2., 11., 12.]));
    assert_eq!(q.completed, None);
    assert!(a.written_stages().is_empty());
    let v = a.place("gemm_v", tensor(&[2, 2], &[5., 6., 15., 16.]));
    // The piece itself keeps its name and shape.
    assert_eq!(v.value.stage, None);
    assert_eq!(v.value.shape, [2, 2]);
    let qkv = v.completed.expect("the third piece completes attn.qkv");
    assert_eq!(qkv.stage.to_string(), "blocks.0.attn.qkv");
    assert_eq!((qkv.rule, qkv.derived), ("test rule", QKV_CONCATENATION));
    assert_eq!(qkv.onnx_values, ["gemm_q", "gemm_k", "gemm_v"]);
    assert_eq!(qkv.dtype, Dtype::F32);
    assert_eq!(qkv.shape, [1, 2, 6]);
    assert_eq!(
        qkv.bytes,
        f32s(&[1., 2., 3., 4., 5., 6., 11., 12., 13., 14., 15., 16.])
    );
    assert_eq!(a.written_stages()[&st("blocks.0.attn.qkv")], [1, 2, 6]);
}

#[test]
fn pieces_of_different_dtypes_or_rows_assemble_nothing() {
    let stages = recognition(&[
        ("a", piece("blocks.0.attn.qkv", 0, 2)),
        ("b", piece("blocks.0.attn.qkv", 1, 2)),
    ]);
    let mut a = StageAssembler::new(&stages);
    a.place("a", tensor(&[2, 1], &[1., 2.]));
    let half = Extracted {
        dtype: Dtype::F16,
        shape: vec![2, 1],
        bytes: Cow::Owned(vec![0; 4]),
    };
    assert_eq!(a.place("b", half).completed, None);

    let mut a = StageAssembler::new(&stages);
    a.place("a", tensor(&[2, 1], &[1., 2.]));
    assert_eq!(a.place("b", tensor(&[3, 1], &[1., 2., 3.])).completed, None);
    assert!(a.written_stages().is_empty());
}

#[test]
fn rope_tables_keep_the_rows_of_the_patches() {
    let stages = recognition(&[
        ("pe", stage("patch_embed", Reshape::AsIs)),
        ("cos", stage("rope.cos", Reshape::PatchRows)),
    ]);
    let mut a = StageAssembler::new(&stages);
    a.place("pe", tensor(&[1, 2, 4], &[0.; 8]));
    // N = 3 tokens (1 prefix + hw = 2 patches), hd = 2.
    let cos = a.place("cos", tensor(&[1, 3, 1, 2], &[1., 2., 3., 4., 5., 6.]));
    assert_eq!(cos.value.stage, Some(&stages["cos"]));
    assert_eq!(cos.value.shape, [2, 2]);
    assert_eq!(cos.value.bytes.as_ref(), f32s(&[3., 4., 5., 6.]));
    assert_eq!(cos.value.onnx_shape, Some(vec![1, 3, 1, 2]));
    assert!(cos.value.sliced);
    assert_eq!(a.written_stages()[&st("rope.cos")], [2, 2]);
}

#[test]
fn a_rope_table_without_patch_embed_is_written_under_its_own_name() {
    let stages = recognition(&[("cos", stage("rope.cos", Reshape::PatchRows))]);
    let mut a = StageAssembler::new(&stages);
    let cos = a.place("cos", tensor(&[1, 3, 1, 2], &[1., 2., 3., 4., 5., 6.]));
    assert_eq!(cos.value.stage, None);
    assert_eq!(cos.value.shape, [1, 3, 1, 2]);
    assert!(!cos.value.sliced);
    assert!(a.written_stages().is_empty());
}

/// The head views an assembler derives, written into a dump and read back: (stages derived,
/// name -> (shape, values)).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn head_views(a: &StageAssembler) -> (Vec<String>, Tensors) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.st");
    let manifest = Manifest::for_this_process(SourceKind::Onnx);
    let mut writer = DumpWriter::create(&path, manifest).unwrap();
    let derived = a.write_head_views(&mut writer).unwrap();
    let derived = derived.iter().map(ToString::to_string).collect();
    writer.finish().unwrap();
    let dump = Dump::open(&path).unwrap();
    let tensors = dump
        .tensors()
        .iter()
        .map(|e| {
            let values = bytemuck::pod_collect_to_vec::<u8, f32>(dump.data(e));
            (e.name.clone(), (e.shape.clone(), values))
        })
        .collect();
    (derived, tensors)
}

#[test]
fn head_views_are_derived_from_norm_with_the_storage_count_from_patch_embed() {
    let stages = recognition(&[
        ("pe", stage("patch_embed", Reshape::AsIs)),
        ("norm", stage("norm", Reshape::AsIs)),
    ]);
    let mut a = StageAssembler::new(&stages);
    a.place("pe", tensor(&[1, 2, 2], &[0.; 4]));
    // N = 1 cls + 1 storage + 2 patches, D = 2.
    a.place(
        "norm",
        tensor(&[1, 4, 2], &[1., 2., 3., 4., 5., 6., 7., 9.]),
    );
    let (derived, tensors) = head_views(&a);
    assert_eq!(derived, ["cls", "storage", "patches", "pooled"]);
    let get = |name: &str| tensors[name].clone();
    assert_eq!(get("cls"), (vec![1, 2], vec![1., 2.]));
    assert_eq!(get("storage"), (vec![1, 1, 2], vec![3., 4.]));
    assert_eq!(get("patches"), (vec![1, 2, 2], vec![5., 6., 7., 9.]));
    assert_eq!(get("pooled"), (vec![1, 2], vec![6., 7.5]));
}

#[test]
fn head_views_the_model_has_are_not_derived_again() {
    let stages = recognition(&[
        ("norm", stage("norm", Reshape::AsIs)),
        ("cls", stage("cls", Reshape::Squeeze(1))),
        ("patches", stage("patches", Reshape::AsIs)),
    ]);
    let mut a = StageAssembler::new(&stages);
    a.place("norm", tensor(&[1, 3, 1], &[1., 2., 3.]));
    a.place("cls", tensor(&[1, 1, 1], &[1.]));
    a.place("patches", tensor(&[1, 2, 1], &[2., 3.]));
    // R = N - 1 - hw = 0: no storage; cls and patches are the model's.
    assert_eq!(head_views(&a).0, ["pooled"]);
}

#[test]
fn no_head_views_without_norm() {
    let stages = recognition(&[("pe", stage("patch_embed", Reshape::AsIs))]);
    let mut a = StageAssembler::new(&stages);
    a.place("pe", tensor(&[1, 2, 1], &[0.; 2]));
    assert!(head_views(&a).0.is_empty());
}

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
