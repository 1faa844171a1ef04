//! What `capture eqx --model` says before it records.

use crate::capture::eqx::skeleton::{Resolved, source_words};
use crate::pytools::python::{Interpreter, Probe};

/// `recording M.eqx (config …, from …) with /usr/bin/python3 (Python 3.11.7; jax 0.10.2, …)`.
/// Without a resolved config, equimo's DINOv3 (its tool reads the config itself).
pub fn eqx_recording(python: &Interpreter, probe: &Probe, resolved: Option<&Resolved>) -> String {
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
        resolved.map_or("equimo's DINOv3".to_string(), |r| r.config.text()),
        resolved.map_or("config from the checkpoint or --variant".to_string(), |r| {
            source_words(&r.from).to_string()
        })
    )
}
