//! The expansion of local function calls (see the contract in [`super`]): an [`Inliner`] walks
//! the main graph's nodes, replaces each call of a local function by the function's body,
//! recursively, in a [`Scope`] per call that maps the body's names to inlined-graph names and
//! binds its attribute references, and records every value it emits and every call it expands.

use super::super::proto::{AttributeProto, FunctionProto, GraphProto, NodeProto};
use super::super::proto::{OperatorSetIdProto, StringStringEntryProto, TensorHead};
use super::super::proto::{canonical_domain, same_domain};
use super::{Call, ValueOrigin};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A local function's identity: (canonical domain, name, overload).
pub(super) type FunctionKey = (String, String, String);

pub(super) fn key(domain: &str, name: &str, overload: &str) -> FunctionKey {
    (
        canonical_domain(domain).to_string(),
        name.to_string(),
        overload.to_string(),
    )
}

/// One body being expanded: the main graph, or a call.
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

/// The state of one inlining: what has been emitted so far and the names in use.
pub(super) struct Inliner<'m> {
    pub(super) functions: HashMap<FunctionKey, &'m FunctionProto>,
    taken: HashSet<String>,
    pub(super) nodes: Vec<NodeProto>,
    pub(super) values: Vec<ValueOrigin>,
    pub(super) calls: usize,
    pub(super) subgraph_values: usize,
    /// Domain -> (version, who imported it first) for the emitted nodes' domains.
    pub(super) used_opsets: BTreeMap<String, (i64, String)>,
    /// Full call paths already used.
    calls_seen: HashSet<String>,
    /// Value name -> the calls returning it (call path, function), outermost first.
    pub(super) returns: HashMap<String, Vec<(String, String)>>,
    pub(super) call_log: Vec<Call>,
    /// The keys of the functions being expanded, outermost first (calling one of them again is
    /// recursion).
    active: Vec<FunctionKey>,
}

const MAX_DEPTH: usize = 64;
/// Bound on the nodes emitted plus the calls expanded: a few functions that each call the next
/// twice describe 2^depth nodes in a few hundred bytes. jax2onnx's ViT-S/16 export inlines to
/// about 1,600 nodes and 86 calls (ViT-7B's 40 blocks: some 5,000 nodes), far below it.
pub(super) const MAX_EXPANSION: usize = 1 << 16;

impl<'m> Inliner<'m> {
    /// An inliner for `graph`'s nodes, with the model's local `functions`; every name the graph
    /// already uses (inputs, outputs, initializers, node outputs and names) is taken.
    pub(super) fn new(functions: &'m [FunctionProto], graph: &GraphProto) -> Inliner<'m> {
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
        Inliner {
            functions: functions
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
            active: Vec::new(),
        }
    }

    /// Expands `body` (the main graph's nodes) from the top scope.
    pub(super) fn expand_main(
        &mut self,
        body: &[NodeProto],
        model_opsets: &[OperatorSetIdProto],
    ) -> Result<()> {
        let mut top = Scope {
            rename: HashMap::new(),
            attributes: HashMap::new(),
            path: Vec::new(),
            functions: Vec::new(),
            opsets: None,
        };
        self.expand(body, &mut top, model_opsets)
    }

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
                "cannot inline: local functions nest deeper than {MAX_DEPTH} calls ({})",
                scope.functions.join(" > ")
            );
        }
        for node in body {
            let inputs: Vec<String> = node.input.iter().map(|i| self.map_name(scope, i)).collect();
            let attributes = self.resolve_attributes(&node.attribute, scope);
            if self.nodes.len() + self.calls >= MAX_EXPANSION {
                bail!(
                    "cannot inline: the local functions expand to more than {MAX_EXPANSION} nodes and calls (functions calling functions several times over); is the model damaged?"
                );
            }
            let k = key(node.domain(), node.op_type(), node.overload());
            if self.active.contains(&k) {
                bail!(
                    "cannot inline: function {} calls itself ({} > {}); ONNX functions cannot be recursive",
                    node.op_type(),
                    scope.functions.join(" > "),
                    node.op_type()
                );
            }
            match self.functions.get(&k) {
                Some(&f) => {
                    self.expand_call(node, (k, f), inputs, attributes, scope, model_opsets)?
                }
                None => self.emit(node, inputs, attributes, scope, model_opsets)?,
            }
        }
        Ok(())
    }

    /// Replaces a call of `f` by `f`'s body, expanded in a scope of its own.
    fn expand_call(
        &mut self,
        node: &NodeProto,
        (k, f): (FunctionKey, &FunctionProto),
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        scope: &mut Scope,
        model_opsets: &[OperatorSetIdProto],
    ) -> Result<()> {
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
        self.active.push(k);
        let expanded = self.expand(&f.node, &mut inner, model_opsets);
        self.active.pop();
        expanded
    }

    /// Emits a node that calls no local function, renamed into the inlined graph, and records
    /// the values it produces.
    fn emit(
        &mut self,
        node: &NodeProto,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        scope: &mut Scope,
        model_opsets: &[OperatorSetIdProto],
    ) -> Result<()> {
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
        Ok(())
    }
}
