#!/usr/bin/env python3
"""Run equimo 2.x's DINOv3 (`equimo.vision.models.VisionTransformer`) eagerly on a dinodiff input
dump and record every intermediate array into an .npz that `dinodiff capture eqx` imports.

    python tools/equimo_capture.py --checkpoint meta.pth --input input.st -o run.npz
    python tools/equimo_capture.py --checkpoint meta.pth --variant vits16 --input input.st \\
        -o run.npz --save-model vits16.tar.lz4
    python tools/equimo_capture.py --model vits16.tar.lz4 --input input.st -o run.npz

Needs Python >= 3.12 with equimo 2.x (`tools/dev equimo-venv` builds one: docs/capture-eqx.md).

The model comes from either
- `--checkpoint`: a Meta-format DINOv3 state dict (`torch.save`, as Meta releases and
  tools/make_meta_checkpoint.py writes), converted by equimo's own converter
  (`equimo.conversion.utils.convert_torch_to_equinox`, strict: every leaf from the checkpoint,
  every checkpoint parameter used) with the renames of equimo's DINOv3 conversion script, plus
  the checkpoint's `rope_embed.periods` (equimo would recompute them in f32; Meta's are the
  checkpoint's, rounded to bf16). Meta masks the K third of `qkv.bias` with `bias_mask`; equimo
  adds the whole bias, so the bias handed to the converter is `bias * bias_mask`, which is what
  Meta's model uses (the manifest records how much K bias that dropped). `--variant` picks the
  equimo config (`vits16`, `dinov3_vits16_pretrain_lvd1689m`, ...); without it, the one whose
  width, depth, FFN and norms fit the checkpoint;
- `--model`: a model saved by equimo's `save_model` (a `.tar.lz4` or a directory; this tool's
  `--save-model` writes one), rebuilt from its recorded config and loaded with `load_weights`.

What is recorded, by observation only (tools/eqx_capture.py's taps: every eqx.Module's output
under its pytree path, through an identity `jax.pure_callback`):
- module outputs: `patch_embed` (equimo's [D, h, w] moved to [hw, D], a transpose),
  `blocks[0].blocks[i].prenorm`, `.attn.qkv`, `.attn`, `.ls1`, `.drop_path1` (x + ls1),
  `.norm`, `.mlp`, `.ls2`, `blocks[0].blocks[i]`, `norm`, and every other submodule;
- inputs of modules: `tokens` (of the first block), `blocks[0].blocks[i].attn:sdpa` (of
  attn.proj), `blocks[0].blocks[i].mlp:hidden` (of mlp.fc2, or of mlp.w3 in SwiGLU variants);
- from equimo's functions: `rope:sin` / `rope:cos` (what `VisionRoPE.get_factors` returns for
  the patch grid), `blocks[0].blocks[i].attn:q` / `:k` (what `apply_rotary_qk` returns);
- `blocks[0].blocks[i].attn:v`: a view of the recorded `attn.qkv` (reshape and slice, no
  arithmetic): equimo hands v to no module or function, only to an einsum;
- `pooled`: the model's return value (its `avg` pool of the normed patch tokens; head Identity).
"""

import argparse
import contextlib
import datetime
import json
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eqx_capture as taps  # noqa: E402  (the tap machinery: Recorder, wrap_all, write_npz)
from dumpfile import file_identity, read_dump  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402

KIND = "equimo.vision.models.vit.VisionTransformer"
BLOCK = r"blocks\[\d+\]\.blocks\[\d+\]"

# Internals taken from a module's first positional input (see eqx_capture.INPUT_RULES).
INPUT_RULES = [
    (r"^(blocks\[0\]\.blocks\[0\])$", "tokens", "input of the first block: [cls, registers x R, patches]"),
    (rf"^({BLOCK}\.attn)\.proj$", "{0}:sdpa", "input of attn.proj (attention output, heads merged)"),
    (rf"^({BLOCK}\.mlp)\.fc2$", "{0}:hidden", "input of mlp.fc2 (GELU(fc1 x))"),
    (rf"^({BLOCK}\.mlp)\.w3$", "{0}:hidden", "input of mlp.w3 (silu(w1 x) * w2 x, SwiGLU)"),
]

