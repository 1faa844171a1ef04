//! Stage rules for the legacy `torch.onnx.export(..., dynamo=False)` of timm's DINOv3 port.
//!
//! Contract: applies when no node carries the dynamo exporter's name-scope metadata and some
//! node's name has a module path under `blocks.`. A node's module path is the scopes of its name
//! (`/blocks.0/attn/proj/MatMul` → `blocks.0.attn.proj`), else it has none. The stages are then
//! `timm_layout`'s.

use super::timm_layout::{self, has_name_scopes, node_name_scopes};
use super::{InlinedGraph, Out, StageRules};

pub struct TorchLegacy;

impl StageRules for TorchLegacy {
    fn name(&self) -> &'static str {
        "torch.onnx legacy (timm DINOv3)"
    }

    fn applies(&self, graph: InlinedGraph) -> bool {
        !graph.values.iter().any(has_name_scopes)
            && graph
                .values
                .iter()
                .any(|v| node_name_scopes(v).is_some_and(|m| m.starts_with("blocks.")))
    }

    fn recognize(&self, graph: InlinedGraph, out: &mut Out) {
        let module = graph
            .values
            .iter()
            .map(|v| node_name_scopes(v).unwrap_or_default())
            .collect();
        timm_layout::recognize(graph.values, module, self.name(), out);
    }
}
