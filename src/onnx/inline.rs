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
//! - [`Inlined::values`] lists every value a node of the main graph produces, in graph order
//!   (topological), with where it came from. Values inside control-flow subgraphs are not graph
//!   values and are only counted.

use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use super::proto::{StringStringEntryProto, TensorHead, canonical_domain, same_domain};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};

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

type FunctionKey = (String, String, String);

fn key(domain: &str, name: &str, overload: &str) -> FunctionKey {
    (
        canonical_domain(domain).to_string(),
        name.to_string(),
        overload.to_string(),
    )
}

struct Scope {
    /// Value names of the body being expanded -> names in the inlined graph.
    rename: HashMap<String, String>,
    /// Attribute values visible to `ref_attr_name` references.
    attributes: HashMap<String, AttributeProto>,
    path: Vec<String>,
    functions: Vec<String>,
    /// The opset imports of the body being expanded (None: the main graph's).
    opsets: Option<Vec<OperatorSetIdProto>>,
}

struct Inliner<'m> {
    functions: HashMap<FunctionKey, &'m super::proto::FunctionProto>,
    taken: HashSet<String>,
    nodes: Vec<NodeProto>,
    values: Vec<ValueOrigin>,
    calls: usize,
    subgraph_values: usize,
    /// Domain -> (version, who imported it first) for the emitted nodes' domains.
    used_opsets: BTreeMap<String, (i64, String)>,
    /// Full call paths already used.
    calls_seen: HashSet<String>,
    /// Value name -> the calls returning it (call path, function), outermost first.
    returns: HashMap<String, Vec<(String, String)>>,
    call_log: Vec<Call>,
}

const MAX_DEPTH: usize = 64;

