#!/usr/bin/env python3
"""Export timm's DINOv3 port, built from a Meta-format checkpoint, to ONNX with torch.onnx: the
`torch.onnx` side of `dinodiff capture onnx` (stage recognition, tests, the Polygraphy benchmark).

    python tools/export_torch_onnx.py --weights ckpt.pth [--img-size 224] \
        [--exporter dynamo|legacy] [--global-pool avg|token|none] [--opset N] -o model.onnx

The model is `tools/timm_capture.py`'s `build_timm` (timm's Eva `vit_*_patch16_dinov3*`, loaded
strictly through timm's `checkpoint_filter_fn`, RoPE periods set to the checkpoint's), in eval
mode, exported at batch 1 and a fixed `--img-size` (input `input` [1, 3, S, S] f32). What the graph
returns is timm's `model(x)` with `num_classes=0`: `--global-pool avg` (timm's default for these
models) = mean of the patch tokens [1, D]; `token` = the CLS token [1, D] (what Meta's code uses);
`none` = the final norm over all tokens [1, N, D].

- `dynamo` (default): `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript, with its
  optimizer unless --no-optimize). Weights go to `<model>.onnx.data` beside the model. Module
  scopes are in each node's metadata_props (`pkg.torch.onnx.name_scopes`, `class_hierarchy`).
- `legacy`: `dynamo=False` (TorchScript tracing). One file; scopes are in node names
  (`/blocks.0/attn/...`).

The IR version is lowered to 13 when an exporter writes a newer one (ONNX Runtime 1.31 accepts
up to 13). The script then loads the file with onnxruntime, runs it on a seeded random input and
prints the node count, opsets, IR version and max|Δ| against timm's own forward.
"""

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timm_capture import build_timm  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402

MAX_IR_VERSION = 13  # ONNX Runtime 1.31
POOLS = {"avg": "avg", "token": "token", "none": ""}


def build(weights, global_pool):
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    model, name, arch = build_timm(sd)
    # build_timm keeps timm's default pooling ('avg'); num_classes stays 0 (no head).
    model.reset_classifier(0, global_pool=POOLS[global_pool])
    return model.eval(), name, arch


def export(model, path, img_size, exporter, opset=None, optimize=True):
    x = torch.zeros(1, 3, img_size, img_size)
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()  # torch.onnx appends to nothing, but a stale file would confuse readers
    kwargs = dict(input_names=["input"], output_names=["output"])
    if opset is not None:
        kwargs["opset_version"] = opset
    with torch.no_grad():
        if exporter == "dynamo":
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=True,
                              optimize=optimize, **kwargs)
        else:
            # The TorchScript exporter passes the defaults of forward's other parameters as traced
            # tensors (is_causal=False becomes tensor(False), which sdpa rejects): trace a forward
            # that takes the image only, on the model itself (a wrapper module would add a scope).
            cls_forward = type(model).forward
            model.forward = lambda image: cls_forward(model, image)
            try:
                torch.onnx.export(model, (x,), str(path), dynamo=False, **kwargs)
            finally:
                del model.forward
    return lower_ir_version(path)


def lower_ir_version(path):
    """Rewrites the model's header if its IR version is above MAX_IR_VERSION; external data
    (if any) stays where it is, untouched. Returns (ir version written by the exporter, now)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = model.ir_version
    if written > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        tmp = Path(f"{path}.partial-{os.getpid()}")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    return written, min(written, MAX_IR_VERSION)


def check(model, path, img_size, threads):
    """Runs the exported file with onnxruntime against timm's forward on the same random input."""
    import onnxruntime as ort

    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x).numpy()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    if got.shape != want.shape:
        raise ToolError(f"onnxruntime returned {got.shape}, timm {want.shape}")
    return float(np.abs(got - want).max())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, help="Meta-format .pth")
    p.add_argument("--img-size", type=int, default=224, help="input side, a multiple of 16")
    p.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo")
    p.add_argument("--global-pool", choices=list(POOLS), default="avg",
                   help="what the graph returns (timm's global_pool): avg = mean of patch tokens "
                        "(default), token = CLS, none = final norm over all tokens")
    p.add_argument("--opset", type=int, help="ai.onnx opset (default: the exporter's)")
    p.add_argument("--no-optimize", action="store_true",
                   help="dynamo: skip the onnxscript optimizer (constant folding, dead code)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--threads", type=int, default=0, help="threads of torch and the check")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    if a.img_size % 16:
        p.error(f"--img-size {a.img_size} is not a multiple of 16")
    if a.no_optimize and a.exporter != "dynamo":
        p.error("--no-optimize applies to --exporter dynamo only")
    if a.threads:
        torch.set_num_threads(a.threads)
    import onnx

    started = time.perf_counter()
    model, timm_name, arch = build(a.weights, a.global_pool)
    written, ir = export(model, a.output, a.img_size, a.exporter, a.opset, not a.no_optimize)
    export_s = time.perf_counter() - started
    m = onnx.load(a.output, load_external_data=False)
    ops = Counter(n.op_type for n in m.graph.node)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
    data = Path(a.output + ".data")
    files = f"{a.output} ({Path(a.output).stat().st_size} bytes)"
    if data.exists():
        files += f" + {data.name} ({data.stat().st_size} bytes)"
    print(f"wrote {files}: timm {timm_name} (D {arch['embed_dim']}, depth {arch['depth']}, "
          f"heads {arch['num_heads']}), {a.img_size}x{a.img_size}, global pool "
          f"{a.global_pool}, exporter {a.exporter}, {export_s:.1f} s")
    print(f"nodes: {len(m.graph.node)} in the main graph, {len(m.functions)} local functions, "
          f"{len(m.graph.initializer)} initializers; opset: {opsets}; IR version {ir}"
          + (f" (exporter wrote {written}, lowered)" if written != ir else ""))
    print("op types: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    if not a.no_check:
        delta = check(model, a.output, a.img_size, a.threads)
        print(f"onnxruntime loads it; output max|Δ| vs timm on a random input: {delta:.3g}")


if __name__ == "__main__":
    run_main(main)
