"""equimo 2.x's DINOv3 against `dinodiff capture meta` on the same Meta-format checkpoint.

A random ViT-S/16 checkpoint (make_meta_checkpoint.py: Meta's key set, K bias stored as zeros)
is captured by `dinodiff capture meta` (libtorch) and, in the equimo venv (CPython 3.13,
`tools/dev equimo-venv`), converted by equimo's own converter and recorded by
tools/equimo_capture.py, then imported by `dinodiff capture eqx`. The two dumps are read with
safetensors' numpy API and compared with numpy, stage by stage; the fault injected in the
equimo model must be where `dinodiff diff` says the runs part.

The equimo venv is found through DINODIFF_EQUIMO_VENV (tools/dev test sets it). Without it the
tests are skipped, except under CI=true, where a missing equimo venv is a failure.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import write_dump  # noqa: E402

IMG = 64  # a 4 x 4 patch grid: every stage of ViT-S/16, seconds per run
TOLERANCE = 1e-5
BLOCK_STAGES = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
                "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
CANONICAL = (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
             + [f"blocks.{i}.{s}" for i in range(12) for s in BLOCK_STAGES]
             + ["norm", "cls", "storage", "patches", "pooled"])
# What equimo does not hand to a module or function of its own (docs/capture-eqx.md): v goes
# from the fused qkv straight into an einsum (the recorder takes it as a view of attn.qkv);
# cls, storage and patches are slices of norm (dinodiff's import takes them).
VIEW_OF_QKV = {f"blocks.{i}.attn.v" for i in range(12)}
DERIVED_FROM_NORM = {"cls", "storage", "patches"}


def equimo_python():
    venv = os.environ.get("DINODIFF_EQUIMO_VENV")
    python = pathlib.Path(venv) / "bin" / "python" if venv else None
    if python and python.exists():
        return python
    why = (f"DINODIFF_EQUIMO_VENV={venv} has no bin/python" if venv else
           "DINODIFF_EQUIMO_VENV is not set (tools/dev equimo-venv builds the equimo venv)")
    if os.environ.get("CI") == "true":
        pytest.fail(f"the equimo tests must run in CI: {why}")
    pytest.skip(why)


def tool(python, script, *args, expect=0):
    proc = subprocess.run([str(python), str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == expect, f"{script} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        manifest = json.loads(f.metadata()["dinodiff.manifest"])
        return manifest, {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dinodiff_bin):
    """The checkpoint, the input, meta.st, and equimo's recording (npz + dump) of it."""
    python = equimo_python()
    d = tmp_path_factory.mktemp("equimo")

    def dd(*args):
        proc = subprocess.run([str(dinodiff_bin), *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, f"dinodiff {args} failed:\n{proc.stderr}"

    tool(sys.executable, "make_meta_checkpoint.py", "--variant", "vits16", "--seed", 4,
         "-o", d / "m.pth")
    x = np.random.default_rng(5).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    dd("capture", "meta", "--weights", d / "m.pth", "--input", d / "in.st", "-o", d / "meta.st")
    tool(python, "equimo_capture.py", "--checkpoint", d / "m.pth", "--variant", "vits16",
         "--input", d / "in.st", "-o", d / "equimo.npz", "--save-model", d / "m.tar.lz4")
    dd("capture", "eqx", "--npz", d / "equimo.npz", "--input", d / "in.st", "-o", d / "equimo.st")
    return {"dir": d, "python": python, "dd": dd, "bin": dinodiff_bin}


def test_every_stage_equimo_exposes_matches_meta(runs):
    d = runs["dir"]
    _, meta = read(d / "meta.st")
    manifest, equimo = read(d / "equimo.st")
    assert manifest["source"] == "eqx" and manifest["variant"] == "vits16"
    assert manifest["eqx"]["recorded"]["model"]["kind"].startswith("equimo.")
    assert set(CANONICAL) <= set(equimo), sorted(set(CANONICAL) - set(equimo))
    worst = {}
    for stage in CANONICAL:
        a, b = meta[stage], equimo[stage]
        assert a.shape == b.shape and b.dtype == np.float32, (stage, a.shape, b.shape, b.dtype)
        worst[stage] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    over = {s: v for s, v in worst.items() if v > TOLERANCE}
    assert not over, over
    assert worst["input"] == 0.0
    # Not trivially equal: the frameworks compute differently (XLA vs libtorch).
    assert max(worst.values()) > 0.0


def test_records_say_what_equimo_did_not_expose(runs):
    manifest, _ = read(runs["dir"] / "equimo.st")
    tensors = manifest["tensors"]
    for stage in VIEW_OF_QKV:
        assert tensors[stage]["eqx_kind"] == "view", tensors[stage]
    assert set(manifest["eqx"]["derived"]) == DERIVED_FROM_NORM
    # Everything else is a module output or what one of equimo's functions returned.
    for stage in set(CANONICAL) - VIEW_OF_QKV - DERIVED_FROM_NORM - {"input"}:
        assert tensors[stage]["eqx_kind"] in ("module-output", "internal"), (stage, tensors[stage])


def test_views_are_the_recorded_arrays_they_name(runs):
    """v is a reshape and slice of qkv; patch_embed equimo's [D, h, w] moved to [hw, D]."""
    d = runs["dir"]
    npz = np.load(d / "equimo.npz")
    qkv = npz["blocks[0].blocks[7].attn.qkv"]  # [1, N, 3D]
    n = qkv.shape[1]
    v = qkv.reshape(1, n, 3, 6, 64)[:, :, 2].transpose(0, 2, 1, 3)
    assert np.array_equal(npz["blocks[0].blocks[7].attn:v"], v)
    conv = npz["patch_embed.proj"]  # [1, D, h, w]
    assert np.array_equal(npz["patch_embed"], conv.reshape(1, 384, -1).transpose(0, 2, 1))


def test_an_equimo_saved_model_gives_the_same_run(runs):
    """The model equimo's save_model wrote (.tar.lz4) loads back through load_weights and
    records the same arrays, bit for bit."""
    d = runs["dir"]
    tool(runs["python"], "equimo_capture.py", "--model", d / "m.tar.lz4", "--input", d / "in.st",
         "-o", d / "saved.npz")
    a, b = np.load(d / "equimo.npz"), np.load(d / "saved.npz")
    names = [n for n in a.files if n != "__dinodiff_manifest__"]
    assert sorted(names) == sorted(n for n in b.files if n != "__dinodiff_manifest__")
    for name in names:
        assert np.array_equal(a[name], b[name]), name
    recorded = json.loads(bytes(b["__dinodiff_manifest__"]))["model"]
    assert recorded["variant"] == "vits16" and recorded["saved_model"]["checkpoint"]["sha256"]


def test_a_fault_in_equimo_is_named_at_its_stage(runs, diff_json):
    d = runs["dir"]
    tool(runs["python"], "equimo_capture.py", "--model", d / "m.tar.lz4", "--input", d / "in.st",
         "-o", d / "fault.npz", "--scale-ls2", 5, 1.01)
    runs["dd"]("capture", "eqx", "--npz", d / "fault.npz", "--input", d / "in.st", "-o",
               d / "fault.st")
    report = diff_json(d / "meta.st", d / "fault.st")
    assert report["verdict"] != "pass" or report["first_over"] is not None
    assert report["pairs"][report["first_over"]]["name"] == "blocks.5.ls2"
    # numpy agrees: block 4 is within tolerance, block 5's ls2 is not.
    _, meta = read(d / "meta.st")
    _, fault = read(d / "fault.st")
    assert np.abs(meta["blocks.5.mlp"] - fault["blocks.5.mlp"]).max() <= TOLERANCE
    assert np.abs(meta["blocks.5.ls2"] - fault["blocks.5.ls2"]).max() > 1e-4


def test_a_nonzero_k_bias_is_masked_as_meta_does(runs, tmp_path):
    """Meta multiplies qkv.bias by bias_mask (K third zero); equimo adds the whole bias. With a
    non-zero K bias the recorder hands equimo `bias * bias_mask`, and the runs agree."""
    import torch

    d = runs["dir"]
    sd = torch.load(d / "m.pth", weights_only=True)
    gen = torch.Generator().manual_seed(9)
    for i in range(12):
        sd[f"blocks.{i}.attn.qkv.bias"][384:768] = torch.randn(384, generator=gen)
    torch.save(sd, tmp_path / "k.pth")
    runs["dd"]("capture", "meta", "--weights", tmp_path / "k.pth", "--input", d / "in.st", "-o",
               tmp_path / "meta.st")
    tool(runs["python"], "equimo_capture.py", "--checkpoint", tmp_path / "k.pth", "--input",
         d / "in.st", "-o", tmp_path / "k.npz")
    runs["dd"]("capture", "eqx", "--npz", tmp_path / "k.npz", "--input", d / "in.st", "-o",
               tmp_path / "equimo.st")
    recorded = json.loads(bytes(np.load(tmp_path / "k.npz")["__dinodiff_manifest__"]))
    conversion = recorded["model"]["conversion"]
    assert conversion["bias_mask_applied"] and conversion["k_bias_max_abs_dropped"] > 1.0
    _, meta = read(tmp_path / "meta.st")
    _, equimo = read(tmp_path / "equimo.st")
    for stage in ("blocks.0.attn.k", "blocks.11.output", "norm", "cls", "pooled"):
        assert np.abs(meta[stage] - equimo[stage]).max() <= TOLERANCE, stage


def test_a_checkpoint_of_another_variant_is_refused(runs):
    d = runs["dir"]
    proc = tool(runs["python"], "equimo_capture.py", "--checkpoint", d / "m.pth", "--variant",
                "vitb16", "--input", d / "in.st", "-o", d / "no.npz", expect=2)
    assert proc.stderr.startswith("error: no equimo DINOv3 config fits the checkpoint (dim=384, "
                                  "depth=12, swiglu=False"), proc.stderr
    assert "dinov3_vitb16_pretrain_lvd1689m" in proc.stderr
    assert not (d / "no.npz").exists()
    proc = tool(runs["python"], "equimo_capture.py", "--model", d / "m.pth", "--input",
                d / "in.st", "-o", d / "no.npz", expect=2)
    assert "is neither a directory nor a .tar.lz4 written by equimo's save_model" in proc.stderr


def test_the_binary_records_equimo_in_one_step(runs, tmp_path):
    """`capture eqx --kind equimo` runs the recorder embedded in the binary with the equimo
    venv's Python, from a directory without the checkout: the same tensors, bit for bit, as the
    two-step recording (tools/equimo_capture.py, then capture eqx --npz), from the checkpoint
    (converted by equimo's converter) and from the equimo-saved model."""
    d, python = runs["dir"], runs["python"]
    _, two_step = read(d / "equimo.st")
    for source in (["--checkpoint", d / "m.pth"], ["--model", d / "m.tar.lz4"]):
        out = tmp_path / f"one-step-{source[0][2:]}.st"
        proc = subprocess.run(
            [str(runs["bin"]), "capture", "eqx", "--kind", "equimo", *map(str, source),
             "--input", str(d / "in.st"), "-o", str(out), "--python", str(python)],
            capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "equimo 2.7.0" in proc.stderr, proc.stderr
        _, one_step = read(out)
        assert sorted(one_step) == sorted(two_step)
        for name, array in two_step.items():
            assert one_step[name].dtype == array.dtype and np.array_equal(one_step[name], array), name
    # the temporary directory of the recording is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], list(tmp_path.iterdir())


def test_the_binary_names_what_equimo_needs(runs, tmp_path):
    """A Python too old for equimo, and one without equimo, are refused before anything runs."""
    d = runs["dir"]
    base = [str(runs["bin"]), "capture", "eqx", "--kind", "equimo", "--checkpoint", str(d / "m.pth"),
            "--input", str(d / "in.st"), "-o", str(tmp_path / "x.st")]
    old = subprocess.run(base + ["--python", sys.executable], capture_output=True, text=True)
    if sys.version_info < (3, 12):
        assert old.returncode == 2, old.stderr
        assert "needs Python >= 3.12" in old.stderr, old.stderr
    bare = tmp_path / "bare"
    subprocess.run([str(runs["python"]), "-m", "venv", "--without-pip", str(bare)], check=True)
    proc = subprocess.run(base + ["--python", str(bare / "bin" / "python")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "equimo" in proc.stderr and "pip install" in proc.stderr
    assert "equimo==2.7.0" in proc.stderr.lower(), proc.stderr  # the pin of tools/requirements-equimo.txt
    assert not (tmp_path / "x.st").exists()
