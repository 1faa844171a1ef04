//! `dinodiff capture`: what runs without libtorch or ONNX Runtime (`capture meta` without its
//! feature, `capture eqx` refusing what is not an npz).

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
