"""`dinodiff capture onnx` against onnxruntime's Python API on the same model, with the values
marked by an independent route: `onnx.inliner.inline_local_functions` + every node output added
as a graph output, run by `onnxruntime.InferenceSession`. Values are matched in graph order (both
inliners keep the nodes' order), checking op types, and must be equal (max|Δ| = 0)."""

import json
import os
import subprocess

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from PIL import Image
from safetensors import safe_open


def nested_model(path, external=False):
    """x -> Outer(x; scale=0.25) -> Sigmoid. Outer(a; scale) = Relu(Inner(Inner(a, alpha=@scale))
    + Neg(a)); Inner(p; alpha=0.5) = Elu(p, alpha=@alpha) * 2 * w. A function nested in a function,
    attribute references bound by the caller and by a default, an unnamed call, an initializer."""
    two = h.make_node("Constant", [], ["two"], value=h.make_tensor("c", TP.FLOAT, [], [2.0]))
    elu = h.make_node("Elu", ["p"], ["e"])
    elu.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="alpha",
                                             type=onnx.AttributeProto.FLOAT))
    mul = h.make_node("Mul", ["e", "two"], ["q0"])
    mulw = h.make_node("Mul", ["q0", "w"], ["q"])
    inner = h.make_function("local", "Inner", ["p", "w"], ["q"], [two, elu, mul, mulw],
                            [h.make_opsetid("", 18)], attributes=[],
                            attribute_protos=[h.make_attribute("alpha", 0.5)])
    c1 = h.make_node("Inner", ["a", "w"], ["t"], domain="local", name="Inner_first")
    c1.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="scale",
                                            type=onnx.AttributeProto.FLOAT))
    c2 = h.make_node("Inner", ["t", "w"], ["u"], domain="local")
    outer = h.make_function(
        "local", "Outer", ["a", "w"], ["b"],
        [c1, c2, h.make_node("Neg", ["a"], ["n"]), h.make_node("Add", ["u", "n"], ["s"]),
         h.make_node("Relu", ["s"], ["b"])],
        [h.make_opsetid("", 18), h.make_opsetid("local", 1)], attributes=["scale"])
    call = h.make_node("Outer", ["x", "w"], ["y0"], domain="local", name="Outer_1", scale=0.25)
    sig = h.make_node("Sigmoid", ["y0"], ["y"], name="final")
    w = np.linspace(0.5, 1.5, 16 * 16 * 3, dtype=np.float32).reshape(1, 3, 16, 16)
    g = h.make_graph([call, sig], "g", [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", TP.FLOAT, [1, 3, 16, 16])],
                     initializer=[onnx.numpy_helper.from_array(w, "w")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18), h.make_opsetid("local", 1)],
                     functions=[inner, outer])
    m.ir_version = 10
    onnx.checker.check_model(m)
    if external:
        onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(m, path)
    return m


def bind_defaults(model):
    """Writes each function's attribute defaults onto the calls that omit them (what ONNX says a
    call means). Needed because onnx 1.23's inliner ignores `attribute_proto` defaults: an
    unbound reference then drops the attribute (Elu falls back to alpha 1.0), while ONNX Runtime,
    running the functions itself, uses the default (0.5) -- as dinodiff does."""
    defaults = {(f.domain, f.name): list(f.attribute_proto) for f in model.functions}
    bodies = [model.graph.node] + [f.node for f in model.functions]
    for nodes in bodies:
        for n in nodes:
            for d in defaults.get((n.domain, n.op_type), []):
                if d.name not in {a.name for a in n.attribute}:
                    n.attribute.append(d)
    return model


