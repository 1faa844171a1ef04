//! `dinodiff diff` end to end: exit codes, alignment, refusals, and snapshots of every output
//! format (the output is the product).

use crate::common::{
    canonical_dump, diff_json, dinodiff, json_in, plain_dump, run_in, stderr_of, stdout_of,
};
use dinodiff::dump::SourceKind;

struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    /// A (reference) and B, where B's `block 1 ls2` is off by 0.01 at one element, which then
    /// carries into every later stage by a growing amount.
    fn drifting() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
        let mut drift = 0.0f32;
        canonical_dump(&dir.path().join("b.st"), SourceKind::Onnx, |name, v, _| {
            if name == "blocks.1.ls2" {
                drift = 0.01;
            }
            if drift > 0.0 {
                v[3] += drift;
                drift *= 2.0;
            }
            // Tiny, within-tolerance noise everywhere but the input.
            if name != "input" {
                v[0] += 3e-6;
            }
        });
        Pair { dir }
    }

    fn diff(&self) -> assert_cmd::Command {
        let mut c = dinodiff();
        c.current_dir(self.dir.path())
            .args(["diff", "a.st", "b.st"]);
        c
    }
}

#[test]
fn identical_dumps_pass_with_exit_0() {
    let p = Pair::drifting();
    let text = run_in(p.dir.path(), &["diff", "a.st", "a.st"], 0);
    assert!(
        text.ends_with(
            "verdict: PASS: 38 tensor pairs compared, all within tolerance (atol 1e-04, rtol 1e-04)\n"
        ),
        "{text}"
    );
}

#[test]
fn drift_table_snapshot_and_exit_1() {
    let p = Pair::drifting();
    let out = stdout_of(&p.diff().args(["--color", "never"]).assert().code(1));
    insta::assert_snapshot!("drift_table", out);
}

#[test]
fn drift_markdown_snapshot() {
    let p = Pair::drifting();
    let out = stdout_of(&p.diff().args(["--format", "markdown"]).assert().code(1));
    insta::assert_snapshot!("drift_markdown", out);
}

#[test]
fn drift_json_snapshot() {
    let p = Pair::drifting();
    let out = stdout_of(&p.diff().args(["--format", "json"]).assert().code(1));
    let mut json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for side in ["a", "b"] {
        json[side]["created"] = "[created]".into();
    }
    assert_eq!(json["schema"], "dinodiff.diff/1");
    assert_eq!(
        json["pairs"][json["first_over"].as_u64().unwrap() as usize]["name"],
        "blocks.1.ls2"
    );
    insta::assert_snapshot!("drift_json", serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn colour_marks_failing_cells_on_request() {
    let p = Pair::drifting();
    let text = stdout_of(&p.diff().args(["--color", "always"]).assert().code(1));
    assert!(text.contains("\u{1b}["), "expected ANSI colour codes");
    assert!(!text.contains(" ✗"), "no marker when colour is on");
}

#[test]
fn tolerance_flags_decide_the_verdict() {
    let p = Pair::drifting();
    p.diff().args(["--atol", "10"]).assert().code(0);
    dinodiff()
        .current_dir(p.dir.path())
        .args(["diff", "a.st", "b.st", "--atol=-1"])
        .assert()
        .code(2)
        .stderr("error: --atol and --rtol must be finite and non-negative\n");
}

#[test]
fn different_inputs_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
    canonical_dump(&dir.path().join("b.st"), SourceKind::Onnx, |name, v, _| {
        if name == "input" {
            v[0] = 42.0;
        }
    });
    let out = dinodiff()
        .current_dir(dir.path())
        .args(["diff", "a.st", "b.st"])
        .assert()
        .code(2)
        .stdout("");
    let err = stderr_of(&out);
    assert!(
        err.starts_with("error: a.st and b.st were captured from different inputs (input sha256 "),
        "{err}"
    );
    assert!(
        err.ends_with(
            "their tensors are not comparable. Capture both from the same input.st, or pass --allow-input-mismatch to compare anyway\n"
        ),
        "{err}"
    );
    let json = json_in(
        dir.path(),
        &[
            "diff",
            "a.st",
            "b.st",
            "--allow-input-mismatch",
            "--format",
            "json",
        ],
        1,
    );
    assert_eq!(json["input"]["status"], "mismatch_allowed");
    assert_eq!(json["pairs"][0]["name"], "input");
    assert_eq!(json["pairs"][0]["fails"], true);
}

#[test]
fn missing_batch_dim_is_reconciled_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
    canonical_dump(
        &dir.path().join("b.st"),
        SourceKind::Eqx,
        |name, _, shape| {
            if name.starts_with("blocks.") {
                shape.remove(0);
            }
        },
    );
    let json = diff_json(dir.path(), &[], 0);
    let norm1 = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "blocks.0.norm1")
        .unwrap();
    assert_eq!(
        norm1["shapes"],
        serde_json::json!({"kind": "batch_reconciled", "side": "a", "dropped": 1})
    );
    assert_eq!(norm1["shape_b"], serde_json::json!([3, 4]));
}

