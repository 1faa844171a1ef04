#!/usr/bin/env python3
"""Write a deterministic random DINOv3 checkpoint in Meta's exact format (a `torch.save`d state
dict with Meta's key names, shapes and dtypes), for tests and the main job: real weights cannot be
downloaded here.

    python tools/make_meta_checkpoint.py --variant vits16 --seed 0 -o vits16.pth
    python tools/make_meta_checkpoint.py --variant vits16 --depth 2 --embed-dim 64 --heads 2 -o tiny.pth

Faithful to Meta's files where it matters for parity:
- `rope_embed.periods` = 100 ** (2 * arange(hd/4) / (hd/2)), rounded to bf16, stored as f32;
- `blocks.i.attn.qkv.bias_mask` = ones / zeros / ones (q, k, v) and the K third of the qkv bias
  is zero (Meta's training never needs it; models without the mask then agree with Meta);
- LayerScale gammas log-uniform in [1e-2, 1] (trained-like, not the 1e-5 init), LayerNorm
  weights around 1, `mask_token` zeros, the 7B model without qkv bias;
- `local_cls_norm.*` for the models that carry it (ViT-7B, satellite ViT-L; unused in eval);
- everything f32, as in Meta's released `.pth` files.
The values are a function of the seed and the key name only (one generator per key), so a tiny
config's weights do not shift when another key is added.
"""

import argparse
import hashlib
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vocabulary  # noqa: E402  (the variants come from `dinodiff variants`)
from toolerror import ToolError, run_main  # noqa: E402

ROPE_BASE = 100.0


def parse_ffn(text):
    """`mlp` or `swiglu<ALIGN>` (e.g. swiglu8, swiglu64) -> (kind, align)."""
    if text == "mlp":
        return "mlp", 1
    align = text.removeprefix("swiglu")
    if text.startswith("swiglu") and align.isdigit() and int(align) > 0:
        return "swiglu", int(align)
    raise argparse.ArgumentTypeError(f"{text!r} is not mlp or swiglu<ALIGN> (e.g. swiglu8)")


def ffn_name(kind, align):
    return "mlp" if kind == "mlp" else f"swiglu{align}"


def generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def normal(seed, key, shape, std):
    return torch.randn(shape, generator=generator(seed, key)) * std


def uniform(seed, key, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=generator(seed, key))


