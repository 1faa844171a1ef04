"""`dinodiff capture meta` on the checkpoints users really have, written here at test time the way
users write them: `torch.save(module.state_dict())`, training dicts, teacher/student, DDP's
`module.` prefix, bf16 / f16, the legacy format, `safetensors.torch.save_file`, and transformers'
`DINOv3ViTModel.save_pretrained`. Each capture must equal, byte for byte, the capture of the
equivalent plain-dict Meta checkpoint read by libtorch's own loader (`--loader libtorch`, the
reference independent of dinodiff's reader); the transformers one is also checked against
transformers' own forward (hooks)."""

import collections
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
GRACE_HOPPER = pathlib.Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


def tensors(path):
    """name -> raw bytes of every tensor of a dump (any dtype)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k).contiguous().view(torch.uint8).numpy().tobytes()
                for k in f.keys()}


def manifest(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["dinodiff.manifest"])


def assert_same_bytes(a, b):
    ta, tb = tensors(a), tensors(b)
    assert manifest(a)["order"] == manifest(b)["order"]
    assert set(ta) == set(tb)
    different = [k for k in ta if ta[k] != tb[k]]
    assert different == [], f"{len(different)} of {len(ta)} tensors differ: {different[:5]}"
    return len(ta)


@pytest.fixture(scope="module")
def work(tmp_path_factory, dinodiff_bin):
    d = tmp_path_factory.mktemp("ckpts")
    subprocess.run([sys.executable, TOOLS / "make_meta_checkpoint.py", "--variant", "vits16",
                    "--embed-dim", "64", "--depth", "2", "--heads", "2", "--seed", "7",
                    "-o", d / "plain.pth"], check=True, capture_output=True)
    subprocess.run([dinodiff_bin, "prep", "--image", GRACE_HOPPER, "--size", "64",
                    "-o", d / "input.st"], check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def sd(work):
    return torch.load(work / "plain.pth", weights_only=True)


def capture(run, work, weights, out, *flags, expect=(0,)):
    return run("capture", "meta", "--weights", weights, "--input", work / "input.st", "-o", out,
               "--threads", "1", *flags, expect=expect)


@pytest.fixture(scope="module")
def reference(work, sd, dinodiff_bin):
    """dtype -> the capture of the plain dict converted to that dtype, read by libtorch."""
    refs = {}
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16), ("f16", torch.float16)):
        ckpt = work / f"plain-{name}.pth"
        torch.save({k: v.to(dtype) for k, v in sd.items()}, ckpt)
        refs[name] = work / f"ref-{name}.st"
        subprocess.run([dinodiff_bin, "capture", "meta", "--weights", ckpt, "--input",
                        work / "input.st", "-o", refs[name], "--threads", "1",
                        "--loader", "libtorch"], check=True, capture_output=True)
    return refs


def meta_module(state):
    """A real nn.Module whose parameters and buffers carry Meta's names (nested modules)."""
    root = torch.nn.Module()
    for name, value in state.items():
        owner = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        if leaf in ("periods", "bias_mask"):
            owner.register_buffer(leaf, value.clone())
        else:
            owner.register_parameter(leaf, torch.nn.Parameter(value.clone()))
    return root


def user_checkpoints(sd):
    """name -> (object torch.save writes, extra flags, expected prefix/key facts)."""
    module_sd = meta_module(sd).state_dict()
    assert isinstance(module_sd, collections.OrderedDict) and hasattr(module_sd, "_metadata")
    student = {f"backbone.{k}": v * 1.5 for k, v in sd.items()}
    return {
        "module_state_dict": (module_sd, [], ("", "")),
        "training_dict": ({"model": module_sd, "epoch": 3, "lr": 1e-3}, [], ("model", "")),
        "state_dict_key": ({"state_dict": sd}, [], ("state_dict", "")),
        "teacher_student": ({"teacher": {**{f"backbone.{k}": v for k, v in sd.items()},
                                         "dino_head.w": torch.zeros(3, 2)},
                             "student": student}, ["--key", "teacher"],
                            ("teacher", "backbone.")),
        "ddp_prefix": ({f"module.{k}": v for k, v in module_sd.items()}, [], ("", "module.")),
    }


