"""Dumps written by dinodiff open in stock Python readers (safetensors.safe_open and
safetensors.numpy.load_file) with identical tensors and metadata. The expected tensors are
computed here with numpy/PIL, independently of dinodiff."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Canonical stage vocabulary (docs/stages.md), written out independently of src/model/stage.rs.
STEM = ["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
HEAD = ["norm", "cls", "storage", "patches", "pooled"]


def manifest_of(path):
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert meta["dinodiff.format_version"] == "1"
    return json.loads(meta["dinodiff.manifest"]), keys, meta


def test_prep_none_tensor_is_bit_identical_to_numpy(tmp_path, run):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(48, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    run("prep", "--image", tmp_path / "img.png", "--transform", "none", "-o", tmp_path / "in.st")

    # torchvision's ToTensor + Normalize, in f32, in this order.
    want = ((pixels.astype(np.float32) / np.float32(255.0) - MEAN) / STD).transpose(2, 0, 1)[None]
    got = load_file(tmp_path / "in.st")["input"]
    assert got.dtype == np.float32 and got.shape == (1, 3, 48, 32)
    np.testing.assert_array_equal(got, want)

    manifest, keys, _ = manifest_of(tmp_path / "in.st")
    with safe_open(str(tmp_path / "in.st"), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("input"), want)
    assert keys == ["input"]
    assert manifest["source"] == "input"
    assert manifest["order"] == ["input"]
    assert manifest["tensors"]["input"] == {"native": "input", "stage": "input"}
    assert manifest["input_sha256"] == hashlib.sha256(want.tobytes()).hexdigest()
    image_bytes = (tmp_path / "img.png").read_bytes()
    assert manifest["input"]["image"] == {
        "path": str(tmp_path / "img.png"),
        "size": len(image_bytes),
        "sha256": hashlib.sha256(image_bytes).hexdigest(),
    }
    assert manifest["input"]["transform"] == "none"
    assert manifest["command_line"][1:3] == ["prep", "--image"]
    for field in ["dinodiff_version", "created", "host", "format_version"]:
        assert manifest[field], field


def test_synth_dump_has_every_stage_in_order_with_dinov3_shapes(tmp_path, run):
    run("synth", "--variant", "vits16", "--image-size", "224", "-o", tmp_path / "s.st")
    manifest, keys, _ = manifest_of(tmp_path / "s.st")
    names = STEM + [f"blocks.{i}.{s}" for i in range(12) for s in BLOCK] + HEAD
    assert manifest["order"] == names
    assert sorted(keys) == sorted(names)
    tensors = load_file(tmp_path / "s.st")
    d, n, hw, heads, hd = 384, 1 + 4 + 196, 196, 6, 64
    shapes = {
        "input": (1, 3, 224, 224), "patch_embed": (1, hw, d), "tokens": (1, n, d),
        "rope.sin": (hw, hd), "rope.cos": (hw, hd), "blocks.3.attn.qkv": (1, n, 3 * d),
        "blocks.3.attn.q": (1, heads, n, hd), "blocks.3.mlp.hidden": (1, n, 4 * d),
        "blocks.3.output": (1, n, d), "norm": (1, n, d), "cls": (1, d), "storage": (1, 4, d),
        "patches": (1, hw, d), "pooled": (1, d),
    }
    for name, shape in shapes.items():
        assert tensors[name].shape == shape, name
        assert tensors[name].dtype == np.float32
    # The data area is laid out in execution order (the writer streams in arrival order).
    with open(tmp_path / "s.st", "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    starts = [header[name]["data_offsets"][0] for name in names]
    assert starts == sorted(starts)
    assert manifest["input_sha256"] == hashlib.sha256(tensors["input"].tobytes()).hexdigest()
    assert manifest["variant"] == "vits16"
