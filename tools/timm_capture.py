#!/usr/bin/env python3
"""Reference capture of a Meta-format DINOv3 checkpoint through timm's independent port, for
checking `dinodiff capture meta` (and as the Python baseline of its benchmark).

    python tools/timm_capture.py --weights ckpt.pth --input input.st -o timm.st [--threads N]

timm's Eva model (vit_*_patch16_dinov3*) is built with the checkpoint's dimensions, loaded with
timm's own `checkpoint_filter_fn` and `strict=True`, and its RoPE periods are set to the
checkpoint's `rope_embed.periods` (timm recomputes them in f32; Meta's files hold bf16-rounded
values). Every canonical stage (docs/stages.md) is recorded by forward hooks on timm's modules,
by a TorchFunctionMode that sees the `F.linear` (fused qkv) and `F.scaled_dot_product_attention`
calls inside attention, or sliced from what those give (cls / storage / patches / pooled); the
script computes none of the model's math itself. Writes a dinodiff dump in execution order.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import file_identity, read_dump, write_dump  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402
from vocabulary import stage, stage_names  # noqa: E402  (canonical names: `dinodiff stages`)


def architecture(sd):
    d = sd["cls_token"].shape[2]
    hd = 4 * sd["rope_embed.periods"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    swiglu = "blocks.0.mlp.w1.weight" in sd
    hidden = sd["blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    storage = sd["storage_tokens"].shape[1] if "storage_tokens" in sd else 0
    if "cls_norm.weight" in sd:
        raise ToolError("timm's DINOv3 port has no untied cls_norm; cannot run this checkpoint")
    return dict(embed_dim=d, depth=depth, num_heads=d // hd, swiglu=swiglu, hidden=hidden,
                qkv_bias=qkv_bias, storage=storage)


def build_timm(sd):
    import timm
    from timm.models.eva import checkpoint_filter_fn

    a = architecture(sd)
    if a["swiglu"]:
        name = "vit_small_plus_patch16_dinov3_qkvb" if a["qkv_bias"] else "vit_7b_patch16_dinov3"
    else:
        name = "vit_small_patch16_dinov3_qkvb" if a["qkv_bias"] else "vit_small_patch16_dinov3"
    kwargs = dict(embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
                  # int(D * ratio) must give the checkpoint's (already aligned) hidden width.
                  mlp_ratio=(a["hidden"] + 0.5) / a["embed_dim"], num_reg_tokens=a["storage"])
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    filtered = checkpoint_filter_fn(dict(sd), model)
    model.load_state_dict(filtered, strict=True)
    with torch.no_grad():
        model.rope.periods.copy_(sd["rope_embed.periods"].to(model.rope.periods.dtype))
    return model.eval(), name, a


class AttentionOps(TorchFunctionMode):
    """Records the fused qkv linear and the sdpa operands of one attention call."""

    def __init__(self, qkv_weight):
        super().__init__()
        self.qkv_weight = qkv_weight
        self.seen = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            if weight is self.qkv_weight:
                self.seen["attn_qkv"] = out
        elif func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            self.seen.update({"attn_q": q, "attn_k": k, "attn_v": v})
        return out


def capture(model, x, storage):
    stages = []  # (name, tensor, native)

    def put(name, tensor, native):
        stages.append((name, tensor.detach().clone(), native))

    hooks = []

    def on(module, name, native, take="output"):
        def hook(mod, args, kwargs, output=None):
            put(name, output if take == "output" else args[0], native)

        if take == "output":
            hooks.append(module.register_forward_hook(
                lambda m, a, k, o: hook(m, a, k, o), with_kwargs=True))
        else:
            hooks.append(module.register_forward_pre_hook(
                lambda m, a, k: hook(m, a, k), with_kwargs=True))

    def patch_hook(mod, args, output):
        b, h, w, d = output.shape  # dynamic_img_size: NHWC
        put(stage("patch_embed"), output.reshape(b, h * w, d), "patch_embed (NHWC, flattened)")

    hooks.append(model.patch_embed.register_forward_hook(patch_hook))

    def first_block(mod, args, kwargs):
        put(stage("tokens"), args[0], "blocks.0 input")
        sin, cos = kwargs["rope"].tensor_split(2, -1)
        put(stage("rope_sin"), sin, "rope.get_embed()[:, :hd]")
        put(stage("rope_cos"), cos, "rope.get_embed()[:, hd:]")

    hooks.append(model.blocks[0].register_forward_pre_hook(first_block, with_kwargs=True))

    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"  # timm's module path (native names)
        on(blk.norm1, stage("norm1", i), f"{p}.norm1")
        ops = AttentionOps(blk.attn.qkv.weight)

        def attn_enter(mod, args, kwargs, ops=ops):
            ops.seen.clear()
            ops.__enter__()

        def attn_leave(mod, args, kwargs, output, ops=ops, p=p, i=i):
            ops.__exit__(None, None, None)
            for s in ("attn_qkv", "attn_q", "attn_k", "attn_v"):
                put(stage(s, i), ops.seen[s], f"{p}.attn {s.split('_')[1]} (F.* call)")

        hooks.append(blk.attn.register_forward_pre_hook(attn_enter, with_kwargs=True))
        hooks.append(blk.attn.register_forward_hook(attn_leave, with_kwargs=True))
        on(blk.attn.proj, stage("attn_sdpa", i), f"{p}.attn.proj input", take="input")
        on(blk.attn, stage("attn", i), f"{p}.attn")
        on(blk.drop_path1, stage("ls1", i), f"{p}.drop_path1 (gamma_1 * attn)")
        on(blk.norm2, stage("residual1", i), f"{p}.norm2 input", take="input")
        on(blk.norm2, stage("norm2", i), f"{p}.norm2")
        on(blk.mlp.fc2, stage("mlp_hidden", i), f"{p}.mlp.fc2 input", take="input")
        on(blk.mlp, stage("mlp", i), f"{p}.mlp")
        on(blk.drop_path2, stage("ls2", i), f"{p}.drop_path2 (gamma_2 * mlp)")
        on(blk, stage("output", i), p)
    on(model.norm, stage("norm"), "norm")

    started = time.perf_counter()
    with torch.inference_mode():
        normed = model.forward_features(x)
    forward_s = time.perf_counter() - started
    for h in hooks:
        h.remove()
    # The order hooks fired in is execution order, except the attention internals, which are
    # recorded when attention returns; put them back before attn.sdpa.
    order = {n: i for i, n in enumerate(stage_names(len(model.blocks)))}
    stages.sort(key=lambda s: order[s[0]])
    n_prefix = 1 + storage
    patches = normed[:, n_prefix:]
    stages += [
        (stage("cls"), normed[:, 0], "forward_features()[:, 0]"),
        (stage("storage"), normed[:, 1:n_prefix], "forward_features()[:, 1:1+R]"),
        (stage("patches"), patches, "forward_features()[:, 1+R:]"),
        (stage("pooled"), patches.mean(1), "forward_features()[:, 1+R:].mean(1)"),
    ]
    return stages, forward_s


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, help="Meta-format .pth")
    p.add_argument("--input", required=True, help="input.st made by `dinodiff prep`")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import timm

    started = time.perf_counter()
    sd = torch.load(a.weights, map_location="cpu", weights_only=True)
    model, timm_name, arch = build_timm(sd)
    input_manifest, tensors = read_dump(a.input)
    input_name = stage("input")
    x = torch.from_numpy(tensors[input_name].copy())
    load_s = time.perf_counter() - started
    stages, forward_s = capture(model, x, arch["storage"])
    items = [(input_name, tensors[input_name], {"native": "input", "stage": input_name})]
    items += [(name, t.contiguous().numpy(), {"native": native, "stage": name})
              for name, t, native in stages]
    size = write_dump(
        a.output, items, source="other", model=file_identity(a.weights),
        variant=f"timm {timm_name}",
        frameworks={"torch": torch.__version__, "timm": timm.__version__},
        input_provenance={"from": a.input},
        extra={"timm": {"threads": torch.get_num_threads(), "architecture": arch}},
    )
    print(f"wrote {a.output} ({len(items)} tensors, {size} bytes): timm {timm_name} with "
          f"{torch.get_num_threads()} thread(s); load {load_s:.2f} s, forward {forward_s:.3f} s",
          file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