def make_state_dict(dim, depth, heads, ffn, ratio, qkv_bias, seed, local_cls_norm=False,
                    cls_norm=False, patch=16, storage=4):
    if dim % heads or (dim // heads) % 4:
        raise ToolError(f"embed dim {dim} must split into {heads} heads of a multiple of 4")
    hd = dim // heads
    kind, align = ffn
    hidden = vocabulary.ffn_hidden(kind, ratio, align, dim)
    sd = {}

    def linear(prefix, out_f, in_f, bias=True):
        sd[f"{prefix}.weight"] = normal(seed, f"{prefix}.weight", (out_f, in_f), 1 / math.sqrt(in_f))
        if bias:
            sd[f"{prefix}.bias"] = normal(seed, f"{prefix}.bias", (out_f,), 0.02)

    def layernorm(prefix):
        sd[f"{prefix}.weight"] = 1 + normal(seed, f"{prefix}.weight", (dim,), 0.1)
        sd[f"{prefix}.bias"] = normal(seed, f"{prefix}.bias", (dim,), 0.05)

    sd["cls_token"] = normal(seed, "cls_token", (1, 1, dim), 0.5)
    sd["storage_tokens"] = normal(seed, "storage_tokens", (1, storage, dim), 0.5)
    sd["mask_token"] = torch.zeros(1, dim)
    sd["patch_embed.proj.weight"] = normal(
        seed, "patch_embed.proj.weight", (dim, 3, patch, patch), 1 / math.sqrt(3 * patch * patch)
    )
    sd["patch_embed.proj.bias"] = normal(seed, "patch_embed.proj.bias", (dim,), 0.02)
    exponent = 2 * torch.arange(hd // 4, dtype=torch.float32) / (hd // 2)
    sd["rope_embed.periods"] = (ROPE_BASE**exponent).to(torch.bfloat16).to(torch.float32)
    for i in range(depth):
        b = f"blocks.{i}"
        layernorm(f"{b}.norm1")
        linear(f"{b}.attn.qkv", 3 * dim, dim, bias=qkv_bias)
        if qkv_bias:
            sd[f"{b}.attn.qkv.bias"][dim : 2 * dim] = 0.0
            sd[f"{b}.attn.qkv.bias_mask"] = torch.cat(
                [torch.ones(dim), torch.zeros(dim), torch.ones(dim)]
            )
        linear(f"{b}.attn.proj", dim, dim)
        sd[f"{b}.ls1.gamma"] = torch.exp(uniform(seed, f"{b}.ls1.gamma", (dim,), math.log(1e-2), 0))
        layernorm(f"{b}.norm2")
        if kind == "mlp":
            linear(f"{b}.mlp.fc1", hidden, dim)
            linear(f"{b}.mlp.fc2", dim, hidden)
        else:
            linear(f"{b}.mlp.w1", hidden, dim)
            linear(f"{b}.mlp.w2", hidden, dim)
            linear(f"{b}.mlp.w3", dim, hidden)
        sd[f"{b}.ls2.gamma"] = torch.exp(uniform(seed, f"{b}.ls2.gamma", (dim,), math.log(1e-2), 0))
    layernorm("norm")
    if cls_norm:  # untie_cls_and_patch_norms
        layernorm("cls_norm")
    if local_cls_norm:  # untie_global_and_local_cls_norm (ViT-7B, satellite ViT-L): training only
        layernorm("local_cls_norm")
    return {k: v.contiguous() for k, v in sd.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", default="vits16", help="a name `dinodiff variants` lists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embed-dim", type=int, help="override (tiny test configs)")
    p.add_argument("--depth", type=int, help="override")
    p.add_argument("--heads", type=int, help="override")
    p.add_argument("--ffn", type=parse_ffn, metavar="mlp|swiglu<ALIGN>", help="override")
    p.add_argument("--ffn-ratio", type=float, help="override")
    p.add_argument("--no-qkv-bias", action="store_true", help="override: no qkv bias (as 7B)")
    p.add_argument("--local-cls-norm", action="store_true",
                   help="add local_cls_norm.* (default for vit7b16 and *_sat493m names)")
    p.add_argument("--cls-norm", action="store_true", help="add cls_norm.* (untied cls norm)")
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    v = vocabulary.variant(a.variant)
    name = v["name"]
    dim, depth, heads, ratio, qkv_bias = (v["embed_dim"], v["depth"], v["heads"], v["ffn_ratio"],
                                          v["qkv_bias"])
    ffn = (v["ffn"], v["ffn_align"])
    dim = a.embed_dim or dim
    depth = a.depth or depth
    heads = a.heads or heads
    ffn = a.ffn or ffn
    ratio = a.ffn_ratio or ratio
    qkv_bias = qkv_bias and not a.no_qkv_bias
    local_cls_norm = a.local_cls_norm or name == "vit7b16" or a.variant.endswith("sat493m")
    sd = make_state_dict(dim, depth, heads, ffn, ratio, qkv_bias, a.seed,
                         local_cls_norm=local_cls_norm, cls_norm=a.cls_norm,
                         patch=v["patch_size"], storage=v["storage_tokens"])
    tmp = a.output + ".partial"
    torch.save(sd, tmp)
    import os

    os.replace(tmp, a.output)
    params = sum(v.numel() for k, v in sd.items() if not k.endswith("bias_mask"))
    print(
        f"wrote {a.output}: D={dim} depth={depth} heads={heads} ffn={ffn_name(*ffn)}x{ratio} "
        f"qkv_bias={qkv_bias} seed={a.seed}, {len(sd)} tensors, {params / 1e6:.1f}M parameters",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_main(main)
