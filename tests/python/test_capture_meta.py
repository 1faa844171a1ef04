"""`dinodiff capture meta` against an independent PyTorch reference: timm's DINOv3 port, loaded
from the same Meta-format checkpoint through timm's own checkpoint filter, with forward hooks
(tools/timm_capture.py). Stages are compared here with numpy, not with dinodiff's diff."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import write_dump  # noqa: E402

BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
GRACE_HOPPER = pathlib.Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"

TINY = {
    # name: make_meta_checkpoint.py arguments
    "mlp": ["--variant", "vits16", "--embed-dim", "64", "--depth", "2", "--heads", "2"],
    "swiglu": ["--variant", "vits16plus", "--embed-dim", "64", "--depth", "2", "--heads", "2"],
    "7b-like": ["--variant", "vit7b16", "--embed-dim", "128", "--depth", "2", "--heads", "2"],
}


def canonical_names(depth):
    return (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
            + [f"blocks.{i}.{s}" for i in range(depth) for s in BLOCK]
            + ["norm", "cls", "storage", "patches", "pooled"])


def load(path):
    with safe_open(str(path), framework="numpy") as f:
        manifest = json.loads(f.metadata()["dinodiff.manifest"])
        return manifest, {k: f.get_tensor(k) for k in f.keys()}


def python(*args):
    subprocess.run([sys.executable, *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("meta")
    for name, args in TINY.items():
        python(TOOLS / "make_meta_checkpoint.py", *args, "--seed", "7", "-o", d / f"{name}.pth")
    return d


@pytest.fixture(scope="module")
def inputs(work, dinodiff_bin):
    """A real photo at 224 (Meta's transform) and a generated non-square image (h != w)."""
    subprocess.run([dinodiff_bin, "prep", "--image", GRACE_HOPPER, "-o", work / "photo.st"],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(work / "wide.png")
    subprocess.run([dinodiff_bin, "prep", "--image", work / "wide.png", "--transform", "none",
                    "-o", work / "wide.st"], check=True, capture_output=True)
    return {"photo": work / "photo.st", "wide": work / "wide.st"}


@pytest.mark.parametrize("config", list(TINY))
@pytest.mark.parametrize("image", ["photo", "wide"])
def test_every_stage_matches_timm(work, inputs, run, config, image):
    ckpt = work / f"{config}.pth"
    ours = work / f"{config}-{image}.meta.st"
    ref = work / f"{config}-{image}.timm.st"
    run("capture", "meta", "--weights", ckpt, "--input", inputs[image], "-o", ours,
        "--threads", "2")
    python(TOOLS / "timm_capture.py", "--weights", ckpt, "--input", inputs[image], "-o", ref,
           "--threads", "2")
    m_ours, a = load(ours)
    _, b = load(ref)
    names = canonical_names(2)
    assert m_ours["order"] == names
    assert set(b) == set(names)
    worst = {}
    for name in names:
        assert a[name].shape == b[name].shape, name
        assert a[name].dtype == np.float32
        worst[name] = float(np.max(np.abs(a[name].astype(np.float64) - b[name])))
        assert worst[name] <= 1e-5, (name, worst[name])
    print(f"\n{config}/{image}: worst stage max|d| = {max(worst.values()):.3g}")
    # And dinodiff's own diff agrees that the pair is clean.
    run("diff", ours, ref, expect=(0,))


def test_shapes_follow_the_grid(work, inputs, run):
    out = work / "wide-shapes.st"
    run("capture", "meta", "--weights", work / "mlp.pth", "--input", inputs["wide"], "-o", out)
    _, t = load(out)
    # 64 x 96 pixels -> 4 x 6 patches; D = 64, 2 heads of 32; 1 + 4 + 24 tokens.
    assert t["patch_embed"].shape == (1, 24, 64)
    assert t["rope.sin"].shape == (24, 32)
    assert t["blocks.1.attn.q"].shape == (1, 2, 29, 32)
    assert t["blocks.0.mlp.hidden"].shape == (1, 29, 256)
    assert t["storage"].shape == (1, 4, 64)
    np.testing.assert_allclose(t["pooled"], t["patches"].mean(axis=1, dtype=np.float64),
                               rtol=0, atol=1e-6)


def test_two_captures_write_identical_tensors(work, inputs, run):
    a, b = work / "same-a.st", work / "same-b.st"
    for out in (a, b):
        run("capture", "meta", "--weights", work / "swiglu.pth", "--input", inputs["photo"],
            "-o", out)
    ma, ta = load(a)
    mb, tb = load(b)
    assert ma["order"] == mb["order"]
    for name in ma["order"]:
        assert ta[name].tobytes() == tb[name].tobytes(), name


def test_manifest_records_provenance(work, inputs, run):
    out = work / "prov.st"
    ckpt = work / "mlp.pth"
    run("capture", "meta", "--weights", ckpt, "--input", inputs["photo"], "-o", out,
        "--threads", "1")
    m, t = load(out)
    assert m["source"] == "meta"
    assert m["model"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert m["model"]["size"] == ckpt.stat().st_size
    assert m["variant"] == "custom"
    assert m["frameworks"]["libtorch"] == torch.__version__
    assert m["device"] == "cpu" and m["dtype"] == "f32"
    assert m["meta"]["threads"] == 1
    assert m["meta"]["architecture"].startswith("D=64, 2 blocks, 2 heads of 32, Mlp hidden 256")
    _, inp = load(inputs["photo"])
    assert m["input_sha256"] == hashlib.sha256(inp["input"].tobytes()).hexdigest()
    np.testing.assert_array_equal(t["input"], inp["input"])
    assert m["tensors"]["blocks.1.ls1"] == {"native": "blocks.1.ls1", "stage": "blocks.1.ls1"}


def test_hub_variant_is_inferred_and_full_names_accepted(tmp_path, inputs, run):
    ckpt = tmp_path / "vits16.pth"
    python(TOOLS / "make_meta_checkpoint.py", "--variant", "vits16", "-o", ckpt)
    out = tmp_path / "s.st"
    proc = run("capture", "meta", "--weights", ckpt, "--input", inputs["photo"], "-o", out,
               "--only", "^cls$")
    assert ": vits16 on cpu" in proc.stderr
    m, t = load(out)
    assert m["variant"] == "vits16" and m["order"] == ["input", "cls"]
    run("capture", "meta", "--weights", ckpt, "--variant", "dinov3_vits16_pretrain_lvd1689m",
        "--input", inputs["photo"], "-o", out, "--only", "^cls$")
    proc = run("capture", "meta", "--weights", ckpt, "--variant", "vitb16",
               "--input", inputs["photo"], "-o", tmp_path / "no.st", expect=(2,))
    assert proc.stderr == (
        f"error: {ckpt} is not a vitb16 checkpoint: it holds D=384, 12 blocks, 6 heads of 64, "
        "Mlp hidden 1536, qkv bias with K mask, 4 storage tokens, patch 16 (that is vits16), "
        "while vitb16 is D=768, 12 blocks, 12 heads of 64, Mlp hidden 3072, qkv bias with K "
        "mask, 4 storage tokens, patch 16. Omit --variant to run what the checkpoint holds\n")
    assert not (tmp_path / "no.st").exists()


@pytest.mark.parametrize("dtype,st_dtype,tol", [("bf16", "BF16", 0.1), ("f16", "F16", 0.01)])
def test_reduced_precision_runs_stay_close(work, inputs, run, dtype, st_dtype, tol):
    full, low = work / f"p32-{dtype}.st", work / f"p-{dtype}.st"
    run("capture", "meta", "--weights", work / "mlp.pth", "--input", inputs["photo"], "-o", full)
    run("capture", "meta", "--weights", work / "mlp.pth", "--input", inputs["photo"], "-o", low,
        "--dtype", dtype)
    with open(low, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    assert header["cls"]["dtype"] == st_dtype
    assert header["rope.sin"]["dtype"] == "F32"  # RoPE stays f32
    assert header["input"]["dtype"] == "F32"  # the input as consumed, hash intact
    _, a = load(full)
    with safe_open(str(low), framework="pt") as f:
        cls = f.get_tensor("cls").float().numpy()
    cosine = float(np.dot(a["cls"][0], cls[0]) /
                   (np.linalg.norm(a["cls"][0]) * np.linalg.norm(cls[0])))
    assert cosine > 1 - tol, cosine
    assert np.max(np.abs(a["cls"] - cls)) < 50 * tol


def test_cls_norm_applies_to_cls_and_storage_only(work, inputs, run, tmp_path):
    """Meta's untie_cls_and_patch_norms: cls_norm normalizes cls + storage tokens, norm the
    patches. timm has no such model, so check the wiring: cls_norm == norm gives the plain
    model's tokens bit for bit; another cls_norm changes cls/storage and leaves patches alone."""
    sd = torch.load(work / "mlp.pth", weights_only=True)
    plain = tmp_path / "plain.st"
    run("capture", "meta", "--weights", work / "mlp.pth", "--input", inputs["photo"], "-o", plain)
    same, other = dict(sd), dict(sd)
    same["cls_norm.weight"], same["cls_norm.bias"] = sd["norm.weight"], sd["norm.bias"]
    other["cls_norm.weight"], other["cls_norm.bias"] = sd["norm.weight"] * 2, sd["norm.bias"] + 1
    for name, state in (("same", same), ("other", other)):
        torch.save(state, tmp_path / f"{name}.pth")
        run("capture", "meta", "--weights", tmp_path / f"{name}.pth", "--input",
            inputs["photo"], "-o", tmp_path / f"{name}.st")
    _, p = load(plain)
    _, s = load(tmp_path / "same.st")
    _, o = load(tmp_path / "other.st")
    for k in ("norm", "cls", "storage", "patches", "pooled"):
        np.testing.assert_array_equal(p[k], s[k])
    np.testing.assert_array_equal(p["patches"], o["patches"])
    assert not np.array_equal(p["cls"], o["cls"])
    assert not np.array_equal(p["storage"], o["storage"])


# --- bad inputs: exact messages, exit 2, nothing written ------------------------------------


def fails(run, tmp_path, args, message):
    out = tmp_path / "out.st"
    proc = run("capture", "meta", *args, "-o", out, expect=(2,))
    assert proc.stderr == f"error: {message}\n"
    assert proc.stdout == ""
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.st")] == []


def test_not_a_checkpoint(tmp_path, inputs, run):
    bad = tmp_path / "model.pth"
    bad.write_text('{"cls_token": [1, 2, 3]}')
    fails(run, tmp_path, ["--weights", bad, "--input", inputs["photo"]],
          f"cannot read the checkpoint {bad}: it is not a torch.save checkpoint: a .pth written "
          "by torch >= 1.6 is a zip archive, and this file (24 bytes) does not start like one; "
          "pass the .pth file that torch.save wrote")
    fails(run, tmp_path, ["--weights", bad, "--input", inputs["photo"], "--loader", "libtorch"],
          f"{bad} is not a PyTorch checkpoint: a .pth written by torch.save is a zip archive, "
          "and this file does not start like one (24 bytes). Pass Meta's .pth file (or write one "
          "with tools/make_meta_checkpoint.py)")


def test_a_zip_that_is_not_a_state_dict(tmp_path, inputs, run):
    import zipfile

    bad = tmp_path / "other.pth"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("readme.txt", "hello")
    fails(run, tmp_path, ["--weights", bad, "--input", inputs["photo"]],
          f"cannot read the checkpoint {bad}: it is a zip archive without a `<name>/data.pkl` "
          "entry, not a torch.save file")
    proc = run("capture", "meta", "--weights", bad, "--input", inputs["photo"], "-o",
               tmp_path / "out.st", "--loader", "libtorch", expect=(2,))
    assert proc.stderr.startswith(f"error: libtorch cannot load the checkpoint {bad}: ")
    assert proc.stderr.endswith(
        "A Meta checkpoint is a torch.save'd state dict of tensors\n")
    assert len(proc.stderr.splitlines()) == 1  # no C++ backtrace
    assert not (tmp_path / "out.st").exists()


def test_truncated_checkpoint(work, tmp_path, inputs, run):
    data = (work / "mlp.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    fails(run, tmp_path, ["--weights", cut, "--input", inputs["photo"]],
          f"cannot read the checkpoint {cut}: it has no zip end record: the file is truncated (a "
          "download or copy cut short?) or is not a torch.save archive; fetch or copy it again")
    fails(run, tmp_path, ["--weights", cut, "--input", inputs["photo"], "--loader", "libtorch"],
          f"the checkpoint {cut} is truncated: it starts as a zip archive but has no end record "
          f"({len(data) // 2} bytes). Was a download or copy cut short? Fetch the file again")


def test_missing_checkpoint(tmp_path, inputs, run):
    fails(run, tmp_path, ["--weights", tmp_path / "nope.pth", "--input", inputs["photo"]],
          f"cannot read the checkpoint {tmp_path / 'nope.pth'}: no such file; check the path")


def test_only_that_matches_no_stage(work, tmp_path, inputs, run):
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--input", inputs["photo"],
                          "--only", "bloks"],
          '--only "bloks" matches no stage or value of DINOv3 custom; stage names are those '
          "`dinodiff stages` lists (e.g. blocks.0.ls1, cls)")


def test_checkpoint_of_another_variant(work, tmp_path, inputs, run):
    fails(run, tmp_path, ["--weights", work / "swiglu.pth", "--variant", "vits16plus",
                          "--input", inputs["photo"]],
          f"{work / 'swiglu.pth'} is not a vits16plus checkpoint: it holds D=64, 2 blocks, "
          "2 heads of 32, SwiGLU hidden 256, qkv bias with K mask, 4 storage tokens, patch 16 "
          "(no hub variant), while vits16plus is D=384, 12 blocks, 6 heads of 64, SwiGLU hidden "
          "1536, qkv bias with K mask, 4 storage tokens, patch 16. Omit --variant to run what the "
          "checkpoint holds")


def test_missing_unexpected_and_misshaped_keys_in_one_error(work, tmp_path, inputs, run):
    sd = torch.load(work / "mlp.pth", weights_only=True)
    del sd["blocks.1.ls2.gamma"], sd["blocks.0.attn.qkv.bias_mask"]
    sd["head.weight"] = torch.zeros(10, 64)
    sd["blocks.0.norm2.bias"] = torch.zeros(63)
    bad = tmp_path / "holes.pth"
    torch.save(sd, bad)
    fails(run, tmp_path, ["--weights", bad, "--input", inputs["photo"]],
          f"{bad} does not load strictly as DINOv3 custom (D=64, 2 blocks, 2 heads of 32, Mlp "
          "hidden 256, qkv bias with K mask, 4 storage tokens, patch 16): 2 missing keys "
          "(blocks.0.attn.qkv.bias_mask, blocks.1.ls2.gamma); 1 unexpected key (head.weight); "
          "1 mis-shaped key (blocks.0.norm2.bias is [63], expected [64])")


def test_a_state_dict_of_something_else(tmp_path, inputs, run):
    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(10)}, bad)
    fails(run, tmp_path, ["--weights", bad, "--input", inputs["photo"]],
          f"cannot tell which DINOv3 {bad} holds: it has no `cls_token`. Is it a DINOv3 ViT "
          "backbone checkpoint with Meta's key names (cls_token, blocks.0.attn.qkv.weight, ...)?")


