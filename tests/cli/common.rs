//! Helpers shared by the integration tests: running the binary, and tiny dumps built through the
//! library's writer.

use dinodiff::dump::{DumpWriter, Manifest, SourceKind, TensorRecord};
use dinodiff::model::Stage;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

pub fn dinodiff() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("dinodiff").unwrap()
}

/// The path of the binary under test, for tests that spawn or copy it themselves.
pub fn dinodiff_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("dinodiff")
}

pub fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).unwrap()
}

pub fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stderr.clone()).unwrap()
}

/// Runs dinodiff with `args` in `dir`, asserts the exit code, returns stdout.
pub fn run_in(dir: &Path, args: &[&str], code: i32) -> String {
    stdout_of(&dinodiff().current_dir(dir).args(args).assert().code(code))
}

/// [`run_in`] for a command printing JSON (`--format json`); returns it parsed.
pub fn json_in(dir: &Path, args: &[&str], code: i32) -> serde_json::Value {
    serde_json::from_str(&run_in(dir, args, code)).unwrap()
}

/// `dinodiff diff a.st b.st --format json EXTRA...` in `dir`; asserts the exit code, parses stdout.
pub fn diff_json(dir: &Path, extra: &[&str], code: i32) -> serde_json::Value {
    let mut args = vec!["diff", "a.st", "b.st", "--format", "json"];
    args.extend_from_slice(extra);
    json_in(dir, &args, code)
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A canonical two-block dump with tiny shapes. Values: `base(stage_index, element)`; `edit` may
/// change any tensor before it is written (name, values, shape).
pub fn canonical_dump(
    path: &Path,
    source: SourceKind,
    edit: impl FnMut(&str, &mut Vec<f32>, &mut Vec<usize>),
) {
    canonical_dump_with_raw(path, source, edit, &[]);
}

/// [`canonical_dump`] followed by raw (non-canonical) [1, 3, 4] tensors of the given names, as a
/// capture writes the values it does not recognize.
pub fn canonical_dump_with_raw(
    path: &Path,
    source: SourceKind,
    mut edit: impl FnMut(&str, &mut Vec<f32>, &mut Vec<usize>),
    raw: &[&str],
) {
    let mut manifest = Manifest::for_this_process(source);
    manifest.variant = Some("tiny".into());
    let mut w = DumpWriter::create(path, manifest).unwrap();
    for (i, name) in all_names(2).iter().enumerate() {
        let mut shape = match name.as_str() {
            "input" => vec![1, 3, 4, 4],
            "cls" | "pooled" => vec![1, 4],
            _ => vec![1, 3, 4],
        };
        let n: usize = shape.iter().product();
        let mut values: Vec<f32> = (0..n)
            .map(|e| ((i * 7 + e * 3) % 11) as f32 * 0.125 - 0.5)
            .collect();
        edit(name, &mut values, &mut shape);
        w.write(
            name,
            TensorRecord {
                native: format!("native/{name}"),
                stage: Some(name.clone()),
                ..Default::default()
            },
            Dtype::F32,
            &shape,
            &f32_bytes(&values),
        )
        .unwrap();
    }
    for name in raw {
        write_raw(&mut w, name, &[1, 3, 4], &[0.25; 12]);
    }
    w.finish().unwrap();
}

/// Writes one f32 tensor with no stage, its name as the native name.
fn write_raw(w: &mut DumpWriter, name: &str, shape: &[usize], values: &[f32]) {
    w.write(
        name,
        TensorRecord {
            native: name.to_string(),
            ..Default::default()
        },
        Dtype::F32,
        shape,
        &f32_bytes(values),
    )
    .unwrap();
}

/// A dump of arbitrary named f32 tensors, in the given order.
pub fn plain_dump(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut w = DumpWriter::create(path, Manifest::for_this_process(SourceKind::Other)).unwrap();
    for (name, shape, values) in tensors {
        write_raw(&mut w, name, shape, values);
    }
    w.finish().unwrap();
}

/// Every canonical stage name of a `depth`-block model, in execution order.
pub fn all_names(depth: usize) -> Vec<String> {
    Stage::all(depth).iter().map(ToString::to_string).collect()
}