impl Inliner<'_> {
    fn unique(&mut self, wanted: String) -> String {
        if self.taken.insert(wanted.clone()) {
            return wanted;
        }
        let mut k = 2;
        loop {
            let candidate = format!("{wanted}#{k}");
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
            k += 1;
        }
    }

    /// A call's path component: its node name, or `<op type>_<k>` for unnamed calls; unique
    /// among the calls at the same path.
    fn call_name(&mut self, path: &[String], node: &NodeProto) -> String {
        let prefix = path.join("/");
        let named = node.name().to_string();
        let mut k = 0;
        loop {
            let candidate = match (named.is_empty(), k) {
                (false, 0) => named.clone(),
                (false, k) => format!("{named}#{}", k + 1),
                (true, k) => format!("{}_{}", node.op_type(), k + 1),
            };
            if self.calls_seen.insert(format!("{prefix}/{candidate}")) {
                return candidate;
            }
            k += 1;
        }
    }

    /// The inlined-graph name of a value written `name` in `scope` (defining it when new).
    fn map_name(&mut self, scope: &mut Scope, name: &str) -> String {
        if name.is_empty() || scope.path.is_empty() {
            return name.to_string();
        }
        if let Some(n) = scope.rename.get(name) {
            return n.clone();
        }
        let fresh = self.unique(format!("{}/{name}", scope.path.join("/")));
        scope.rename.insert(name.to_string(), fresh.clone());
        fresh
    }

    fn resolve_attributes(
        &mut self,
        attrs: &[AttributeProto],
        scope: &mut Scope,
    ) -> Vec<AttributeProto> {
        let mut out = Vec::with_capacity(attrs.len());
        for a in attrs {
            let mut a = match &a.ref_attr_name {
                Some(r) => match scope.attributes.get(r) {
                    Some(bound) => AttributeProto {
                        name: a.name.clone(),
                        ref_attr_name: None,
                        doc_string: a.doc_string.clone(),
                        ..bound.clone()
                    },
                    None => continue,
                },
                None => a.clone(),
            };
            if let Some(g) = a.g.as_mut() {
                self.rewrite_subgraph(g, scope);
            }
            for g in &mut a.graphs {
                self.rewrite_subgraph(g, scope);
            }
            out.push(a);
        }
        out
    }

    /// Renames a control-flow subgraph's references to the enclosing body's values and resolves
    /// attribute references inside it.
    fn rewrite_subgraph(&mut self, g: &mut GraphProto, scope: &mut Scope) {
        let mut local: HashSet<String> = g.input.iter().filter_map(|v| v.name.clone()).collect();
        for t in &g.initializer {
            if let Some(n) = TensorHead::parse(t).ok().and_then(|h| h.name) {
                local.insert(n);
            }
        }
        for n in &g.node {
            local.extend(n.output.iter().cloned());
        }
        self.subgraph_values += g.node.iter().map(|n| n.output.len()).sum::<usize>();
        let outer = |name: &str, scope: &Scope| -> Option<String> {
            if local.contains(name) {
                None
            } else {
                scope.rename.get(name).cloned()
            }
        };
        for n in &mut g.node {
            for i in &mut n.input {
                if let Some(r) = outer(i, scope) {
                    *i = r;
                }
            }
            n.attribute = self.resolve_attributes(&n.attribute, scope);
        }
        for o in &mut g.output {
            if let Some(name) = o.name.as_mut()
                && let Some(r) = outer(name, scope)
            {
                *name = r;
            }
        }
    }

    fn note_opset(
        &mut self,
        node: &NodeProto,
        scope: &Scope,
        model_opsets: &[OperatorSetIdProto],
    ) -> Result<()> {
        let domain = canonical_domain(node.domain());
        let imports = scope.opsets.as_deref().unwrap_or(model_opsets);
        let Some(version) = imports
            .iter()
            .find(|o| same_domain(o.domain.as_deref().unwrap_or(""), domain))
            .and_then(|o| o.version)
        else {
            return Ok(()); // an undeclared domain: the runtime will say so
        };
        let who = if scope.functions.is_empty() {
            "the model".to_string()
        } else {
            format!("function {}", scope.functions.join("/"))
        };
        match self.used_opsets.get(domain) {
            Some((v, first)) if *v != version => bail!(
                "cannot inline: {first} uses domain {:?} at version {v} but {who} at version {version}",
                if domain.is_empty() { "ai.onnx" } else { domain }
            ),
            Some(_) => {}
            None => {
                self.used_opsets.insert(domain.to_string(), (version, who));
            }
        }
        Ok(())
    }

    fn expand(
        &mut self,
        body: &[NodeProto],
        scope: &mut Scope,
        model_opsets: &[OperatorSetIdProto],
    ) -> Result<()> {
        if scope.path.len() > MAX_DEPTH {
            bail!(
                "cannot inline: local functions nest deeper than {MAX_DEPTH} calls ({}); is a function recursive?",
                scope.functions.join(" > ")
            );
        }
        for node in body {
            let inputs: Vec<String> = node.input.iter().map(|i| self.map_name(scope, i)).collect();
            let attributes = self.resolve_attributes(&node.attribute, scope);
            let k = key(node.domain(), node.op_type(), node.overload());
            if let Some(&f) = self.functions.get(&k) {
                self.calls += 1;
                let outputs: Vec<String> = node
                    .output
                    .iter()
                    .map(|o| self.map_name(scope, o))
                    .collect();
                let call = self.call_name(&scope.path, node);
                let mut rename = HashMap::new();
                for (formal, actual) in f
                    .input
                    .iter()
                    .zip(inputs.iter().chain(std::iter::repeat(&String::new())))
                {
                    rename.insert(formal.clone(), actual.clone());
                }
                // An output the caller omits ("") is still computed inside the body, where other
                // nodes may read it: it keeps a fresh call-path name instead of becoming "".
                for (formal, actual) in f.output.iter().zip(&outputs) {
                    if !actual.is_empty() {
                        rename.insert(formal.clone(), actual.clone());
                    }
                }
                let mut bound: HashMap<String, AttributeProto> = f
                    .attribute_proto
                    .iter()
                    .filter_map(|a| Some((a.name.clone()?, a.clone())))
                    .collect();
                for a in attributes {
                    if let Some(n) = a.name.clone() {
                        bound.insert(n, a);
                    }
                }
                let mut path = scope.path.clone();
                path.push(call);
                self.call_log.push(Call {
                    path: path.join("/"),
                    function: f.name().to_string(),
                    inputs: inputs.clone(),
                    outputs: outputs.clone(),
                });
                for o in outputs.iter().filter(|o| !o.is_empty()) {
                    self.returns
                        .entry(o.clone())
                        .or_default()
                        .push((path.join("/"), f.name().to_string()));
                }
                let mut functions = scope.functions.clone();
                functions.push(f.name.clone().unwrap_or_default());
                let mut inner = Scope {
                    rename,
                    attributes: bound,
                    path,
                    functions,
                    opsets: Some(f.opset_import.clone()),
                };
                self.expand(&f.node, &mut inner, model_opsets)?;
                continue;
            }
            self.note_opset(node, scope, model_opsets)?;
            let outputs: Vec<String> = node
                .output
                .iter()
                .map(|o| self.map_name(scope, o))
                .collect();
            let own = node
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| node.op_type().to_string());
            let name = if scope.path.is_empty() {
                node.name.clone().unwrap_or_default()
            } else {
                self.unique(format!("{}/{own}", scope.path.join("/")))
            };
            let metadata: Vec<(String, String)> = node
                .metadata_props
                .iter()
                .map(|StringStringEntryProto { key, value }| {
                    (
                        key.clone().unwrap_or_default(),
                        value.clone().unwrap_or_default(),
                    )
                })
                .collect();
            for (native, o) in node.output.iter().zip(&outputs) {
                if o.is_empty() {
                    continue;
                }
                self.values.push(ValueOrigin {
                    name: o.clone(),
                    native: native.clone(),
                    node: name.clone(),
                    op_type: node.op_type().to_string(),
                    call_path: scope.path.clone(),
                    functions: scope.functions.clone(),
                    metadata: metadata.clone(),
                    inputs: inputs.clone(),
                    returned_by: Vec::new(),
                });
            }
            self.nodes.push(NodeProto {
                input: inputs,
                output: outputs,
                name: Some(name),
                attribute: attributes,
                ..node.clone()
            });
        }
        Ok(())
    }
}

