//! `dinodiff prep`: the input tensor and its provenance, and its refusals.

use crate::common::{dinodiff, json_in};

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
        .stderr("error: cannot read the image missing.jpg: no such file; check the path\n");
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
        .stderr("error: --transform none keeps the 100x50 pixels of odd.png, but ViT patches need sides that are multiples of 16; use --transform meta or square\n");
    dinodiff()
        .current_dir(dir.path())
        .args(["prep", "--image", "odd.png", "--size", "100", "-o", "in.st"])
        .assert()
        .code(2)
        .stderr("error: --size 100 is not a positive multiple of the patch size 16\n");
    assert!(!dir.path().join("in.st").exists());
}