# equimo's DINOv3 conversion renames (its models/dinov3.py), equimo path -> Meta key, plus the
# RoPE periods, which equimo keeps under `freqs` and would otherwise recompute.
REPLACE = {
    "reg_tokens": "storage_tokens",
    "blocks.0.blocks": "blocks",
    ".prenorm.": ".norm1.",
    ".norm.": ".norm2.",
    "local_pos_embed.patch_rope.freqs": "rope_embed.periods",
}
EXPAND = {"patch_embed.proj.bias": ["after", 2]}
SQUEEZE = {"cls_token": 0, "storage_tokens": 0}


def quiet_equimo():
    """equimo logs every converted parameter at INFO; keep its warnings only."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def framework_versions():
    from importlib.metadata import version

    import equimo
    import equinox
    import jax
    import jaxlib

    out = {"equimo": equimo.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "equinox": equinox.__version__, "numpy": np.__version__,
           "python": sys.version.split()[0]}
    with contextlib.suppress(Exception):
        out["torch"] = version("torch")
    return out


# --- the equimo config ---------------------------------------------------------------------

def dinov3_registry():
    """{equimo DINOv3 variant name: constructor kwargs} from equimo's own ViT registry."""
    from equimo.vision.models import vit

    return {name: base | cfg for name, (base, cfg) in vit._VIT_REGISTRY.items()
            if name.startswith("dinov3_")}


def checkpoint_shape(sd):
    """What the checkpoint says about the architecture (what the equimo config must match)."""
    if "cls_token" not in sd or "blocks.0.attn.qkv.weight" not in sd:
        raise ToolError("the checkpoint has no cls_token / blocks.0.attn.qkv.weight: not a "
                        "Meta-format DINOv3 ViT state dict")
    return {"dim": int(sd["cls_token"].shape[-1]),
            "depth": 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
            "swiglu": "blocks.0.mlp.w1.weight" in sd,
            "local_cls_norm": "local_cls_norm.weight" in sd,
            "qkv_bias": "blocks.0.attn.qkv.bias" in sd}


def config_shape(cfg):
    return {"dim": cfg["dim"], "depth": sum(cfg["depths"]),
            "swiglu": str(cfg.get("ffn_layer", "mlp")).startswith("swiglu"),
            "local_cls_norm": bool(cfg.get("untie_global_and_local_cls_norm", False)),
            "qkv_bias": bool(cfg.get("qkv_bias", True))}


def pick_variant(requested, sd):
    """(equimo variant name, kwargs) for --variant (a full equimo name or dinodiff's short one,
    `vits16`) and the checkpoint; refuses no match and ambiguity, with the candidates."""
    registry = dinov3_registry()
    names = sorted(registry)
    if requested:
        names = [n for n in names if n == requested or n.split("_")[1] == requested]
        if not names:
            short = sorted({n.split("_")[1] for n in registry})
            raise ToolError(f"--variant {requested!r} is not one of equimo's DINOv3 variants: "
                            f"{', '.join(short)} (or the full names, {', '.join(sorted(registry)[:2])}, ...)")
    want = checkpoint_shape(sd)
    fits = [n for n in names if config_shape(registry[n]) == want]
    if len(fits) != 1:
        what = ", ".join(f"{k}={v}" for k, v in want.items())
        raise ToolError(f"{'no' if not fits else 'more than one'} equimo DINOv3 config fits the "
                        f"checkpoint ({what}) among {', '.join(names)}"
                        + (f": {', '.join(fits)} fit; pass --variant" if fits else ""))
    return fits[0], dict(registry[fits[0]])


