//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`, the seeds and what the
//! fuzzer kept) and every input that once crashed or hung a parser (`fuzz/regressions/<target>/`)
//! through the fuzz targets, asserting that none panics. The fuzzing itself is not part of the
//! tests (docs/fuzzing.md); this keeps what it found fixed, in a second.

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Runs `target` on each file; returns the files it panicked on, with the message.
fn replay(target: targets::Target, files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| target(&bytes)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", file.display()));
        }
    }
    failures
}

#[test]
fn every_corpus_and_regression_file_parses_without_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for (name, target) in targets::TARGETS {
        let seeds = files_of(&root.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed files");
        failures.extend(replay(*target, &seeds));
        failures.extend(replay(
            *target,
            &files_of(&root.join("regressions").join(name)),
        ));
    }
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}

#[test]
fn the_seeds_are_accepted_by_their_parsers() {
    // A seed the parser refuses would fuzz only the refusal; each is a valid file of its kind.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for file in files_of(&root.join("dump")) {
        dinodiff::dump::Dump::open(&file).unwrap();
    }
    for file in files_of(&root.join("onnx")) {
        let bytes = std::fs::read(&file).unwrap();
        let model = dinodiff::onnx::proto::decode_model(&bytes).unwrap();
        dinodiff::onnx::inline::inline_local_functions(model).unwrap();
    }
    for file in files_of(&root.join("checkpoint")) {
        let all = |_: &dinodiff::checkpoint::Shapes| true;
        let selection = dinodiff::checkpoint::Selection {
            key: None,
            accept: &all,
        };
        dinodiff::checkpoint::open(&file, &selection).unwrap();
    }
    for file in files_of(&root.join("name_map")) {
        dinodiff::align::NameMap::load(&file).unwrap();
    }
    for file in files_of(&root.join("eqx")) {
        use dinodiff::capture::eqx::{leaves, skeleton};
        let read = leaves::read_leaves(&file).unwrap();
        let config = skeleton::Found::of(&read).config().unwrap();
        skeleton::resolve(&file, None, Some(&config.text())).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    for file in files_of(&root.join("npz")) {
        let opts = dinodiff::capture::eqx::EqxOptions {
            npz: file.clone(),
            output: out.path().join("o.st"),
            input: None,
        };
        dinodiff::capture::eqx::import(&opts).unwrap();
    }
}
