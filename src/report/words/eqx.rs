//! What `capture eqx --model` says before it records.

use crate::capture::eqx::skeleton::{Resolved, source_words};
use crate::pytools::python::{Interpreter, Probe};

/// `recording M.eqx (config …, from …) with /usr/bin/python3 (Python 3.11.7; jax 0.10.2, …)`.
pub fn eqx_recording(python: &Interpreter, probe: &Probe, resolved: &Resolved) -> String {
    let packages: Vec<String> = probe
        .packages
        .iter()
        .map(|(name, version)| format!("{name} {}", version.as_deref().unwrap_or("?")))
        .collect();
    format!(
        "recording with {} (Python {}; {}): {} ({})",
        python.path.display(),
        probe.version,
        packages.join(", "),
        resolved.config.text(),
        source_words(&resolved.from)
    )
}