#[test]
fn shape_mismatch_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
    canonical_dump(
        &dir.path().join("b.st"),
        SourceKind::Eqx,
        |name, _, shape| {
            if name == "blocks.0.attn" {
                *shape = vec![1, 4, 3];
            }
        },
    );
    let text = run_in(dir.path(), &["diff", "a.st", "b.st", "--color", "never"], 1);
    assert!(
        text.contains(
            "first and worst over tolerance: blocks.0.attn\n  shapes differ: A F32 [1, 3, 4] vs B F32 [1, 4, 3]; not compared\n"
        ),
        "{text}"
    );
    assert!(text.contains("(1 with mismatched shapes)"), "{text}");
}

#[test]
fn nan_on_one_side_fails_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
    canonical_dump(&dir.path().join("b.st"), SourceKind::Eqx, |name, v, _| {
        if name == "blocks.0.mlp" {
            v[2] = f32::NAN;
        }
    });
    let json = diff_json(dir.path(), &[], 1);
    let first = &json["pairs"][json["first_over"].as_u64().unwrap() as usize];
    assert_eq!(first["name"], "blocks.0.mlp");
    assert_eq!(first["metrics"]["nan_b"], 1);
    assert_eq!(first["metrics"]["nan_a"], 0);
    assert_eq!(first["metrics"]["nonfinite_mismatches"], 1);
    assert_eq!(first["metrics"]["max_abs"], 0.0);
}

#[test]
fn flat_table_for_dumps_without_stage_names_and_unmatched_listing() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(
        &dir.path().join("a.st"),
        &[
            ("encoder.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            ("encoder.bias", vec![2], vec![0.5, -0.5]),
            ("only_a", vec![1], vec![0.0]),
        ],
    );
    plain_dump(
        &dir.path().join("b.st"),
        &[
            ("encoder.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 4.5]),
            ("encoder.bias", vec![2], vec![0.5, -0.5]),
            ("only_b", vec![1], vec![0.0]),
        ],
    );
    let out = run_in(dir.path(), &["diff", "a.st", "b.st", "--list-unmatched"], 1);
    insta::assert_snapshot!("flat_table", out);
}

#[test]
fn map_file_pairs_and_rewrites_names() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(
        &dir.path().join("a.st"),
        &[
            ("blocks.0.norm1", vec![2], vec![1.0, 2.0]),
            ("head", vec![1], vec![3.0]),
        ],
    );
    plain_dump(
        &dir.path().join("b.st"),
        &[
            ("layer_0/ln_1", vec![2], vec![1.0, 2.0]),
            ("classifier", vec![1], vec![3.0]),
        ],
    );
    std::fs::write(
        dir.path().join("map.toml"),
        "[pairs]\n\"head\" = \"classifier\"\n\n[[rewrite]]\nside = \"b\"\npattern = '^layer_(\\d+)/ln_1$'\nreplace = 'blocks.$1.norm1'\n",
    )
    .unwrap();
    let json = json_in(
        dir.path(),
        &[
            "diff", "a.st", "b.st", "--map", "map.toml", "--format", "json",
        ],
        0,
    );
    let pairs: Vec<(String, String, String)> = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap().to_string(),
                p["b"].as_str().unwrap().to_string(),
                p["paired_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (
                "blocks.0.norm1".into(),
                "layer_0/ln_1".into(),
                "map_rewrite".into()
            ),
            ("head".into(), "classifier".into(), "map_pair".into()),
        ]
    );
    // Without the map nothing pairs, and nothing is paired by position: a diff that compared
    // nothing is INCOMPLETE (exit 1), never a PASS.
    let json = diff_json(dir.path(), &[], 1);
    assert_eq!(json["pairs"], serde_json::json!([]));
    assert_eq!(json["verdict"]["incomplete"], true);
    assert_eq!(json["verdict"]["coverage"]["paired"], 0);
    assert_eq!(
        json["unmatched"]["a"],
        serde_json::json!(["blocks.0.norm1", "head"])
    );
}

