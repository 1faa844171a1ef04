//! `dinodiff align` and `diff --align auto`: a port whose names and layouts differ from the
//! reference, with look-alikes (scaled, shifted, transposed copies) beside the true partners.

use crate::common::*;
use std::path::Path;

/// Deterministic pseudo-random values in [-2, 2).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// `x.transpose(p)` of a row-major array of shape `shape`.
fn transpose(x: &[f32], shape: &[usize], p: &[usize]) -> Vec<f32> {
    let strides: Vec<usize> = (0..shape.len())
        .map(|k| shape[k + 1..].iter().product())
        .collect();
    let out: Vec<usize> = p.iter().map(|&k| shape[k]).collect();
    (0..x.len())
        .map(|mut flat| {
            let mut offset = 0;
            for k in (0..out.len()).rev() {
                offset += (flat % out[k]) * strides[p[k]];
                flat /= out[k];
            }
            x[offset]
        })
        .collect()
}

/// A (the reference, canonical names) and B (another exporter's names and layouts, decoys),
/// B's values off by `drift` everywhere.
fn write_pair(dir: &Path, drift: f32) {
    let tokens = values(1, 40);
    let v = values(2, 40); // [1, 2 heads, 5 tokens, 4]
    let sdpa = values(3, 40);
    let out0 = values(4, 40);
    let out1 = values(5, 40);
    let norm = values(6, 40);
    plain_dump(
        &dir.join("a.st"),
        &[
            ("tokens", vec![1, 5, 8], tokens.clone()),
            ("blocks.0.attn.v", vec![1, 2, 5, 4], v.clone()),
            ("blocks.0.attn.sdpa", vec![1, 5, 8], sdpa.clone()),
            ("blocks.0.output", vec![1, 5, 8], out0.clone()),
            ("blocks.1.output", vec![1, 5, 8], out1.clone()),
            ("norm", vec![1, 5, 8], norm.clone()),
        ],
    );
    let off = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| v + drift).collect() };
    let scaled = |x: &[f32], s: f32| -> Vec<f32> { x.iter().map(|v| v * s).collect() };
    let v_nhd = transpose(&v, &[1, 2, 5, 4], &[0, 2, 1, 3]); // [1, 5, 2, 4]
    plain_dump(
        &dir.join("b.st"),
        &[
            ("/embed/Concat_output_0", vec![1, 5, 8], off(&tokens)),
            (
                "/blocks.0/attn/v_scaled",
                vec![1, 2, 5, 4],
                scaled(&off(&v), 1.0001),
            ),
            (
                "/blocks.0/attn/Reshape_output_0",
                vec![1, 5, 2, 4],
                off(&v_nhd),
            ),
            (
                "/blocks.0/attn/shifted",
                vec![1, 5, 8],
                scaled(&off(&sdpa), 1.0).iter().map(|x| x + 1e-3).collect(),
            ),
            (
                "/blocks.0/attn/Reshape_2_output_0",
                vec![1, 5, 8],
                off(&sdpa),
            ),
            (
                "/blocks.0/transposed",
                vec![1, 8, 5],
                transpose(&off(&out0), &[1, 5, 8], &[0, 2, 1]),
            ),
            ("/blocks.0/Add_1_output_0", vec![1, 5, 8], off(&out0)),
            ("/blocks.1/Add_1_output_0", vec![1, 5, 8], off(&out1)),
            ("/norm/LayerNorm_output_0", vec![1, 5, 8], off(&norm)),
        ],
    );
}

fn pairs_of(json: &serde_json::Value) -> Vec<(String, String, String)> {
    json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap().to_string(),
                p["b"].as_str().unwrap().to_string(),
                p["layout"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn expected() -> Vec<(String, String, String)> {
    [
        ("tokens", "/embed/Concat_output_0", ""),
        (
            "blocks.0.attn.v",
            "/blocks.0/attn/Reshape_output_0",
            "permute(0,2,1,3)",
        ),
        (
            "blocks.0.attn.sdpa",
            "/blocks.0/attn/Reshape_2_output_0",
            "",
        ),
        ("blocks.0.output", "/blocks.0/Add_1_output_0", ""),
        ("blocks.1.output", "/blocks.1/Add_1_output_0", ""),
        ("norm", "/norm/LayerNorm_output_0", ""),
    ]
    .iter()
    .map(|(a, b, l)| (a.to_string(), b.to_string(), l.to_string()))
    .collect()
}

#[test]
fn true_partners_win_over_scaled_shifted_and_transposed_copies() {
    for drift in [0.0, 1e-6, 1e-4] {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), drift);
        let json = json_in(
            dir.path(),
            &["align", "a.st", "b.st", "--format", "json"],
            0,
        );
        assert_eq!(json["schema"], "dinodiff.align/1");
        assert_eq!(pairs_of(&json), expected(), "drift {drift}");
        assert!(
            json["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["paired_by"] == "value")
        );
        assert_eq!(json["unpaired_a"], serde_json::json!([]));
        // The decoys are what is left of B.
        assert_eq!(
            json["unpaired_b"],
            serde_json::json!([
                "/blocks.0/attn/v_scaled",
                "/blocks.0/attn/shifted",
                "/blocks.0/transposed"
            ])
        );
    }
}

#[test]
fn align_table_and_map_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 0.0);
    let table = run_in(dir.path(), &["align", "a.st", "b.st", "-o", "map.toml"], 0);
    insta::assert_snapshot!("align_table", table);
    let map = std::fs::read_to_string(dir.path().join("map.toml")).unwrap();
    insta::assert_snapshot!("align_map", map);
}

