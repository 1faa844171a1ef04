"""`diff --tokens` against numpy: max|Δ| and rms per token category (CLS, storage, patches) on
dumps written by safetensors' own numpy API. The token layout, each stage's token axis and the
expected figures are written out here, from the shapes in docs/stages.md, never taken from
dinodiff's output."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

D, H, HD, F = 8, 2, 4, 16
R, HW = 4, 6  # storage tokens, patches (a 2 × 3 grid)
N = 1 + R + HW
BLOCK = {  # stage -> (shape, token axis)
    "norm1": ((1, N, D), 1),
    "attn.qkv": ((1, N, 3 * D), 1),
    "attn.q": ((1, H, N, HD), 2),
    "attn.k": ((1, H, N, HD), 2),
    "attn.v": ((1, H, N, HD), 2),
    "attn.sdpa": ((1, N, D), 1),
    "attn": ((1, N, D), 1),
    "ls1": ((1, N, D), 1),
    "residual1": ((1, N, D), 1),
    "norm2": ((1, N, D), 1),
    "mlp.hidden": ((1, N, F), 1),
    "mlp": ((1, N, D), 1),
    "ls2": ((1, N, D), 1),
    "output": ((1, N, D), 1),
}


def stages(storage=R):
    n = 1 + storage + HW
    out = {"patch_embed": ((1, HW, D), None), "tokens": ((1, n, D), 1)}
    for i in range(2):
        for s, (shape, axis) in BLOCK.items():
            shape = tuple(n if k == axis else d for k, d in enumerate(shape))
            out[f"blocks.{i}.{s}"] = (shape, axis)
    out["norm"] = ((1, n, D), 1)
    out["cls"] = ((1, D), None)
    out["patches"] = ((1, HW, D), None)
    return out


def pair(storage=R, f16_stage=None, nan_stage=None):
    """A and B: B = A plus noise whose size differs per token category, so that each category
    has figures of its own; one stage stored as float16 in B, one NaN in B."""
    rng = np.random.default_rng(7)
    a, b = {}, {}
    n = 1 + storage + HW
    for name, (shape, axis) in stages(storage).items():
        x = rng.standard_normal(shape).astype(np.float32)
        y = x + (rng.standard_normal(shape) * 1e-3).astype(np.float32)
        if axis is not None:
            scale = np.ones(n, np.float32)
            scale[0] = 10.0  # CLS drifts most
            scale[1 + storage:] = 0.1  # patches least
            y = x + (y - x) * scale.reshape([-1 if k == axis else 1 for k in range(len(shape))])
        a[name], b[name] = x, y
    if f16_stage:
        b[f16_stage] = b[f16_stage].astype(np.float16)
    if nan_stage:
        b[nan_stage] = b[nan_stage].copy()
        b[nan_stage].reshape(-1)[3] = np.nan
    return a, b


def expected(a, b, axis, storage):
    """Per category: max|a-b| and rms over positions finite on both sides, in float64."""
    x = np.moveaxis(a.astype(np.float64), axis, 0).reshape(a.shape[axis], -1)
    y = np.moveaxis(b.astype(np.float64), axis, 0).reshape(b.shape[axis], -1)
    out = {}
    for cat, rows in (("cls", slice(0, 1)), ("storage", slice(1, 1 + storage)),
                      ("patches", slice(1 + storage, None))):
        if cat == "storage" and storage == 0:
            continue
        xs, ys = x[rows], y[rows]
        ok = np.isfinite(xs) & np.isfinite(ys)
        d = np.abs(xs - ys)[ok]
        out[cat] = {
            "tokens": xs.shape[0],
            "max_abs": float(d.max()) if d.size else 0.0,
            "rms": float(np.sqrt(np.mean(d * d))) if d.size else 0.0,
            "finite": int(ok.sum()),
        }
    return out


def check(report, a, b, storage):
    shown = {p["name"]: p for p in report["pairs"]}
    checked = 0
    for name, (_, axis) in stages(storage).items():
        p = shown[name]
        if axis is None:
            assert "tokens" not in p, name
            continue
        want = expected(a[name], b[name], axis, storage)
        got = p["tokens"]
        for cat, w in want.items():
            g = got[cat]
            assert g["tokens"] == w["tokens"], (name, cat)
            assert g["finite"] == w["finite"], (name, cat)
            assert g["max_abs"] == pytest.approx(w["max_abs"], rel=1e-12, abs=0), (name, cat)
            assert g["rms"] == pytest.approx(w["rms"], rel=1e-12, abs=0), (name, cat)
        if storage == 0:
            assert got["storage"] is None, name
        checked += 1
    return checked


def test_token_categories_match_numpy(tmp_path, diff_json):
    a, b = pair(f16_stage="blocks.1.attn.q", nan_stage="blocks.0.mlp")
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    report = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--tokens")
    assert report["token_layout"] == {"storage": R, "patches": HW}
    assert check(report, a, b, R) == 2 + 2 * len(BLOCK)
    nan = next(p for p in report["pairs"] if p["name"] == "blocks.0.mlp")["tokens"]
    total = sum(c["nonfinite_mismatches"] for c in (nan["cls"], nan["storage"], nan["patches"]))
    assert total == 1
    # The noise was scaled by category: the figures say which tokens drift most.
    out = next(p for p in report["pairs"] if p["name"] == "blocks.1.output")["tokens"]
    assert out["cls"]["rms"] > out["storage"]["rms"] > out["patches"]["rms"]


def test_no_storage_tokens_and_no_flag(tmp_path, diff_json):
    a, b = pair(storage=0)
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    report = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--tokens")
    assert report["token_layout"] == {"storage": 0, "patches": HW}
    assert check(report, a, b, 0) == 2 + 2 * len(BLOCK)
    plain = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert "token_layout" not in plain
    assert all("tokens" not in p for p in plain["pairs"])


def test_without_a_patch_count_there_is_no_breakdown(tmp_path, diff_json):
    a, b = pair()
    for d in (a, b):
        del d["patch_embed"], d["patches"]
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    report = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--tokens")
    assert "token_layout" not in report
    assert all("tokens" not in p for p in report["pairs"])


def test_the_triangle_carries_the_breakdown_on_each_side(tmp_path, run):
    a, b = pair()
    for name, d in (("a", a), ("b", b), ("c", b)):
        save_file(d, str(tmp_path / f"{name}.safetensors"))
    out = run("diff", *(tmp_path / f"{n}.safetensors" for n in "abc"), "--tokens", "--format",
              "json", expect=(1,))
    sides = json.loads(out.stdout)["sides"]
    assert [s["side"] for s in sides] == ["reference_export", "reference_port", "port_export"]
    for s in sides:
        ends = {"reference_export": (a, b), "reference_port": (a, b), "port_export": (b, b)}
        x, y = ends[s["side"]]
        assert check(s["report"], x, y, R) == 2 + 2 * len(BLOCK)
