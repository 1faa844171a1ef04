//! The words for an ONNX dump's deployed session: where its headline comes from and what ONNX
//! Runtime's graph optimizations change (`onnx.optimizer_effect` in its manifest).

use super::sci;
use crate::diff::DumpInfo;
use crate::dump::OptimizerEffect;

/// `, headline from the deployed session (…)`, or nothing for a dump without one.
pub(super) fn deployed(d: &DumpInfo) -> String {
    match (&d.optimizer_effect, d.deployed_headline) {
        (Some(e), true) => format!(
            ", headline from the deployed session ({})",
            optimizer_effect(e)
        ),
        (Some(e), false) => format!(", {}", optimizer_effect(e)),
        (None, true) => ", headline from the deployed session".into(),
        (None, false) => String::new(),
    }
}

/// `ONNX Runtime optimizations all change the outputs by max|Δ| 7.15e-07 against the graph as
/// exported (disable)`: what the optimizer changed.
pub fn optimizer_effect(e: &OptimizerEffect) -> String {
    let (deployed, graph) = (&e.deployed_opt_level, &e.graph_opt_level);
    if e.max_abs == 0.0 {
        format!(
            "ONNX Runtime optimizations {deployed} leave the outputs bit-identical to the graph \
             as exported ({graph})"
        )
    } else {
        format!(
            "ONNX Runtime optimizations {deployed} change the outputs by max|Δ| {} against the \
             graph as exported ({graph})",
            sci(e.max_abs, 2)
        )
    }
}

/// The finding when ONNX Runtime's optimizations change a dump's outputs beyond the default
/// tolerance; `None` when they do not.
pub fn optimizer_finding(path: &str, e: &OptimizerEffect) -> Option<String> {
    e.over_tolerance.then(|| {
        format!(
            "finding: ONNX Runtime's graph optimizations ({}) change the outputs of {path} by \
             max|Δ| {} against the graph as exported ({}), over the default tolerance: the model \
             users deploy is not the exported graph (capture with --deploy-opt-level {} to see \
             the deployed values, or report it to ONNX Runtime).",
            e.deployed_opt_level,
            sci(e.max_abs, 2),
            e.graph_opt_level,
            e.deployed_opt_level
        )
    })
}
