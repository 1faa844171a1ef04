//! The model file on disk: decoding it, the external data files its initializers name, and
//! where the marked copy of it is written so that those files resolve.
//!
//! Contract:
//! - [`read_model`] gives the file's bytes and its decoded [`ModelProto`]; a file that does not
//!   decode as a model with a graph is an error saying so;
//! - [`ModelFile::locate`] accepts only external data locations that are relative paths inside
//!   the model's directory (no `..`, checked before any file is opened) and exist there; each
//!   location is checked in turn (sorted), and the first failure is the error;
//! - [`ModelFile::write_copy`] writes a rewritten model where ONNX Runtime resolves the same
//!   external data (it refuses paths that escape the model's directory, symlinks included):
//!   beside the model as a hidden temporary file when that directory is writable, else into a
//!   temporary directory with the data files hard-linked (or copied, across file systems). The
//!   copy is removed when the returned [`MarkedFile`] is dropped, and its path (the file, or the
//!   directory) is registered with [`crate::cleanup`]: SIGINT or SIGTERM removes it too.

use crate::cleanup::{self, Registration};
use crate::onnx::proto::{ModelProto, TensorHead};
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Decodes the model file; errors say what the file is not.
pub(super) fn read_model(path: &Path) -> Result<(Vec<u8>, ModelProto)> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the ONNX model {}: {}",
            path.display(),
            crate::dump::reader::io_problem(&e)
        )
    })?;
    let Some(model) = crate::onnx::proto::decode_model(&bytes) else {
        bail!(
            "{} is not an ONNX model: it does not decode as a ModelProto with a graph ({} bytes). \
             Was it cut short, or is it another format?",
            path.display(),
            bytes.len()
        );
    };
    Ok((bytes, model))
}

/// The model's path, its directory and the external data files it needs there.
pub(super) struct ModelFile {
    pub path: PathBuf,
    pub dir: PathBuf,
    /// Relative locations of the external data files.
    pub externals: BTreeSet<String>,
}

impl ModelFile {
    /// Checks the external data locations of `model` (read from `path`); see the module docs.
    pub(super) fn locate(path: &Path, model: &ModelProto) -> Result<ModelFile> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let externals = external_files(model);
        for loc in &externals {
            if !stays_inside(loc) {
                bail!(
                    "the model {} names the external data location {loc:?}, which is not a \
                     relative path inside the model's directory (ONNX Runtime refuses such \
                     locations too); re-save the model with its data beside it (onnx.save(..., \
                     save_as_external_data=True, location=\"<name>.data\"))",
                    path.display()
                );
            }
            if !dir.join(loc).is_file() {
                bail!(
                    "the model {} keeps initializers in the external file {loc}, which is not \
                     beside it ({} does not exist); copy it next to the model",
                    path.display(),
                    dir.join(loc).display()
                );
            }
        }
        Ok(ModelFile {
            path: path.to_path_buf(),
            dir,
            externals,
        })
    }

    /// Writes `bytes` (an encoded model) where its external data resolves; see the module docs.
    pub(super) fn write_copy(&self, bytes: &[u8]) -> Result<MarkedFile> {
        use std::io::Write;
        let stem = self
            .path
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        let beside = cleanup::register(
            || {
                tempfile::Builder::new()
                    .prefix(&format!(".{stem}.marked-"))
                    .suffix(".onnx")
                    .tempfile_in(&self.dir)
            },
            |f| f.path(),
        );
        if let Ok((mut f, registration)) = beside {
            if f.write_all(bytes).and_then(|_| f.flush()).is_ok() {
                return Ok(MarkedFile::Beside(f, registration));
            }
            drop(f); // removes it, before its path is forgotten
            drop(registration);
        }
        let (dir, registration) = cleanup::register(tempfile::tempdir, |d| d.path())
            .context("creating a temporary directory for the marked model")?;
        for loc in &self.externals {
            let from = self.dir.join(loc);
            let to = dir.path().join(loc);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
        }
        let path = dir.path().join(format!("{stem}.marked.onnx"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(MarkedFile::Apart(dir, path, registration))
    }
}

/// Where the marked copy of the model lives while it runs (removed on drop; the registration,
/// dropped after it, forgets its path).
pub(super) enum MarkedFile {
    Beside(tempfile::NamedTempFile, #[allow(dead_code)] Registration),
    /// The directory is kept (and removed on drop) with the model path inside it.
    Apart(
        #[allow(dead_code)] tempfile::TempDir,
        PathBuf,
        #[allow(dead_code)] Registration,
    ),
}

impl MarkedFile {
    pub(super) fn path(&self) -> &Path {
        match self {
            MarkedFile::Beside(f, _) => f.path(),
            MarkedFile::Apart(_, p, _) => p,
        }
    }
}

/// Whether an external data location names a file under the model's directory: relative, with
/// no `..`. Anything else is refused before a file is opened, so the temporary copy of a model
/// in a read-only directory can never link or copy a file onto itself or outside its directory.
fn stays_inside(location: &str) -> bool {
    use std::path::Component;
    let path = Path::new(location);
    path.components().next().is_some()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Relative locations of the external data files the model's initializers name.
fn external_files(model: &ModelProto) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    if let Some(g) = &model.graph {
        for t in &g.initializer {
            if let Some(loc) = TensorHead::parse(t)
                .ok()
                .and_then(|h| h.external_location().map(str::to_string))
            {
                files.insert(loc);
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::stays_inside;

    #[test]
    fn external_locations_must_stay_in_the_model_directory() {
        assert!(stays_inside("m.onnx.data"));
        assert!(stays_inside("weights/m.data"));
        assert!(stays_inside("./m.data"));
        assert!(!stays_inside("/etc/passwd"));
        assert!(!stays_inside("../elsewhere/m.data"));
        assert!(!stays_inside("weights/../../m.data"));
        assert!(!stays_inside(""));
    }
}
