//! `dinodiff diff A B C` (triangulation) end to end on small canonical dumps: each diagnosis, the
//! exit codes, the JSON schema, and a snapshot of the table (the output is the product).

use crate::common::{
    canonical_dump, canonical_dump_with_raw, dinodiff, json_in, run_in, stderr_of, stdout_of,
};
use dinodiff::dump::SourceKind;
use std::path::Path;

/// meta.st (reference), eqx.st (port), onnx.st (export): `port` / `export` add a drift from
/// `blocks.1.ls2` on, or a uniform offset, to that dump.
#[derive(Clone, Copy)]
enum Edit {
    None,
    DriftFromBlock1Ls2,
    Offset(f32),
}

impl Edit {
    /// Applies the edit to the tensor `name` (values `v`); `drifting` carries the drift from
    /// `blocks.1.ls2` on through the later tensors of the dump.
    fn apply(self, name: &str, v: &mut [f32], drifting: &mut bool) {
        match self {
            Edit::None => {}
            Edit::DriftFromBlock1Ls2 => {
                *drifting |= name == "blocks.1.ls2";
                if *drifting {
                    v[2] += 0.01;
                }
                // Rounding-sized noise elsewhere, so amplifications are defined.
                if name != "input" {
                    v[0] += 3e-6;
                }
            }
            Edit::Offset(d) if name != "input" => v.iter_mut().for_each(|x| *x += d),
            Edit::Offset(_) => {}
        }
    }
}

/// A canonical dump with `edits` applied in order to each tensor.
fn dump(path: &Path, source: SourceKind, edits: &[Edit]) {
    let mut drifting = false;
    canonical_dump(path, source, |name, v, _| {
        for e in edits {
            e.apply(name, v, &mut drifting);
        }
    });
}

fn triangle(port: Edit, export: Edit) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    dump(&dir.path().join("meta.st"), SourceKind::Meta, &[]);
    dump(&dir.path().join("eqx.st"), SourceKind::Eqx, &[port]);
    // The export carries the port's edit plus its own.
    dump(
        &dir.path().join("onnx.st"),
        SourceKind::Onnx,
        &[port, export],
    );
    dir
}

fn report(dir: &Path, code: i32) -> serde_json::Value {
    json_in(
        dir,
        &["diff", "meta.st", "eqx.st", "onnx.st", "--format", "json"],
        code,
    )
}

#[test]
fn all_three_agree() {
    let d = triangle(Edit::None, Edit::None);
    let r = report(d.path(), 0);
    assert_eq!(r["schema"], "dinodiff.triangle/1");
    assert_eq!(r["pass"], true);
    assert_eq!(r["diagnosis"]["finding"], "all_agree");
    let labels: Vec<&str> = r["sides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Meta ⇔ ONNX", "Meta ⇔ Equinox", "Equinox ⇔ ONNX"]);
    for s in r["sides"].as_array().unwrap() {
        assert_eq!(s["report"]["schema"], "dinodiff.diff/1");
    }
}

#[test]
fn a_fault_in_the_port_is_named_with_its_amplification() {
    let d = triangle(Edit::DriftFromBlock1Ls2, Edit::None);
    let r = report(d.path(), 1);
    let diag = &r["diagnosis"];
    assert_eq!(diag["finding"], "port_diverges");
    assert_eq!(diag["first_over"][0]["stage"], "blocks.1.ls2");
    assert_eq!(diag["first_over"][0]["side"], "reference_port");
    assert!(diag["first_over"][0]["amplification"].as_f64().unwrap() > 100.0);
    let text = diag["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "Meta ⇔ Equinox diverges: the port is at fault. The first stage over tolerance is \
             `blocks.1.ls2` (max|Δ| 1.00e-02, "
        ),
        "{text}"
    );
    assert!(text.ends_with(
        "fix Equinox there. ONNX follows Equinox faithfully (Equinox ⇔ ONNX is clean), so it \
         inherits the difference."
    ));
}

#[test]
fn a_fault_in_the_export_is_named() {
    let d = triangle(Edit::None, Edit::DriftFromBlock1Ls2);
    let r = report(d.path(), 1);
    assert_eq!(r["diagnosis"]["finding"], "export_drifts");
    assert_eq!(r["diagnosis"]["first_over"][0]["side"], "port_export");
    assert_eq!(r["diagnosis"]["first_over"][0]["stage"], "blocks.1.ls2");
}

#[test]
fn faults_on_both_sides_are_both_named() {
    let d = triangle(Edit::DriftFromBlock1Ls2, Edit::DriftFromBlock1Ls2);
    let r = report(d.path(), 1);
    assert_eq!(r["diagnosis"]["finding"], "both_diverge");
    assert_eq!(r["diagnosis"]["first_over"].as_array().unwrap().len(), 2);
}

#[test]
fn small_differences_that_add_up_across_the_triangle() {
    // 0.9e-4 per side passes (atol 1e-4); 1.8e-4 end to end exceeds 1e-4 + 1e-4 · |x| for every
    // value here (|x| <= 0.75).
    let d = triangle(Edit::Offset(0.9e-4), Edit::Offset(0.9e-4));
    let r = report(d.path(), 1);
    assert_eq!(r["diagnosis"]["finding"], "accumulated");
    assert_eq!(r["diagnosis"]["first_over"][0]["side"], "reference_export");
}

