"""The Equinox tools (tools/meta_to_eqx.py, eqx_capture.py, export_onnx.py) against independent
references: timm's DINOv3 port loaded from the same Meta-format checkpoint (tools/timm_capture.py
build_timm + its hooks), onnxruntime's Python API, hashlib and the packages' own versions.

Tiny config (D 64, 3 blocks, 2 heads, 4 storage tokens, 32 x 32 input); the checkpoint gets a
non-zero K third of the qkv bias, which Meta masks with bias_mask and timm drops, so a mapping
that forgot the mask would not match timm."""

import hashlib
import json
import pathlib
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import write_dump  # noqa: E402

D, DEPTH, HEADS, IMG, R = 64, 3, 2, 32, 4
TOL = 1e-5


def tool(script, *args, expect=0):
    proc = subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == expect, (
        f"{script} {' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def load_npz(path):
    z = np.load(path)
    manifest = json.loads(bytes(z["__dinodiff_manifest__"]).decode())
    return manifest, {k: z[k] for k in z.files if k != "__dinodiff_manifest__"}, z.files


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("eqx")
    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", D, "--depth", DEPTH,
         "--heads", HEADS, "--seed", 7, "-o", d / "plain.pth")
    sd = torch.load(d / "plain.pth", weights_only=True)
    g = torch.Generator().manual_seed(1)
    for i in range(DEPTH):  # a K bias Meta would mask away (and timm drops)
        sd[f"blocks.{i}.attn.qkv.bias"][D:2 * D] = torch.randn(D, generator=g) * 0.5
    torch.save(sd, d / "ckpt.pth")
    x = np.random.default_rng(5).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "input.st", [("input", x, {"native": "input", "stage": "input"})])
    tool("meta_to_eqx.py", "--weights", d / "ckpt.pth", "--img-size", IMG, "-o", d / "m.eqx")
    tool("eqx_capture.py", "--model", d / "m.eqx", "--input", d / "input.st", "-o", d / "run.npz")
    manifest, arrays, files = load_npz(d / "run.npz")
    return {"dir": d, "sd": sd, "x": x, "manifest": manifest, "arrays": arrays, "files": files}


@pytest.fixture(scope="module")
def timm_ref(work):
    """timm's canonical stages for the same checkpoint and input (timm_capture's hooks)."""
    import torch
    from timm_capture import build_timm, capture

    model, _, arch = build_timm(work["sd"])
    stages, _ = capture(model, torch.from_numpy(work["x"].copy()), arch["storage"])
    return {name: t.numpy() for name, t, _ in stages}


@pytest.fixture(scope="module")
def onnx_plain(work):
    path = work["dir"] / "m.onnx"
    proc = tool("export_onnx.py", "--model", work["dir"] / "m.eqx", "-o", path)
    return path, proc.stderr


def ort_run(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# --- (a) final output vs timm ----------------------------------------------------------------

def test_mapped_model_output_equals_timm(work, timm_ref):
    norm = timm_ref["norm"]
    ref = np.concatenate([norm[:, :1], norm[:, 1 + R:]], axis=1)  # the Equinox model drops storage
    delta = max_abs(work["arrays"]["output"], ref)
    print(f"\n(a) eqx output vs timm: max|d| = {delta:.3g}")
    assert delta <= TOL


def test_capture_does_not_change_the_output(work):
    """The taps are identities: a plain (untapped) call of load_model's model gives the same bits."""
    import jax.numpy as jnp
    from eqx_model import load_model

    model = load_model(work["dir"] / "m.eqx")
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(work["x"]))), work["arrays"]["output"])
    # The K bias is what Meta uses (masked to zero), q / v biases are the checkpoint's.
    attn = model.blocks[1].attn.core.attn
    assert not np.asarray(attn.key_proj.bias).any()
    np.testing.assert_array_equal(np.asarray(attn.query_proj.bias),
                                  work["sd"]["blocks.1.attn.qkv.bias"][:D].numpy())
    # RoPE periods: the checkpoint's bf16-rounded values survive exactly (an f32 leaf).
    np.testing.assert_array_equal(np.asarray(model.dino_rope.periods),
                                  work["sd"]["rope_embed.periods"].numpy())
    side = json.loads((work["dir"] / "m.eqx.json").read_text())
    assert side["rope_periods"]["exact"] is True
    assert side["config"] == {"img_size": IMG, "patch_size": 16, "embed_dim": D, "depth": DEPTH,
                              "num_heads": HEADS, "num_storage_tokens": R}
    assert side["source"]["sha256"] == hashlib.sha256(
        (work["dir"] / "ckpt.pth").read_bytes()).hexdigest()