def reference_values(model, x):
    """(op_type, value) for every node output of the Python-inlined model, in node order."""
    model = bind_defaults(onnx.ModelProto.FromString(model.SerializeToString()))
    inlined = onnx.inliner.inline_local_functions(model)
    names = [(n.op_type, o) for n in inlined.graph.node for o in n.output if o]
    inlined.graph.ClearField("output")
    for _, o in names:
        inlined.graph.output.append(onnx.ValueInfoProto(name=o))
    opts = ort.SessionOptions()  # as dinodiff's default --opt-level disable
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(inlined.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    got = sess.run([o for _, o in names], {sess.get_inputs()[0].name: x})
    return [(op, v) for (op, _), v in zip(names, got)]


def load(path):
    with safe_open(str(path), framework="numpy") as f:
        manifest = json.loads(f.metadata()["dinodiff.manifest"])
        return manifest, {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture
def image_input(tmp_path, run):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    run("prep", "--image", tmp_path / "img.png", "--transform", "none", "-o", tmp_path / "in.st")
    _, t = load(tmp_path / "in.st")
    return tmp_path / "in.st", t["input"]


@pytest.mark.parametrize("external,budget", [(False, None), (True, None), (True, "1KiB")])
def test_every_value_inside_nested_functions_equals_onnxruntime(tmp_path, run, image_input,
                                                                 external, budget):
    model = nested_model(tmp_path / "nested.onnx", external=external)
    inp, x = image_input
    out = tmp_path / "n.st"
    limit = ["--max-memory", budget] if budget else []
    proc = run("capture", "onnx", "--model", tmp_path / "nested.onnx", "--input", inp, "-o", out,
               *limit)
    assert "3 function calls inlined" in proc.stderr
    assert "final outputs bit-identical to the unmarked run's" in proc.stderr
    m, t = load(out)
    ours = [n for n in m["order"] if n != "input" and not n.startswith("unmarked/")]
    ref = reference_values(onnx.load(tmp_path / "nested.onnx"), x) if external else \
        reference_values(model, x)
    assert [m["tensors"][n]["op_type"] for n in ours] == [op for op, _ in ref]
    for name, (op, value) in zip(ours, ref):
        np.testing.assert_array_equal(t[name], value, err_msg=name)
    # Names by call path, the attribute reference resolved (alpha 0.25, then the default 0.5).
    assert ours[:3] == ["Outer_1/Inner_first/two", "Outer_1/Inner_first/e", "Outer_1/Inner_first/q0"]
    rec = m["tensors"]["Outer_1/Inner_first/e"]
    assert rec["native"] == "e" and rec["call_path"] == "Outer_1/Inner_first"
    assert rec["functions"] == ["Outer", "Inner"] and rec["node"] == "Outer_1/Inner_first/Elu"
    assert m["tensors"]["Outer_1/Inner_1/e"]["call_path"] == "Outer_1/Inner_1"
    # The model's own output equals a plain onnxruntime run of the original model.
    plain = ort.InferenceSession(str(tmp_path / "nested.onnx"), providers=["CPUExecutionProvider"])
    (y,) = plain.run(["y"], {"x": x})
    np.testing.assert_array_equal(t["unmarked/y"], y)
    np.testing.assert_array_equal(t["y"], y)
    assert m["onnx"]["observer_effect"]["bit_identical"] is True
    assert m["onnx"]["calls_inlined"] == 3
    runs = m["onnx"]["runs"]
    assert sum(r["values"] for r in runs) == len(ours)
    if budget:
        # 1 KiB holds one 16x16 f32 plane: the values are captured over several runs, each
        # within the budget unless a single value exceeds it; the result is the same.
        assert len(runs) > 1 and f"over {len(runs)} runs" in proc.stderr
        assert all(r["bytes"] <= 1024 or r["values"] == 1 for r in runs)
        assert m["onnx"]["max_memory"] == 1024
    else:
        assert len(runs) == 1


def test_read_only_model_directory(tmp_path, dinodiff_bin, image_input):
    """The marked copy cannot go beside the model: it goes to a temporary directory with the
    external data linked or copied, and nothing is left behind in either place."""
    ro = tmp_path / "ro"
    ro.mkdir()
    nested_model(ro / "m.onnx", external=True)
    x = image_input[1]
    os.chmod(ro, 0o555)
    try:
        cmd = [dinodiff_bin, "capture", "onnx", "--model", ro / "m.onnx", "--input",
               image_input[0], "-o", tmp_path / "ro.st"]
        # root ignores directory permissions: drop the capabilities that let it.
        proc = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                               "--inh-caps", "-all", *map(str, cmd)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
    finally:
        os.chmod(ro, 0o755)
    assert sorted(p.name for p in ro.iterdir()) == ["m.onnx", "m.onnx.data"]
    _, t = load(tmp_path / "ro.st")
    plain = ort.InferenceSession(str(ro / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(t["y"], plain.run(["y"], {"x": x})[0])


def two_input_model(path):
    x = h.make_tensor_value_info("pixel_values", TP.FLOAT, [1, 3, 16, 16])
    s = h.make_tensor_value_info("scale", TP.FLOAT, [1])
    y = h.make_tensor_value_info("y", TP.FLOAT, [1, 3, 16, 16])
    graph = h.make_graph([h.make_node("Mul", ["pixel_values", "scale"], ["y"])],
                              "two", [x, s], [y])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)


def test_model_with_two_inputs(tmp_path, run, image_input):
    two_input_model(tmp_path / "two.onnx")
    fails(run, tmp_path, ["--model", tmp_path / "two.onnx", "--input", image_input[0]],
          f"{tmp_path / 'two.onnx'} has 2 inputs (pixel_values, scale); capture onnx feeds one "
          "image tensor and cannot fill the others. Name the image input with --input-name only "
          "if the others are optional")


def test_input_name_mismatch(tmp_path, run, image_input):
    nested_model(tmp_path / "m.onnx")
    fails(run, tmp_path, ["--model", tmp_path / "m.onnx", "--input", image_input[0],
                          "--input-name", "pixel_values"],
          f"{tmp_path / 'm.onnx'} has no input named \"pixel_values\"; its inputs are: x (pass one "
          "of them to --input-name)")


def fails(run, tmp_path, args, message, prefix=False):
    out = tmp_path / "out.st"
    proc = run("capture", "onnx", *args, "-o", out, expect=(2,))
    if prefix:
        assert proc.stderr.startswith(f"error: {message}"), proc.stderr
    else:
        assert proc.stderr == f"error: {message}\n"
    assert not out.exists()


def test_not_an_onnx_file(tmp_path, run, image_input):
    bad = tmp_path / "model.onnx"
    bad.write_text("hello, not a protobuf")
    fails(run, tmp_path, ["--model", bad, "--input", image_input[0]],
          f"{bad} is not an ONNX model: it does not decode as a ModelProto with a graph (21 bytes). "
          "Was it cut short, or is it another format?")


def test_missing_external_data(tmp_path, run, image_input):
    nested_model(tmp_path / "ext.onnx", external=True)
    (tmp_path / "ext.onnx.data").unlink()
    fails(run, tmp_path, ["--model", tmp_path / "ext.onnx", "--input", image_input[0]],
          f"the model {tmp_path / 'ext.onnx'} keeps initializers in the external file "
          f"ext.onnx.data, which is not beside it ({tmp_path / 'ext.onnx.data'} does not exist); "
          "copy it next to the model")


def test_no_runtime_found(tmp_path, run, image_input):
    nested_model(tmp_path / "m.onnx")
    fails(run, tmp_path, ["--model", tmp_path / "m.onnx", "--input", image_input[0],
                          "--ort-lib", tmp_path / "libonnxruntime.so"],
          f"no ONNX Runtime library found. Tried: --ort-lib: {tmp_path / 'libonnxruntime.so'} "
          "does not exist. Install it with `pip install onnxruntime==1.31.1` (in the active venv), "
          "or pass --ort-lib /path/to/libonnxruntime.so.1.31.1 / set ORT_DYLIB_PATH")


def test_input_shape_mismatch(tmp_path, run):
    nested_model(tmp_path / "m.onnx")
    Image.new("RGB", (32, 32)).save(tmp_path / "big.png")
    run("prep", "--image", tmp_path / "big.png", "--transform", "none", "-o", tmp_path / "big.st")
    fails(run, tmp_path, ["--model", tmp_path / "m.onnx", "--input", tmp_path / "big.st"],
          f"{tmp_path / 'm.onnx'} takes input \"x\" of shape [1, 3, 16, 16] (-1 = any), but the "
          "input is [1, 3, 32, 32]; prepare it with `dinodiff prep --size 16`")


def test_truncated_model(tmp_path, run, image_input):
    nested_model(tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    fails(run, tmp_path, ["--model", cut, "--input", image_input[0]],
          f"{cut} is not an ONNX model: it does not decode as a ModelProto with a graph "
          f"({len(data) // 2} bytes). Was it cut short, or is it another format?")


def test_ir_version_newer_than_the_runtime(tmp_path, run, image_input):
    model = nested_model(tmp_path / "m.onnx")
    model.ir_version = 14
    onnx.save(model, tmp_path / "ir14.onnx")
    fails(run, tmp_path, ["--model", tmp_path / "ir14.onnx", "--input", image_input[0]],
          f"{tmp_path / 'ir14.onnx'} has ONNX IR version 14, but this ONNX Runtime accepts IR "
          "versions up to 13. Re-export it with an older IR version (with the onnx package: set "
          "model.ir_version = 13 and save, if its opsets allow), or install a newer onnxruntime "
          "and pass its library with --ort-lib")


# --- a real jax2onnx export of the Equinox DINOv3 example (tiny config) ----------------------

BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1", "residual1",
         "norm2", "mlp.hidden", "mlp", "ls2", "output"]


@pytest.fixture(scope="module")
def jax2onnx_tiny(tmp_path_factory):
    """VisionTransformer(img 32, patch 16, D 64, 2 blocks, 2 heads, 4 storage tokens), exported by
    jax2onnx at test time: one main-graph node, everything inside nested local functions."""
    import jax
    import jax2onnx
    from jax2onnx.plugins.examples.eqx.dino import VisionTransformer

    d = tmp_path_factory.mktemp("j2o")
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                              num_storage_tokens=4, key=jax.random.PRNGKey(0))
    path = d / "vit.onnx"
    jax2onnx.to_onnx(model, inputs=[(1, 3, 32, 32)], return_mode="file", output_path=str(path))
    return path


def test_jax2onnx_export_stages_are_recognized(jax2onnx_tiny, tmp_path, run):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    run("prep", "--image", tmp_path / "i.png", "--transform", "none", "-o", tmp_path / "in.st")
    assert len(onnx.load(jax2onnx_tiny).graph.node) == 1
    out = tmp_path / "j.st"
    run("capture", "onnx", "--model", jax2onnx_tiny, "--input", tmp_path / "in.st", "-o", out)
    m, t = load(out)
    want = (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
            + [f"blocks.{i}.{s}" for i in range(2) for s in BLOCK]
            + ["norm", "cls", "storage", "patches", "pooled"])
    canonical = [n for n in m["order"] if m["tensors"][n].get("stage")]
    assert sorted(canonical) == sorted(want)
    # Blocks in order, head last.
    assert canonical.index("blocks.0.output") < canonical.index("blocks.1.norm1")
    assert canonical[-5:] == ["norm", "cls", "patches", "storage", "pooled"]
    n_tok, d = 1 + 4 + 4, 64
    assert t["patch_embed"].shape == (1, 4, d)
    assert t["tokens"].shape == (1, n_tok, d)
    assert t["blocks.0.attn.q"].shape == (1, 2, n_tok, 32)
    assert t["blocks.0.attn.sdpa"].shape == (1, n_tok, d)
    assert t["blocks.1.mlp.hidden"].shape == (1, n_tok, 4 * d)
    assert t["cls"].shape == (1, d) and t["patches"].shape == (1, 4, d)
    # Identities that hold exactly between what was recognized (f32 adds, slices):
    for i in range(2):
        x = t["tokens"] if i == 0 else t[f"blocks.{i - 1}.output"]
        np.testing.assert_array_equal(t[f"blocks.{i}.residual1"], x + t[f"blocks.{i}.ls1"])
        np.testing.assert_array_equal(t[f"blocks.{i}.output"],
                                      t[f"blocks.{i}.residual1"] + t[f"blocks.{i}.ls2"])
    np.testing.assert_array_equal(t["tokens"][:, 5:], t["patch_embed"])
    np.testing.assert_array_equal(t["cls"], t["norm"][:, 0])
    np.testing.assert_array_equal(t["patches"], t["norm"][:, 5:])
    # Derived views: storage sliced, pooled the mean of patches (numpy, f64).
    np.testing.assert_array_equal(t["storage"], t["norm"][:, 1:5])
    np.testing.assert_allclose(t["pooled"], t["patches"].astype(np.float64).mean(1), atol=1e-7)
    assert m["tensors"]["pooled"]["derived"].startswith("mean of patches")
    # attn.qkv = the three projections side by side, exactly.
    qkv = m["tensors"]["blocks.0.attn.qkv"]
    parts = [t[v] for v in qkv["onnx_values"]]
    assert [m["tensors"][v]["op_type"] for v in qkv["onnx_values"]] == ["Gemm"] * 3
    np.testing.assert_array_equal(t["blocks.0.attn.qkv"][0], np.concatenate(parts, -1))
    # RoPE tables against Meta's formula in numpy: periods 100^(2i/(hd/2)) rounded to bf16,
    # coords (arange(0.5, h)/h)*2-1 "ij", angles 2*pi*coords/periods tiled x2; grid 2x2, hd 32.
    import ml_dtypes
    hd, h = 32, 2
    periods = (100.0 ** (2 * np.arange(hd // 4) / (hd // 2))).astype(ml_dtypes.bfloat16)
    c = np.arange(0.5, h) / h
    coords = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2) * 2 - 1
    angles = 2 * np.pi * coords[:, :, None] / periods.astype(np.float64)[None, None, :]
    angles = np.tile(angles.reshape(h * h, -1), 2)
    np.testing.assert_allclose(t["rope.sin"], np.sin(angles), atol=1e-6)
    np.testing.assert_allclose(t["rope.cos"], np.cos(angles), atol=1e-6)
    assert m["tensors"]["rope.sin"]["onnx_shape"] == [1, n_tok, 1, hd]
    # Every captured value against onnxruntime's Python API on the same model, marked by an
    # independent route: onnx.inliner (after aligning the custom domains' opset versions, which
    # jax2onnx 0.17.1 declares as 1 in the model and 23 in the functions; the inliner otherwise
    # inlines nothing) + every node output added as an output. Matched in graph order.
    model = onnx.load(jax2onnx_tiny)
    versions = {o.domain: o.version for f in model.functions for o in f.opset_import}
    for o in model.opset_import:
        if o.domain in versions:
            o.version = versions[o.domain]
    ref = reference_values(model, t["input"])
    ours = [n for n in m["order"] if n != "input" and not n.startswith(("unmarked/", "deployed/"))
            and "derived" not in m["tensors"][n]]
    assert [m["tensors"][n]["op_type"] for n in ours] == [op for op, _ in ref]
    for name, (_, value) in zip(ours, ref):
        if "sliced" in m["tensors"][name]:  # the RoPE tables: their last hw rows
            value = value.reshape(value.shape[1], -1)[-t[name].shape[0]:]
        np.testing.assert_array_equal(t[name], value.reshape(t[name].shape), err_msg=name)
    # And the LayerNorms are LayerNorms of what they follow (numpy, f64).
    x = t["blocks.0.residual1"].astype(np.float64)
    z = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    assert np.corrcoef(z.ravel(), t["blocks.0.norm2"].ravel())[0, 1] > 0.99
    rec = m["tensors"]["blocks.1.ls1"]
    assert rec["op_type"] == "Mul" and rec["call_path"].endswith("/LayerScale_1")
    assert rec["stage_rule"] == "jax2onnx Equinox DINOv3"
    assert m["onnx"]["observer_effect"]["bit_identical"] is True


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_external_data_outside_the_model_directory(tmp_path, run, image_input, where):
    """A location that is absolute or climbs out with `..` is refused before anything is opened,
    and the file it names is left untouched (it could otherwise be copied onto itself)."""
    (tmp_path / "models").mkdir()
    model_path = tmp_path / "models" / "m.onnx"
    nested_model(model_path, external=True)
    data = tmp_path / "models" / "m.onnx.data"
    target = tmp_path / "weights.data"
    data.rename(target)
    location = str(target) if where == "absolute" else "../weights.data"
    m = onnx.load(model_path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, model_path)
    before = target.read_bytes()
    fails(run, tmp_path, ["--model", model_path, "--input", image_input[0]],
          f"the model {model_path} names the external data location \"{location}\", which is not "
          "a relative path inside the model's directory (ONNX Runtime refuses such locations "
          "too); re-save the model with its data beside it (onnx.save(..., "
          "save_as_external_data=True, location=\"<name>.data\"))")
    assert target.read_bytes() == before
