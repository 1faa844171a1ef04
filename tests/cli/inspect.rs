//! `dinodiff inspect`: the table (snapshot) and the JSON listing.

use crate::common::{canonical_dump, json_in, plain_dump, run_in};
use dinodiff::dump::SourceKind;

#[test]
fn inspect_table_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(
        &dir.path().join("x.st"),
        &[
            ("w", vec![2, 2], vec![1.0, -2.0, f32::NAN, 4.0]),
            ("b", vec![3], vec![f32::INFINITY, 0.5, 0.5]),
        ],
    );
    // Creation time, host and command line vary: keep the tensor table and the stable lines.
    let text = run_in(dir.path(), &["inspect", "x.st"], 0);
    // The file size depends on the manifest (host name, command line): redact it.
    let stable: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("created:") && !l.starts_with("command:"))
        .map(|l| {
            match l
                .strip_prefix("x.st (")
                .and_then(|r| r.split_once(" bytes, "))
            {
                Some((_, rest)) => format!("x.st ([size] bytes, {rest}"),
                None => l.to_string(),
            }
        })
        .collect();
    insta::assert_snapshot!("inspect_table", stable.join("\n"));
}

#[test]
fn inspect_json_lists_tensors_in_execution_order_with_native_names() {
    let dir = tempfile::tempdir().unwrap();
    canonical_dump(&dir.path().join("c.st"), SourceKind::Meta, |_, _, _| {});
    let json = json_in(dir.path(), &["inspect", "c.st", "--format", "json"], 0);
    assert_eq!(json["schema"], "dinodiff.inspect/1");
    assert_eq!(json["manifest"]["source"], "meta");
    let names: Vec<&str> = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, crate::common::all_names(2));
    assert_eq!(json["tensors"][1]["native"], "native/patch_embed");
}

#[test]
fn inspect_markdown_lists_the_manifest_and_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    plain_dump(
        &dir.path().join("x.st"),
        &[("w", vec![2, 2], vec![1.0, -2.0, f32::NAN, 4.0])],
    );
    let md = run_in(dir.path(), &["inspect", "x.st", "--format", "markdown"], 0);
    assert!(md.starts_with("### dinodiff inspect\n\n- x.st ("), "{md}");
    assert!(md.contains("\n- source: other  (dinodiff "), "{md}");
    assert!(md.contains("\n- input sha256: -\n"), "{md}");
    assert!(
        md.ends_with(
            "| # | tensor | native | shape | dtype | min | max | mean | std | NaN | Inf |\n\
             |---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n\
             | 0 | w | | [2, 2] | F32 | -2.000e+00 | 4.000e+00 | 1.000e+00 | 2.449e+00 | 1 | 0 |\n\n"
        ),
        "{md}"
    );
}