# --- (b) internals vs timm's intermediates ---------------------------------------------------

BLOCK_PAIRS = [("norm1", ".norm1"), ("attn.qkv", ".attn:qkv"), ("attn.q", ".attn:q"),
               ("attn.k", ".attn:k"), ("attn.v", ".attn:v"), ("attn.sdpa", ".attn:sdpa"),
               ("attn", ".attn"), ("ls1", ".ls1"), ("residual1", ":residual1"),
               ("norm2", ".norm2"), ("mlp.hidden", ".mlp:hidden"), ("mlp", ".mlp"),
               ("ls2", ".ls2"), ("output", "")]


def test_internals_equal_timm(work, timm_ref):
    pairs = {"patch_embed": "patch_embed", "tokens": "tokens", "rope.sin": "rope:sin",
             "rope.cos": "rope:cos", "norm": "norm"}
    for i in range(DEPTH):
        pairs.update({f"blocks.{i}.{t}": f"blocks[{i}]{e}" for t, e in BLOCK_PAIRS})
    deltas = {t: max_abs(work["arrays"][e], timm_ref[t]) for t, e in pairs.items()}
    worst = max(deltas, key=deltas.get)
    print(f"\n(b) eqx internals vs timm: worst {worst} max|d| = {deltas[worst]:.3g}; "
          + ", ".join(f"{k} {v:.2g}" for k, v in deltas.items() if k.startswith("blocks.2.")))
    assert all(v <= TOL for v in deltas.values()), {k: v for k, v in deltas.items() if v > TOL}


