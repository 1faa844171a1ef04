//! The wording of user-facing failures, one table across the commands: each case exits 2
//! (docs/exit-codes.md), its message names the offending file (and tensor when there is one),
//! says what to do, and nothing is left at `-o` nor beside it. The exact texts of many of these
//! are pinned where their command is tested (bad_inputs.rs, diff.rs, prep.rs, …); this table
//! checks that they follow the one convention: `error: <what failed, on which file>; <what to
//! do>`, on one line unless a parser's own excerpt follows.

use crate::common::{dinodiff, plain_dump, stderr_of};
use dinodiff::dump::{DumpWriter, Manifest, SourceKind, TensorRecord};
use std::path::Path;

struct Case {
    /// The command line, run in the fixture directory.
    args: &'static [&'static str],
    /// What the message must name: the offending file(s), tensor(s).
    names: &'static [&'static str],
    /// The part of the message that says what to do.
    hint: &'static str,
}

const CASES: &[Case] = &[
    Case {
        args: &["diff", "nope.st", "a.st"],
        names: &["nope.st"],
        hint: "no such file; check the path",
    },
    Case {
        args: &["diff", "a.st", "text.st"],
        names: &["text.st"],
        hint: "pass a safetensors dump (from dinodiff capture, prep or synth",
    },
    Case {
        args: &["diff", "a.st", "cut.st"],
        names: &["cut.st"],
        hint: "capture it again if this one was cut short",
    },
    Case {
        args: &["inspect", "adir.st"],
        names: &["adir.st"],
        hint: "pass a safetensors dump",
    },
    Case {
        args: &["diff", "a.st", "a.st", "nope.st"],
        names: &["nope.st"],
        hint: "check the path",
    },
    Case {
        args: &["diff", "a.st", "other.st"],
        names: &["a.st", "other.st"],
        hint: "Capture both from the same input.st, or pass --allow-input-mismatch",
    },
    Case {
        args: &["diff", "complex.st", "real.st"],
        names: &["\"w\"", "complex.st", "real.st"],
        hint: "convert one side to the other's dtype",
    },
    Case {
        args: &["diff", "a.st", "a.st", "--map", "nomap.toml"],
        names: &["nomap.toml"],
        hint: "check the path",
    },
    Case {
        args: &["diff", "a.st", "a.st", "--map", "bad.toml"],
        names: &["bad.toml"],
        hint: "its format: docs/alignment.md",
    },
    Case {
        args: &["diff", "a.st", "a.st", "--map", "badre.toml"],
        names: &["badre.toml", "rewrite #1"],
        hint: "its format: docs/alignment.md",
    },
    Case {
        args: &["diff", "a.st", "a.st", "--map", "ghost.toml"],
        names: &["ghost.toml", "a.st", "\"ghost\""],
        hint: "fix its [pairs]",
    },
    Case {
        args: &["checkpoint", "nope.pth"],
        names: &["nope.pth"],
        hint: "check the path",
    },
    Case {
        args: &["checkpoint", "text.st"],
        names: &["text.st"],
        hint: "pass the .pth file that torch.save wrote",
    },
    Case {
        args: &["capture", "eqx", "--npz", "nope.npz", "-o", "out.st"],
        names: &["nope.npz"],
        hint: "check the path",
    },
    Case {
        args: &["capture", "eqx", "--npz", "text.st", "-o", "out.st"],
        names: &["text.st"],
        hint: "pass the recording that tools/eqx_capture.py wrote",
    },
    Case {
        args: &[
            "capture", "eqx", "--model", "nope.eqx", "--input", "in.st", "-o", "out.st",
        ],
        names: &["nope.eqx"],
        hint: "check the path",
    },
    Case {
        args: &[
            "capture", "eqx", "--model", "text.st", "--input", "in.st", "-o", "out.st",
        ],
        names: &["text.st", "record 0"],
        hint: "pass the model file that eqx.tree_serialise_leaves wrote",
    },
    Case {
        args: &["tools", "eqx_capture"],
        names: &["\"eqx_capture\""],
        hint: "`dinodiff tools` lists them",
    },
    Case {
        args: &[
            "capture",
            "onnx",
            "--model",
            "nope.onnx",
            "--input",
            "in.st",
            "-o",
            "o.st",
        ],
        names: &["nope.onnx"],
        hint: "check the path",
    },
    Case {
        args: &[
            "capture", "onnx", "--model", "text.st", "--input", "in.st", "-o", "o.st",
        ],
        names: &["text.st"],
        hint: "Was it cut short, or is it another format?",
    },
    Case {
        args: &["prep", "--image", "nope.png", "-o", "out.st"],
        names: &["nope.png"],
        hint: "check the path",
    },
    Case {
        args: &["prep", "--image", "text.st", "-o", "out.st"],
        names: &["text.st"],
        hint: "dinodiff reads JPEG and PNG",
    },
    Case {
        args: &[
            "prep",
            "--image",
            "odd.png",
            "--transform",
            "none",
            "-o",
            "out.st",
        ],
        names: &["odd.png"],
        hint: "use --transform meta or square",
    },
    Case {
        args: &["synth", "--input", "noinput.st", "-o", "out.st"],
        names: &["noinput.st", "\"input\""],
        hint: "make one with `dinodiff prep",
    },
    Case {
        args: &["synth", "--input", "in.st", "-o", "out.st"],
        names: &["in.st"],
        hint: "pass --image-size 32, or prepare the input with `dinodiff prep --size 224`",
    },
    Case {
        args: &["synth", "--image-size", "32", "-o", "nodir/out.st"],
        names: &["nodir/out.st", "nodir"],
        hint: "create it or choose another -o",
    },
    Case {
        args: &["synth", "--image-size", "32", "-o", "adir.st"],
        names: &["adir.st"],
        hint: "-o must name a file",
    },
];

