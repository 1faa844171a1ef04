//! The Python helpers of `tools/` embedded in the binary (`include_str!`), so that a `cargo
//! install`ed dinodiff has them: `dinodiff tools` lists them, `dinodiff tools NAME` writes one out
//! as a self-contained script ([`bundle`]), and `dinodiff capture eqx --model` runs the Equinox
//! recorder with the user's Python ([`python`]).
//!
//! Contract:
//! - [`FILES`] is the one list of embedded files: a runnable tool (`tool!`: its name, what it does,
//!   the packages it imports) or a module the tools import (`module!`). Adding a Python file is
//!   one line there;
//! - which modules a tool carries is read off its `import` / `from … import` lines (nested ones
//!   too), transitively, among the embedded modules ([`Tool::modules`]); nothing else of
//!   `tools/` is needed at run time;
//! - a package's pinned version comes from the tool's requirements file ([`pinned_in`]):
//!   `tools/requirements.txt`, the file the project's own venv is built from, or for
//!   `equimo-capture` (Python >= 3.12) `tools/requirements-equimo.txt`;
//! - a tool imported by another tool (`equimo_capture.py` imports `eqx_capture.py`) is carried
//!   like a module.

pub mod bundle;
pub mod python;

use anyhow::{Result, bail};
use std::collections::BTreeSet;

/// One embedded file of `tools/`.
#[derive(Debug)]
pub struct PyFile {
    /// Its file name in `tools/` (`eqx_capture.py`).
    pub file: &'static str,
    pub source: &'static str,
    /// Set for a runnable tool; `None` for a module that tools import.
    pub tool: Option<ToolInfo>,
}

#[derive(Debug)]
pub struct ToolInfo {
    /// What `dinodiff tools NAME` calls it (`eqx-capture`).
    pub name: &'static str,
    pub about: &'static str,
    /// The packages it imports (import names, which are also their pip names here).
    pub needs: &'static [&'static str],
    /// The oldest Python it runs on, and what requires it.
    pub min_python: (u32, u32),
    pub min_python_why: &'static str,
    /// The pinned requirements file its packages' versions come from ([`pinned`]).
    pub requirements: &'static str,
}

macro_rules! tool {
    ($name:literal, $file:literal, $about:literal, needs [$($package:literal),* $(,)?]) => {
        PyFile {
            file: $file,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/", $file)),
            tool: Some(ToolInfo {
                name: $name,
                about: $about,
                needs: &[$($package),*],
                min_python: MIN_PYTHON,
                min_python_why: "jax and jax2onnx require it",
                requirements: REQUIREMENTS,
            }),
        }
    };
}

/// The pins of the project's own venv (CPython 3.11).
const REQUIREMENTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tools/requirements.txt"
));
/// The pins of the equimo venv (CPython 3.13; `tools/dev equimo-venv`).
const EQUIMO_REQUIREMENTS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tools/requirements-equimo.txt"
));

macro_rules! module {
    ($file:literal) => {
        PyFile {
            file: $file,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/", $file)),
            tool: None,
        }
    };
}

/// Every embedded file of `tools/`: the tools a user needs without a checkout, and the modules
/// they import.
pub const FILES: &[PyFile] = &[
    tool!("eqx-capture", "eqx_capture.py",
          "record an Equinox DINOv3 run into an .npz (what `capture eqx --model` runs)",
          needs ["numpy", "jax", "jaxlib", "equinox", "jax2onnx", "safetensors"]),
    tool!("meta-to-eqx", "meta_to_eqx.py",
          "map a Meta DINOv3 .pth onto jax2onnx's Equinox DINOv3 (model.eqx + sidecar)",
          needs ["numpy", "torch", "jax", "jaxlib", "equinox", "jax2onnx"]),
    tool!("export-onnx", "export_onnx.py",
          "export an Equinox DINOv3 (model.eqx) to ONNX with jax2onnx",
          needs ["numpy", "jax", "jaxlib", "equinox", "jax2onnx", "onnx"]),
    tool!("timm-capture", "timm_capture.py",
          "the reference capture of a Meta .pth through timm's DINOv3 port (a dump)",
          needs ["numpy", "torch", "timm", "safetensors"]),
    tool!(
        "make-meta-checkpoint",
        "make_meta_checkpoint.py",
        "a random-weight DINOv3 checkpoint in Meta's format (demos, tests)",
        needs["torch"]
    ),
    PyFile {
        file: "equimo_capture.py",
        source: include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tools/equimo_capture.py"
        )),
        tool: Some(ToolInfo {
            name: "equimo-capture",
            about: "record equimo 2.x's DINOv3 (from a Meta .pth by equimo's converter, or an \
                    equimo-saved model) into an .npz (`capture eqx --kind equimo`)",
            needs: &[
                "numpy",
                "jax",
                "jaxlib",
                "equinox",
                "equimo",
                "torch",
                "timm",
                "safetensors",
            ],
            min_python: (3, 12),
            min_python_why: "equimo 2.x requires it",
            requirements: EQUIMO_REQUIREMENTS,
        }),
    },
    module!("eqx_model.py"),
    module!("dumpfile.py"),
    module!("toolerror.py"),
    module!("vocabulary.py"),
];

/// The oldest Python the tools run on (jax 0.10 and jax2onnx 0.17 require 3.11).
pub const MIN_PYTHON: (u32, u32) = (3, 11);

/// A runnable tool of [`FILES`].
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub file: &'static PyFile,
    pub info: &'static ToolInfo,
}

impl Tool {
    /// Every runnable tool, in [`FILES`] order.
    pub fn all() -> impl Iterator<Item = Tool> {
        FILES
            .iter()
            .filter_map(|file| file.tool.as_ref().map(|info| Tool { file, info }))
    }