#[test]
fn permuted_partners_compare_with_max_abs_zero_and_the_map_reproduces_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 0.0);
    let auto = diff_json(dir.path(), &["--align", "auto"], 0);
    let v = auto["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["a"] == "blocks.0.attn.v")
        .unwrap()
        .clone();
    assert_eq!(v["layout"], "permute(0,2,1,3)");
    assert_eq!(v["shapes"]["kind"], "layout");
    assert_eq!(v["paired_by"], "value");
    assert_eq!(v["name"], "blocks.0.attn.v");
    assert_eq!(v["metrics"]["max_abs"], 0.0);
    assert_eq!(auto["verdict"]["coverage"]["paired"], 6);
    run_in(dir.path(), &["align", "a.st", "b.st", "-o", "map.toml"], 0);
    let pinned = diff_json(dir.path(), &["--map", "map.toml"], 0);
    let strip = |j: &serde_json::Value| -> Vec<serde_json::Value> {
        j["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| serde_json::json!([p["a"], p["b"], p["name"], p["layout"], p["metrics"]]))
            .collect()
    };
    assert_eq!(strip(&auto), strip(&pinned));
    assert!(
        pinned["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["paired_by"] == "map_pair")
    );
    // Names alone pair nothing here: the default diff is unchanged.
    let names = diff_json(dir.path(), &[], 1);
    assert_eq!(names["pairs"], serde_json::json!([]));
}

#[test]
fn name_pairs_of_another_layout_are_read_through_it_under_auto_only() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(2, 40);
    plain_dump(
        &dir.path().join("a.st"),
        &[("blocks.0.attn.v", vec![1, 2, 5, 4], v.clone())],
    );
    let v_nhd = transpose(&v, &[1, 2, 5, 4], &[0, 2, 1, 3]);
    plain_dump(
        &dir.path().join("b.st"),
        &[("blocks.0.attn.v", vec![1, 5, 2, 4], v_nhd)],
    );
    let names = diff_json(dir.path(), &[], 1);
    assert_eq!(names["pairs"][0]["shapes"]["kind"], "mismatch");
    let auto = diff_json(dir.path(), &["--align", "auto"], 0);
    let p = &auto["pairs"][0];
    assert_eq!(
        (&p["paired_by"], &p["layout"]),
        (&"name".into(), &"permute(0,2,1,3)".into())
    );
    assert_eq!(p["metrics"]["max_abs"], 0.0);
}

#[test]
fn map_layout_errors_name_the_line_and_the_pair() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 0.0);
    let bad = "[[pair]]\na = \"tokens\"\nb = \"/embed/Concat_output_0\"\nlayout = \"swap(1,0)\"\n";
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let err = stderr_of(
        &dinodiff()
            .current_dir(dir.path())
            .args(["diff", "a.st", "b.st", "--map", "bad.toml"])
            .assert()
            .code(2),
    );
    assert!(
        err.contains("[[pair]] at line 1 (\"tokens\" ⇔ \"/embed/Concat_output_0\"): layout \"swap(1,0)\": unknown step \"swap\""),
        "{err}"
    );
    let unfit =
        "\n[[pair]]\na = \"tokens\"\nb = \"/embed/Concat_output_0\"\nlayout = \"permute(0,2,1)\"\n";
    std::fs::write(dir.path().join("unfit.toml"), unfit).unwrap();
    let err = stderr_of(
        &dinodiff()
            .current_dir(dir.path())
            .args(["align", "a.st", "b.st", "--map", "unfit.toml"])
            .assert()
            .code(2),
    );
    assert!(
        err.contains("the map file unfit.toml: [[pair]] at line 2 (\"tokens\" ⇔ \"/embed/Concat_output_0\"): layout permute(0,2,1): reading B [1, 5, 8] through permute(0,2,1) gives [1, 8, 5], not A's shape [1, 5, 8]"),
        "{err}"
    );
}

/// A triangle of a reference with stage names and two dumps without: the port ⇔ export side is
/// shown under the reference's stages too.
#[test]
fn the_triangle_port_side_takes_the_reference_stages() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 0.0);
    // C: the port's values under yet other names, one more layout.
    let b = dir.path().join("b.st");
    let mut bytes = std::fs::read(&b).unwrap();
    let (from, to) = (b"/blocks.", b"/stages.");
    let at: Vec<usize> = (0..bytes.len() - from.len())
        .filter(|&i| &bytes[i..i + from.len()] == from)
        .collect();
    assert!(at.len() >= 6);
    for i in at {
        bytes[i..i + to.len()].copy_from_slice(to);
    }
    std::fs::write(dir.path().join("c.st"), &bytes).unwrap();
    let json = json_in(
        dir.path(),
        &[
            "diff", "a.st", "b.st", "c.st", "--align", "auto", "--format", "json",
        ],
        0,
    );
    let port_export = &json["sides"][2];
    assert_eq!(port_export["side"], "port_export");
    let names: Vec<&str> = port_export["report"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["canonical"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "tokens",
            "blocks.0.attn.v",
            "blocks.0.attn.sdpa",
            "blocks.0.output",
            "blocks.1.output",
            "norm"
        ]
    );
}

/// A side that pairs too little fails by its coverage alone: the diagnosis says so (it used to
/// panic, looking for the side's first stage over tolerance).
#[test]
fn a_triangle_side_that_pairs_too_little_is_incomplete_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), 0.0);
    std::fs::copy(dir.path().join("b.st"), dir.path().join("c.st")).unwrap();
    let json = json_in(
        dir.path(),
        &["diff", "a.st", "b.st", "c.st", "--format", "json"],
        1,
    );
    assert_eq!(json["diagnosis"]["finding"], "incomplete");
    assert_eq!(json["diagnosis"]["first_over"], serde_json::json!([]));
    let text = json["diagnosis"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("a.st ⇔ b.st compares too little to diagnose"),
        "{text}"
    );
}
