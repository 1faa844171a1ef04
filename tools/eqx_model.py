"""Shared helpers of the Equinox tools (meta_to_eqx.py, export_onnx.py, eqx_capture.py).

The model is jax2onnx's clean-room Equinox DINOv3 example,
`jax2onnx.plugins.examples.eqx.dino.VisionTransformer`. A saved model is two files:

    model.eqx       `eqx.tree_serialise_leaves` of the mapped model (every leaf, f32 arrays)
    model.eqx.json  the sidecar: {"format": "dinodiff-eqx-model", "version": 1, "kind": KIND,
                    "config": {img_size, patch_size, embed_dim, depth, num_heads,
                    num_storage_tokens}, "source": {checkpoint path/size/sha256},
                    "rope_periods": {...}, "fault_injection": [...], "frameworks": {...}, ...}

`load_model(path)` rebuilds the skeleton from the sidecar's config (shapes only, no random
init: `eqx.filter_eval_shape`) and deserialises the leaves into it.
"""

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

# No accelerator probing: every tool here runs on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

KIND = "jax2onnx.plugins.examples.eqx.dino.VisionTransformer"
SIDECAR_FORMAT = "dinodiff-eqx-model"
CONFIG_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_storage_tokens")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolerror import EXIT_BAD_INPUT, ToolError, run_main  # noqa: E402,F401  (re-exported)


def sidecar_path(path):
    return Path(str(path) + ".json")


def framework_versions():
    """Versions of what runs the model (jax2onnx has no __version__: its distribution's)."""
    from importlib.metadata import version

    import equinox
    import jax
    import jaxlib
    import numpy

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "equinox": equinox.__version__, "jax2onnx": version("jax2onnx"),
            "numpy": numpy.__version__}


def read_sidecar(path):
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist (make it with tools/meta_to_eqx.py)")
    side = sidecar_path(path)
    if not side.is_file():
        raise ToolError(f"{path} has no sidecar {side}: the model's constructor config is kept "
                        "there; re-make both with tools/meta_to_eqx.py")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ToolError(f"{side} is not JSON ({e})") from None
    if meta.get("format") != SIDECAR_FORMAT or meta.get("kind") != KIND:
        raise ToolError(f"{side} is not a dinodiff Equinox model sidecar (format "
                        f"{meta.get('format')!r}, kind {meta.get('kind')!r}; expected "
                        f"{SIDECAR_FORMAT!r}, {KIND!r})")
    missing = [k for k in CONFIG_KEYS if not isinstance(meta.get("config", {}).get(k), int)]
    if missing:
        raise ToolError(f"{side}: config lacks integer {', '.join(missing)}")
    return meta


def skeleton(config, *, shapes_only=True):
    """A VisionTransformer with the given constructor config. shapes_only: leaves are
    jax.ShapeDtypeStruct (no random init), enough for `eqx.tree_deserialise_leaves`."""
    import equinox as eqx
    import jax
    from jax2onnx.plugins.examples.eqx.dino import VisionTransformer

    kwargs = {k: int(config[k]) for k in CONFIG_KEYS}
    if shapes_only:
        return eqx.filter_eval_shape(VisionTransformer, **kwargs, key=jax.random.PRNGKey(0))
    return VisionTransformer(**kwargs, key=jax.random.PRNGKey(0))


def load_model(path):
    """The VisionTransformer saved at `path` (with its sidecar `path.json`)."""
    return load_model_and_sidecar(path)[0]


def load_model_and_sidecar(path):
    import equinox as eqx

    meta = read_sidecar(path)
    try:
        model = eqx.tree_deserialise_leaves(str(path), skeleton(meta["config"]))
    except Exception as e:  # truncated file, config that does not fit the leaves, ...
        raise ToolError(f"{path} does not deserialise into a VisionTransformer with the config "
                        f"of {sidecar_path(path)} ({type(e).__name__}: {e})") from None
    return model, meta


# --- pytree paths of submodules ----------------------------------------------------------

def module_paths(model):
    """[(path, module)] for every eqx.Module below `model` (the root excluded), deepest first
    (post-order), with paths in Python attribute syntax: `blocks[3].attn.core.attn.query_proj`."""
    import equinox as eqx

    out = []

    def walk(node, prefix):
        if isinstance(node, eqx.Module):
            children = [(f.name, getattr(node, f.name, None)) for f in dataclasses.fields(node)]
            children = [(f"{prefix}.{name}" if prefix else name, v) for name, v in children]
        elif isinstance(node, (list, tuple)):
            children = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
        elif isinstance(node, dict):
            children = [(f"{prefix}[{k!r}]", v) for k, v in node.items()]
        else:
            return
        for path, child in children:
            walk(child, path)
            if isinstance(child, eqx.Module):
                out.append((path, child))

    walk(model, "")
    return out


_PATH_TOKEN = re.compile(r"\.?([A-Za-z_]\w*)|\[(\d+)\]|\[('[^']*')\]")


def path_getter(path):
    """tree -> the node at `path` (as produced by module_paths)."""
    steps = []
    for attr, index, key in _PATH_TOKEN.findall(path):
        if attr:
            steps.append(lambda t, a=attr: getattr(t, a))
        elif index:
            steps.append(lambda t, i=int(index): t[i])
        else:
            steps.append(lambda t, k=key[1:-1]: t[k])

    def get(tree):
        for step in steps:
            tree = step(tree)
        return tree

    return get
