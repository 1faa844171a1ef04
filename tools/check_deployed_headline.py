#!/usr/bin/env python3
"""Independent check of an ONNX dump's headline: `dinodiff diff REF.st ONNX.st` must report, for
CLS, what a default onnxruntime Python session of the model gives (the session users deploy).

    python tools/check_deployed_headline.py --model M.onnx --input input.st --reference meta.st \
        --dump onnx.st [--cls-token 0]

The model's first output is taken as tokens [1, N, D] with CLS at token `--cls-token` (the
jax2onnx export of the Equinox DINOv3 returns concat(cls, patches)), or as CLS itself when it is
[1, D]. Prints both figures; exits 1 when they differ by more than 1e-12, 2 on bad input.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import read_dump  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402


def session_cls(model, x, token):
    import onnxruntime as ort
    session = ort.InferenceSession(str(model))  # default options: what users deploy
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    if out.ndim == 3:
        return out[:, token, :]
    if out.ndim == 2:
        return out
    raise ToolError(f"{model}: the first output has shape {list(out.shape)}; expected [1, N, D] "
                    "or [1, D]")


def reported_cls(dinodiff, reference, dump):
    proc = subprocess.run([dinodiff, "diff", str(reference), str(dump), "--format", "json"],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise ToolError(f"dinodiff diff {reference} {dump} failed:\n{proc.stderr}")
    headline = {h["name"]: h for h in json.loads(proc.stdout)["headline"]}
    if "cls" not in headline:
        raise ToolError(f"the diff of {reference} and {dump} has no CLS headline")
    return headline["cls"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--dump", type=Path, required=True)
    ap.add_argument("--cls-token", type=int, default=0)
    args = ap.parse_args()
    dinodiff = os.environ.get("DINODIFF_BIN", "dinodiff")
    x = read_dump(args.input)[1]["input"]
    reference = read_dump(args.reference)[1]["cls"].astype(np.float64)
    cls = session_cls(args.model, x, args.cls_token).astype(np.float64)
    want = float(np.abs(cls - reference).max())
    got = reported_cls(dinodiff, args.reference, args.dump)
    print(f"CLS max|Δ|: default onnxruntime session {want!r}, dinodiff diff {got['max_abs']!r} "
          f"(deployed headline: {got.get('b_deployed')})")
    if abs(want - got["max_abs"]) > 1e-12:
        print("the dump's headline is not the deployed session's", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
