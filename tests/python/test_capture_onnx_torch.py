"""`dinodiff capture onnx` on real `torch.onnx.export` files of timm's DINOv3 port (loaded from a
Meta-format checkpoint), made at test time with both exporters (tools/export_torch_onnx.py):

- every captured value equals what onnxruntime's Python API returns for it when the same model is
  marked in Python (all node outputs added as graph outputs): max|Δ| = 0;
- every canonical stage is recognized, and each equals timm's own intermediate (forward hooks,
  tools/timm_capture.py) on the same input within 1e-5."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import read_dump, write_dump  # noqa: E402

D, DEPTH, HEADS, IMG = 64, 2, 2, 32
BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
STAGES = (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
          + [f"blocks.{i}.{s}" for i in range(DEPTH) for s in BLOCK]
          + ["norm", "cls", "storage", "patches", "pooled"])


def tool(script, *args):
    proc = subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch_onnx")
    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", D, "--depth", DEPTH,
         "--heads", HEADS, "--seed", 5, "-o", d / "m.pth")
    x = np.random.default_rng(2).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    for exporter in ["dynamo", "legacy"]:
        (d / exporter).mkdir()
        tool("export_torch_onnx.py", "--weights", d / "m.pth", "--img-size", IMG, "--exporter",
             exporter, "-o", d / exporter / "model.onnx")
    tool("timm_capture.py", "--weights", d / "m.pth", "--input", d / "in.st", "-o", d / "timm.st")
    return d, x


def python_marked(path, x):
    """Every node output of the model, by onnxruntime's Python API, marked in Python."""
    model = onnx.load(str(path))  # external data loaded in memory
    names = [o for n in model.graph.node for o in n.output if o]
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_torch_onnx_export(work, run, exporter):
    d, x = work
    out = d / f"{exporter}.st"
    proc = run("capture", "onnx", "--model", d / exporter / "model.onnx", "--input", d / "in.st",
               "-o", out)
    assert "final outputs bit-identical to the unmarked run's" in proc.stderr
    m, t = read_dump(out)
    ref = python_marked(d / exporter / "model.onnx", x)
    compared = 0
    for name in m["order"]:
        rec = m["tensors"][name]
        if name == "input" or name.startswith(("unmarked/", "deployed/")) or "derived" in rec:
            continue
        value = ref[rec.get("onnx_value", name)]
        np.testing.assert_array_equal(t[name], value.reshape(t[name].shape), err_msg=name)
        compared += 1
    assert compared == m["onnx"]["values_marked"] > 100
    # Every canonical stage, with the exporter's rule, against timm's hooks.
    rule = {"dynamo": "torch.onnx dynamo (timm DINOv3)",
            "legacy": "torch.onnx legacy (timm DINOv3)"}[exporter]
    stages = {n for n in m["order"] if m["tensors"][n].get("stage")}
    assert stages == set(STAGES)
    assert m["tensors"]["blocks.1.ls2"]["stage_rule"] == rule
    _, timm = read_dump(d / "timm.st")
    for s in STAGES:
        assert t[s].shape == timm[s].shape, s
        assert np.abs(t[s].astype(np.float64) - timm[s]).max() <= 1e-5, s
    # The deployed headline: timm's model returns the pooled patches, taken from a default
    # onnxruntime session (ONNX Runtime's default optimizations).
    session = ort.InferenceSession(str(d / exporter / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    deployed = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert m["onnx"]["deployed_headline"] == ["pooled"]
    np.testing.assert_array_equal(t["deployed/pooled"], deployed.reshape(t["pooled"].shape))
    # Derived head views, checked with numpy.
    assert set(m["onnx"]["derived_from_norm"]) == {"cls", "storage"}
    np.testing.assert_array_equal(t["cls"], t["norm"][:, 0])
    np.testing.assert_array_equal(t["storage"], t["norm"][:, 1:5])
