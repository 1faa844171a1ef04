//! The fuzz targets: one function per parser of user files, feeding it bytes the way dinodiff
//! reads such a file (written to a scratch file when the parser takes a path), then using what
//! it returns the way the commands do, so that a panic anywhere downstream of the parser counts.
//!
//! Contract: each target returns normally for every input, whether the parser accepts or refuses
//! it; a panic (or an abort, a hang, an allocation over the fuzzer's memory limit) is a bug in
//! dinodiff. The targets also check properties a valid parse promises: an `.npz` that imports
//! gives a dump that opens, and an inlined ONNX model re-encodes into one that decodes.
//!
//! Shared by the AFL++ harnesses (`fuzz/src/bin/*.rs`) and by the replay test of the main crate
//! (`tests/cli/fuzz_corpus.rs`, through `#[path]`), so the corpus files are replayed in CI through
//! exactly the code the fuzzer runs.

use dinodiff::align::NameMap;
use dinodiff::dump::{Dump, DumpWriter, Manifest, SourceKind, TensorRecord};
use std::path::PathBuf;
use std::sync::OnceLock;

/// A fuzz target: takes any bytes, returns normally or panics.
pub type Target = fn(&[u8]);

/// The targets by name (the names of the harness binaries and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("dump", dump),
    ("npz", npz),
    ("eqx", eqx),
    ("onnx", onnx),
    ("checkpoint", checkpoint),
    ("name_map", name_map),
];

/// A directory private to this thread (tests replay in parallel threads) for the files the
/// parsers read and write; left to the OS's temp cleaning (a fuzzing process is killed, it never
/// returns).
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: PathBuf = tempfile::Builder::new()
            .prefix("dinodiff-fuzz-")
            .tempdir()
            .expect("creating a scratch directory")
            .keep();
    }
    DIR.with(PathBuf::clone)
}

/// Writes `bytes` to the scratch file `name` and returns its path.
fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("writing the scratch file");
    path
}

/// `.st` dumps: `Dump::open` (header JSON, offsets, manifest), then what `inspect` and a `diff`
/// of the dump with itself read from it.
pub fn dump(bytes: &[u8]) {
    let path = scratch_file("in.st", bytes);
    let Ok(d) = Dump::open(&path) else { return };
    let inspection = dinodiff::inspect::inspect(&d);
    let _ = dinodiff::report::Renderer::inspect(&dinodiff::report::JsonRenderer, &inspection);
    let opts = dinodiff::diff::DiffOptions {
        tolerance: dinodiff::metrics::Tolerance {
            atol: 1e-5,
            rtol: 1e-4,
        },
        allow_input_mismatch: false,
        map: NameMap::default(),
        min_coverage: dinodiff::diff::DEFAULT_MIN_COVERAGE,
        tokens: true,
        align: dinodiff::align::Mode::Auto,
    };
    let _ = dinodiff::diff::diff(&d, &d, &opts);
}

/// Equinox recordings: `capture eqx --npz` (zip, npy headers, the recorder's manifest, the head
/// derivation); a recording that imports must give a dump that opens.
pub fn npz(bytes: &[u8]) {
    let npz = scratch_file("in.npz", bytes);
    let output = scratch().join("npz-out.st");
    let _ = std::fs::remove_file(&output);
    let opts = dinodiff::capture::eqx::EqxOptions {
        npz,
        output: output.clone(),
        input: None,
    };
    if dinodiff::capture::eqx::import(&opts).is_ok()
        && let Err(e) = Dump::open(&output)
    {
        panic!("an imported recording gave a dump that does not open: {e}");
    }
}

