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
//!   the sidecar's, which the resolved config equals;
//! - [`RecorderKind::Equimo`] runs `tools/equimo_capture.py` instead (equimo 2.x's DINOv3, on a
//!   Python of 3.12 or newer): the model is a Meta checkpoint converted by equimo's own converter
//!   (`--checkpoint`) or an equimo-saved model (`--model`); equimo's tool reads the config off
//!   the checkpoint or takes `--variant`, so nothing is resolved here ([`Recorded::resolved`] is
//!   `None`).

use super::skeleton::{Resolved, resolve};
use super::{EqxImport, EqxOptions, import};
use crate::pytools::Tool;
use crate::pytools::python::{Interpreter, Probe};
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const RECORDER: &str = "eqx-capture";
pub const EQUIMO_RECORDER: &str = "equimo-capture";

/// Which Equinox DINOv3 is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecorderKind {
    /// jax2onnx's example model (`eqx_capture.py`).
    Jax2onnx,
    /// equimo 2.x's `equimo.vision.models` DINOv3 (`equimo_capture.py`).
    Equimo,
}

pub struct RecordOptions {
    pub kind: RecorderKind,
    /// The model file: a `.eqx` (jax2onnx), or an equimo-saved model.
    pub model: Option<PathBuf>,
    /// Equimo only: a Meta checkpoint that equimo's converter turns into its model.
    pub checkpoint: Option<PathBuf>,
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
    /// The jax2onnx model's config; `None` for equimo (its tool resolves its own).
    pub resolved: Option<Resolved>,
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
    on_start: impl FnOnce(&Interpreter, &Probe, Option<&Resolved>),
) -> Result<Recorded> {
    let (resolved, tool) = match opts.kind {
        RecorderKind::Jax2onnx => {
            let Some(model) = &opts.model else {
                bail!("capture eqx records jax2onnx's model from --model M.eqx")
            };
            let config = opts.config.as_deref();
            let resolved = resolve(model, opts.variant.as_deref(), config)?;
            (Some(resolved), Tool::named(RECORDER)?)
        }
        RecorderKind::Equimo => {
            if opts.model.is_some() == opts.checkpoint.is_some() {
                bail!(
                    "--kind equimo records equimo's DINOv3 from exactly one of --checkpoint \
                     META.pth (converted by equimo's converter) or --model (an equimo-saved model)"
                )
            }
            (None, Tool::named(EQUIMO_RECORDER)?)
        }
    };
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
    on_start(&python, &probe, resolved.as_ref());
    python.run(&script, &recorder_args(opts, resolved.as_ref(), &npz))?;
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

fn recorder_args(opts: &RecordOptions, resolved: Option<&Resolved>, npz: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(model) = &opts.model {
        args.extend(["--model".into(), model.into()]);
    }
    if let Some(checkpoint) = &opts.checkpoint {
        args.extend(["--checkpoint".into(), checkpoint.into()]);
    }
    args.extend([
        "--input".into(),
        opts.input.clone().into(),
        "-o".into(),
        npz.into(),
    ]);
    match resolved {
        Some(r) if !r.sidecar => args.extend(["--config".into(), r.config.text().into()]),
        Some(_) => {}
        None => {
            if let Some(variant) = &opts.variant {
                args.extend(["--variant".into(), variant.into()]);
            }
        }
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
