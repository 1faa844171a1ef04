#!/usr/bin/env python3
"""Run an Equinox DINOv3 (made by tools/meta_to_eqx.py) eagerly on a dinodiff input dump and
record every intermediate array into an .npz, in execution order.

    python tools/eqx_capture.py --model model.eqx --input input.st -o run.npz

What is recorded, by observation only (the script computes none of the model's math):
- the output of every eqx.Module submodule call, named by its pytree path (`patch_embed`,
  `blocks[3].norm1`, `blocks[3].attn.core.attn.query_proj`, `blocks[3].mlp.fc1`, `norm`, ...).
  Every submodule is wrapped (eqx.tree_at, deepest first) in a tap that forwards attribute
  access and passes its result through an identity `jax.pure_callback`, which also sees the
  whole batch under the model's own vmaps. A second call of a module is `path#1`, a third
  `path#2`; a non-array result (tuple) gives `path.0`, `path.1`, ...;
- block internals, from the inputs of the modules that consume them or from the functions the
  model calls: `blocks[i]:input`, `blocks[i].attn:qkv` (the three projection outputs
  concatenated), `:q`, `:k` (after RoPE), `:v` (what the model's DinoRotaryProcessHeads
  returns), `blocks[i].attn:sdpa` (input of output_proj), `blocks[i]:residual1` (input of
  norm2), `blocks[i].mlp:hidden` (input of fc2), `rope:sin` / `rope:cos` (what the model's
  `_dino_rope_inference_sincos` returns), `tokens` (input of blocks[0]) and `output`.
The npz also holds `input` (exactly what was fed) and `__dinodiff_manifest__` (UTF-8 JSON as a
1-D uint8 array: format, model identity and config, versions, input sha256, order, and per array
its module path, class and kind).
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dumpfile import file_identity, read_dump  # noqa: E402
from eqx_model import KIND, ToolError, framework_versions, run_main  # noqa: E402

MANIFEST = "__dinodiff_manifest__"

# Internals taken from a module's first positional input: (path regex, name template, what).
# `{0}` is the regex's first group.
INPUT_RULES = [
    (r"^(blocks\[0\])$", "tokens", "input of blocks[0]: [cls, storage x R, patches]"),
    (r"^(blocks\[\d+\])$", "{0}:input", "block input"),
    (r"^(blocks\[\d+\])\.norm2$", "{0}:residual1", "input of norm2 (x + ls1)"),
    (r"^(blocks\[\d+\]\.attn)\.core\.attn\.output_proj$", "{0}:sdpa",
     "input of output_proj (attention output, heads merged)"),
    (r"^(blocks\[\d+\]\.mlp)\.fc2$", "{0}:hidden", "input of fc2 (GELU(fc1 x))"),
]


class Recorder:
    """Slots in Python call order; the identity callbacks fill them as the ops run."""

    def __init__(self):
        self.slots = []  # dicts: name, module, class, kind, what, value, transform
        self.calls = {}  # base name -> times seen
        self.stack = []  # (path, class) of the tapped modules being called
        self.last = {}  # module path -> name of its latest recorded output

    def unique(self, base):
        n = self.calls.get(base, 0)
        self.calls[base] = n + 1
        return base if n == 0 else f"{base}#{n}"

    def slot(self, name, module, cls, kind, what=None, transform=None):
        self.slots.append({"name": name, "module": module, "class": cls, "kind": kind,
                           "what": what, "value": None, "transform": transform})
        return self.slots[-1]

    def through(self, slot, value):
        """Records `value` into `slot`; returns it unchanged (an identity pure_callback for traced
        values, so the record sits on the data path and sees the full batch under vmap)."""
        import jax

        if not isinstance(value, jax.Array):  # host numpy (tracers are jax.Array instances)
            slot["value"] = np.array(value, copy=True)
            return value

        def fill(a):
            slot["value"] = np.array(a, copy=True)
            return a

        return jax.pure_callback(fill, jax.ShapeDtypeStruct(value.shape, value.dtype), value,
                                 vmap_method="expand_dims")

    def innermost(self, cls):
        for path, c in reversed(self.stack):
            if c == cls:
                return path
        return None


REC = None  # the active Recorder (taps hold only their static path)


def leaf_suffix(keypath):
    parts = []
    for k in keypath:
        for attr in ("idx", "key", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "".join(f".{p}" for p in parts)


def make_tap_class():
    import equinox as eqx
    import jax

    class Tap(eqx.Module):
        """Wraps one submodule: records its output (and, per INPUT_RULES, its input)."""

        inner: eqx.Module
        path: str = eqx.field(static=True)

        def __getattr__(self, name):  # forward attribute access (self.core.attn, rope.periods)
            if name in ("inner", "path") or name.startswith("__"):
                raise AttributeError(name)
            return getattr(object.__getattribute__(self, "inner"), name)

        def __call__(self, *args, **kwargs):
            rec, path, cls = REC, self.path, type(self.inner).__name__
            if rec is None:
                return self.inner(*args, **kwargs)
            args = list(args)
            for pattern, template, what in INPUT_RULES:
                m = re.match(pattern, path)
                if m and args:
                    owner = m.group(1)
                    name = rec.unique(template.format(owner))
                    args[0] = rec.through(rec.slot(name, owner, CLASS_OF.get(owner), "internal",
                                                   what), args[0])
            rec.stack.append((path, cls))
            try:
                out = self.inner(*args, **kwargs)
            finally:
                rec.stack.pop()
            base = rec.unique(path)
            rec.last[path] = base
            flat, treedef = jax.tree_util.tree_flatten_with_path(out)
            single = len(flat) == 1 and not flat[0][0]
            leaves = []
            for keypath, leaf in flat:
                if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
                    name = base if single else base + leaf_suffix(keypath)
                    leaf = rec.through(rec.slot(name, path, cls, "module-output"), leaf)
                leaves.append(leaf)
            return jax.tree_util.tree_unflatten(treedef, leaves)

    return Tap


CLASS_OF = {}  # module path -> class name, filled when wrapping


def wrap_all(model):
    import equinox as eqx

    from eqx_model import module_paths, path_getter

    Tap = make_tap_class()
    paths = module_paths(model)
    CLASS_OF.clear()
    for path, module in paths:  # deepest first: a parent is wrapped around tapped children
        CLASS_OF[path] = type(module).__name__
        model = eqx.tree_at(path_getter(path), model, replace_fn=lambda m, p=path: Tap(m, p))
    return model, len(paths)


@contextlib.contextmanager
def observe_model_functions():
    """Intercepts the two functions of jax2onnx's dino module that produce block internals the
    modules do not return: the RoPE tables and the rotary head processing."""
    from jax2onnx.plugins.examples.eqx import dino

    original_sincos = dino._dino_rope_inference_sincos
    original_heads = dino.DinoRotaryProcessHeads

    def sincos(rope, *, H, W):
        sin, cos = original_sincos(rope, H=H, W=W)
        rec = REC
        if rec is not None:
            owner = getattr(rope, "path", "dino_rope")
            for name, value in (("rope:sin", sin), ("rope:cos", cos)):
                rec.through(rec.slot(rec.unique(name), owner, "DinoRoPE", "internal",
                                     f"{name[5:]} table of _dino_rope_inference_sincos "
                                     f"(H={H}, W={W})"), value)
        return sin, cos

    class ObservedProcessHeads(original_heads):
        def __call__(self, query_heads, key_heads, value_heads):
            rec = REC
            attn = rec and rec.innermost("MultiHeadAttention")
            core = rec and rec.innermost("MultiheadAttention")
            if attn is None or core is None:
                return super().__call__(query_heads, key_heads, value_heads)
            # The fused-qkv equivalent: the three projection outputs concatenated on the last
            # dim (a concat, done after the run from the recorded arrays).
            projections = [rec.last.get(f"{core}.{p}_proj") for p in ("query", "key", "value")]
            qkv = rec.slot(rec.unique(f"{attn}:qkv"), attn, "MultiHeadAttention", "internal",
                           "concat(query_proj, key_proj, value_proj outputs), last dim")
            qkv["concat_of"] = projections
            q, k, v = super().__call__(query_heads, key_heads, value_heads)
            out = []
            for letter, value, what in (("q", q, "queries after RoPE"), ("k", k, "keys after RoPE"),
                                        ("v", v, "values")):
                # The model's heads are [..., N, H, hd]; the canonical layout is [..., H, N, hd].
                s = rec.slot(rec.unique(f"{attn}:{letter}"), attn, "MultiHeadAttention",
                             "internal", f"{what} (DinoRotaryProcessHeads output, [N,H,hd] -> "
                             "[H,N,hd])", transform=lambda a: np.swapaxes(a, -3, -2))
                out.append(rec.through(s, value))
            return tuple(out)

    ObservedProcessHeads.__name__ = original_heads.__name__
    dino._dino_rope_inference_sincos = sincos
    dino.DinoRotaryProcessHeads = ObservedProcessHeads
    try:
        yield
    finally:
        dino._dino_rope_inference_sincos = original_sincos
        dino.DinoRotaryProcessHeads = original_heads


def read_input(path):
    """(the dump's manifest, its `input` [1, 3, H, W] f32)."""
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist (make an input with `dinodiff prep`)")
    try:
        manifest, tensors = read_dump(path)
    except Exception as e:
        raise ToolError(f"{path} is not a safetensors dump ({type(e).__name__}: {e})") from None
    if "input" not in tensors:
        raise ToolError(f"{path} has no tensor named `input` (tensors: "
                        f"{', '.join(list(tensors)[:6]) or 'none'})")
    x = tensors["input"]
    if x.dtype != np.float32:
        raise ToolError(f"{path}: `input` is {x.dtype}, expected float32")
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ToolError(f"{path}: `input` has shape {list(x.shape)}, expected [1, 3, H, W]")
    return manifest, np.ascontiguousarray(x)


def check_input_size(path, x, img_size):
    if x.shape != (1, 3, img_size, img_size):
        raise ToolError(f"{path}: `input` has shape {list(x.shape)}, but the model was built for "
                        f"[1, 3, {img_size}, {img_size}]; prepare it with "
                        f"`dinodiff prep --size {img_size}` or re-map with --img-size")


def input_sha256(x):
    return hashlib.sha256(np.ascontiguousarray(x).astype("<f4", copy=False).tobytes()).hexdigest()


def capture(model, x):
    """(ordered {name: array}, {name: record}, forward seconds, taps) for one eager run."""
    global REC
    import jax
    import jax.numpy as jnp

    tapped, taps = wrap_all(model)
    REC = rec = Recorder()
    try:
        with observe_model_functions():
            started = time.perf_counter()
            y = tapped(jnp.asarray(x))
            y = jax.block_until_ready(y)
            jax.effects_barrier()
            forward_s = time.perf_counter() - started
    finally:
        REC = None
    missing = [s["name"] for s in rec.slots if s["value"] is None and "concat_of" not in s]
    if missing:
        raise RuntimeError(f"callbacks did not fire for {', '.join(missing[:5])}")
    by_name = {s["name"]: s for s in rec.slots}
    arrays = {"input": x}
    records = {"input": {"module": "", "class": None, "kind": "input",
                         "what": "the array fed to the model"}}
    for s in rec.slots:
        if "concat_of" in s:
            parts = [by_name[n]["value"] for n in s["concat_of"]]
            value = np.concatenate(parts, axis=-1)
        else:
            value = s["value"]
        if s["transform"]:
            value = s["transform"](value)
        arrays[s["name"]] = np.ascontiguousarray(value)
        records[s["name"]] = {k: s[k] for k in ("module", "class", "kind")}
        if s["what"]:
            records[s["name"]]["what"] = s["what"]
    arrays["output"] = np.asarray(y)
    records["output"] = {"module": "", "class": type(model).__name__, "kind": "internal",
                         "what": "the model's return value: norm(tokens) without storage tokens"}
    for name, r in records.items():
        r["shape"] = list(arrays[name].shape)
        r["dtype"] = str(arrays[name].dtype)
    return arrays, records, forward_s, taps


def write_npz(path, arrays, manifest):
    blob = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    out = Path(path)
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" suffix
            np.savez(f, **arrays, **{MANIFEST: blob})
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out.stat().st_size


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="model.eqx: from tools/meta_to_eqx.py (with "
                   "its sidecar model.eqx.json), or a bare `eqx.tree_serialise_leaves` file of "
                   "jax2onnx's example model (give --config or --variant)")
    p.add_argument("--config", help="the constructor config of a bare .eqx: img_size=224,"
                   "patch_size=16,embed_dim=384,depth=12,num_heads=6,num_storage_tokens=4 (with "
                   "a sidecar: must equal the sidecar's)")
    p.add_argument("--variant", help="a bare .eqx holds this DINOv3 variant (vits16, vitb16, "
                   "vitl16, or Meta's names: dinov3_vits16_pretrain_lvd1689m); the image size is "
                   "the input's (`dinodiff variants`)")
    p.add_argument("--input", required=True, help="input.st: a dinodiff dump holding `input` "
                   "[1,3,H,W] f32 (`dinodiff prep`)")
    p.add_argument("-o", "--output", required=True, help="run.npz")
    p.add_argument("--kind", choices=["jax2onnx", "equimo"], default="jax2onnx",
                   help="model implementation: jax2onnx's Equinox DINOv3 example (default) or "
                        "equimo's DINOv3 (needs `import equimo`: equimo 2.x, Python >= 3.12)")
    a = p.parse_args()
    if a.kind == "equimo":
        raise ToolError("equimo's DINOv3 is recorded by its own tool: `dinodiff capture eqx --kind "
                        "equimo --checkpoint META.pth --input input.st -o equimo.st --python "
                        "PY312` (or `dinodiff tools equimo-capture`, tools/equimo_capture.py); it "
                        "needs equimo 2.x, on Python >= 3.12")

    from eqx_model import load_model_and_sidecar, model_meta, parse_config, variant_config

    if a.config and a.variant:
        raise ToolError("give --config or --variant, not both")
    in_manifest, x = read_input(a.input)
    config = (parse_config(a.config) if a.config else
              variant_config(a.variant, x.shape[-1]) if a.variant else None)
    check_input_size(a.input, x, model_meta(a.model, config)["config"]["img_size"])
    started = time.perf_counter()
    model, side = load_model_and_sidecar(a.model, config)
    load_s = time.perf_counter() - started
    arrays, records, forward_s, taps = capture(model, x)
    digest = input_sha256(arrays["input"])
    recorded = (in_manifest or {}).get("input_sha256")
    if recorded and recorded != digest:
        print(f"warning: {a.input} records input_sha256 {recorded}, but its `input` hashes to "
              f"{digest}", file=sys.stderr)
    ident = file_identity(a.model)
    manifest = {
        "format": "dinodiff-eqx-npz", "version": 1, "source": "eqx",
        "model": {**ident, "kind": KIND, "config": side["config"],
                  "config_from": side["config_from"], "checkpoint": side.get("source"),
                  "fault_injection": side.get("fault_injection", [])},
        "frameworks": framework_versions(),
        "device": "cpu", "dtype": "f32",
        "input": {"path": str(a.input), "sha256": digest, "dump_input_sha256": recorded},
        "order": list(arrays),
        "arrays": records,
        "eqx": {"eager": True, "taps": taps, "load_s": round(load_s, 3),
                "forward_s": round(forward_s, 3)},
        "command_line": sys.argv,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    size = write_npz(a.output, arrays, manifest)
    print(f"wrote {a.output} ({len(arrays)} arrays, {size} bytes): {taps} submodules tapped; "
          f"load {load_s:.2f} s, eager forward {forward_s:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