/// Equinox model files: `capture eqx --model`'s reading of an `.eqx` before any Python runs
/// (the `.npy` record headers, the dimensions read off them, the inference against the hub
/// variants, the sidecar-less resolution); a config that resolves must have exactly the file's
/// record layout.
pub fn eqx(bytes: &[u8]) {
    use dinodiff::capture::eqx::{leaves, skeleton};
    let path = scratch_file("in.eqx", bytes);
    let Ok(read) = leaves::read_leaves(&path) else {
        return;
    };
    let found = skeleton::Found::of(&read);
    let _ = skeleton::infer(&read, &found, &dinodiff::model::variant::VARIANTS);
    let given = found.config().map(|c| c.text());
    for config in [None, given.as_deref()] {
        if let Ok(resolved) = skeleton::resolve(&path, None, config) {
            let layout = skeleton::layout(&resolved.config);
            if layout.len() != read.len() {
                panic!(
                    "a resolved config's layout has {} records, the file {}",
                    layout.len(),
                    read.len()
                );
            }
        }
    }
}

/// ONNX models: the protobuf decoder, the inliner of local functions and the stage rules; an
/// inlined model must encode into bytes that decode again.
pub fn onnx(bytes: &[u8]) {
    use prost::Message;
    let Some(model) = dinodiff::onnx::proto::decode_model(bytes) else {
        return;
    };
    let Ok(inlined) = dinodiff::onnx::inline::inline_local_functions(model) else {
        return;
    };
    let _ = dinodiff::capture::onnx::rules::recognize(&inlined.values, &inlined.calls);
    let encoded = inlined.model.encode_to_vec();
    if let Err(e) = dinodiff::onnx::proto::ModelProto::decode(encoded.as_slice()) {
        panic!("an inlined model does not decode after encoding: {e}");
    }
}

/// `torch.save` checkpoints: zip directory, pickle VM, state-dict choice (with the predicate
/// `dinodiff checkpoint` passes), then every tensor's bytes, as `dinodiff checkpoint --format
/// json` hashes them.
pub fn checkpoint(bytes: &[u8]) {
    let path = scratch_file("in.pth", bytes);
    let accept = |shapes: &dinodiff::checkpoint::Shapes| {
        dinodiff::model::Architecture::infer(shapes).is_ok()
    };
    let selection = dinodiff::checkpoint::Selection {
        key: None,
        accept: &accept,
    };
    let Ok(sd) = dinodiff::checkpoint::open(&path, &selection) else {
        return;
    };
    let _ = dinodiff::checkpoint::listing(&sd, true);
}

/// `diff --map` files: the TOML, its regexes and layouts, then the alignment of two small dumps
/// whose names are spelled the ways the backends spell them (names, then values).
pub fn name_map(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(map) = NameMap::parse(text) else {
        return;
    };
    let (a, b) = map_dumps();
    let _ = dinodiff::align::align_in(a, b, &map, dinodiff::align::Mode::Auto);
}

/// Two dumps to align: canonical stage names on one side, Equinox and ONNX names on the other.
fn map_dumps() -> &'static (Dump, Dump) {
    static DUMPS: OnceLock<(Dump, Dump)> = OnceLock::new();
    DUMPS.get_or_init(|| {
        let a = small_dump(
            "map-a.st",
            &[
                "input",
                "patch_embed",
                "blocks.0.ls1",
                "blocks.0.output",
                "norm",
                "cls",
            ],
        );
        let b = small_dump(
            "map-b.st",
            &[
                "input",
                "patch_embed",
                "blocks[0].ls1",
                "VisionTransformer_1/Block_1/v_3",
                "x_norm_clstoken",
                "norm",
            ],
        );
        (a, b)
    })
}

fn small_dump(name: &str, tensors: &[&str]) -> Dump {
    let path = scratch().join(name);
    let mut w = DumpWriter::create(&path, Manifest::for_this_process(SourceKind::Other))
        .expect("creating a dump");
    for (i, t) in tensors.iter().enumerate() {
        let values: Vec<f32> = (0..4).map(|k| (i * 4 + k) as f32).collect();
        let record = TensorRecord {
            native: t.to_string(),
            ..TensorRecord::default()
        };
        w.write(
            t,
            record,
            safetensors::Dtype::F32,
            &[1, 4],
            bytemuck::cast_slice(&values),
        )
        .expect("writing a tensor");
    }
    w.finish().expect("finishing a dump");
    Dump::open(&path).expect("opening a dump just written")
}