@pytest.mark.parametrize("case", ["module_state_dict", "training_dict", "state_dict_key",
                                  "teacher_student", "ddp_prefix"])
def test_containers_and_prefixes_capture_byte_for_byte(work, sd, reference, run, case):
    obj, flags, (key, prefix) = user_checkpoints(sd)[case]
    ckpt, out = work / f"{case}.pth", work / f"{case}.st"
    torch.save(obj, ckpt)
    proc = capture(run, work, ckpt, out, *flags)
    n = assert_same_bytes(out, reference["f32"])
    assert n == 5 + 14 * 2 + 5
    facts = manifest(out)["meta"]["checkpoint"]
    assert (facts["format"], facts["loader"]) == ("torch.save", "dinodiff")
    assert (facts["key"], facts["prefix"]) == (key, prefix)
    assert facts["dtypes"] == {"F32": len(sd)}
    line = proc.stderr.splitlines()[0]
    assert line.startswith("checkpoint: ") and f"{len(sd)} tensors f32" in line, line
    if prefix:
        assert f'prefix "{prefix}" stripped' in line
    if key:
        assert f'under "{key}"' in line


def test_two_backbones_without_key_is_refused_listing_the_choices(work, sd, run):
    obj, _, _ = user_checkpoints(sd)["teacher_student"]
    ckpt, out = work / "ambiguous.pth", work / "ambiguous.st"
    torch.save(obj, ckpt)
    proc = capture(run, work, ckpt, out, expect=(2,))
    assert proc.stderr == (
        f"error: cannot read the checkpoint {ckpt}: it holds 2 state dicts that fit: "
        "`--key teacher.backbone`, `--key student.backbone`. Choose one with --key\n")
    assert not out.exists()
    # The student is another model: choosing it gives other tensors.
    capture(run, work, ckpt, out, "--key", "student")
    assert tensors(out)["cls"] != tensors(work / "ref-f32.st")["cls"]


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_reduced_precision_checkpoints(work, sd, reference, run, dtype):
    torch_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    module = meta_module(sd).to(torch_dtype)
    ckpt, out = work / f"module-{dtype}.pth", work / f"module-{dtype}.st"
    torch.save({"model": module.state_dict(), "epoch": 1}, ckpt)
    proc = capture(run, work, ckpt, out)
    assert f"{len(sd)} tensors {dtype}" in proc.stderr
    assert_same_bytes(out, reference[dtype])
    assert tensors(out)["cls"] != tensors(reference["f32"])["cls"]  # the weights really are bf16
    st = work / f"plain-{dtype}.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.to(torch_dtype).contiguous() for k, v in sd.items()}, st)
    capture(run, work, st, work / f"st-{dtype}.st")
    assert_same_bytes(work / f"st-{dtype}.st", reference[dtype])


def test_safetensors_with_meta_names(work, sd, reference, run):
    from safetensors.torch import save_file
    st, out = work / "plain.safetensors", work / "safetensors.st"
    save_file(sd, st)
    proc = capture(run, work, st, out)
    assert proc.stderr.splitlines()[0] == f"checkpoint: safetensors, {len(sd)} tensors f32"
    assert_same_bytes(out, reference["f32"])
    assert manifest(out)["meta"]["checkpoint"]["format"] == "safetensors"


def test_legacy_format_is_refused_with_the_command_that_converts_it(work, sd, reference, run):
    old, out = work / "old.pth", work / "old.st"
    torch.save(sd, old, _use_new_zipfile_serialization=False)
    proc = capture(run, work, old, out, expect=(2,))
    assert "legacy format" in proc.stderr and not out.exists()
    command = re.search(r"Convert it once with: (python -c .*\)\") and pass", proc.stderr)
    assert command, proc.stderr
    argv = shlex.split(command.group(1).removesuffix(" and pass"))
    subprocess.run([sys.executable, *argv[1:]], check=True)
    capture(run, work, work / "old.zip.pth", out)
    assert_same_bytes(out, reference["f32"])


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_nothing_runs(work, sd, run, tmp_path):
    marker = tmp_path / "pwned"
    ckpt, out = tmp_path / "evil.pth", tmp_path / "evil.st"
    torch.save({**sd, "payload": Evil(marker)}, ckpt)
    proc = capture(run, work, ckpt, out, expect=(2,))
    assert "not on the allow-list" in proc.stderr and "system" in proc.stderr, proc.stderr
    assert not marker.exists()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.pth"]


