#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/), each a small file made
by the tool users make such files with. Committed; run again only to change them (with the
project venv, after `cargo build --release`):

    $V/bin/python fuzz/make_corpus.py

- dump/: a dump written by dinodiff (`dinodiff prep` of a tiny PNG, and `capture eqx` of the
  npz seed), one by safetensors.numpy (canonical names, several dtypes), one by
  safetensors.torch (bf16, float8, int, bool);
- npz/: Equinox recordings in tools/eqx_capture.py's format, written by numpy's np.savez (f32
  arrays; bf16 arrays from ml_dtypes as numpy saves them, ints and bools);
- eqx/: jax2onnx's Equinox DINOv3 at toy size saved by `eqx.tree_serialise_leaves` (as
  jax2onnx's scripts save it), with and without storage tokens;
- onnx/: a small module exported by torch.onnx.export (legacy exporter and dynamo) and jax2onnx's
  Equinox DINOv3 at toy size (nested local functions);
- checkpoint/: torch.save of a small module's state_dict(), of a nested {"model": ...} dict,
  and the unit tests' tiny.pth (views sharing storages, bf16);
- name_map/: --map files as docs/alignment.md describes them.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
BIN = ROOT / "target" / "release" / "dinodiff"
D = 4  # embedding width of the tiny recordings


def out(target, name):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    return d / name


def eqx_recording(path, bf16=False):
    """A recording as tools/eqx_capture.py writes it: one patch, 4 storage tokens, one block."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    n = 1 + 4 + 1
    arrays = {
        "input": x,
        "patch_embed": rng.standard_normal((1, 1, 1, D)).astype(np.float32),
        "tokens": rng.standard_normal((n, D)).astype(np.float32),
        "blocks[0].norm1": rng.standard_normal((n, D)).astype(np.float32),
        "blocks[0].attn:q": rng.standard_normal((1, n, 1, D)).astype(np.float32),
        "blocks[0].ls1": rng.standard_normal((n, D)).astype(np.float32),
        "blocks[0]": rng.standard_normal((n, D)).astype(np.float32),
        "norm": rng.standard_normal((n, D)).astype(np.float32),
        "output": rng.standard_normal((n - 4, D)).astype(np.float32),
    }
    if bf16:
        import ml_dtypes
        arrays["blocks[0].ls1"] = arrays["blocks[0].ls1"].astype(ml_dtypes.bfloat16)
        arrays["blocks[0].mlp:hidden"] = rng.integers(-5, 5, (n, 2 * D)).astype(np.int16)
        arrays["mask"] = rng.integers(0, 2, (n,)).astype(bool)
        arrays["steps"] = np.arange(3, dtype=np.uint64)
    records = {k: {"module": "", "class": None, "kind": "stage", "shape": list(v.shape),
                   "dtype": str(v.dtype)} for k, v in arrays.items()}
    manifest = {
        "format": "dinodiff-eqx-npz", "version": 1, "order": list(arrays),
        "arrays": records, "device": "cpu", "dtype": "float32",
        "frameworks": {"numpy": np.__version__},
        "model": {"path": "tiny.eqx", "size": 1, "sha256": "0" * 64,
                  "config": {"embed_dim": D, "depth": 1, "num_heads": 1}},
        "input": {"sha256": hashlib.sha256(x.tobytes()).hexdigest(), "shape": list(x.shape)},
    }
    blob = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays, __dinodiff_manifest__=blob)


def npz_seeds():
    eqx_recording(out("npz", "eqx_numpy.npz"))
    eqx_recording(out("npz", "eqx_bf16_ints.npz"), bf16=True)


def dump_seeds():
    from PIL import Image
    import safetensors.numpy
    import safetensors.torch
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "tiny.png"
        Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)).save(png)
        subprocess.run([BIN, "prep", "--image", png, "--size", "16", "--transform", "square",
                        "-o", out("dump", "dinodiff_prep.st")], check=True)
        subprocess.run([BIN, "capture", "eqx", "--npz", out("npz", "eqx_numpy.npz"),
                        "-o", out("dump", "dinodiff_eqx.st")], check=True, capture_output=True)
    rng = np.random.default_rng(1)
    safetensors.numpy.save_file({
        "input": rng.standard_normal((1, 3, 2, 2)).astype(np.float32),
        "blocks.0.ls1": rng.standard_normal((1, 3, 2)).astype(np.float16),
        "blocks.0.mlp": rng.standard_normal((1, 3, 2)).astype(np.float32),
        "blocks.1.output": rng.standard_normal((1, 3, 2)).astype(np.float64),
        "steps": np.arange(3, dtype=np.int64),
        "mask": np.array([True, False]),
    }, out("dump", "safetensors_numpy.st"))
    safetensors.torch.save_file({
        "norm": torch.randn(1, 3, 2, dtype=torch.bfloat16),
        "cls": torch.randn(1, 2).to(torch.float8_e4m3fn),
        "pooled": torch.randn(1, 2).to(torch.float8_e5m2),
        "ids": torch.arange(4, dtype=torch.int32),
        "flags": torch.tensor([True, False, True]),
        "z": torch.randn(2, dtype=torch.complex64),
    }, out("dump", "safetensors_torch.st"), metadata={"producer": "safetensors.torch"})


def onnx_seeds():
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2), torch.nn.GELU())
    x = torch.randn(1, 3)
    torch.onnx.export(module, (x,), str(out("onnx", "torch_legacy.onnx")), dynamo=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False)
        shutil.copy(path, out("onnx", "torch_dynamo.onnx"))
    jax2onnx_seed()


def jax2onnx_seed():
    """jax2onnx's own Equinox DINOv3 (what tools/export_onnx.py exports), at toy size: nested
    local functions (VisionTransformer > Block > Attention > ...), the jax2onnx stage rules' input."""
    import jax
    import onnx
    from jax2onnx import to_onnx
    from jax2onnx.plugins.examples.eqx.dino import VisionTransformer

    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=8, depth=1, num_heads=2,
                              num_storage_tokens=1, key=jax.random.PRNGKey(0))
    path = out("onnx", "jax2onnx_dino.onnx")
    to_onnx(model, inputs=[(1, 3, 16, 16)], return_mode="file", output_path=str(path))
    m = onnx.load(str(path))
    if m.ir_version > 13:
        m.ir_version = 13
        onnx.save(m, str(path))


