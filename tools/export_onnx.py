#!/usr/bin/env python3
"""Export an Equinox DINOv3 (made by tools/meta_to_eqx.py) to ONNX with jax2onnx.

    python tools/export_onnx.py --model model.eqx -o model.onnx
    python tools/export_onnx.py --model model.eqx -o bad.onnx --perturb-initializer-block 7

Calls `jax2onnx.to_onnx(model, inputs=[(1, 3, H, W)], return_mode="file", output_path=...)`
(H = W = the sidecar's img_size), then makes sure the IR version is <= 13 (what ONNX Runtime
1.31 accepts; lowered if jax2onnx wrote more), records the source model in the ONNX
metadata_props (`dinodiff.source_eqx`, `dinodiff.fault_injection`) and prints node and
function counts.

--perturb-initializer-block BLOCK (fault injection) multiplies ONE weight tensor of block BLOCK
by --perturb-factor (default 1.01) in the written file: the largest floating-point tensor of
rank >= 2 inside that block's ONNX function or the functions it calls (in jax2onnx's export
the weights are Constant nodes inside per-instance local functions; the largest is the MLP's
fc1 weight [4D, D], the first of two equal-sized ones). Block BLOCK is the BLOCK-th call
(0-based, in graph order) of a function named `Block`. Main-graph initializers passed to that
call are candidates too. The tensor's location and shape are printed and recorded.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import file_identity  # noqa: E402
from eqx_model import ToolError, framework_versions, run_main  # noqa: E402

MAX_IR_VERSION = 13


def functions_by_key(model):
    return {(f.domain, f.name): f for f in model.functions}


def call_sites(model):
    """[(caller, node)] for every node calling a local function, walking from the main graph
    into function bodies in node order (graph order is topological: execution order)."""
    funcs = functions_by_key(model)
    out = []

    def walk(nodes, caller):
        for n in nodes:
            f = funcs.get((n.domain, n.op_type))
            if f is not None:
                out.append((caller, n))
                walk(f.node, f"{f.domain}:{f.name}")

    walk(model.graph.node, "main")
    return out


def reachable_functions(model, root):
    funcs = functions_by_key(model)
    seen = []

    def walk(f):
        if (f.domain, f.name) in [(g.domain, g.name) for g in seen]:
            return
        seen.append(f)
        for n in f.node:
            g = funcs.get((n.domain, n.op_type))
            if g is not None:
                walk(g)

    walk(root)
    return seen


def perturb_block(model, block, factor):
    """Scales one weight of block `block` in place; returns a record of what changed."""
    from onnx import TensorProto, numpy_helper

    funcs = functions_by_key(model)
    sites = call_sites(model)
    blocks = [(caller, n) for caller, n in sites if n.op_type == "Block"]
    if not 0 <= block < len(blocks):
        raise ToolError(f"--perturb-initializer-block {block}: the export has {len(blocks)} "
                        f"Block function calls (blocks 0..{len(blocks) - 1})")
    caller, call = blocks[block]
    root = funcs[(call.domain, call.op_type)]
    closure = reachable_functions(model, root)
    uses = {}
    for _, n in sites:
        uses[(n.domain, n.op_type)] = uses.get((n.domain, n.op_type), 0) + 1
    shared = [f"{f.domain}:{f.name}" for f in closure if uses.get((f.domain, f.name), 0) != 1]
    if shared:
        raise ToolError(f"block {block}'s function(s) {', '.join(shared)} are called more than "
                        "once, so one of their weights is not block-local; cannot perturb one "
                        "block only")
    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    candidates = []  # (elements, order, where, setter, tensor)
    for f in closure:
        for n in f.node:
            if n.op_type != "Constant":
                continue
            for attr in n.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    t = attr.t
                    if t.data_type in floats and len(t.dims) >= 2:
                        where = {"function": f"{f.domain}:{f.name}", "node": n.name or None,
                                 "output": n.output[0]}
                        candidates.append((int(np.prod(t.dims)), len(candidates), where, t))
    inits = {i.name: i for i in model.graph.initializer}
    if caller == "main":
        for name in call.input:
            t = inits.get(name)
            if t is not None and t.data_type in floats and len(t.dims) >= 2:
                candidates.append((int(np.prod(t.dims)), len(candidates),
                                   {"initializer": name}, t))
    if not candidates:
        raise ToolError(f"block {block} ({call.domain}:{call.op_type}) holds no floating-point "
                        "weight of rank >= 2 (neither Constant nodes nor initializers)")
    size = max(c[0] for c in candidates)
    _, _, where, tensor = next(c for c in candidates if c[0] == size)
    before = numpy_helper.to_array(tensor)
    after = (before * np.asarray(factor, dtype=before.dtype)).astype(before.dtype)
    new = numpy_helper.from_array(after, tensor.name)
    tensor.CopyFrom(new)
    return {"kind": "perturb-initializer-block", "block": block, "factor": factor,
            "block_function": f"{call.domain}:{call.op_type}", "call_node": call.name,
            **where, "shape": list(before.shape),
            "max_abs_change": float(np.abs(after.astype(np.float64) - before).max())}


def counts(model):
    nested = sum(len(f.node) for f in model.functions)
    constants = sum(n.op_type == "Constant" for f in model.functions for n in f.node)
    constants += sum(n.op_type == "Constant" for n in model.graph.node)
    return {"main_graph_nodes": len(model.graph.node), "functions": len(model.functions),
            "function_nodes": nested, "constant_nodes": constants,
            "initializers": len(model.graph.initializer)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="model.eqx from tools/meta_to_eqx.py, or a "
                   "bare `eqx.tree_serialise_leaves` file of jax2onnx's example (give --config)")
    p.add_argument("--config", help="the constructor config of a bare .eqx: img_size=224,"
                   "patch_size=16,embed_dim=384,depth=12,num_heads=6,num_storage_tokens=4")
    p.add_argument("-o", "--output", required=True, help="model.onnx")
    p.add_argument("--perturb-initializer-block", type=int, metavar="BLOCK",
                   help="fault injection: scale the largest weight of block BLOCK (see above)")
    p.add_argument("--perturb-factor", type=float, default=1.01,
                   help="factor for --perturb-initializer-block (default 1.01)")
    a = p.parse_args()

    from eqx_model import load_model_and_sidecar, parse_config

    model, side = load_model_and_sidecar(a.model, parse_config(a.config) if a.config else None)
    size = side["config"]["img_size"]
    if a.perturb_initializer_block is not None and not \
            0 <= a.perturb_initializer_block < side["config"]["depth"]:
        raise ToolError(f"--perturb-initializer-block {a.perturb_initializer_block}: the model "
                        f"has blocks 0..{side['config']['depth'] - 1}")
    import jax2onnx
    import onnx

    out = Path(a.output)
    started = time.perf_counter()
    jax2onnx.to_onnx(model, inputs=[(1, 3, size, size)], return_mode="file",
                     output_path=str(out))
    export_s = time.perf_counter() - started

    external = any(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in onnx.load(str(out), load_external_data=False).graph.initializer)
    proto = onnx.load(str(out))
    ir_written = proto.ir_version
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    faults = []
    if a.perturb_initializer_block is not None:
        faults.append(perturb_block(proto, a.perturb_initializer_block, a.perturb_factor))
    ident = file_identity(a.model)
    for key, value in (("dinodiff.source_eqx", json.dumps({**ident, "config": side["config"],
                                                            "checkpoint": side.get("source")})),
                       ("dinodiff.fault_injection",
                        json.dumps(side.get("fault_injection", []) + faults))):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto)
    if external:  # keep jax2onnx's layout: big initializers in <name>.onnx.data
        onnx.save(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=out.name + ".data", size_threshold=1 << 20, convert_attribute=False)
    else:
        onnx.save(proto, str(out))
    c = counts(proto)
    versions = framework_versions()
    print(f"wrote {out} ({out.stat().st_size} bytes{', + ' + out.name + '.data' if external else ''})"
          f": IR {proto.ir_version}{f' (lowered from {ir_written})' if ir_written != proto.ir_version else ''}"
          f", opset {next((o.version for o in proto.opset_import if o.domain == ''), '?')}; "
          f"{c['main_graph_nodes']} main-graph node(s), {c['functions']} functions with "
          f"{c['function_nodes']} nodes ({c['constant_nodes']} Constant), "
          f"{c['initializers']} initializers; jax2onnx {versions['jax2onnx']}, export "
          f"{export_s:.1f} s", file=sys.stderr)
    for f in faults:
        loc = f.get("initializer") or f"{f['function']} Constant -> {f['output']}"
        print(f"fault injection: block {f['block']} ({f['block_function']}): {loc} "
              f"{f['shape']} x {f['factor']} (max |change| {f['max_abs_change']:.3g})",
              file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