def json_config(cfg):
    """The kwargs with jnp dtypes as their names (equimo's save_model writes JSON)."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (type, np.dtype)):  # jnp.float32 is a scalar type
            return np.dtype(v).name
        return v
    return plain(cfg)


def from_json_config(cfg):
    import jax.numpy as jnp

    def back(k, v):
        if isinstance(v, dict):
            return {kk: back(kk, vv) for kk, vv in v.items()}
        if k in ("dtype", "periods_dtype") and isinstance(v, str):
            return jnp.dtype(v)
        return v
    return {k: back(k, v) for k, v in cfg.items()}


# --- the model: Meta checkpoint through equimo's converter, or an equimo-saved model --------

class CheckpointParams:
    """The checkpoint's parameters as equimo's converter reads a torch model: `named_parameters()`
    (Meta's parameter names and tensors) and `eval()`."""

    def __init__(self, params):
        self.params = params

    def named_parameters(self):
        return iter(self.params.items())

    def eval(self):
        return self


def converter_inputs(sd):
    """The tensors handed to equimo's converter, and what was done to them: Meta's buffers are
    not parameters (`bias_mask` is applied to the qkv bias as Meta's model does; the periods are
    passed on under their Meta name)."""
    import torch

    params, k_bias_dropped = {}, 0.0
    for key, t in sd.items():
        if key.endswith(".attn.qkv.bias_mask"):
            continue
        if not t.is_floating_point():
            raise ToolError(f"{key} has dtype {t.dtype}; expected floating point")
        t = t.detach().float()
        mask = sd.get(f"{key}_mask") if key.endswith(".attn.qkv.bias") else None
        if mask is not None:
            k_bias_dropped = max(k_bias_dropped, float((t * (1 - mask.float())).abs().max()))
            t = t * mask.float()
        params[key] = torch.nn.Parameter(t, requires_grad=False)
    has_mask = any(k.endswith(".attn.qkv.bias_mask") for k in sd)
    note = {"bias_mask_applied": has_mask, "k_bias_max_abs_dropped": k_bias_dropped}
    return params, note


def zeros_skeleton(cfg):
    """equimo's VisionTransformer for `cfg` with every array leaf zero: the converter and
    load_weights replace them all, so no random init is spent on them."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from equimo.vision.models import VisionTransformer

    shapes = eqx.filter_eval_shape(VisionTransformer, **cfg, key=jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype)
                        if isinstance(s, jax.ShapeDtypeStruct) else s, shapes)


def model_from_checkpoint(path, variant, img_size):
    from equimo.conversion.utils import convert_torch_to_equinox

    from meta_to_eqx import load_checkpoint

    sd = load_checkpoint(path)
    name, cfg = pick_variant(variant, sd)
    cfg["img_size"] = img_size
    params, note = converter_inputs(sd)
    try:
        model = convert_torch_to_equinox(zeros_skeleton(cfg), REPLACE, EXPAND, SQUEEZE, [], [], strict=True,
                                         source="custom", torch_model=CheckpointParams(params))
    except (AttributeError, ValueError) as e:
        raise ToolError(f"equimo's converter refused {path} for {name}: {e}") from None
    periods = np.asarray(model.local_pos_embed.patch_rope.freqs)
    if not np.array_equal(periods, sd["rope_embed.periods"].float().numpy()):
        raise RuntimeError("the converted RoPE periods differ from the checkpoint's")
    return model, name, cfg, {"conversion": note, "checkpoint": file_identity(path)}


def read_saved_metadata(path):
    """metadata.json of an equimo-saved model (directory or .tar.lz4), read without extracting."""
    path = Path(path)
    if path.is_dir():
        member = path / "metadata.json"
        if not member.is_file():
            raise ToolError(f"{path} has no metadata.json: not a model saved by equimo's save_model")
        return json.loads(member.read_text())
    if not path.name.endswith(".tar.lz4") or not path.is_file():
        raise ToolError(f"{path} is neither a directory nor a .tar.lz4 written by equimo's save_model")
    import lz4.frame

    try:
        with lz4.frame.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                if info.name.lstrip("./") == "metadata.json" and info.isfile():
                    return json.loads(tar.extractfile(info).read(4 << 20))
    except (RuntimeError, tarfile.TarError, OSError, json.JSONDecodeError) as e:
        raise ToolError(f"{path} is not a readable equimo model archive ({e})") from None
    raise ToolError(f"{path} holds no metadata.json: not a model saved by equimo's save_model")


def model_from_saved(path, img_size):
    from equimo.serialization import load_weights

    meta = read_saved_metadata(path)
    saved = meta.get("model_config", {})
    dinodiff = saved.pop("dinodiff", {})
    cfg = from_json_config(saved)
    if meta.get("model_class", KIND) != KIND:
        raise ToolError(f"{path} holds a {meta.get('model_class')}, not equimo's VisionTransformer")
    cfg["img_size"] = img_size  # dynamic_img_size: the grid follows the input
    try:
        model = load_weights(zeros_skeleton(cfg), path=Path(path))
    except (ValueError, OSError) as e:
        raise ToolError(f"equimo could not load {path}: {e}") from None
    return model, dinodiff.get("variant", "custom"), cfg, {"saved_model": dinodiff}


def model_identity(path):
    """The file's identity; for a saved-model directory, that of its weights.eqx."""
    path = Path(path)
    return file_identity(path / "weights.eqx" if path.is_dir() else path)


def scale_ls2(model, block, factor):
    import equinox as eqx

    blocks = model.blocks[0].blocks
    if not 0 <= block < len(blocks):
        raise ToolError(f"--scale-ls2 {block}: the model has blocks 0..{len(blocks) - 1}")
    return eqx.tree_at(lambda m: m.blocks[0].blocks[block].ls2.gamma, model,
                       replace_fn=lambda g: g * factor)


# --- the recording ---------------------------------------------------------------------------

@contextlib.contextmanager
def observe_equimo(rec):
    """Records what equimo's functions return that no module does: the patch RoPE tables and
    q/k after RoPE. Puts this tool's input rules in place of the jax2onnx ones meanwhile."""
    from equimo.core.layers import attention
    from equimo.vision.layers.posemb import VisionRoPE

    original_factors, original_qk = VisionRoPE.get_factors, attention.apply_rotary_qk
    original_rules = taps.INPUT_RULES

    def get_factors(self, *, H, W, **kwargs):
        factors = original_factors(self, H=H, W=W, **kwargs)
        for name in ("sin", "cos"):
            slot = rec.slot(rec.unique(f"rope:{name}"), "local_pos_embed.patch_rope", "VisionRoPE",
                            "internal", f"{name} table of VisionRoPE.get_factors (H={H}, W={W})")
            rec.through(slot, getattr(factors, name))
        return factors

    def apply_rotary_qk(q, k, factors):
        q, k = original_qk(q, k, factors)
        attn = rec.innermost("Attention")
        if attn is None:
            return q, k
        return tuple(rec.through(rec.slot(rec.unique(f"{attn}:{letter}"), attn, "Attention",
                                          "internal", f"{letter} after RoPE (apply_rotary_qk)"), v)
                     for letter, v in (("q", q), ("k", k)))

    VisionRoPE.get_factors, attention.apply_rotary_qk = get_factors, apply_rotary_qk
    taps.INPUT_RULES = INPUT_RULES
    try:
        yield
    finally:
        VisionRoPE.get_factors, attention.apply_rotary_qk = original_factors, original_qk
        taps.INPUT_RULES = original_rules


def value_view(qkv, heads):
    """v of `attn.qkv` [..., N, 3D] as equimo's Attention takes it: [..., heads, N, hd]."""
    *lead, n, three_d = qkv.shape
    v = qkv.reshape(*lead, n, 3, heads, three_d // (3 * heads))[..., 2, :, :]
    return np.ascontiguousarray(np.swapaxes(v, -3, -2))


def run(model, x):
    """(recorder, pooled output, forward seconds, taps) for one eager run on the batch x."""
    import jax
    import jax.numpy as jnp

    tapped, count = taps.wrap_all(model)
    rec = taps.REC = taps.Recorder()
    try:
        with observe_equimo(rec):
            started = time.perf_counter()
            y = jax.vmap(lambda image: tapped(image, inference=True))(jnp.asarray(x))
            y = jax.block_until_ready(y)
            jax.effects_barrier()
            forward_s = time.perf_counter() - started
    finally:
        taps.REC = None
    missing = [s["name"] for s in rec.slots if s["value"] is None]
    if missing:
        raise RuntimeError(f"callbacks did not fire for {', '.join(missing[:5])}")
    return rec, np.asarray(y), forward_s, count


def collect(rec, pooled, x, heads):
    """Ordered {name: array} and {name: record} from a run, with the views this tool adds."""
    arrays = {"input": x}
    records = {"input": {"module": "", "class": None, "kind": "input",
                         "what": "the array fed to the model"}}
    for s in rec.slots:
        value, record = s["value"], {k: s[k] for k in ("module", "class", "kind")}
        if s["what"]:
            record["what"] = s["what"]
        if s["name"] == "patch_embed":  # [B, D, h, w] -> [B, hw, D]
            value = np.swapaxes(value.reshape(*value.shape[:-2], -1), -1, -2)
            record["what"] = "PatchEmbedding output [D, h, w], moved to [hw, D]"
        arrays[s["name"]], records[s["name"]] = np.ascontiguousarray(value), record
        if re.fullmatch(rf"{BLOCK}\.attn\.qkv", s["name"]):
            owner = s["name"].removesuffix(".qkv")
            arrays[f"{owner}:v"] = value_view(value, heads)
            records[f"{owner}:v"] = {"module": owner, "class": "Attention", "kind": "view",
                                     "what": f"v: a view of {s['name']} (reshape and slice)"}
    arrays["pooled"] = pooled
    records["pooled"] = {"module": "", "class": "VisionTransformer", "kind": "internal",
                         "what": "the model's return value: avg pool of the normed patch tokens"}
    for name, r in records.items():
        r["shape"], r["dtype"] = list(arrays[name].shape), str(arrays[name].dtype)
    return arrays, records


def read_input(path):
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist (make an input with `dinodiff prep`)")
    try:
        manifest, tensors = read_dump(path)
    except Exception as e:
        raise ToolError(f"{path} is not a safetensors dump ({type(e).__name__}: {e})") from None
    x = tensors.get("input")
    if x is None or x.dtype != np.float32 or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ToolError(f"{path}: expected a tensor `input` [1, 3, H, W] float32 (`dinodiff prep`)")
    if x.shape[2] % 16 or x.shape[3] % 16:
        raise ToolError(f"{path}: `input` is {x.shape[2]}x{x.shape[3]}, not a multiple of the "
                        "patch size 16")
    return manifest, np.ascontiguousarray(x)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a Meta-format DINOv3 checkpoint (.pth state dict)")
    src.add_argument("--model", help="a model saved by equimo's save_model (.tar.lz4 or directory)")
    p.add_argument("--variant", help="with --checkpoint: equimo's DINOv3 config (vits16, "
                   "dinov3_vits16_pretrain_lvd1689m, ...); default: the one the checkpoint fits")
    p.add_argument("--input", required=True, help="input.st: a dinodiff dump holding `input` "
                   "[1,3,H,W] f32 (`dinodiff prep`)")
    p.add_argument("-o", "--output", required=True, help="run.npz")
    p.add_argument("--save-model", help="also save the model (equimo's save_model, .tar.lz4)")
    p.add_argument("--scale-ls2", nargs=2, metavar=("BLOCK", "FACTOR"),
                   help="fault injection: multiply block BLOCK's ls2 gamma by FACTOR after loading")
    return p.parse_args()


def main():
    a = parse_args()
    if a.variant and a.model:
        raise ToolError("--variant goes with --checkpoint; a saved model records its config")
    quiet_equimo()
    in_manifest, x = read_input(a.input)
    started = time.perf_counter()
    if a.checkpoint:
        model, variant, cfg, origin = model_from_checkpoint(a.checkpoint, a.variant, x.shape[2])
    else:
        model, variant, cfg, origin = model_from_saved(a.model, x.shape[2])
    faults = []
    if a.scale_ls2:
        try:
            block, factor = int(a.scale_ls2[0]), float(a.scale_ls2[1])
        except ValueError:
            raise ToolError(f"--scale-ls2 takes BLOCK (an integer) and FACTOR (a number), not "
                            f"{' '.join(a.scale_ls2)}") from None
        model = scale_ls2(model, block, factor)
        faults = [{"kind": "scale-ls2", "block": block, "factor": factor}]
    if a.save_model:
        from equimo.serialization import save_model

        saved = json_config(cfg) | {"dinodiff": {"variant": variant, "fault_injection": faults, **origin}}
        save_model(Path(a.save_model), model, saved, compression=a.save_model.endswith(".tar.lz4"))
    load_s = time.perf_counter() - started
    rec, pooled, forward_s, count = run(model, x)
    arrays, records = collect(rec, pooled, x, int(cfg["num_heads"]))
    digest = taps.input_sha256(x)
    recorded = (in_manifest or {}).get("input_sha256")
    short = variant.split("_")[1] if variant.startswith("dinov3_") else variant
    manifest = {
        "format": "dinodiff-eqx-npz", "version": 1, "source": "eqx",
        "model": {**model_identity(a.checkpoint or a.model), "kind": KIND, "variant": short,
                  "equimo_variant": variant,
                  "config": {"embed_dim": cfg["dim"], "depth": sum(cfg["depths"]),
                             "num_heads": cfg["num_heads"], "img_size": x.shape[2],
                             "num_storage_tokens": cfg["reg_tokens"],
                             "ffn_layer": str(cfg.get("ffn_layer", "mlp"))},
                  **origin, "fault_injection": faults},
        "frameworks": framework_versions(),
        "device": "cpu", "dtype": "f32",
        "input": {"path": str(a.input), "sha256": digest, "dump_input_sha256": recorded},
        "order": list(arrays),
        "arrays": records,
        "eqx": {"eager": True, "taps": count, "load_s": round(load_s, 3),
                "forward_s": round(forward_s, 3)},
        "command_line": sys.argv,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    size = taps.write_npz(a.output, arrays, manifest)
    print(f"wrote {a.output} ({len(arrays)} arrays, {size} bytes): equimo {variant}, {count} "
          f"submodules tapped; load {load_s:.2f} s, eager forward {forward_s:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