def test_truncated_and_foreign_files_are_refused(work, sd, run, tmp_path):
    from safetensors.torch import save_file
    save_file(sd, tmp_path / "full.safetensors")
    pth, st = (work / "plain.pth").read_bytes(), (tmp_path / "full.safetensors").read_bytes()
    for name, blob, says in (
            ("cut.pth", pth[: len(pth) // 3], "it has no zip end record"),
            ("text.pth", b"hello", "it is not a torch.save checkpoint"),
            ("cut.safetensors", st[:-100], "it starts like a safetensors file but is not one")):
        (tmp_path / name).write_bytes(blob)
        proc = capture(run, work, tmp_path / name, tmp_path / "o.st", expect=(2,))
        assert proc.stderr.startswith(
            f"error: cannot read the checkpoint {tmp_path / name}: {says}"), proc.stderr
        assert len(proc.stderr.splitlines()) == 1
        assert not (tmp_path / "o.st").exists()


# --- transformers' DINOv3ViTModel -----------------------------------------------------------


@pytest.fixture(scope="module")
def hf_model(work):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(3)
    config = DINOv3ViTConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
                             intermediate_size=256, num_register_tokens=4, image_size=32,
                             patch_size=16)
    model = DINOv3ViTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.05, 1.0)  # non-trivial LayerScale
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.ndim == 1:
                p.normal_(0, 0.05)  # every bias non-zero
            else:
                p.normal_(0, 1 / math.sqrt(p[0].numel()))
    model.save_pretrained(work / "hf")
    assert (work / "hf" / "model.safetensors").exists() and (work / "hf" / "config.json").exists()
    return model


