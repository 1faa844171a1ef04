"""tools/make_meta_checkpoint.py writes Meta's checkpoint format: timm's own DINOv3 port loads it
strictly through timm's checkpoint filter (an independent reader of Meta's key names and shapes),
and the Meta-specific buffers are as Meta's files have them."""

import pathlib
import subprocess
import sys

import pytest
import timm
import torch
from timm.models.eva import checkpoint_filter_fn

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "make_meta_checkpoint.py"


def make(tmp_path, *args):
    out = tmp_path / "ckpt.pth"
    subprocess.run([sys.executable, TOOL, *map(str, args), "-o", out], check=True,
                   capture_output=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize(
    "args,timm_name,timm_kwargs",
    [
        (["--variant", "vits16"], "vit_small_patch16_dinov3_qkvb", {}),
        (["--variant", "vits16", "--embed-dim", "64", "--depth", "2", "--heads", "2"],
         "vit_small_patch16_dinov3_qkvb", {"embed_dim": 64, "depth": 2, "num_heads": 2}),
        (["--variant", "vits16plus", "--embed-dim", "64", "--depth", "2", "--heads", "2"],
         "vit_small_plus_patch16_dinov3_qkvb", {"embed_dim": 64, "depth": 2, "num_heads": 2}),
    ],
)
def test_timm_loads_it_strictly(tmp_path, args, timm_name, timm_kwargs):
    sd = make(tmp_path, *args, "--seed", "3")
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, **timm_kwargs)
    result = model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_meta_specific_buffers(tmp_path):
    sd = make(tmp_path, "--variant", "vits16", "--seed", "1")
    d, hd = 384, 64
    assert all(v.dtype == torch.float32 for v in sd.values())
    periods = sd["rope_embed.periods"]
    assert periods.shape == (hd // 4,)
    want = 100.0 ** (2 * torch.arange(hd // 4, dtype=torch.float64) / (hd // 2))
    assert torch.equal(periods, want.to(torch.bfloat16).to(torch.float32))
    mask = sd["blocks.0.attn.qkv.bias_mask"]
    assert torch.equal(mask, torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)]))
    assert torch.count_nonzero(sd["blocks.0.attn.qkv.bias"][d:2 * d]) == 0
    assert torch.count_nonzero(sd["mask_token"]) == 0
    gammas = torch.cat([sd[f"blocks.{i}.ls{j}.gamma"] for i in range(12) for j in (1, 2)])
    assert 1e-2 <= gammas.min() and gammas.max() <= 1.0
    assert len(sd) == 8 + 12 * 15  # tokens, patch embed, periods, norm + 15 keys per block


def test_same_seed_same_bytes_other_seed_other_values(tmp_path):
    a = make(tmp_path, "--variant", "vits16", "--depth", "1", "--seed", "5")
    b = make(tmp_path, "--variant", "vits16", "--depth", "1", "--seed", "5")
    c = make(tmp_path, "--variant", "vits16", "--depth", "1", "--seed", "6")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


def test_7b_has_no_qkv_bias_and_swiglu64(tmp_path):
    sd = make(tmp_path, "--variant", "vit7b16", "--embed-dim", "128", "--depth", "1",
              "--heads", "2")
    assert "blocks.0.attn.qkv.bias" not in sd and "blocks.0.attn.qkv.bias_mask" not in sd
    # int(2 * 3 * 128 / 3) = 256, already a multiple of 64.
    assert sd["blocks.0.mlp.w1.weight"].shape == (256, 128)
    assert sd["blocks.0.mlp.w3.weight"].shape == (128, 256)


def test_safetensors_written_tensor_by_tensor_hold_the_same_values(tmp_path):
    """The streamed safetensors writer (what the ViT-7B benchmark file is made with) against
    safetensors' own reader: same keys in the same order, same bf16 values as the .pth."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    args = ["--variant", "vit7b16", "--embed-dim", "128", "--depth", "2", "--heads", "2",
            "--dtype", "bf16", "--seed", "5"]
    sd = make(tmp_path, *args)
    st = tmp_path / "ckpt.safetensors"
    subprocess.run([sys.executable, TOOL, *args, "-o", st], check=True, capture_output=True)
    loaded = load_file(st)
    with safe_open(str(st), "pt") as f:
        assert list(f.keys()) == sorted(sd)  # safetensors lists keys sorted
    assert set(loaded) == set(sd)
    for k, v in sd.items():
        assert v.dtype == torch.bfloat16 and loaded[k].dtype == torch.bfloat16, k
        assert torch.equal(loaded[k], v), k
    assert "blocks.1.mlp.w3.weight" in sd and not any(k.endswith("qkv.bias") for k in sd)
