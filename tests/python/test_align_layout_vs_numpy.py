"""Layouts against numpy: B written by safetensors' numpy API as a transposed / reshaped copy of
A (other names, no manifest), paired by `diff --align auto` or by a map's `[[pair]]`. The
expectations (which position differs, both values there, the metrics) are computed here with
numpy's own transpose and reshape, in A's layout."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

CASES = [
    # (A shape, B = f(A), the layout that reads B as A)
    ((1, 6, 20, 8), lambda x: x.transpose(0, 2, 1, 3), "permute(0,2,1,3)"),  # [B,H,N,hd] / [B,N,H,hd]
    ((1, 20, 48), lambda x: x.reshape(20, 6, 8).transpose(1, 0, 2), "permute(1,0,2)|reshape(1,20,48)"),
    ((1, 3, 8, 8), lambda x: x.transpose(0, 2, 3, 1), "permute(0,3,1,2)"),  # NCHW / NHWC
    ((1, 16, 12), lambda x: x.transpose(0, 2, 1).reshape(1, 12, 4, 4), "reshape(1,12,16)|permute(0,2,1)"),
]


def numpy_reading(b, layout):
    """B read through a layout text, with numpy (the grammar of docs/alignment.md)."""
    for step in layout.split("|"):
        op, args = step.split("(")
        dims = [int(d) for d in args.rstrip(")").split(",")]
        b = b.reshape(dims) if op == "reshape" else b.transpose(dims)
    return b


@pytest.mark.parametrize("shape,make_b,layout", CASES)
def test_layouts_read_b_as_numpy_does(tmp_path, run, diff_json, shape, make_b, layout):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape).astype(np.float32)
    b = np.ascontiguousarray(make_b(a)).copy()
    # One position differs, found through numpy in A's layout.
    flat = np.ascontiguousarray(b).reshape(-1)
    flat[37] += np.float32(0.5)
    b = flat.reshape(b.shape)
    assert (numpy_reading(b, layout).reshape(shape) != a).sum() == 1  # the layout is numpy's inverse
    save_file({"blocks.0.attn.v": a}, str(tmp_path / "a.st"))
    save_file({"/encoder/layer.0/attn/Transpose_output_0": b}, str(tmp_path / "b.st"))
    (tmp_path / "map.toml").write_text(
        f'[[pair]]\na = "blocks.0.attn.v"\nb = "/encoder/layer.0/attn/Transpose_output_0"\n'
        f'layout = "{layout}"\n'
    )
    b_as_a = numpy_reading(b, layout).reshape(shape).astype(np.float64)
    a64 = a.astype(np.float64)
    d = np.abs(a64 - b_as_a)
    where = np.unravel_index(int(np.argmax(d)), shape)
    pinned = diff_json(tmp_path / "a.st", tmp_path / "b.st", "--map", tmp_path / "map.toml")
    p = pinned["pairs"][0]
    assert p["layout"] == layout
    m = p["metrics"]
    assert m["max_abs"] == pytest.approx(d.max(), rel=1e-12)
    assert p["argmax_index"] == [int(i) for i in where]
    assert m["a_at_max"] == pytest.approx(a64[where]) and m["b_at_max"] == pytest.approx(b_as_a[where])
    cos = (a64 * b_as_a).sum() / np.sqrt((a64 ** 2).sum() * (b_as_a ** 2).sum())
    assert m["cosine"] == pytest.approx(cos, rel=1e-12)
    assert m["over_tolerance"] == int((d > 1e-4 + 1e-4 * np.maximum(np.abs(a64), np.abs(b_as_a))).sum())


@pytest.mark.parametrize("shape,make_b,layout", CASES)
def test_auto_finds_the_reading_that_makes_equal_values_equal(tmp_path, run, diff_json, shape, make_b, layout):
    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape).astype(np.float32)
    b = np.ascontiguousarray(make_b(a))
    save_file({"blocks.0.attn.v": a}, str(tmp_path / "a.st"))
    save_file({"port/values": b}, str(tmp_path / "b.st"))
    r = diff_json(tmp_path / "a.st", tmp_path / "b.st", "--align", "auto")
    (p,) = r["pairs"]
    assert p["paired_by"] == "value" and p["name"] == "blocks.0.attn.v"
    assert p["metrics"]["max_abs"] == 0.0
    # Whatever text the layout has, it reads B as numpy does.
    assert np.array_equal(numpy_reading(b, p["layout"]).reshape(shape), a)
    proposal = json.loads(run("align", tmp_path / "a.st", tmp_path / "b.st", "--format", "json").stdout)
    assert proposal["pairs"][0]["layout"] == p["layout"]