    /// The tool called `name` (`eqx-capture`; its file name `eqx_capture.py` is accepted too).
    pub fn named(name: &str) -> Result<Tool> {
        match Tool::all().find(|t| t.info.name == name || t.file.file == name) {
            Some(tool) => Ok(tool),
            None => bail!(
                "no embedded tool {name:?}; `dinodiff tools` lists them: {}",
                Tool::all()
                    .map(|t| t.info.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The embedded modules this tool imports, directly or through another module, in
    /// [`FILES`] order.
    pub fn modules(&self) -> Vec<&'static PyFile> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut pending = vec![self.file.source];
        while let Some(source) = pending.pop() {
            for name in imported_names(source) {
                if let Some(module) = module_file(name)
                    && seen.insert(module.file)
                {
                    pending.push(module.source);
                }
            }
        }
        FILES
            .iter()
            .filter(|f| f.file != self.file.file && seen.contains(f.file))
            .collect()
    }
}

/// The embedded module that `import NAME` names.
fn module_file(name: &str) -> Option<&'static PyFile> {
    FILES
        .iter()
        .find(|f| f.file.strip_suffix(".py") == Some(name))
}

/// The top-level names a Python source imports (`import a, b as c`, `from a.b import c`), at any
/// indentation; relative imports and `__future__` are left out.
fn imported_names(source: &str) -> impl Iterator<Item = &str> {
    source.lines().flat_map(|line| {
        let line = line.trim_start();
        let names: Vec<&str> = if let Some(rest) = line.strip_prefix("from ") {
            rest.split_whitespace().next().into_iter().collect()
        } else if let Some(rest) = line.strip_prefix("import ") {
            let rest = rest.split('#').next().unwrap_or("");
            rest.split(',')
                .filter_map(|part| part.split_whitespace().next())
                .collect()
        } else {
            Vec::new()
        };
        names
            .into_iter()
            .filter(|n| !n.starts_with('.') && *n != "__future__")
            .map(|n| n.split('.').next().unwrap_or(n))
    })
}

/// `PACKAGE==VERSION` as `tools/requirements.txt` pins it, or the bare name when it is not there.
pub fn pinned(package: &str) -> String {
    pinned_in(REQUIREMENTS, package)
}

/// `PACKAGE==VERSION` as the requirements file `requirements` (its text) pins it, or the bare name.
pub fn pinned_in(requirements: &str, package: &str) -> String {
    let normal = |s: &str| s.trim().to_ascii_lowercase().replace(['_', '.'], "-");
    requirements
        .lines()
        .filter_map(|line| line.split_once("=="))
        .find(|(name, _)| normal(name) == normal(package))
        .map_or(package.to_string(), |(name, version)| {
            format!("{}=={}", name.trim(), version.trim())
        })
}

/// Writes a script written out by `dinodiff tools NAME -o PATH`: complete or not at all (beside
/// it, then renamed), made executable.
pub fn write_script(path: &std::path::Path, text: &str) -> Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let (mut file, registration) = crate::cleanup::register(
        || {
            tempfile::Builder::new()
                .prefix(".dinodiff-tool-")
                .tempfile_in(dir)
        },
        |f| f.path(),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    registration
        .commit(|| file.persist(path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines_give_top_level_names() {
        let source = "import os, sys as system\nfrom pathlib import Path\n    from eqx_model \
                      import KIND  # noqa\n\timport jax.numpy as jnp\nfrom . import x\n\
                      from __future__ import annotations\nimported = 1\n";
        let names: Vec<&str> = imported_names(source).collect();
        assert_eq!(names, ["os", "sys", "pathlib", "eqx_model", "jax"]);
    }

    #[test]
    fn each_tool_carries_the_modules_it_imports_transitively() {
        let modules = |name: &str| -> Vec<&str> {
            let tool = Tool::named(name).unwrap();
            tool.modules().iter().map(|m| m.file).collect()
        };
        // eqx_capture imports eqx_model (-> toolerror) and dumpfile; vocabulary for --variant.
        assert_eq!(
            modules("eqx-capture"),
            [
                "eqx_model.py",
                "dumpfile.py",
                "toolerror.py",
                "vocabulary.py"
            ]
        );
        assert_eq!(
            modules("timm_capture.py"),
            ["dumpfile.py", "toolerror.py", "vocabulary.py"]
        );
        assert_eq!(
            modules("make-meta-checkpoint"),
            ["toolerror.py", "vocabulary.py"]
        );
    }

    #[test]
    fn every_file_is_named_once_and_every_module_is_used() {
        let mut names: Vec<&str> = FILES.iter().map(|f| f.file).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
        let used: BTreeSet<&str> = Tool::all()
            .flat_map(|t| t.modules())
            .map(|m| m.file)
            .collect();
        for module in FILES.iter().filter(|f| f.tool.is_none()) {
            assert!(
                used.contains(module.file),
                "{} is imported by no tool",
                module.file
            );
        }
    }

    #[test]
    fn unknown_tools_are_refused_with_the_list() {
        let e = Tool::named("eqx").unwrap_err().to_string();
        assert!(
            e.starts_with("no embedded tool \"eqx\"; `dinodiff tools` lists them: eqx-capture, "),
            "{e}"
        );
    }

    #[test]
    fn pins_come_from_the_requirements() {
        assert!(pinned("jax").starts_with("jax==0."), "{}", pinned("jax"));
        assert!(pinned("jax2onnx").starts_with("jax2onnx=="));
        assert_eq!(pinned("no-such-package"), "no-such-package");
    }
}
