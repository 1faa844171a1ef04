"""Shared helpers of the Equinox tools (meta_to_eqx.py, export_onnx.py, eqx_capture.py).

The model is jax2onnx's clean-room Equinox DINOv3 example,
`jax2onnx.plugins.examples.eqx.dino.VisionTransformer`. A saved model is two files:

    model.eqx       `eqx.tree_serialise_leaves` of the mapped model (every leaf, f32 arrays)
    model.eqx.json  the sidecar: {"format": "dinodiff-eqx-model", "version": 1, "kind": KIND,
                    "config": {img_size, patch_size, embed_dim, depth, num_heads,
                    num_storage_tokens}, "source": {checkpoint path/size/sha256},
                    "rope_periods": {...}, "fault_injection": [...], "frameworks": {...}, ...}

`load_model(path)` rebuilds the skeleton from the sidecar's config (shapes only, no random
init: `eqx.filter_eval_shape`) and deserialises the leaves into it. A bare `model.eqx` (no
sidecar: what jax2onnx's own scripts write with `eqx.tree_serialise_leaves`) loads with a config
given as `--config img_size=224,patch_size=16,embed_dim=384,depth=12,num_heads=6,
num_storage_tokens=4` (`parse_config`) or `--variant vits16` (`variant_config`: the variant's
dimensions from `dinodiff variants`, the image size from the input); `dinodiff capture eqx
--model` infers it from the file and passes `--config`.
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


def parse_config(text):
    """`img_size=224,patch_size=16,...` -> the constructor config (every key of CONFIG_KEYS, once,
    a positive integer)."""
    config = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in CONFIG_KEYS:
            raise ToolError(f"--config {text!r}: {item!r} is not KEY=VALUE with KEY one of "
                            f"{', '.join(CONFIG_KEYS)}")
        if key in config:
            raise ToolError(f"--config {text!r}: {key} is given twice")
        try:
            config[key] = int(value)
        except ValueError:
            raise ToolError(f"--config {text!r}: {key}={value} is not an integer") from None
        if config[key] < (0 if key == "num_storage_tokens" else 1):
            raise ToolError(f"--config {text!r}: {key}={value} is out of range")
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ToolError(f"--config {text!r} lacks {', '.join(missing)} (a bare .eqx needs all "
                        f"of {', '.join(CONFIG_KEYS)}; `dinodiff capture eqx --model` infers them)")
    return config


def variant_config(name, img_size):
    """The constructor config of a DINOv3 hub variant (`dinodiff variants`: `vits16`,
    `dinov3_vits16`, `dinov3_vits16_pretrain_lvd1689m`) at this image size."""
    from vocabulary import variant

    v = variant(name)
    if v["ffn"] != "mlp":
        raise ToolError(f"--variant {name}: {v['name']} has a {v['ffn']} feed-forward; "
                        "jax2onnx's Equinox DINOv3 has only the GELU Mlp")
    return {"img_size": int(img_size), "patch_size": v["patch_size"], "embed_dim": v["embed_dim"],
            "depth": v["depth"], "num_heads": v["heads"],
            "num_storage_tokens": v["storage_tokens"]}


def model_meta(path, config=None):
    """The sidecar of `path` (its config must equal `config` when both are given), or, for a bare
    file, a sidecar-like record of `config`."""
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist (make it with tools/meta_to_eqx.py)")
    if not sidecar_path(path).is_file() and config is not None:
        return {"format": SIDECAR_FORMAT, "version": 1, "kind": KIND, "config": dict(config),
                "config_from": "given (no sidecar)", "source": None, "fault_injection": []}
    meta = read_sidecar(path)
    if config is not None and {k: meta["config"][k] for k in CONFIG_KEYS} != dict(config):
        raise ToolError(f"the config given ({config_text(config)}) is not the one of "
                        f"{sidecar_path(path)} ({config_text(meta['config'])})")
    meta["config_from"] = "sidecar"
    return meta


def config_text(config):
    return ",".join(f"{k}={config[k]}" for k in CONFIG_KEYS)


def read_sidecar(path):
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"{path} does not exist (make it with tools/meta_to_eqx.py)")
    side = sidecar_path(path)
    if not side.is_file():
        raise ToolError(f"{path} has no sidecar {side}, which holds the model's constructor "
                        "config: give it as --config img_size=...,patch_size=...,embed_dim=...,"
                        "depth=...,num_heads=...,num_storage_tokens=... or --variant NAME "
                        "(`dinodiff capture eqx --model` infers it from the file)")
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


def load_model(path, config=None):
    """The VisionTransformer saved at `path` (with its sidecar `path.json`, or `config`)."""
    return load_model_and_sidecar(path, config)[0]


def load_model_and_sidecar(path, config=None):
    """(model, sidecar) of `path`; a bare file (no sidecar) needs `config` (see model_meta)."""
    import equinox as eqx

    meta = model_meta(path, config)
    c = meta["config"]
    where = "the config of " + (str(sidecar_path(path)) if meta["config_from"] == "sidecar"
                                else "--config")
    try:
        model = eqx.tree_deserialise_leaves(str(path), skeleton(c))
    except Exception as e:  # truncated file, config that does not fit the leaves, ...
        raise ToolError(f"{path} does not deserialise into a VisionTransformer with {where} "
                        f"({config_text(c)}): {type(e).__name__}: {e}") from None
    # The patch count is a leaf of the file, which deserialisation takes over the skeleton's.
    patches = (c["img_size"] // c["patch_size"]) ** 2
    if int(model.patch_embed.num_patches) != patches:
        raise ToolError(f"{path} was saved for {int(model.patch_embed.num_patches)} patches, not "
                        f"the {patches} of img_size={c['img_size']} with patch_size="
                        f"{c['patch_size']} ({where})")
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