/// The files the cases refer to, made in `dir`.
fn fixtures(dir: &Path) {
    let run = |args: &[&str]| {
        dinodiff().current_dir(dir).args(args).assert().code(0);
    };
    let png = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8, y as u8, 7]));
    png.save(dir.join("img.png")).unwrap();
    image::RgbImage::new(40, 24)
        .save(dir.join("odd.png"))
        .unwrap();
    run(&[
        "prep",
        "--image",
        "img.png",
        "--transform",
        "none",
        "-o",
        "in.st",
    ]);
    run(&[
        "synth",
        "--image-size",
        "32",
        "--input",
        "in.st",
        "-o",
        "a.st",
    ]);
    run(&["synth", "--image-size", "64", "-o", "other.st"]);
    let a = std::fs::read(dir.join("a.st")).unwrap();
    std::fs::write(dir.join("cut.st"), &a[..a.len() / 2]).unwrap();
    std::fs::write(dir.join("text.st"), "hello, not a dump").unwrap();
    std::fs::create_dir(dir.join("adir.st")).unwrap();
    std::fs::write(dir.join("bad.toml"), "x = [\n").unwrap();
    std::fs::write(
        dir.join("badre.toml"),
        "[[rewrite]]\npattern = \"(\"\nreplace = \"x\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("ghost.toml"), "[pairs]\n\"ghost\" = \"cls\"\n").unwrap();
    plain_dump(&dir.join("noinput.st"), &[("x", vec![2], vec![1.0, 2.0])]);
    plain_dump(&dir.join("real.st"), &[("w", vec![2], vec![1.0, 3.0])]);
    let mut w = DumpWriter::create(
        &dir.join("complex.st"),
        Manifest::for_this_process(SourceKind::Other),
    )
    .unwrap();
    let record = TensorRecord {
        native: "w".into(),
        ..Default::default()
    };
    w.write("w", record, safetensors::Dtype::C64, &[2], &[0u8; 16])
        .unwrap();
    w.finish().unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_failure_names_its_file_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let before = listing(dir.path());
    let mut wrong = Vec::new();
    for case in CASES {
        let assert = dinodiff().current_dir(dir.path()).args(case.args).assert();
        let code = assert.get_output().status.code();
        let stderr = stderr_of(&assert);
        let message = stderr.strip_prefix("error: ").unwrap_or("");
        let missing: Vec<&str> = case
            .names
            .iter()
            .chain([&case.hint])
            .copied()
            .filter(|s| !message.contains(s))
            .collect();
        if code != Some(2) || !missing.is_empty() || assert.get_output().stdout != b"" {
            wrong.push(format!(
                "dinodiff {}: exit {code:?}, lacks {missing:?} in:\n{stderr}",
                case.args.join(" ")
            ));
        }
        assert_eq!(listing(dir.path()), before, "{:?} left files", case.args);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