def meta_from_hf(model):
    """transformers' state dict in Meta's names, converted here independently."""
    hf = model.state_dict()
    d = model.config.hidden_size
    out = {"cls_token": hf["embeddings.cls_token"],
           "mask_token": hf["embeddings.mask_token"].reshape(1, d),
           "storage_tokens": hf["embeddings.register_tokens"],
           "patch_embed.proj.weight": hf["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": hf["embeddings.patch_embeddings.bias"],
           "rope_embed.periods": 1 / model.rope_embeddings.inv_freq.float(),
           "norm.weight": hf["norm.weight"], "norm.bias": hf["norm.bias"]}
    for i in range(model.config.num_hidden_layers):
        h, m = f"model.layer.{i}", f"blocks.{i}"
        a = f"{h}.attention"
        out[f"{m}.attn.qkv.weight"] = torch.cat([hf[f"{a}.{x}_proj.weight"] for x in "qkv"])
        out[f"{m}.attn.qkv.bias"] = torch.cat([hf[f"{a}.q_proj.bias"], torch.zeros(d),
                                               hf[f"{a}.v_proj.bias"]])
        out[f"{m}.attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
        for p in ("weight", "bias"):
            out[f"{m}.attn.proj.{p}"] = hf[f"{a}.o_proj.{p}"]
            out[f"{m}.norm1.{p}"] = hf[f"{h}.norm1.{p}"]
            out[f"{m}.norm2.{p}"] = hf[f"{h}.norm2.{p}"]
            out[f"{m}.mlp.fc1.{p}"] = hf[f"{h}.mlp.up_proj.{p}"]
            out[f"{m}.mlp.fc2.{p}"] = hf[f"{h}.mlp.down_proj.{p}"]
        out[f"{m}.ls1.gamma"] = hf[f"{h}.layer_scale1.lambda1"]
        out[f"{m}.ls2.gamma"] = hf[f"{h}.layer_scale2.lambda1"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def hf_stages(model, x):
    """Every stage transformers' forward exposes, recorded by hooks, in dinodiff's names (q and k
    only on the prefix tokens, which RoPE leaves alone: `attn.q[prefix]`)."""
    got, hooks = {}, []

    def keep(name):
        def hook(_module, _inputs, output):
            got[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    def heads(o):  # [B, N, D] -> [B, H, N, hd]
        b, n, _ = o.shape
        return o.reshape(b, n, model.config.num_attention_heads, -1).transpose(1, 2)

    hooks.append(model.embeddings.register_forward_hook(keep("tokens")))
    hooks.append(model.rope_embeddings.register_forward_hook(keep("rope")))
    hooks.append(model.norm.register_forward_hook(keep("norm")))
    for i, layer in enumerate(model.model.layer):
        for module, name in ((layer, "output"), (layer.norm1, "norm1"), (layer.norm2, "norm2"),
                             (layer.mlp, "mlp"), (layer.layer_scale1, "ls1"),
                             (layer.layer_scale2, "ls2"), (layer.attention.o_proj, "attn"),
                             (layer.attention.q_proj, "q"), (layer.attention.k_proj, "k"),
                             (layer.attention.v_proj, "v")):
            hooks.append(module.register_forward_hook(keep(f"blocks.{i}.{name}")))
    with torch.no_grad():
        cos_sin = model.rope_embeddings(x)
        out = model(pixel_values=x)
    for h in hooks:
        h.remove()
    got.pop("rope")
    got["rope.cos"], got["rope.sin"] = cos_sin
    got["cls"] = out.pooler_output
    prefix = 1 + model.config.num_register_tokens
    for i in range(model.config.num_hidden_layers):
        b = f"blocks.{i}"
        q, k, v = (got.pop(f"{b}.{x}") for x in "qkv")
        got[f"{b}.attn.qkv"] = torch.cat([q, k, v], -1)
        got[f"{b}.attn.v"] = heads(v)
        got[f"{b}.attn.q[prefix]"] = heads(q)[:, :, :prefix]
        got[f"{b}.attn.k[prefix]"] = heads(k)[:, :, :prefix]
    return got


def test_transformers_checkpoint_matches_transformers_forward(work, hf_model, run):
    out = work / "hf.st"
    proc = capture(run, work, work / "hf", out)
    assert proc.stderr.startswith("checkpoint: transformers DINOv3ViTModel (2 layers, hidden 64, "
                                  "4 registers)"), proc.stderr
    facts = manifest(out)["meta"]["checkpoint"]
    assert facts["format"] == "transformers" and facts["hidden_size"] == 64
    assert facts["mapping"]["blocks.1.attn.qkv.weight"] == (
        "rows of layer.1.attention.q_proj.weight + layer.1.attention.k_proj.weight "
        "+ layer.1.attention.v_proj.weight")  # save_pretrained's names (not state_dict()'s)
    assert facts["mapping"]["mask_token"] == "embeddings.mask_token reshaped to [1, 64]"
    with safe_open(str(work / "input.st"), framework="pt") as f:
        x = f.get_tensor("input")
    want = hf_stages(hf_model, x)
    with safe_open(str(out), framework="pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}
    prefix = 1 + hf_model.config.num_register_tokens
    worst = {}
    for name, ref in want.items():
        mine = (ours[name.removesuffix("[prefix]")][:, :, :prefix] if name.endswith("[prefix]")
                else ours[name])
        assert mine.shape == ref.shape, (name, mine.shape, ref.shape)
        worst[name] = float((mine.double() - ref.double()).abs().max())
    assert max(worst.values()) <= 1e-5, worst
    assert len(worst) == 5 + 2 * 11
    print(f"\ntransformers vs capture meta: {len(worst)} stages, worst max|d| = "
          f"{max(worst.values()):.3g}")
    # The same file given as its model.safetensors (config.json beside it) is the same capture.
    capture(run, work, work / "hf" / "model.safetensors", work / "hf-file.st")
    assert_same_bytes(work / "hf-file.st", out)


def test_transformers_checkpoint_equals_its_meta_conversion(work, hf_model, run):
    converted, out = work / "from-hf.pth", work / "from-hf.st"
    torch.save(meta_from_hf(hf_model), converted)
    capture(run, work, converted, out, "--loader", "libtorch")
    if not (work / "hf.st").exists():
        capture(run, work, work / "hf", work / "hf.st")
    n = assert_same_bytes(work / "hf.st", out)
    assert n == 5 + 14 * 2 + 5