def test_vocabulary_order_and_identities(work):
    a, names = work["arrays"], work["manifest"]["order"]
    block = ["blocks[{i}]:input", "blocks[{i}].norm1", "blocks[{i}].attn.core.attn.query_proj",
             "blocks[{i}].attn.core.attn.key_proj", "blocks[{i}].attn.core.attn.value_proj",
             "blocks[{i}].attn:qkv", "blocks[{i}].attn:q", "blocks[{i}].attn:k",
             "blocks[{i}].attn:v", "blocks[{i}].attn.core.attn.dropout", "blocks[{i}].attn:sdpa",
             "blocks[{i}].attn.core.attn.output_proj", "blocks[{i}].attn.core.attn",
             "blocks[{i}].attn", "blocks[{i}].ls1", "blocks[{i}]:residual1", "blocks[{i}].norm2",
             "blocks[{i}].mlp.fc1", "blocks[{i}].mlp:hidden", "blocks[{i}].mlp.fc2",
             "blocks[{i}].mlp", "blocks[{i}].ls2", "blocks[{i}]"]
    want = (["input", "patch_embed.proj", "patch_embed", "rope:sin", "rope:cos", "tokens"]
            + [s.format(i=i) for i in range(DEPTH) for s in block] + ["norm", "output"])
    assert names == want
    assert work["files"] == want + ["__dinodiff_manifest__"]  # npz member order = execution order
    n, hw = 1 + R + (IMG // 16) ** 2, (IMG // 16) ** 2
    assert a["blocks[0].attn:q"].shape == (1, HEADS, n, D // HEADS)
    assert a["blocks[0].attn:qkv"].shape == (1, n, 3 * D)
    assert a["blocks[0].mlp:hidden"].shape == (1, n, 4 * D)
    assert a["blocks[0].attn.core.attn.dropout"].shape == (1, HEADS, n, n)
    assert a["rope:sin"].shape == (hw, D // HEADS) and a["output"].shape == (1, 1 + hw, D)
    np.testing.assert_array_equal(a["tokens"], a["blocks[0]:input"])
    np.testing.assert_array_equal(a["input"], work["x"])
    for i in range(DEPTH):
        if i:
            np.testing.assert_array_equal(a[f"blocks[{i}]:input"], a[f"blocks[{i - 1}]"])
        np.testing.assert_array_equal(a[f"blocks[{i}]:residual1"],
                                      a[f"blocks[{i}]:input"] + a[f"blocks[{i}].ls1"])
        np.testing.assert_array_equal(a[f"blocks[{i}]"],
                                      a[f"blocks[{i}]:residual1"] + a[f"blocks[{i}].ls2"])
        v = a[f"blocks[{i}].attn.core.attn.value_proj"].reshape(1, n, HEADS, -1).transpose(0, 2, 1, 3)
        np.testing.assert_array_equal(a[f"blocks[{i}].attn:v"], v)
        # Prefix tokens are not rotated: q there is the projection itself.
        q = a[f"blocks[{i}].attn.core.attn.query_proj"].reshape(1, n, HEADS, -1).transpose(0, 2, 1, 3)
        np.testing.assert_array_equal(a[f"blocks[{i}].attn:q"][:, :, :1 + R], q[:, :, :1 + R])
    np.testing.assert_array_equal(a["output"], np.concatenate([a["norm"][:, :1],
                                                               a["norm"][:, 1 + R:]], 1))


def test_generic_tap_repeated_calls_and_tuples():
    """A module called twice gets `#1`; a tuple result gives `.0`, `.1`; vmapped calls are
    recorded once with the whole batch."""
    import equinox as eqx
    import jax
    from eqx_capture import capture

    class Pair(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x):
            y = jax.vmap(self.lin)(x)
            return y, -y

    class Toy(eqx.Module):
        lin: eqx.nn.Linear
        pair: Pair

        def __call__(self, x):
            x = jax.vmap(self.lin)(jax.vmap(self.lin)(x))
            a, b = self.pair(x)
            return a * b

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    toy = Toy(eqx.nn.Linear(4, 4, key=k1), Pair(eqx.nn.Linear(4, 4, key=k2)))
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    arrays, records, _, taps = capture(toy, x)
    assert taps == 3
    assert list(arrays) == ["input", "lin", "lin#1", "pair.lin", "pair.0", "pair.1", "output"]
    lin = jax.vmap(toy.lin)
    np.testing.assert_array_equal(arrays["lin"], np.asarray(lin(x)))
    np.testing.assert_array_equal(arrays["lin#1"], np.asarray(lin(lin(x))))
    np.testing.assert_array_equal(arrays["pair.1"], -arrays["pair.0"])
    assert records["pair.0"] == {"module": "pair", "class": "Pair", "kind": "module-output",
                                 "shape": [3, 4], "dtype": "float32"}
    assert records["lin#1"]["module"] == "lin"


# --- (c) manifest ----------------------------------------------------------------------------

def test_manifest(work):
    import equinox
    import jax
    import jaxlib

    m, a = work["manifest"], work["arrays"]
    assert (m["format"], m["version"], m["source"]) == ("dinodiff-eqx-npz", 1, "eqx")
    assert (m["device"], m["dtype"]) == ("cpu", "f32")
    digest = hashlib.sha256(np.ascontiguousarray(a["input"]).tobytes()).hexdigest()
    assert m["input"]["sha256"] == digest
    assert m["input"]["dump_input_sha256"] == digest  # what write_dump recorded as input_sha256
    assert m["frameworks"] == {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                               "equinox": equinox.__version__, "jax2onnx": version("jax2onnx"),
                               "numpy": np.__version__}
    model = work["dir"] / "m.eqx"
    assert m["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert m["model"]["size"] == model.stat().st_size
    assert m["model"]["kind"] == "jax2onnx.plugins.examples.eqx.dino.VisionTransformer"
    assert m["model"]["config"]["depth"] == DEPTH
    assert set(m["arrays"]) == set(m["order"]) == set(a)
    assert {r["kind"] for r in m["arrays"].values()} == {"input", "module-output", "internal"}
    assert m["arrays"]["blocks[2].attn:q"]["module"] == "blocks[2].attn"
    assert m["arrays"]["blocks[2].attn:q"]["class"] == "MultiHeadAttention"
    assert m["arrays"]["blocks[2].mlp.fc1"] == {"module": "blocks[2].mlp.fc1",
                                                "class": "LinearLastDim", "kind": "module-output",
                                                "shape": [1, 9, 4 * D], "dtype": "float32"}
    assert m["arrays"]["rope:cos"]["module"] == "dino_rope"
    assert m["created"].endswith("Z")


# --- (d) ONNX export -------------------------------------------------------------------------

def test_onnx_export_equals_eqx(work, onnx_plain):
    import onnx

    path, log = onnx_plain
    proto = onnx.load(str(path))
    assert proto.ir_version <= 13
    assert len(proto.graph.node) == 1 and len(proto.functions) > 10
    assert "1 main-graph node(s)" in log and "functions with" in log
    delta = max_abs(ort_run(path, work["x"]), work["arrays"]["output"])
    print(f"\n(d) onnxruntime vs eqx output: max|d| = {delta:.3g}, IR {proto.ir_version}")
    assert delta <= TOL
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["dinodiff.fault_injection"]) == []


# --- (e) fault injection ---------------------------------------------------------------------

def test_scale_ls2_changes_everything_from_that_block_on(work):
    d = work["dir"]
    tool("meta_to_eqx.py", "--weights", d / "ckpt.pth", "--img-size", IMG, "-o", d / "ls2.eqx",
         "--scale-ls2", 1, 1.01)
    side = json.loads((d / "ls2.eqx.json").read_text())
    assert side["fault_injection"] == [{"kind": "scale-ls2", "block": 1, "factor": 1.01,
                                        "leaf": "blocks[1].ls2.gamma"}]
    tool("eqx_capture.py", "--model", d / "ls2.eqx", "--input", d / "input.st", "-o", d / "ls2.npz")
    m, bad, _ = load_npz(d / "ls2.npz")
    good = work["arrays"]
    assert m["order"] == work["manifest"]["order"]
    assert m["model"]["fault_injection"] == side["fault_injection"]
    first = m["order"].index("blocks[1].ls2")
    for name in m["order"][:first]:
        np.testing.assert_array_equal(bad[name], good[name], err_msg=name)
    for name in m["order"][first:]:
        assert not np.array_equal(bad[name], good[name]), name
    np.testing.assert_allclose(bad["blocks[1].ls2"], good["blocks[1].ls2"] * 1.01, rtol=1e-6)


def test_perturbed_onnx_differs_in_one_block_weight(work, onnx_plain):
    import onnx
    from onnx import numpy_helper

    d = work["dir"]
    proc = tool("export_onnx.py", "--model", d / "m.eqx", "-o", d / "p.onnx",
                "--perturb-initializer-block", 1)
    assert "fault injection: block 1 (custom.Block.2:Block)" in proc.stderr

    def constants(path):
        proto = onnx.load(str(path))
        return {(f.domain, f.name, n.output[0]): numpy_helper.to_array(n.attribute[0].t)
                for f in proto.functions for n in f.node if n.op_type == "Constant"}, proto

    good, _ = constants(onnx_plain[0])
    bad, proto = constants(d / "p.onnx")
    assert good.keys() == bad.keys()
    changed = [k for k in good if not np.array_equal(good[k], bad[k])]
    assert len(changed) == 1
    (fault,) = json.loads({p.key: p.value for p in proto.metadata_props}["dinodiff.fault_injection"])
    assert fault["block"] == 1 and fault["shape"] == [4 * D, D]
    assert changed[0] == (*fault["function"].split(":"), fault["output"])
    np.testing.assert_allclose(bad[changed[0]], good[changed[0]] * 1.01, rtol=1e-6)
    # The block-2 function subtree holds it (block 1 is the second Block call).
    y_bad, y_good = ort_run(d / "p.onnx", work["x"]), ort_run(onnx_plain[0], work["x"])
    assert max_abs(y_bad, y_good) > 1e-4


# --- (f) bad inputs --------------------------------------------------------------------------

def test_swiglu_and_cls_norm_checkpoints_are_refused(tmp_path):
    tool("make_meta_checkpoint.py", "--variant", "vits16plus", "--embed-dim", D, "--depth", 1,
         "--heads", HEADS, "-o", tmp_path / "sw.pth")
    proc = tool("meta_to_eqx.py", "--weights", tmp_path / "sw.pth", "--img-size", IMG,
                "-o", tmp_path / "sw.eqx", expect=2)
    assert proc.stderr == (f"error: {tmp_path / 'sw.pth'} has a SwiGLU feed-forward "
                           "(blocks.i.mlp.w1/w2/w3, as in ViT-S+/H+/7B); jax2onnx's Equinox "
                           "DINOv3 has only the GELU Mlp (fc1/fc2), so this checkpoint cannot be "
                           "mapped onto it\n")
    tool("make_meta_checkpoint.py", "--embed-dim", D, "--depth", 1, "--heads", HEADS,
         "--cls-norm", "-o", tmp_path / "cn.pth")
    proc = tool("meta_to_eqx.py", "--weights", tmp_path / "cn.pth", "-o", tmp_path / "cn.eqx",
                expect=2)
    assert proc.stderr.startswith(f"error: {tmp_path / 'cn.pth'} has an untied cls_norm")
    assert not (tmp_path / "sw.eqx").exists() and not (tmp_path / "cn.eqx").exists()


def test_bad_capture_inputs_exit_2(work, tmp_path):
    d = work["dir"]
    proc = tool("eqx_capture.py", "--model", d / "m.eqx", "--input", tmp_path / "nope.st",
                "-o", tmp_path / "r.npz", expect=2)
    assert proc.stderr == (f"error: {tmp_path / 'nope.st'} does not exist (make an input with "
                           "`dinodiff prep`)\n")
    write_dump(tmp_path / "big.st", [("input", np.zeros((1, 3, 64, 64), np.float32), {})])
    proc = tool("eqx_capture.py", "--model", d / "m.eqx", "--input", tmp_path / "big.st",
                "-o", tmp_path / "r.npz", expect=2)
    assert proc.stderr == (f"error: {tmp_path / 'big.st'}: `input` has shape [1, 3, 64, 64], but "
                           f"the model was built for [1, 3, {IMG}, {IMG}]; prepare it with "
                           f"`dinodiff prep --size {IMG}` or re-map with --img-size\n")
    (tmp_path / "lone.eqx").write_bytes((d / "m.eqx").read_bytes())
    proc = tool("eqx_capture.py", "--model", tmp_path / "lone.eqx", "--input", d / "input.st",
                "-o", tmp_path / "r.npz", expect=2)
    assert proc.stderr.startswith(f"error: {tmp_path / 'lone.eqx'} has no sidecar")
    proc = tool("eqx_capture.py", "--kind", "equimo", "--model", d / "m.eqx", "--input",
                d / "input.st", "-o", tmp_path / "r.npz", expect=2)
    assert proc.stderr.startswith("error: equimo's DINOv3 is recorded by its own tool: "
                                  "`dinodiff capture eqx --kind equimo")
    assert not (tmp_path / "r.npz").exists()
    proc = tool("meta_to_eqx.py", "--weights", tmp_path / "missing.pth", "-o", tmp_path / "x.eqx",
                expect=2)
    assert proc.stderr == f"error: {tmp_path / 'missing.pth'} does not exist\n"
