"""`dinodiff align` on a user's own hooks: transformers' DINOv3ViTModel (random config,
`save_pretrained`), every submodule's output recorded by torch forward hooks (plus the inputs of
`o_proj`, `down_proj` and `norm2`) under its module path, written by safetensors' stock writer
(`safetensors.numpy.save_file`: no manifest, tensors stored alphabetically, so dinodiff knows no
execution order for them). A = `capture meta` of the saved directory.

Truth: for each canonical stage, the hooked tensors that hold A's values within 1e-5 under some
permutation and reshape (numpy, every permutation tried: an exhaustive oracle, independent of
dinodiff). q and k after RoPE, the fused qkv and the head views are no module's output, so they
have no partner; v is `v_proj`'s
[B, N, D] output, a head split and a permutation away from Meta's [B, H, N, hd]."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_fixtures import TOOLS, apply_layout, canonical, describe, read_dump, score  # noqa: E402
from align_fixtures import value_partners  # noqa: E402

D, DEPTH, HEADS, IMG = 64, 3, 2, 48
STAGES = canonical(DEPTH)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, dinodiff_bin):
    import torch
    from safetensors.numpy import save_file
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    sys.path.insert(0, str(TOOLS))
    from dumpfile import write_dump
    d = tmp_path_factory.mktemp("align_hf")
    torch.manual_seed(5)
    config = DINOv3ViTConfig(hidden_size=D, num_attention_heads=HEADS, num_hidden_layers=DEPTH,
                             intermediate_size=4 * D, num_register_tokens=4, image_size=IMG,
                             patch_size=16)
    model = DINOv3ViTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.05, 1.0)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.normal_(0, 0.05)
            else:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    model.save_pretrained(d / "hf")
    x = np.random.default_rng(6).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    proc = subprocess.run([str(dinodiff_bin), "capture", "meta", "--weights", d / "hf",
                           "--input", d / "in.st", "-o", d / "meta.st"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got, handles = {}, []

    def keep(name, output):
        outs = output if isinstance(output, tuple) else (output,)
        for j, o in enumerate(outs):
            if isinstance(o, torch.Tensor) and o.is_floating_point():
                got[name if len(outs) == 1 else f"{name}.{j}"] = o.detach().numpy().copy()

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: keep(name, o)))
        if name.endswith(("o_proj", "down_proj", "norm2")):
            handles.append(module.register_forward_pre_hook(
                lambda m, i, name=name: keep(f"{name}:input", i[0])))
    with torch.no_grad():
        model(pixel_values=torch.from_numpy(x))
    for h in handles:
        h.remove()
    got["input"] = x
    save_file(got, str(d / "hooks.safetensors"))
    _, meta = read_dump(d / "meta.st")
    _, b = read_dump(d / "hooks.safetensors")
    truth = value_partners({s: meta[s] for s in STAGES if s != "input"}, b, atol=1e-5, rtol=1e-5)
    return d, meta, b, truth


def test_the_hooks_hold_the_stages(hooked):
    _, _, _, truth = hooked
    missing = {s for s in STAGES[1:] if not truth[s]}
    assert missing == {f"blocks.{i}.attn.{x}" for i in range(DEPTH) for x in "qk"} | {
        f"blocks.{i}.attn.qkv" for i in range(DEPTH)} | {"cls", "storage", "patches",
                                                        "pooled"}, missing


def test_align_user_hooks_in_a_stock_safetensors_file(hooked, dinodiff_bin):
    d, meta, b, truth = hooked
    proc = subprocess.run([str(dinodiff_bin), "align", d / "meta.st", d / "hooks.safetensors",
                           "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    pairs = {p["a"]: p["b"] for p in report["pairs"]}
    result = score(pairs, truth, STAGES)
    print(describe("transformers hooks (stock safetensors)", result))
    for p in report["pairs"]:
        if p["a"] in meta and p["max_abs"] is not None:
            got = apply_layout(b[p["b"]], p.get("layout"), meta[p["a"]].shape)
            want = np.abs(meta[p["a"]].astype(np.float64) - got.astype(np.float64)).max()
            assert p["max_abs"] == pytest.approx(want, rel=1e-9, abs=1e-15), p
    assert result["precision"] >= 0.98 and result["recall"] >= 0.98, describe("hf", result)