/// Inlines every local function call of the main graph.
pub fn inline_local_functions(mut model: ModelProto) -> Result<Inlined> {
    let Some(mut graph) = model.graph.take() else {
        bail!("the model has no graph");
    };
    let functions_owned = std::mem::take(&mut model.functions);
    let mut taken: HashSet<String> = HashSet::new();
    taken.extend(graph.input.iter().filter_map(|v| v.name.clone()));
    taken.extend(graph.output.iter().filter_map(|v| v.name.clone()));
    for t in &graph.initializer {
        if let Some(n) = TensorHead::parse(t).ok().and_then(|h| h.name) {
            taken.insert(n);
        }
    }
    for n in &graph.node {
        taken.extend(n.output.iter().cloned());
        if let Some(name) = &n.name {
            taken.insert(name.clone());
        }
    }
    let mut inliner = Inliner {
        functions: functions_owned
            .iter()
            .map(|f| {
                (
                    key(
                        f.domain.as_deref().unwrap_or(""),
                        f.name.as_deref().unwrap_or(""),
                        f.overload.as_deref().unwrap_or(""),
                    ),
                    f,
                )
            })
            .collect(),
        taken,
        nodes: Vec::with_capacity(graph.node.len()),
        values: Vec::new(),
        calls: 0,
        subgraph_values: 0,
        used_opsets: BTreeMap::new(),
        calls_seen: HashSet::new(),
        returns: HashMap::new(),
        call_log: Vec::new(),
    };
    let body = std::mem::take(&mut graph.node);
    let mut top = Scope {
        rename: HashMap::new(),
        attributes: HashMap::new(),
        path: Vec::new(),
        functions: Vec::new(),
        opsets: None,
    };
    let model_opsets = model.opset_import.clone();
    inliner.expand(&body, &mut top, &model_opsets)?;
    // Main-graph subgraphs (If / Loop at top level) are not rewritten but their values counted.
    let function_domains: HashSet<String> = inliner.functions.keys().map(|k| k.0.clone()).collect();
    let mut opsets: Vec<OperatorSetIdProto> = Vec::new();
    for o in &model.opset_import {
        let d = canonical_domain(o.domain()).to_string();
        let used = inliner.used_opsets.contains_key(&d);
        if function_domains.contains(&d) && !used {
            continue; // a domain that only named functions
        }
        if let Some((v, who)) = inliner.used_opsets.get(&d)
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
    for (d, (v, _)) in &inliner.used_opsets {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::FunctionProto;

    fn node(op: &str, domain: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(name.into()),
            op_type: Some(op.into()),
            domain: Some(domain.into()),
            ..Default::default()
        }
    }

    fn opset(d: &str, v: i64) -> OperatorSetIdProto {
        OperatorSetIdProto {
            domain: Some(d.into()),
            version: Some(v),
        }
    }

    fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(2),
            i: Some(v),
            ..Default::default()
        }
    }

    /// main: y = Outer(x); Outer(a) = Inner(a) then Relu; Inner(p) = LeakyRelu(p, alpha=@alpha),
    /// Outer calls Inner twice with different alphas (one by reference to Outer's attribute).
    fn nested() -> ModelProto {
        let mut leaky = node("Elu", "", "elu", &["p"], &["q"]);
        leaky.attribute.push(AttributeProto {
            name: Some("alpha".into()),
            ref_attr_name: Some("alpha".into()),
            r#type: Some(1),
            ..Default::default()
        });
        let inner = FunctionProto {
            name: Some("Inner".into()),
            domain: Some("local".into()),
            input: vec!["p".into()],
            output: vec!["q".into()],
            attribute_proto: vec![AttributeProto {
                name: Some("alpha".into()),
                r#type: Some(1),
                f: Some(0.5),
                ..Default::default()
            }],
            node: vec![leaky],
            opset_import: vec![opset("", 18)],
            ..Default::default()
        };
        let mut call1 = node("Inner", "local", "Inner_1", &["a"], &["t"]);
        call1.attribute.push(AttributeProto {
            name: Some("alpha".into()),
            ref_attr_name: Some("scale".into()),
            r#type: Some(1),
            ..Default::default()
        });
        let call2 = node("Inner", "local", "", &["t"], &["u"]);
        let outer = FunctionProto {
            name: Some("Outer".into()),
            domain: Some("local".into()),
            input: vec!["a".into()],
            output: vec!["b".into()],
            attribute: vec!["scale".into()],
            node: vec![call1, call2, node("Relu", "", "relu", &["u"], &["b"])],
            opset_import: vec![opset("", 18), opset("local", 1)],
            ..Default::default()
        };
        let mut main = node("Outer", "local", "Outer_1", &["x"], &["y"]);
        main.attribute.push(AttributeProto {
            name: Some("scale".into()),
            r#type: Some(1),
            f: Some(0.25),
            ..Default::default()
        });
        ModelProto {
            ir_version: Some(10),
            opset_import: vec![opset("", 18), opset("local", 1)],
            graph: Some(GraphProto {
                node: vec![main],
                input: vec![crate::onnx::proto::ValueInfoProto {
                    name: Some("x".into()),
                    ..Default::default()
                }],
                output: vec![crate::onnx::proto::ValueInfoProto {
                    name: Some("y".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            functions: vec![inner, outer],
            ..Default::default()
        }
    }

    #[test]
    fn nested_calls_are_expanded_with_paths_and_attribute_references() {
        let inl = inline_local_functions(nested()).unwrap();
        assert_eq!(inl.calls_inlined, 3);
        let g = inl.model.graph.as_ref().unwrap();
        let summary: Vec<(String, Vec<String>, Vec<String>)> = g
            .node
            .iter()
            .map(|n| (n.name.clone().unwrap(), n.input.clone(), n.output.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "Outer_1/Inner_1/elu".into(),
                    vec!["x".into()],
                    vec!["Outer_1/t".into()]
                ),
                (
                    "Outer_1/Inner_2/elu".into(),
                    vec!["Outer_1/t".into()],
                    vec!["Outer_1/u".into()]
                ),
                (
                    "Outer_1/relu".into(),
                    vec!["Outer_1/u".into()],
                    vec!["y".into()]
                ),
            ]
        );
        // alpha: by reference to Outer's `scale` (0.25), then Inner's default (0.5).
        assert_eq!(g.node[0].attribute[0].f, Some(0.25));
        assert_eq!(g.node[0].attribute[0].ref_attr_name, None);
        assert_eq!(g.node[0].attribute[0].name.as_deref(), Some("alpha"));
        assert_eq!(g.node[1].attribute[0].f, Some(0.5));
        assert!(inl.model.functions.is_empty());
        assert_eq!(inl.model.opset_import, vec![opset("", 18)]);
        let v = &inl.values[0];
        assert_eq!(v.call_path, ["Outer_1", "Inner_1"]);
        assert_eq!(v.functions, ["Outer", "Inner"]);
        assert_eq!(v.native, "q");
        assert_eq!(v.op_type, "Elu");
        assert_eq!(inl.values[1].call_path, ["Outer_1", "Inner_2"]);
        assert_eq!(
            inl.values[0].returned_by,
            [("Outer_1/Inner_1".to_string(), "Inner".to_string())]
        );
        assert_eq!(
            inl.values[2].returned_by,
            [("Outer_1".to_string(), "Outer".to_string())]
        );
        assert_eq!(
            inl.values
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["Outer_1/t", "Outer_1/u", "y"]
        );
    }

    #[test]
    fn an_unbound_reference_falls_back_to_the_default_then_drops_the_attribute() {
        let mut m = nested();
        m.graph.as_mut().unwrap().node[0].attribute.clear();
        // Outer's `scale` is unbound, so Inner_1 gets no alpha and Inner's default applies.
        let inl = inline_local_functions(m.clone()).unwrap();
        assert_eq!(inl.model.graph.unwrap().node[0].attribute[0].f, Some(0.5));
        // Without the default, the attribute is left out.
        m.functions[0].attribute_proto.clear();
        m.functions[0].attribute = vec!["alpha".into()];
        let inl = inline_local_functions(m).unwrap();
        assert!(inl.model.graph.unwrap().node[0].attribute.is_empty());
    }

    #[test]
    fn an_output_the_caller_omits_keeps_a_call_path_name_inside_the_body() {
        // Pair(p) = (q = Neg(p), r = Relu(q)); the caller wants only r: outputs ["", "y"].
        let pair = FunctionProto {
            name: Some("Pair".into()),
            domain: Some("local".into()),
            input: vec!["p".into()],
            output: vec!["q".into(), "r".into()],
            node: vec![
                node("Neg", "", "neg", &["p"], &["q"]),
                node("Relu", "", "relu", &["q"], &["r"]),
            ],
            opset_import: vec![opset("", 18)],
            ..Default::default()
        };
        let mut m = nested();
        m.functions = vec![pair];
        m.graph.as_mut().unwrap().node = vec![node("Pair", "local", "Pair_1", &["x"], &["", "y"])];
        let inl = inline_local_functions(m).unwrap();
        let g = inl.model.graph.unwrap();
        assert_eq!(g.node[0].output, ["Pair_1/q"]);
        assert_eq!(g.node[1].input, ["Pair_1/q"]);
        assert_eq!(g.node[1].output, ["y"]);
    }

    #[test]
    fn version_conflicts_are_errors() {
        let mut m = nested();
        m.functions[0].opset_import = vec![opset("", 17)];
        let e = inline_local_functions(m).err().unwrap().to_string();
        assert!(e.starts_with("cannot inline:"), "{e}");
        assert!(e.contains("version 18") && e.contains("version 17"), "{e}");
    }

    #[test]
    fn recursion_is_refused() {
        let mut m = nested();
        m.functions[0].node = vec![node("Inner", "local", "again", &["p"], &["q"])];
        let e = inline_local_functions(m).err().unwrap().to_string();
        assert!(e.contains("nest deeper than 64"), "{e}");
    }

    #[test]
    fn the_model_round_trips_through_prost() {
        use prost::Message;
        let m = nested();
        let bytes = m.encode_to_vec();
        assert_eq!(ModelProto::decode(bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn attribute_int_zero_keeps_its_presence() {
        use prost::Message;
        let a = int_attr("axis", 0);
        let back = AttributeProto::decode(a.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.i, Some(0));
    }
}
