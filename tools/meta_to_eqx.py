#!/usr/bin/env python3
"""Map a Meta-format DINOv3 checkpoint onto jax2onnx's Equinox DINOv3 example model
(`jax2onnx.plugins.examples.eqx.dino.VisionTransformer`) and save it.

    python tools/meta_to_eqx.py --weights ckpt.pth --img-size 224 -o model.eqx
    python tools/meta_to_eqx.py --weights ckpt.pth --img-size 224 -o bad.eqx --scale-ls2 5 1.01

Writes model.eqx (`eqx.tree_serialise_leaves`) and the sidecar model.eqx.json (constructor
config, the checkpoint's sha256, versions, fault injection); tools/eqx_model.py load_model()
reads both back.

Mapping (Meta key -> Equinox leaf), every checkpoint tensor accounted for:
  patch_embed.proj.{weight,bias}   -> patch_embed.proj.{weight,bias} (bias reshaped [D,1,1])
  cls_token, storage_tokens        -> cls_token, storage_tokens
  rope_embed.periods               -> dino_rope.periods (f32 leaf: the checkpoint's values, as is)
  blocks.i.norm1/norm2.*           -> blocks[i].norm1/norm2.*
  blocks.i.attn.qkv.weight [3D,D]  -> blocks[i].attn.core.attn.{query,key,value}_proj.weight
  blocks.i.attn.qkv.bias * bias_mask -> ...{query,key,value}_proj.bias (the K bias Meta uses)
  blocks.i.attn.proj.*             -> blocks[i].attn.core.attn.output_proj.*
  blocks.i.ls1/ls2.gamma           -> blocks[i].ls1/ls2.gamma
  blocks.i.mlp.fc1/fc2.*           -> blocks[i].mlp.fc1/fc2.*
  norm.*                           -> norm.*
Ignored: mask_token (Meta adds 0 * mask_token to cls), local_cls_norm.* (training only).
Refused (exit 2): SwiGLU feed-forwards (ViT-S+/H+/7B), an untied cls_norm, no storage tokens, an
MLP width other than 4 D, any other key the Equinox model has no place for.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import file_identity  # noqa: E402
from eqx_model import (CONFIG_KEYS, KIND, SIDECAR_FORMAT, ToolError,  # noqa: E402
                       framework_versions, load_model, path_getter, run_main, sidecar_path)


def load_checkpoint(path):
    import torch

    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ToolError(f"{path} is not a torch checkpoint that loads with weights_only=True "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ToolError(f"{path} is not a Meta-format DINOv3 state dict (a flat dict of tensors); "
                        f"top-level keys: {', '.join(map(str, list(sd)[:5])) if isinstance(sd, dict) else type(sd).__name__}")
    return sd


def analyse(sd, img_size, name):
    """The Equinox constructor config for this checkpoint, or a ToolError saying why not."""
    if "blocks.0.mlp.w1.weight" in sd:
        raise ToolError(f"{name} has a SwiGLU feed-forward (blocks.i.mlp.w1/w2/w3, as in ViT-S+/"
                        "H+/7B); jax2onnx's Equinox DINOv3 has only the GELU Mlp (fc1/fc2), so "
                        "this checkpoint cannot be mapped onto it")
    if "cls_norm.weight" in sd:
        raise ToolError(f"{name} has an untied cls_norm (untie_cls_and_patch_norms); the "
                        "Equinox model applies one final norm to all tokens, so it cannot run it")
    for key in ("cls_token", "patch_embed.proj.weight", "rope_embed.periods", "norm.weight",
                "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight"):
        if key not in sd:
            raise ToolError(f"{name} has no {key}: not a Meta-format DINOv3 ViT checkpoint")
    if "storage_tokens" not in sd or sd["storage_tokens"].shape[1] == 0:
        raise ToolError(f"{name} has no storage_tokens; every DINOv3 ViT has 4 and this tool "
                        "maps only those")
    if "blocks.0.ls1.gamma" not in sd:
        raise ToolError(f"{name} has no LayerScale (blocks.0.ls1.gamma); the Equinox model "
                        "always scales")
    d = sd["cls_token"].shape[-1]
    w = sd["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[1] != 3 or w.shape[2] != w.shape[3]:
        raise ToolError(f"{name}: patch_embed.proj.weight has shape {list(w.shape)}; expected "
                        "[D, 3, p, p]")
    patch = int(w.shape[2])
    hd = 4 * sd["rope_embed.periods"].shape[0]
    if d % hd:
        raise ToolError(f"{name}: embed dim {d} is not a multiple of the head dim {hd} "
                        "(4 x len(rope_embed.periods))")
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    if hidden != 4 * d:
        raise ToolError(f"{name}: MLP hidden width {hidden} is not 4 x {d}; the Equinox model "
                        "hard-codes mlp_ratio 4")
    if img_size % patch:
        raise ToolError(f"--img-size {img_size} is not a multiple of the patch size {patch}")
    return {"img_size": int(img_size), "patch_size": patch, "embed_dim": int(d),
            "depth": int(depth), "num_heads": int(d // hd),
            "num_storage_tokens": int(sd["storage_tokens"].shape[1])}


def mapping(sd, config):
    """[(equinox leaf path, numpy f32 array, meta source)], and the ignored keys. Raises a
    ToolError for any checkpoint key left without a place."""
    import torch

    d, depth = config["embed_dim"], config["depth"]
    used = set()
    converted = set()

    def take(key):
        t = sd[key]
        used.add(key)
        if not t.is_floating_point():
            raise ToolError(f"{key} has dtype {t.dtype}; expected floating point")
        if t.dtype != torch.float32:
            converted.add(f"{key}: {t.dtype}")
        return t.detach().cpu().float().numpy()

    leaves = []

    def put(path, key, array=None, note=None):
        leaves.append((path, take(key) if array is None else array, note or key))

    put("patch_embed.proj.weight", "patch_embed.proj.weight")
    put("patch_embed.proj.bias", "patch_embed.proj.bias",
        take("patch_embed.proj.bias").reshape(d, 1, 1), "patch_embed.proj.bias (reshaped [D,1,1])")
    put("cls_token", "cls_token")
    put("storage_tokens", "storage_tokens")
    put("dino_rope.periods", "rope_embed.periods")
    qkv_bias_note = None
    for i in range(depth):
        b, e = f"blocks.{i}", f"blocks[{i}]"
        att = f"{e}.attn.core.attn"
        for n in ("norm1", "norm2"):
            put(f"{e}.{n}.weight", f"{b}.{n}.weight")
            put(f"{e}.{n}.bias", f"{b}.{n}.bias")
        wqkv = take(f"{b}.attn.qkv.weight")
        if wqkv.shape != (3 * d, d):
            raise ToolError(f"{b}.attn.qkv.weight has shape {list(wqkv.shape)}; expected [{3 * d}, {d}]")
        if f"{b}.attn.qkv.bias" in sd:
            bqkv = take(f"{b}.attn.qkv.bias")
            if f"{b}.attn.qkv.bias_mask" in sd:
                # What Meta's LinearKMaskedBias uses: bias * bias_mask (zeros the K third).
                bqkv = bqkv * take(f"{b}.attn.qkv.bias_mask")
                qkv_bias_note = "qkv.bias * qkv.bias_mask (as Meta's LinearKMaskedBias)"
            else:
                qkv_bias_note = "qkv.bias (no bias_mask in the checkpoint)"
        else:
            bqkv = np.zeros(3 * d, np.float32)  # the Equinox projections always have a bias
            qkv_bias_note = "none in the checkpoint: zero biases"
        for j, proj in enumerate(("query_proj", "key_proj", "value_proj")):
            leaves.append((f"{att}.{proj}.weight", wqkv[j * d:(j + 1) * d],
                           f"{b}.attn.qkv.weight[{j * d}:{(j + 1) * d}]"))
            leaves.append((f"{att}.{proj}.bias", np.ascontiguousarray(bqkv[j * d:(j + 1) * d]),
                           f"{b}.attn.qkv.bias[{j * d}:{(j + 1) * d}]"))
        put(f"{att}.output_proj.weight", f"{b}.attn.proj.weight")
        put(f"{att}.output_proj.bias", f"{b}.attn.proj.bias")
        put(f"{e}.ls1.gamma", f"{b}.ls1.gamma")
        put(f"{e}.ls2.gamma", f"{b}.ls2.gamma")
        for fc in ("fc1", "fc2"):
            put(f"{e}.mlp.{fc}.weight", f"{b}.mlp.{fc}.weight")
            put(f"{e}.mlp.{fc}.bias", f"{b}.mlp.{fc}.bias")
    put("norm.weight", "norm.weight")
    put("norm.bias", "norm.bias")
    ignorable = {"mask_token"} | {k for k in sd if k.startswith("local_cls_norm.")}
    left = sorted(set(sd) - used - ignorable)
    if left:
        raise ToolError(f"the checkpoint has {len(left)} tensor(s) the Equinox model has no place "
                        f"for: {', '.join(left[:6])}{' ...' if len(left) > 6 else ''}")
    return leaves, sorted(ignorable & set(sd)), sorted(converted), qkv_bias_note


def build(config, leaves):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from eqx_model import skeleton

    sk = skeleton(config)
    getters = [path_getter(p) for p, _, _ in leaves]
    for (path, array, src), get in zip(leaves, getters):
        want = get(sk)
        if tuple(want.shape) != array.shape:
            raise ToolError(f"{src} has shape {list(array.shape)}, but the Equinox leaf {path} "
                            f"is {list(want.shape)}")
    model = eqx.tree_at(lambda m: [g(m) for g in getters], sk,
                        [jnp.asarray(a, dtype=jnp.float32) for _, a, _ in leaves])
    unset = [jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_flatten_with_path(model)[0]
             if isinstance(v, jax.ShapeDtypeStruct)]
    if unset:  # a leaf of the Equinox model nothing was mapped onto: a bug here, not bad input
        raise RuntimeError(f"no checkpoint tensor mapped onto {', '.join(unset)}")
    return model


def write_json(path, obj):
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True, help="Meta-format DINOv3 .pth (a state dict)")
    p.add_argument("--img-size", type=int, default=224,
                   help="square input size the model is built for (default 224)")
    p.add_argument("-o", "--output", required=True, help="model.eqx (sidecar: <output>.json)")
    p.add_argument("--scale-ls2", nargs=2, metavar=("BLOCK", "FACTOR"),
                   help="fault injection: multiply blocks[BLOCK].ls2.gamma by FACTOR "
                        "(e.g. 5 1.01); recorded in the sidecar")
    a = p.parse_args()
    if a.img_size <= 0:
        raise ToolError(f"--img-size must be positive, not {a.img_size}")
    fault = None
    if a.scale_ls2:
        try:
            block, factor = int(a.scale_ls2[0]), float(a.scale_ls2[1])
        except ValueError:
            raise ToolError(f"--scale-ls2 takes BLOCK (an integer) and FACTOR (a number), not "
                            f"{' '.join(a.scale_ls2)}") from None
        fault = {"kind": "scale-ls2", "block": block, "factor": factor}

    sd = load_checkpoint(a.weights)
    config = analyse(sd, a.img_size, a.weights)
    periods = sd["rope_embed.periods"].detach().float().numpy().copy()
    leaves, ignored, converted, qkv_bias_note = mapping(sd, config)
    del sd
    if fault:
        if not 0 <= fault["block"] < config["depth"]:
            raise ToolError(f"--scale-ls2: block {fault['block']} does not exist (the model has "
                            f"blocks 0..{config['depth'] - 1})")
        leaf = f"blocks[{fault['block']}].ls2.gamma"
        fault["leaf"] = leaf
        for i, (path, array, src) in enumerate(leaves):
            if path == leaf:
                leaves[i] = (path, array * np.float32(fault["factor"]), f"{src} * {fault['factor']}")

    import equinox as eqx
    import torch
    from jax2onnx.plugins.examples.eqx.dino import DinoRoPE

    model = build(config, leaves)
    # DinoRoPE computes its default periods with bf16 arithmetic (100 ** (2k / (hd/2))) and keeps
    # them as an f32 leaf; that leaf now holds the checkpoint's buffer instead.
    default = np.asarray(DinoRoPE(config["embed_dim"], num_heads=config["num_heads"]).periods)
    out = Path(a.output)
    tmp = out.with_name(out.name + ".partial")
    eqx.tree_serialise_leaves(str(tmp), model)
    tmp.replace(out)
    meta = {
        "format": SIDECAR_FORMAT, "version": 1, "kind": KIND,
        "config": {k: config[k] for k in CONFIG_KEYS},
        "source": file_identity(a.weights),
        "mapping": {"qkv_bias": qkv_bias_note, "ignored_keys": ignored,
                    "converted_to_f32": converted, "leaves": len(leaves)},
        "rope_periods": {"from": "rope_embed.periods", "values": periods.tolist()},
        "fault_injection": [fault] if fault else [],
        "frameworks": {**framework_versions(), "torch": torch.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command_line": sys.argv,
    }
    side = sidecar_path(out)
    write_json(side, meta)
    # Round trip: what load_model gives back must be exactly what was mapped.
    back = load_model(out)
    exact = bool(np.array_equal(np.asarray(back.dino_rope.periods), periods))
    same = all(np.array_equal(np.asarray(path_getter(p)(back)), arr) for p, arr, _ in leaves)
    if not same:
        raise RuntimeError(f"{out} does not load back bit-identically")
    meta["rope_periods"].update({
        "exact": exact, "dtype_in_model": str(back.dino_rope.periods.dtype),
        "equals_equinox_default": bool(np.array_equal(default, periods)),
    })
    write_json(side, meta)
    c = config
    print(f"wrote {out} (+ {side.name}): D={c['embed_dim']} depth={c['depth']} "
          f"heads={c['num_heads']} patch={c['patch_size']} storage={c['num_storage_tokens']} "
          f"img={c['img_size']}; {len(leaves)} leaves, RoPE periods "
          f"{'exact' if exact else 'NOT exact'}"
          + (f"; fault: {fault['leaf']} x {fault['factor']}" if fault else ""), file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
