//! `inspect`, `prep`, `synth`, `capture meta` without its feature, and the atomic writer under
//! SIGKILL.

mod common;
use common::{canonical_dump, diff_json, dinodiff, json_in, plain_dump, run_in};
use dinodiff::dump::SourceKind;
use std::time::{Duration, Instant};

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
    assert_eq!(names, dinodiff::model::stages::all_names(2));
    assert_eq!(json["tensors"][1]["native"], "native/patch_embed");
}

fn write_png(path: &std::path::Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    img.save(path).unwrap();
}

#[test]
fn prep_writes_the_input_tensor_with_its_provenance() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("img.png"), 300, 200);
    for (transform, size) in [("meta", 224), ("square", 224), ("square", 64)] {
        dinodiff()
            .current_dir(dir.path())
            .args(["prep", "--image", "img.png", "--transform", transform])
            .args(["--size", &size.to_string(), "-o", "in.st"])
            .assert()
            .code(0);
        let json = json_in(dir.path(), &["inspect", "in.st", "--format", "json"], 0);
        assert_eq!(json["manifest"]["source"], "input");
        assert_eq!(json["manifest"]["input"]["transform"], transform);
        assert_eq!(
            json["manifest"]["input"]["image_size"],
            serde_json::json!([300, 200])
        );
        assert_eq!(
            json["tensors"][0]["shape"],
            serde_json::json!([1, 3, size, size])
        );
        assert_eq!(json["tensors"][0]["name"], "input");
    }
}

#[test]
fn prep_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    dinodiff()
        .current_dir(dir.path())
        .args(["prep", "--image", "missing.jpg", "-o", "in.st"])
        .assert()
        .code(2)
        .stderr("error: cannot read the image missing.jpg: no such file\n");
    std::fs::write(dir.path().join("fake.jpg"), b"not an image at all").unwrap();
    dinodiff()
        .current_dir(dir.path())
        .args(["prep", "--image", "fake.jpg", "-o", "in.st"])
        .assert()
        .code(2)
        .stderr(predicates::str::starts_with(
            "error: cannot decode the image fake.jpg (dinodiff reads JPEG and PNG): ",
        ));
    write_png(&dir.path().join("odd.png"), 100, 50);
    dinodiff()
        .current_dir(dir.path())
        .args(["prep", "--image", "odd.png", "--transform", "none", "-o", "in.st"])
        .assert()
        .code(2)
        .stderr("error: --transform none keeps the image's 100x50 pixels, but ViT patches need sides that are multiples of 16; use --transform meta or square\n");
    dinodiff()
        .current_dir(dir.path())
        .args(["prep", "--image", "odd.png", "--size", "100", "-o", "in.st"])
        .assert()
        .code(2)
        .stderr("error: --size 100 is not a positive multiple of the patch size 16\n");
    assert!(!dir.path().join("in.st").exists());
}

#[cfg(not(feature = "torch"))]
#[test]
fn capture_meta_without_the_torch_feature_says_how_to_get_it() {
    dinodiff()
        .args(["capture", "meta", "--weights", "w.pth", "--input", "in.st", "-o", "m.st"])
        .assert()
        .code(2)
        .stderr(predicates::str::starts_with(
            "error: this dinodiff was built without the `torch` feature, so it cannot run Meta's model. Rebuild with `cargo build --release --features torch`",
        ));
}

#[test]
fn synth_pairs_share_the_input_and_drift_where_told() {
    let dir = tempfile::tempdir().unwrap();
    dinodiff()
        .current_dir(dir.path())
        .args([
            "synth",
            "--variant",
            "vits16",
            "--image-size",
            "64",
            "-o",
            "a.st",
        ])
        .assert()
        .code(0);
    dinodiff()
        .current_dir(dir.path())
        .args([
            "synth",
            "--variant",
            "dinov3_vits16_pretrain_lvd1689m",
            "--image-size",
            "64",
        ])
        .args([
            "--noise",
            "1e-7",
            "--drift",
            "blocks.3.mlp=1e-2",
            "-o",
            "b.st",
        ])
        .assert()
        .code(0);
    let json = diff_json(dir.path(), &[], 1);
    assert_eq!(json["input"]["status"], "match");
    assert_eq!(
        json["pairs"][json["first_over"].as_u64().unwrap() as usize]["name"],
        "blocks.3.mlp"
    );
    dinodiff()
        .current_dir(dir.path())
        .args(["synth", "--drift", "blocks.12.mlp=1", "-o", "c.st"])
        .assert()
        .code(2)
        .stderr("error: --drift names \"blocks.12.mlp\", which is not a stage of vits16 (depth 12); see docs/stages.md\n");
}

#[test]
fn a_writer_killed_mid_dump_leaves_no_file_at_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("dinodiff");
    // ViT-L/16 at 224: ~400 MB, long enough to be caught while writing.
    let mut child = std::process::Command::new(bin)
        .current_dir(dir.path())
        .args(["synth", "--variant", "vitl16", "-o", "big.st"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let writing = loop {
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(".big.st.data-"));
        if let Some(p) = partial
            && p.metadata().map(|m| m.len() > 0).unwrap_or(false)
        {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(writing, "never saw the writer at work");
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        !dir.path().join("big.st").exists(),
        "a killed writer left a file at the target path"
    );
}

#[test]
fn capture_eqx_refuses_what_is_not_an_npz() {
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("run.npz");
    std::fs::write(&npz, b"PK\x03\x04 but not really a zip").unwrap();
    let out = dir.path().join("eqx.st");
    let a = dinodiff()
        .args(["capture", "eqx", "--npz"])
        .arg(&npz)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2);
    let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
    assert!(
        err.starts_with(&format!(
            "error: {} is not an npz file (a zip of .npy arrays): ",
            npz.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
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
