//! `dinodiff capture`: what runs without libtorch or ONNX Runtime (`capture meta` without its
//! feature, `capture eqx` refusing what is not an npz, and its arguments).

use crate::common::{dinodiff, stderr_of};

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
    let err = stderr_of(&a);
    assert!(
        err.starts_with(&format!(
            "error: {} is not an npz file (a zip of .npy arrays): ",
            npz.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
}

/// `capture eqx` ARGS in an empty directory: exit 2, and the first line of stderr.
fn refused_eqx(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let a = dinodiff()
        .current_dir(dir.path())
        .args(["capture", "eqx"])
        .args(args)
        .assert()
        .code(2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    stderr_of(&a).lines().next().unwrap_or("").to_string()
}

#[test]
fn capture_eqx_arguments_are_checked_before_anything_runs() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-o", "e.st"],
            "error: the following required arguments were not provided:",
        ),
        (
            &[
                "--model", "m.eqx", "--npz", "r.npz", "-o", "e.st", "--input", "i.st",
            ],
            "error: the argument '--model <M.eqx>' cannot be used with '--npz <RUN.npz>'",
        ),
        (
            &["--model", "m.eqx", "-o", "e.st"],
            "error: the following required arguments were not provided:",
        ),
        (
            &["--npz", "r.npz", "--variant", "vits16", "-o", "e.st"],
            "error: the argument '--npz <RUN.npz>' cannot be used with '--variant <VARIANT>'",
        ),
        (
            &["--npz", "r.npz", "--python", "python3", "-o", "e.st"],
            "error: the argument '--npz <RUN.npz>' cannot be used with '--python <PATH>'",
        ),
        (
            &[
                "--model",
                "m.eqx",
                "--input",
                "i.st",
                "-o",
                "e.st",
                "--variant",
                "vits16",
                "--config",
                "depth=2",
            ],
            "error: the argument '--variant <VARIANT>' cannot be used with '--config <KEY=VALUE,...>'",
        ),
    ];
    for (args, want) in cases {
        let got = refused_eqx(args);
        assert_eq!(got, *want, "{args:?}");
    }
}

/// A `.eqx` of the tiny config's leaf layout, written as `eqx.tree_serialise_leaves` does (the
/// layout from the library: this test is about arguments; tests/python checks the layout
/// against jax2onnx's model).
fn tiny_eqx(path: &std::path::Path) {
    use dinodiff::capture::eqx::skeleton::{EqxConfig, Expected, layout};
    let c = EqxConfig {
        img_size: 32,
        patch_size: 16,
        embed_dim: 64,
        depth: 2,
        num_heads: 2,
        num_storage_tokens: 4,
    };
    let mut bytes = Vec::new();
    for (_, e) in layout(&c) {
        let (descr, shape, data): (&str, Vec<usize>, Vec<u8>) = match e {
            Expected::F32(shape) => {
                let n: usize = shape.iter().product();
                ("<f4", shape, vec![0; 4 * n])
            }
            Expected::Int(v) => ("<i8", vec![], v.to_le_bytes().to_vec()),
            Expected::FloatScalar => ("<f8", vec![], vec![0; 8]),
            Expected::BoolScalar => ("|b1", vec![], vec![1]),
        };
        // A version 1.0 .npy header, as numpy writes it.
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut text =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        bytes.extend(b"\x93NUMPY\x01\x00");
        bytes.extend((text.len() as u16).to_le_bytes());
        bytes.extend(text.as_bytes());
        bytes.extend(data);
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_bare_eqx_refuses_a_wrong_config_or_variant_before_running_python() {
    let dir = tempfile::tempdir().unwrap();
    tiny_eqx(&dir.path().join("m.eqx"));
    let run = |extra: &[&str]| {
        let a = dinodiff()
            .current_dir(dir.path())
            .args([
                "capture", "eqx", "--model", "m.eqx", "--input", "i.st", "-o", "e.st",
            ])
            .args(extra)
            .args(["--python", "/nowhere/python3"])
            .assert()
            .code(2);
        stderr_of(&a).trim_end().to_string()
    };
    assert_eq!(
        run(&["--config", "heads=2"]),
        "error: --config \"heads=2\": \"heads=2\" is not KEY=VALUE with KEY one of img_size, \
         patch_size, embed_dim, depth, num_heads, num_storage_tokens"
    );
    assert_eq!(
        run(&["--variant", "vits16"]),
        "error: m.eqx does not hold jax2onnx's Equinox DINOv3 with img_size=32,patch_size=16,\
         embed_dim=384,depth=12,num_heads=6,num_storage_tokens=4 (--variant vits16): record 0 \
         (patch_embed.proj.weight) is f32 [64, 3, 16, 16], not f32 [384, 3, 16, 16]; its leaves \
         are those of --config img_size=32,patch_size=16,embed_dim=64,depth=2,num_heads=2,\
         num_storage_tokens=4"
    );
    assert_eq!(
        run(&[]),
        "error: m.eqx has no sidecar: no DINOv3 variant that jax2onnx's example model can hold \
         (vits16, vitb16, vitl16) fits it: its leaves are those of --config img_size=32,\
         patch_size=16,embed_dim=64,depth=2,num_heads=2,num_storage_tokens=4. If that is the \
         model, pass that --config"
    );
    // The config right, the next check speaks: the interpreter.
    assert_eq!(
        run(&["--config", "depth=2"]),
        "error: --python /nowhere/python3: no such file; pass a Python that has JAX with \
         --python PATH or set DINODIFF_PYTHON"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["m.eqx"]);
}

#[test]
fn capture_eqx_refuses_an_npz_header_nested_deep_at_once() {
    // npyz's header parser backtracks exponentially on nested brackets (fuzz/regressions/npz/).
    let npz = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions/npz/nested_braces_header.npz");
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let a = dinodiff()
        .args(["capture", "eqx", "--npz"])
        .arg(&npz)
        .arg("-o")
        .arg(dir.path().join("o.st"))
        .assert()
        .code(2);
    assert!(started.elapsed().as_secs() < 5);
    let err = stderr_of(&a);
    assert!(
        err.ends_with(
            ": array \"__dinodiff_manifest__\" has a header whose brackets nest 17 deep, deeper \
             than NumPy writes; the file is damaged or was not written by numpy\n"
        ),
        "{err}"
    );
}
