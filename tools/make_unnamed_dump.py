#!/usr/bin/env python3
"""Rewrite a `capture onnx` dump WITHOUT stage names: what a dump of an export dinodiff's stage
rules do not know looks like (the alignment tests and tools/bench_align.py; issue 15).

    python tools/make_unnamed_dump.py onnx.st -o unnamed.st [--onnx-model model.onnx] \
        [--truth truth.json]

Each stage tensor goes back under its ONNX value name (`onnx_value`) and ONNX shape
(`onnx_shape`); `stage` and `stage_rule` are dropped from the records; tensors with no ONNX value
(`derived`: the qkv jax2onnx computes as three projections, the head views derived from `norm`)
and the `unmarked/`, `deployed/` runs are left out. A stage the rules sliced out of a larger value
(jax2onnx's RoPE tables, [1, N, 1, hd] over all tokens) is written whole, read from the model's
Constant (`--onnx-model`). The file is written with safetensors' own Python API (its own tensor
order); the manifest's `order` keeps execution order; `source` becomes `other` and the `onnx`
section goes. `--truth` writes {stage: value name}: the mapping the rules had produced.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import read_dump  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402


def sliced_values(model_path, manifest):
    """{stage: the whole value} for the stages the rules sliced out of a Constant of the model."""
    import onnx
    from onnx import numpy_helper

    sliced = [s for s, r in manifest["tensors"].items() if r.get("stage") and "sliced" in r]
    if not sliced:
        return {}
    model = onnx.load(str(model_path))
    nodes = [n for f in model.functions for n in f.node] + list(model.graph.node)
    whole = {}
    for stage in sliced:
        native = manifest["tensors"][stage]["native"]
        found = [n for n in nodes if n.op_type == "Constant" and n.output[0] == native]
        if not found:
            raise ToolError(f"{model_path} has no Constant {native!r} (the whole value of "
                            f"{stage}); is it the model the dump was captured from?")
        whole[stage] = numpy_helper.to_array(found[0].attribute[0].t)
    return whole


def unnamed_copy(src, dst, *, drop=lambda name, rec: False, replace=None):
    """Writes dst from src as described above; returns {stage: name in dst}. `replace` {stage:
    array} gives the whole value of a sliced stage; `drop(name, record)` leaves tensors out."""
    from safetensors.numpy import save_file

    manifest, tensors = read_dump(src)
    if manifest is None:
        raise ToolError(f"{src} has no dinodiff manifest: not a capture")
    out, records, order, truth = {}, {}, [], {}
    for name in manifest["order"]:
        rec = dict(manifest["tensors"][name])
        if name.startswith(("unmarked/", "deployed/")) or "derived" in rec or drop(name, rec):
            continue
        t = tensors[name]
        stage = rec.pop("stage", None)
        rec.pop("stage_rule", None)
        new = name
        if stage and stage != "input":
            if "onnx_value" not in rec:
                raise ToolError(f"{src}: stage {stage} has no onnx_value; not a capture onnx dump")
            new = rec["onnx_value"]
            if "sliced" in rec:
                if not replace or stage not in replace:
                    raise ToolError(f"{src}: {stage} is sliced out of {new}; pass --onnx-model "
                                    "to write the whole value")
                t = replace[stage]
                rec.pop("sliced")
            elif "onnx_shape" in rec:
                t = t.reshape(rec["onnx_shape"])
            rec.pop("onnx_shape", None)
            truth[stage] = new
        if new in out:
            raise ToolError(f"{src}: two tensors would be named {new}")
        out[new] = np.ascontiguousarray(t)
        records[new] = rec
        order.append(new)
    manifest.update(order=order, tensors=records, source="other")
    manifest.pop("onnx", None)
    save_file(out, str(dst), metadata={"dinodiff.format_version": "1",
                                       "dinodiff.manifest": json.dumps(manifest)})
    return truth


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dump", help="a `dinodiff capture onnx` dump")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--onnx-model", help="the model it was captured from (for sliced stages)")
    p.add_argument("--truth", help="write {stage: value name} here (JSON)")
    a = p.parse_args()
    manifest, _ = read_dump(a.dump)
    replace = sliced_values(a.onnx_model, manifest) if a.onnx_model else None
    truth = unnamed_copy(a.dump, a.output, replace=replace)
    if a.truth:
        Path(a.truth).write_text(json.dumps(truth, indent=1))
    print(f"wrote {a.output}: {len(truth)} stage tensors back under their ONNX value names",
          file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
