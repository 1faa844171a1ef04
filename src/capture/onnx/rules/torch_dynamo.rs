//! Stage rules for `torch.onnx.export(..., dynamo=True)` (the default since torch 2.9) of timm's
//! DINOv3 port.
//!
//! Contract: applies when a node carries the exporter's `pkg.torch.onnx.name_scopes` metadata.
//! A node's module path is the second-to-last entry of that list (`['', 'blocks.0',
//! 'blocks.0.norm1', 'layer_norm']` → `blocks.0.norm1`); a node without it falls back to the
//! scopes of its name, else has none. The stages are then `timm_layout`'s.

use super::timm_layout::{self, NAME_SCOPES, has_name_scopes, node_name_scopes};
use super::{InlinedGraph, Out, StageRules};
use crate::onnx::inline::ValueOrigin;

pub struct TorchDynamo;

impl StageRules for TorchDynamo {
    fn name(&self) -> &'static str {
        "torch.onnx dynamo (timm DINOv3)"
    }

    fn applies(&self, graph: InlinedGraph) -> bool {
        graph.values.iter().any(has_name_scopes)
    }

    fn recognize(&self, graph: InlinedGraph, out: &mut Out) {
        let module = graph
            .values
            .iter()
            .map(|v| {
                name_scopes_module(v)
                    .or_else(|| node_name_scopes(v))
                    .unwrap_or_default()
            })
            .collect();
        timm_layout::recognize(graph.values, module, self.name(), out);
    }
}

/// The module path in a node's `name_scopes` metadata; `None` when it has none.
fn name_scopes_module(v: &ValueOrigin) -> Option<String> {
    let (_, scopes) = v.metadata.iter().find(|(k, _)| k == NAME_SCOPES)?;
    let parts: Vec<&str> = scopes
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|p| p.trim().trim_matches('\'').trim_matches('"'))
        .collect();
    let m = if parts.len() >= 2 {
        parts[parts.len() - 2]
    } else {
        ""
    };
    Some(m.to_string())
}