#[test]
fn table_snapshot() {
    let d = triangle(Edit::DriftFromBlock1Ls2, Edit::None);
    let out = stdout_of(
        &dinodiff()
            .current_dir(d.path())
            .args(["diff", "meta.st", "eqx.st", "onnx.st", "--color", "never"])
            .assert()
            .code(1),
    );
    insta::assert_snapshot!("triangle_table", out);
}

#[test]
fn a_missing_third_dump_is_an_error() {
    let d = triangle(Edit::None, Edit::None);
    let a = dinodiff()
        .current_dir(d.path())
        .args(["diff", "meta.st", "eqx.st", "nope.st"])
        .assert()
        .code(2);
    let err = stderr_of(&a);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("nope.st"), "{err}");
}

#[test]
fn list_unmatched_names_each_sides_strays_by_framework() {
    let d = triangle(Edit::None, Edit::None);
    canonical_dump_with_raw(
        &d.path().join("onnx.st"),
        SourceKind::Onnx,
        |_, _, _| {},
        &[
            "VisionTransformer_1/Block_1/mul_0",
            "VisionTransformer_1/add_2",
        ],
    );
    // 38 canonical stages at depth 2: 5 stem + 2 × 14 block + 5 head.
    let args = ["diff", "meta.st", "eqx.st", "onnx.st", "--color", "never"];
    let plain = run_in(d.path(), &args, 0);
    assert!(!plain.contains("only in"), "{plain}");
    let listed = run_in(d.path(), &[&args[..], &["--list-unmatched"]].concat(), 0);
    let tail: Vec<&str> = listed
        .lines()
        .skip_while(|l| !l.starts_with("diagnosis:"))
        .skip(1)
        .collect();
    assert_eq!(
        tail,
        [
            "Meta ⇔ ONNX: 0 tensors only in Meta, 2 only in ONNX",
            "  only in ONNX: VisionTransformer_1/Block_1/mul_0",
            "  only in ONNX: VisionTransformer_1/add_2",
            "Meta ⇔ ONNX: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
            "Meta ⇔ Equinox: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
            "Equinox ⇔ ONNX: 0 tensors only in Equinox, 2 only in ONNX",
            "  only in ONNX: VisionTransformer_1/Block_1/mul_0",
            "  only in ONNX: VisionTransformer_1/add_2",
            "Equinox ⇔ ONNX: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
        ]
    );
}

#[test]
fn json_carries_the_diagnosis_as_data_beside_the_sentence_the_table_prints() {
    let d = triangle(Edit::None, Edit::DriftFromBlock1Ls2);
    let r = report(d.path(), 1);
    assert_eq!(r["schema"], "dinodiff.triangle/1");
    let diag = &r["diagnosis"];
    assert_eq!(diag["finding"], "export_drifts");
    let first = &diag["first_over"][0];
    assert_eq!(first["side"], "port_export");
    assert_eq!(first["stage"], "blocks.1.ls2");
    assert!(
        (first["max_abs"].as_f64().unwrap() - 0.01).abs() < 1e-6,
        "{first}"
    );
    assert!(first["amplification"].as_f64().unwrap() > 100.0, "{first}");
    let text = diag["text"].as_str().unwrap();
    let table = run_in(
        d.path(),
        &["diff", "meta.st", "eqx.st", "onnx.st", "--color", "never"],
        1,
    );
    assert!(table.contains(&format!("\ndiagnosis: {text}\n")), "{table}");
    let markdown = run_in(
        d.path(),
        &[
            "diff", "meta.st", "eqx.st", "onnx.st", "--format", "markdown",
        ],
        1,
    );
    assert!(
        markdown.contains(&format!("\ndiagnosis: {}\n", text.replace('|', "\\|"))),
        "{markdown}"
    );
}

#[test]
fn markdown_shows_the_dumps_their_input_and_strays_on_request() {
    let d = triangle(Edit::None, Edit::None);
    canonical_dump_with_raw(
        &d.path().join("onnx.st"),
        SourceKind::Onnx,
        |_, _, _| {},
        &["VisionTransformer_1/add_2"],
    );
    let args = [
        "diff", "meta.st", "eqx.st", "onnx.st", "--format", "markdown",
    ];
    let quiet = run_in(d.path(), &args, 0);
    assert!(
        quiet.starts_with("### ✅ dinodiff triangulation PASS · all three agree · "),
        "{quiet}"
    );
    assert!(
        quiet.contains(
            "\n- A: Meta — meta.st (reference, 38 tensors)\n- B: Equinox — eqx.st (port, 38 \
             tensors)\n- C: ONNX — onnx.st (export, 39 tensors)\n- input: same input in all \
             three (sha256 "
        ),
        "{quiet}"
    );
    assert!(!quiet.contains("only in"), "{quiet}");
    let listed = run_in(d.path(), &[&args[..], &["--list-unmatched"]].concat(), 0);
    let tail: Vec<&str> = listed
        .lines()
        .skip_while(|l| !l.starts_with("- Meta ⇔ ONNX"))
        .collect();
    assert_eq!(
        tail,
        [
            "- Meta ⇔ ONNX: 0 tensors only in Meta, 1 only in ONNX",
            "  - only in ONNX: `VisionTransformer_1/add_2`",
            "- Meta ⇔ ONNX: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
            "- Meta ⇔ Equinox: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
            "- Equinox ⇔ ONNX: 0 tensors only in Equinox, 1 only in ONNX",
            "  - only in ONNX: `VisionTransformer_1/add_2`",
            "- Equinox ⇔ ONNX: verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)",
        ]
    );
}
