//! Unit tests of the inliner on hand-built models.

use super::*;
use crate::onnx::proto::{AttributeProto, FunctionProto, GraphProto, NodeProto};

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
    assert!(
        e.contains("function Inner calls itself (Outer > Inner > Inner)"),
        "{e}"
    );
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

/// A function calling itself twice would expand 2^64 times before the depth bound: refused at
/// the first recursive call (found while writing the ONNX fuzz target, docs/fuzzing.md).
#[test]
fn branching_recursion_is_refused_at_once() {
    let mut m = nested();
    m.functions[0].node = vec![
        node("Inner", "local", "left", &["p"], &["r"]),
        node("Inner", "local", "right", &["r"], &["q"]),
    ];
    let e = inline_local_functions(m).err().unwrap().to_string();
    assert!(
        e.contains("function Inner calls itself") && e.contains("Outer > Inner"),
        "{e}"
    );
}

/// Distinct functions each calling the next twice: 2^40 calls without recursion. The expansion
/// stops at MAX_EXPANSION nodes and calls with an error instead of running for ever.
#[test]
fn exponential_expansion_is_bounded() {
    let mut m = nested();
    let depth = 40;
    m.functions = (0..depth)
        .map(|k| FunctionProto {
            name: Some(format!("F{k}")),
            domain: Some("local".into()),
            input: vec!["p".into()],
            output: vec!["q".into()],
            node: if k == 0 {
                vec![node("Relu", "", "relu", &["p"], &["q"])]
            } else {
                let callee = format!("F{}", k - 1);
                vec![
                    node(&callee, "local", "a", &["p"], &["r"]),
                    node(&callee, "local", "b", &["r"], &["q"]),
                ]
            },
            opset_import: vec![opset("", 18), opset("local", 1)],
            ..Default::default()
        })
        .collect();
    let top = format!("F{}", depth - 1);
    m.graph.as_mut().unwrap().node = vec![node(&top, "local", "top", &["x"], &["y"])];
    let e = inline_local_functions(m).err().unwrap().to_string();
    assert!(e.contains("more than 65536 nodes and calls"), "{e}");
}
