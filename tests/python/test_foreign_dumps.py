"""Dumps dinodiff did not write: files from safetensors' own numpy API (no manifest, tensors stored
alphabetically). Expectations are computed here with numpy, in a stage order written out in this
file, never with dinodiff's output."""

import json
import re

import numpy as np
from safetensors.numpy import save_file

STEM = ["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
HEAD = ["norm", "cls", "storage", "patches", "pooled"]
ORDER = STEM + [f"blocks.{i}.{s}" for i in range(2) for s in BLOCK] + HEAD
ATOL = RTOL = 1e-4


def pair(drift_from):
    """A and B, B drifting by 1e-2 from `drift_from` on in execution order, plus two tensors
    without canonical names."""
    rng = np.random.default_rng(0)
    a = {n: rng.standard_normal((1, 3, 4)).astype(np.float32) for n in ORDER}
    a["zz_extra"] = rng.standard_normal(5).astype(np.float32)
    a["aa_extra"] = rng.standard_normal(5).astype(np.float32)
    b = {n: v.copy() for n, v in a.items()}
    for n in ORDER[ORDER.index(drift_from):]:
        b[n] = b[n] + np.float32(1e-2)
    return a, b


def first_over(a, b):
    for n in ORDER:
        x, y = a[n].astype(np.float64), b[n].astype(np.float64)
        if np.any(np.abs(x - y) > ATOL + RTOL * np.maximum(np.abs(x), np.abs(y))):
            return n
    return None


def test_stock_safetensors_files_are_read_in_canonical_stage_order(tmp_path, run):
    a, b = pair("blocks.1.mlp")
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    expected = first_over(a, b)
    assert expected == "blocks.1.mlp"
    # The file order is alphabetical: blocks.1.ls2 comes before blocks.1.mlp there.
    out = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--format", "json",
              expect=(1,))
    report = json.loads(out.stdout)
    names = [p["name"] for p in report["pairs"]]
    # Canonical names in stage order, then the others in file (here: alphabetical) order.
    assert names == ORDER + ["aa_extra", "zz_extra"]
    assert report["pairs"][report["first_over"]]["name"] == expected
    table = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", expect=(1,)).stdout
    assert "no manifest: canonical stage order, then file order" in table
    first = re.search(r"^first (?:and worst )?over tolerance: (\S+)$", table, re.M)
    assert first and first.group(1) == expected, table


def test_inspect_lists_a_stock_file_in_that_order(tmp_path, run):
    a, _ = pair("cls")
    save_file(a, str(tmp_path / "a.safetensors"))
    listed = json.loads(run("inspect", tmp_path / "a.safetensors", "--format", "json").stdout)
    assert [t["name"] for t in listed["tensors"]] == ORDER + ["aa_extra", "zz_extra"]
