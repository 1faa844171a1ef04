//! `capture eqx --model M.eqx --input input.st -o eqx.st`: records the Equinox run with the
//! embedded recorder (`tools/eqx_capture.py`, [`crate::pytools`]) and the user's Python, then
//! imports the recording ([`super::import`]).
//!
//! Contract:
//! - the model's config is resolved first ([`super::skeleton::resolve`]), the interpreter found
//!   and probed ([`crate::pytools::python`]), and the input dump read, so that what is wrong is
//!   said before the slow part, and nothing is written;
//! - the recorder is written as a self-contained script into a private temporary directory beside
//!   `-o`, which also holds the recording unless `--keep-npz PATH` names where to keep it; the
//!   directory is removed when the capture ends, also by an error or a signal
//!   ([`crate::cleanup`]);
//! - a bare model (no sidecar) gets its config as `--config`; a model with a sidecar is read with
//!   the sidecar's, which the resolved config equals.

use super::skeleton::{Resolved, resolve};
use super::{EqxImport, EqxOptions, import};
use crate::pytools::Tool;
use crate::pytools::python::{Interpreter, Probe};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const RECORDER: &str = "eqx-capture";

pub struct RecordOptions {
    pub model: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    /// `--python`; else `DINODIFF_PYTHON`, else `python3` on `PATH`.
    pub python: Option<PathBuf>,
    pub variant: Option<String>,
    pub config: Option<String>,
    /// Keep the recording here instead of in the temporary directory.
    pub keep_npz: Option<PathBuf>,
}

/// What was done before the import: for the report.
pub struct Recorded {
    pub resolved: Resolved,
    pub python: Interpreter,
    pub probe: Probe,
    pub import: EqxImport,
}

/// The temporary directory, registered for removal on a signal; fields drop in order (the
/// directory is removed before its path is forgotten).
struct Workspace {
    dir: tempfile::TempDir,
    _registration: crate::cleanup::Registration,
}

/// Checks, records, imports (see the module docs).
pub fn record_and_import(
    opts: &RecordOptions,
    on_start: impl FnOnce(&Interpreter, &Probe, &Resolved),
) -> Result<Recorded> {
    let resolved = resolve(&opts.model, opts.variant.as_deref(), opts.config.as_deref())?;
    let tool = Tool::named(RECORDER)?;
    let python = Interpreter::find(opts.python.as_deref())?;
    let probe = python.probe(tool)?;
    crate::capture::input::read_input_dump(&opts.input)?;
    let workspace = workspace(&opts.output)?;
    let script = workspace.dir.path().join(tool.file.file);
    std::fs::write(&script, crate::pytools::bundle::render(tool)).with_context(|| {
        format!(
            "writing the recorder into {}",
            workspace.dir.path().display()
        )
    })?;
    let npz = opts
        .keep_npz
        .clone()
        .unwrap_or_else(|| workspace.dir.path().join("run.npz"));
    on_start(&python, &probe, &resolved);
    python.run(&script, &recorder_args(opts, &resolved, &npz))?;
    let import = import(&EqxOptions {
        npz,
        output: opts.output.clone(),
        input: Some(opts.input.clone()),
    })?;
    drop(workspace);
    Ok(Recorded {
        resolved,
        python,
        probe,
        import,
    })
}

fn recorder_args(opts: &RecordOptions, resolved: &Resolved, npz: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--model".into(),
        opts.model.clone().into(),
        "--input".into(),
        opts.input.clone().into(),
        "-o".into(),
        npz.into(),
    ];
    if !resolved.sidecar {
        args.extend(["--config".into(), resolved.config.text().into()]);
    }
    args
}

/// A private directory beside `output` (where the dump's own temporaries go).
fn workspace(output: &Path) -> Result<Workspace> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Absolute and without `.`: the recorder's messages name its files plainly.
    let parent = std::fs::canonicalize(&parent).unwrap_or(parent);
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let (dir, registration) = crate::cleanup::register(
        || {
            tempfile::Builder::new()
                .prefix(&format!(".{name}.eqx-record-"))
                .tempdir_in(&parent)
        },
        |d| d.path(),
    )
    .with_context(|| format!("making a temporary directory in {}", parent.display()))?;
    Ok(Workspace {
        dir,
        _registration: registration,
    })
}