def test_missing_image(work, tmp_path, run):
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--image", tmp_path / "cat.jpg"],
          f"cannot read the image {tmp_path / 'cat.jpg'}: no such file; check the path")


def test_unreadable_image(work, tmp_path, run, dinodiff_bin):
    img = tmp_path / "secret.png"
    Image.new("RGB", (32, 32)).save(img)
    img.chmod(0)
    cmd = [str(dinodiff_bin), "capture", "meta", "--weights", str(work / "mlp.pth"),
           "--image", str(img), "-o", str(tmp_path / "out.st")]
    if os.geteuid() == 0:
        # Root reads anything; without these two capabilities it obeys the mode bits (and, unlike
        # another uid, still reaches the libtorch in root's venv).
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"error: cannot read the image {img}: cannot read: Permission denied "
                           "(os error 13); check the file's permissions\n")
    assert not (tmp_path / "out.st").exists()


def test_input_of_the_wrong_shape(work, tmp_path, run):
    bad = tmp_path / "odd.st"
    x = np.zeros((1, 3, 100, 100), np.float32)
    write_dump(bad, [("input", x, {"native": "input"})], source="input")
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--input", bad],
          f"the input {bad} is [1, 3, 100, 100], but the model takes [1, 3, H, W] with H and W "
          "multiples of its patch size 16; prepare it with `dinodiff prep --size 224`")
    four = tmp_path / "rgba.st"
    write_dump(four, [("input", np.zeros((1, 4, 32, 32), np.float32), {"native": "input"})])
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--input", four],
          f"{four}: tensor \"input\" is F32 [1, 4, 32, 32]; a model input is F32 [1, 3, H, W]")


def test_cuda_without_cuda(work, tmp_path, inputs, run):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--input", inputs["photo"],
                          "--device", "cuda"],
          "--device cuda: libtorch finds no CUDA device on this machine (no GPU, no driver, or a "
          "CPU-only libtorch). Use --device cpu")
    fails(run, tmp_path, ["--weights", work / "mlp.pth", "--input", inputs["photo"],
                          "--device", "tpu"],
          '--device "tpu": expected cpu, cuda or cuda:N')
