//! Inlining of ONNX local functions, so that values computed inside functions (nested at any
//! depth) become values of the main graph that can be marked as outputs.
//!
//! Contract:
//! - every node of the main graph that calls a local function of the model (matched on domain,
//!   name and overload) is replaced by the function's body, recursively; formal inputs and
//!   outputs become the call's actual names; values internal to a call are renamed by their call
//!   path, `<call>/<call>/.../<name>` where `<call>` is the calling node's name (or its op type
//!   when unnamed), made unique with a `#k` suffix if needed;
//! - attribute references (`ref_attr_name`) take the calling node's attribute of that name, else
//!   the function's default (`attribute_proto`), else the attribute is left out, as ONNX
//!   specifies; references inside control-flow subgraphs of a body are resolved too, and the
//!   subgraphs' references to the body's values are renamed;
//! - the inlined nodes keep their op type, domain, attributes and `metadata_props`, and are named
//!   `<call path>/<node name>`; the model's opset imports gain the domains the bodies use (a
//!   version conflict between a body and the model is an error) and lose the function domains
//!   no node uses any more; `functions` is emptied;
//! - a recursive function (one that calls itself, directly or not), calls nested deeper than 64,
//!   or an expansion past 2^16 nodes and calls (functions that call functions several times
//!   over) is an error, so that no model, however small, makes the inliner run for ever;
//! - [`Inlined::values`] lists every value a node of the main graph produces, in graph order
//!   (topological), with where it came from. Values inside control-flow subgraphs are not graph
//!   values and are only counted.
//!
//! The expansion of calls is `expand`'s; this module holds the result types and the
//! model-level steps around it (the opset imports, which calls return which value).

mod expand;

use super::proto::{ModelProto, OperatorSetIdProto, canonical_domain, same_domain};
use anyhow::{Result, bail};
use expand::Inliner;
use std::collections::{BTreeMap, HashSet};

/// Where a value of the inlined graph comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueOrigin {
    /// Its name in the inlined graph (the name to mark as an output).
    pub name: String,
    /// Its name where it was written: inside its function body, or in the main graph.
    pub native: String,
    /// The producing node's name in the inlined graph.
    pub node: String,
    pub op_type: String,
    /// Names of the calling nodes, outermost first (empty for main-graph values).
    pub call_path: Vec<String>,
    /// The functions (op types of those calls), outermost first.
    pub functions: Vec<String>,
    /// The producing node's `metadata_props`.
    pub metadata: Vec<(String, String)>,
    /// The producing node's inputs (names in the inlined graph).
    pub inputs: Vec<String>,
    /// The calls that return this value (it is their actual output), outermost first, as
    /// (call path, function name): how a function's result is told from its internals.
    pub returned_by: Vec<(String, String)>,
}

impl ValueOrigin {
    /// `VisionTransformer_1/Block_3/LayerScale_1` (empty for main-graph values).
    pub fn call_path_string(&self) -> String {
        self.call_path.join("/")
    }
}

/// One expanded function call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Its call path (`VisionTransformer_1/Block_2`).
    pub path: String,
    pub function: String,
    /// Actual inputs and outputs, as names in the inlined graph.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

pub struct Inlined {
    pub model: ModelProto,
    pub values: Vec<ValueOrigin>,
    /// Every expanded call, in expansion (graph) order.
    pub calls: Vec<Call>,
    /// Function calls expanded, at every depth.
    pub calls_inlined: usize,
    /// Values produced inside control-flow subgraphs (If / Loop / Scan bodies).
    pub subgraph_values: usize,
}

/// Inlines every local function call of the main graph.
pub fn inline_local_functions(mut model: ModelProto) -> Result<Inlined> {
    let Some(mut graph) = model.graph.take() else {
        bail!("the model has no graph");
    };
    let functions_owned = std::mem::take(&mut model.functions);
    let mut inliner = Inliner::new(&functions_owned, &graph);
    let body = std::mem::take(&mut graph.node);
    inliner.expand_main(&body, &model.opset_import)?;
    // Main-graph subgraphs (If / Loop at top level) are not rewritten but their values counted.
    let function_domains: HashSet<String> = inliner.functions.keys().map(|k| k.0.clone()).collect();
    let opsets = reconcile_opsets(&model.opset_import, &inliner.used_opsets, &function_domains)?;
    let Inliner {
        nodes,
        mut values,
        calls,
        subgraph_values,
        mut returns,
        call_log,
        ..
    } = inliner;
    for v in &mut values {
        if let Some(r) = returns.remove(&v.name) {
            v.returned_by = r;
        }
    }
    graph.node = nodes;
    model.graph = Some(graph);
    model.opset_import = opsets;
    model.functions = Vec::new();
    Ok(Inlined {
        model,
        values,
        calls: call_log,
        calls_inlined: calls,
        subgraph_values,
    })
}

/// The inlined model's opset imports: the model's, less the domains that only named functions,
/// plus the domains the bodies use (`used`: domain -> (version, who imported it first)); a
/// version conflict between the model and a body is an error.
fn reconcile_opsets(
    imports: &[OperatorSetIdProto],
    used: &BTreeMap<String, (i64, String)>,
    function_domains: &HashSet<String>,
) -> Result<Vec<OperatorSetIdProto>> {
    let mut opsets: Vec<OperatorSetIdProto> = Vec::new();
    for o in imports {
        let d = canonical_domain(o.domain()).to_string();
        let is_used = used.contains_key(&d);
        if function_domains.contains(&d) && !is_used {
            continue; // a domain that only named functions
        }
        if let Some((v, who)) = used.get(&d)
            && o.version != Some(*v)
        {
            bail!(
                "cannot inline: the model imports domain {:?} at version {:?} but {who} uses version {v}",
                if d.is_empty() { "ai.onnx" } else { &d },
                o.version.unwrap_or(0)
            );
        }
        opsets.push(o.clone());
    }
    for (d, (v, _)) in used {
        if !opsets
            .iter()
            .any(|o| same_domain(o.domain.as_deref().unwrap_or(""), d))
        {
            opsets.push(OperatorSetIdProto {
                domain: Some(d.clone()),
                version: Some(*v),
            });
        }
    }
    Ok(opsets)
}

#[cfg(test)]
mod tests;
