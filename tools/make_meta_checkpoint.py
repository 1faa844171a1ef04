#!/usr/bin/env python3
"""Write a deterministic random DINOv3 checkpoint in Meta's exact format (a `torch.save`d state
dict with Meta's key names, shapes and dtypes), for tests and the main job: real weights cannot be
downloaded here.

    python tools/make_meta_checkpoint.py --variant vits16 --seed 0 -o vits16.pth
    python tools/make_meta_checkpoint.py --variant vits16 --depth 2 --embed-dim 64 --heads 2 -o tiny.pth
    python tools/make_meta_checkpoint.py --variant vit7b16 --dtype bf16 -o vit7b16-bf16.safetensors

A `.pth` is built in memory and written by `torch.save`; a `.safetensors` is written tensor by
tensor (header first, from the shapes), so memory holds one tensor at a time: the ViT-7B file
(13.4 GB in bf16, 6.7 B parameters) is written in ~1 GB of RAM.

Faithful to Meta's files where it matters for parity:
- `rope_embed.periods` = 100 ** (2 * arange(hd/4) / (hd/2)), rounded to bf16, stored as f32;
- `blocks.i.attn.qkv.bias_mask` = ones / zeros / ones (q, k, v) and the K third of the qkv bias
  is zero (Meta's training never needs it; models without the mask then agree with Meta);
- LayerScale gammas log-uniform in [1e-2, 1] (trained-like, not the 1e-5 init), LayerNorm
  weights around 1, `mask_token` zeros, the 7B model without qkv bias;
- `local_cls_norm.*` for the models that carry it (ViT-7B, satellite ViT-L; unused in eval);
- everything f32, as in Meta's released `.pth` files (`--dtype bf16|f16` converts every tensor,
  periods and masks included, which are exact in bf16).
The values are a function of the seed and the key name only (one generator per key), so a tiny
config's weights do not shift when another key is added.
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vocabulary  # noqa: E402  (the variants come from `dinodiff variants`)
from toolerror import ToolError, run_main  # noqa: E402

ROPE_BASE = 100.0
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


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


def tensor_specs(dim, depth, heads, ffn, ratio, qkv_bias, seed, local_cls_norm=False,
                 cls_norm=False, patch=16, storage=4):
    """The checkpoint's tensors in file order as (key, shape, make), `make()` giving the f32 values:
    one tensor at a time, so a writer never holds more than one (ViT-7B is 27 GB in f32)."""
    if dim % heads or (dim // heads) % 4:
        raise ToolError(f"embed dim {dim} must split into {heads} heads of a multiple of 4")
    hd = dim // heads
    kind, align = ffn
    hidden = vocabulary.ffn_hidden(kind, ratio, align, dim)

    def linear(prefix, out_f, in_f, bias=True, zero_rows=None):
        w = f"{prefix}.weight"
        yield w, (out_f, in_f), lambda: normal(seed, w, (out_f, in_f), 1 / math.sqrt(in_f))
        if bias:
            def make_bias(key=f"{prefix}.bias"):
                b = normal(seed, key, (out_f,), 0.02)
                if zero_rows is not None:
                    b[zero_rows] = 0.0
                return b
            yield f"{prefix}.bias", (out_f,), make_bias

    def layernorm(prefix):
        w, b = f"{prefix}.weight", f"{prefix}.bias"
        yield w, (dim,), lambda: 1 + normal(seed, w, (dim,), 0.1)
        yield b, (dim,), lambda: normal(seed, b, (dim,), 0.05)

    def gamma(key):
        return key, (dim,), lambda: torch.exp(uniform(seed, key, (dim,), math.log(1e-2), 0))

    yield "cls_token", (1, 1, dim), lambda: normal(seed, "cls_token", (1, 1, dim), 0.5)
    yield ("storage_tokens", (1, storage, dim),
           lambda: normal(seed, "storage_tokens", (1, storage, dim), 0.5))
    yield "mask_token", (1, dim), lambda: torch.zeros(1, dim)
    pw = "patch_embed.proj.weight"
    yield (pw, (dim, 3, patch, patch),
           lambda: normal(seed, pw, (dim, 3, patch, patch), 1 / math.sqrt(3 * patch * patch)))
    yield ("patch_embed.proj.bias", (dim,),
           lambda: normal(seed, "patch_embed.proj.bias", (dim,), 0.02))

    def periods():
        exponent = 2 * torch.arange(hd // 4, dtype=torch.float32) / (hd // 2)
        return (ROPE_BASE**exponent).to(torch.bfloat16).to(torch.float32)

    yield "rope_embed.periods", (hd // 4,), periods
    for i in range(depth):
        b = f"blocks.{i}"
        yield from layernorm(f"{b}.norm1")
        # The K third of the qkv bias is zero (Meta's training never needs it).
        yield from linear(f"{b}.attn.qkv", 3 * dim, dim, bias=qkv_bias,
                          zero_rows=slice(dim, 2 * dim))
        if qkv_bias:
            yield (f"{b}.attn.qkv.bias_mask", (3 * dim,),
                   lambda: torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)]))
        yield from linear(f"{b}.attn.proj", dim, dim)
        yield gamma(f"{b}.ls1.gamma")
        yield from layernorm(f"{b}.norm2")
        if kind == "mlp":
            yield from linear(f"{b}.mlp.fc1", hidden, dim)
            yield from linear(f"{b}.mlp.fc2", dim, hidden)
        else:
            yield from linear(f"{b}.mlp.w1", hidden, dim)
            yield from linear(f"{b}.mlp.w2", hidden, dim)
            yield from linear(f"{b}.mlp.w3", dim, hidden)
        yield gamma(f"{b}.ls2.gamma")
    yield from layernorm("norm")
    if cls_norm:  # untie_cls_and_patch_norms
        yield from layernorm("cls_norm")
    if local_cls_norm:  # untie_global_and_local_cls_norm (ViT-7B, satellite ViT-L): training only
        yield from layernorm("local_cls_norm")


def make_state_dict(*args, dtype=torch.float32, **kwargs):
    """The whole state dict in memory (what `torch.save` takes)."""
    return {k: make().to(dtype).contiguous() for k, _, make in tensor_specs(*args, **kwargs)}


SAFETENSORS_DTYPES = {torch.float32: ("F32", 4), torch.bfloat16: ("BF16", 2),
                      torch.float16: ("F16", 2)}


def write_safetensors(specs, dtype, path):
    """A safetensors file written tensor by tensor: the header first (from the shapes alone),
    then each tensor made, converted and written, so memory holds one tensor at a time."""
    name, size = SAFETENSORS_DTYPES[dtype]
    specs = list(specs)
    header, offset = {}, 0
    for key, shape, _ in specs:
        n = math.prod(shape) * size
        header[key] = {"dtype": name, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", "writer": "dinodiff tools/make_meta_checkpoint.py"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for key, shape, make in specs:
            t = make().to(dtype).contiguous()
            assert tuple(t.shape) == tuple(shape), (key, t.shape, shape)
            f.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return len(specs), sum(math.prod(s) for k, s, _ in specs if not k.endswith("bias_mask"))


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
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                   help="the tensors' dtype (Meta's released files are f32)")
    p.add_argument("-o", "--output", required=True,
                   help="a .pth (torch.save, built in memory) or a .safetensors (written tensor "
                        "by tensor: ViT-7B in bf16 needs one tensor's memory, not 27 GB)")
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
    specs = tensor_specs(dim, depth, heads, ffn, ratio, qkv_bias, a.seed,
                         local_cls_norm=local_cls_norm, cls_norm=a.cls_norm,
                         patch=v["patch_size"], storage=v["storage_tokens"])
    dtype = DTYPES[a.dtype]
    tmp = a.output + ".partial"
    if a.output.endswith(".safetensors"):
        count, params = write_safetensors(specs, dtype, tmp)
    else:
        sd = {k: make().to(dtype).contiguous() for k, _, make in specs}
        torch.save(sd, tmp)
        count = len(sd)
        params = sum(v.numel() for k, v in sd.items() if not k.endswith("bias_mask"))
    os.replace(tmp, a.output)
    print(
        f"wrote {a.output}: D={dim} depth={depth} heads={heads} ffn={ffn_name(*ffn)}x{ratio} "
        f"qkv_bias={qkv_bias} seed={a.seed} {a.dtype}, {count} tensors, "
        f"{params / 1e6:.1f}M parameters",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_main(main)