def eqx_seeds():
    """jax2onnx's example model saved as its own scripts save it (eqx.tree_serialise_leaves, no
    sidecar): what `capture eqx --model` reads before any Python runs."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import equinox as eqx
    import jax
    from jax2onnx.plugins.examples.eqx.dino import VisionTransformer

    for name, storage in (("dino_storage.eqx", 2), ("dino_no_storage.eqx", 0)):
        model = VisionTransformer(img_size=4, patch_size=2, embed_dim=4, depth=1, num_heads=1,
                                  num_storage_tokens=storage, key=jax.random.PRNGKey(0))
        eqx.tree_serialise_leaves(str(out("eqx", name)), model)


def checkpoint_seeds():
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    torch.save(module.state_dict(), out("checkpoint", "state_dict.pth"))
    torch.save({"model": module.state_dict(), "epoch": 3, "args": {"lr": 0.1, "name": "x"}},
               out("checkpoint", "nested.pth"))
    shutil.copy(ROOT / "tests" / "fixtures" / "checkpoint" / "tiny.pth",
                out("checkpoint", "tiny_views_bf16.pth"))


def name_map_seeds():
    out("name_map", "docs_example.toml").write_text(
        '[pairs]\n"cls" = "VisionTransformer_1/cls_out"\n\n'
        '[[rewrite]]\nside = "b"\npattern = \'^encoder/layer_(\\d+)/ln_1$\'\n'
        "replace = 'blocks.$1.norm1'\n")
    out("name_map", "eqx_names.toml").write_text(
        '[pairs]\n"norm" = "norm"\n\n'
        '[[rewrite]]\nside = "b"\npattern = \'^blocks\\[(\\d+)\\]\\.(\\w+)$\'\n'
        "replace = 'blocks.$1.$2'\n\n"
        '[[rewrite]]\npattern = "x_norm_clstoken"\nreplace = "cls"\n')


def main():
    npz_seeds()  # before dump_seeds, which imports one
    dump_seeds()
    eqx_seeds()
    onnx_seeds()
    checkpoint_seeds()
    name_map_seeds()
    total = 0
    for f in sorted(CORPUS.rglob("*")):
        if f.is_file():
            total += f.stat().st_size
            print(f"{f.stat().st_size:>8}  {f.relative_to(ROOT)}")
    print(f"{total:>8}  total")


if __name__ == "__main__":
    sys.exit(main())