#[test]
fn map_file_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(&dir.path().join("a.st"), &[("x", vec![1], vec![1.0])]);
    std::fs::write(dir.path().join("map.toml"), "[pairs]\n\"x\" = \"nope\"\n").unwrap();
    dinodiff()
        .current_dir(dir.path())
        .args(["diff", "a.st", "a.st", "--map", "map.toml"])
        .assert()
        .code(2)
        .stderr(
            "error: the map file map.toml pairs \"x\" with \"nope\", but a.st has no tensor \"nope\"; \
             fix its [pairs] (`dinodiff inspect` lists a dump's tensors)\n",
        );
    dinodiff()
        .current_dir(dir.path())
        .args(["diff", "a.st", "a.st", "--map", "missing.toml"])
        .assert()
        .code(2)
        .stderr("error: cannot read the map file missing.toml: no such file; check the path\n");
}

#[test]
fn markdown_shows_the_input_status_and_lists_unmatched_on_request() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(
        &dir.path().join("a.st"),
        &[
            ("w", vec![2], vec![1.0, 2.0]),
            ("only_a", vec![1], vec![0.0]),
        ],
    );
    plain_dump(
        &dir.path().join("b.st"),
        &[
            ("w", vec![2], vec![1.0, 2.5]),
            ("only_b", vec![1], vec![0.0]),
        ],
    );
    let args = ["diff", "a.st", "b.st", "--format", "markdown"];
    let quiet = run_in(dir.path(), &args, 1);
    assert!(
        quiet.contains("\ninput: not checked (a dump records no input hash)\n"),
        "{quiet}"
    );
    assert!(
        quiet.ends_with(
            "\nunmatched: 1 tensors only in A, 1 only in B (--list-unmatched lists them)\n"
        ),
        "{quiet}"
    );
    let listed = run_in(dir.path(), &[&args[..], &["--list-unmatched"]].concat(), 1);
    assert!(
        listed.ends_with(
            "\nunmatched: 1 tensors only in A, 1 only in B (--list-unmatched lists them)\n\n\
             - only in A: `only_a`\n- only in B: `only_b`\n"
        ),
        "{listed}"
    );
    // The per-tensor table has the table format's columns.
    assert!(
        listed.contains("| `w` | [2] | F32 | **5.000e-01 ✗** | 2.500e-01 | 0.996546 |\n"),
        "{listed}"
    );
}

#[test]
fn markdown_says_when_inputs_differ_and_the_largest_difference() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("a.st"), SourceKind::Meta, |_, _, _| {});
    canonical_dump(&dir.path().join("b.st"), SourceKind::Onnx, |name, v, _| {
        if name == "input" {
            v[0] = 42.0;
        } else if name == "blocks.0.mlp" {
            v[1] += 1e-6;
        }
    });
    let md = run_in(
        dir.path(),
        &[
            "diff",
            "a.st",
            "b.st",
            "--atol",
            "100",
            "--allow-input-mismatch",
            "--format",
            "markdown",
        ],
        0,
    );
    assert!(
        md.contains("\ninput: DIFFERENT inputs (allowed by --allow-input-mismatch)\n"),
        "{md}"
    );
    assert!(
        md.contains(
            "\n**largest difference: `input`**\n\n- max\\|Δ\\| 4.250e+01 at [0, 0, 0, 0]: "
        ),
        "{md}"
    );
    let same = run_in(
        dir.path(),
        &["diff", "a.st", "a.st", "--format", "markdown"],
        0,
    );
    assert!(
        same.contains("\nevery compared pair is equal: max\\|Δ\\| 0 everywhere\n"),
        "{same}"
    );
}

#[test]
fn complex_against_real_is_refused_not_a_crash() {
    use dinodiff::dump::{DumpWriter, Manifest, SourceKind, TensorRecord};
    let dir = tempfile::tempdir().unwrap();
    // Two complex64 values (1+2i, 3-4i) against two f32 values: the same shape [2].
    let complex: Vec<u8> = [1f32, 2., 3., -4.]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut w = DumpWriter::create(
        &dir.path().join("a.st"),
        Manifest::for_this_process(SourceKind::Other),
    )
    .unwrap();
    let record = TensorRecord {
        native: "w".into(),
        ..Default::default()
    };
    w.write("w", record, safetensors::Dtype::C64, &[2], &complex)
        .unwrap();
    w.finish().unwrap();
    crate::common::plain_dump(&dir.path().join("b.st"), &[("w", vec![2], vec![1.0, 3.0])]);
    crate::common::dinodiff()
        .current_dir(dir.path())
        .args(["diff", "a.st", "b.st"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(
            "error: cannot compare tensor \"w\" of a.st and b.st: C64 against F32: dinodiff compares C64 tensors \
             only with tensors of the same dtype (byte for byte); convert one side to the other's \
             dtype\n",
        );
}

#[test]
fn complex_against_real_of_another_shape_is_a_shape_mismatch_not_a_refusal() {
    use dinodiff::dump::{DumpWriter, Manifest, SourceKind, TensorRecord};
    let dir = tempfile::tempdir().unwrap();
    let mut w = DumpWriter::create(
        &dir.path().join("a.st"),
        Manifest::for_this_process(SourceKind::Other),
    )
    .unwrap();
    let record = TensorRecord {
        native: "w".into(),
        ..Default::default()
    };
    w.write("w", record, safetensors::Dtype::C64, &[3], &[0u8; 24])
        .unwrap();
    w.finish().unwrap();
    crate::common::plain_dump(&dir.path().join("b.st"), &[("w", vec![2], vec![1.0, 3.0])]);
    let json = crate::common::diff_json(dir.path(), &[], 1);
    assert_eq!(json["pairs"][0]["shapes"]["kind"], "mismatch", "{json}");
}

#[test]
fn a_diff_that_pairs_only_the_input_is_incomplete_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let x = || vec![1.0, 2.0];
    plain_dump(
        &dir.path().join("a.st"),
        &[
            ("input", vec![2], x()),
            ("blocks.0.norm1", vec![2], x()),
            ("blocks.0.mlp", vec![2], x()),
            ("cls", vec![2], x()),
        ],
    );
    plain_dump(
        &dir.path().join("b.st"),
        &[("input", vec![2], x()), ("encoder/ln", vec![2], x())],
    );
    let out = run_in(dir.path(), &["diff", "a.st", "b.st"], 1);
    assert!(
        out.contains(
            "verdict: INCOMPLETE: only 0 of 3 canonical stages paired (0.0%, below --min-coverage \
             50%); 0 of 1 compared pairs over tolerance (atol 1e-04, rtol 1e-04). Pair more \
             tensors (--map, docs/alignment.md) or lower --min-coverage"
        ),
        "{out}"
    );
    let json = diff_json(dir.path(), &["--min-coverage", "0"], 0);
    assert_eq!(json["verdict"]["pass"], true);
    assert_eq!(json["verdict"]["coverage"]["comparable"], 3);
    crate::common::dinodiff()
        .current_dir(dir.path())
        .args(["diff", "a.st", "b.st", "--min-coverage", "1.5"])
        .assert()
        .code(2)
        .stderr("error: --min-coverage 1.5 is not a fraction between 0 and 1\n");
}
