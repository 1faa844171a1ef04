"""dinodiff's model vocabulary (canonical stage names, DINOv3 hub variants) for the Python tools,
read from the dinodiff binary (`dinodiff stages --format json`, `dinodiff variants --format json`)
so that no tool keeps a copy of it. Failures raise ToolError (exit 2 under `run_main`).

Where it comes from, first match wins:
- DINODIFF_STAGES_JSON / DINODIFF_VARIANTS_JSON: a file holding that JSON (a machine without
  dinodiff: write it on one that has it with `dinodiff stages --format json > stages.json`);
- the binary DINODIFF_BIN (an error when it is set but missing);
- the JSON a self-contained script written by `dinodiff tools NAME` carries (its module
  `dinodiff_bundle`: the vocabulary of the binary that wrote it);
- this checkout's target/release or target/debug build, else `dinodiff` on PATH.

Tools name stages by their stable `id` (`ls2`, `attn_qkv`, `rope_sin`; `dinodiff stages --format
json` lists them) and get the canonical names dumps hold from here.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES_SCHEMA = "dinodiff.stages/1"
VARIANTS_SCHEMA = "dinodiff.variants/1"


sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolerror import ToolError  # noqa: E402


def _binary():
    """DINODIFF_BIN when set (it must exist), else this checkout's build, else `dinodiff` on PATH:
    a tool run from a checkout reads the vocabulary of the binary built from it."""
    given = os.environ.get("DINODIFF_BIN")
    if given:
        if not Path(given).is_file():
            raise ToolError(f"DINODIFF_BIN={given} does not exist; build it (cargo build --release) "
                            "or point DINODIFF_BIN at a dinodiff binary")
        return given
    for built in (REPO / "target" / "release" / "dinodiff", REPO / "target" / "debug" / "dinodiff"):
        if built.is_file():
            return str(built)
    on_path = shutil.which("dinodiff")
    if on_path:
        return on_path
    raise ToolError(
        "cannot find the dinodiff binary for its stage and variant vocabulary: set DINODIFF_BIN, "
        "build this checkout (cargo build --release), put dinodiff on PATH, or give the JSON "
        "files with DINODIFF_STAGES_JSON / DINODIFF_VARIANTS_JSON")


def _bundled(command):
    """The vocabulary carried by a script that `dinodiff tools` wrote, else None."""
    try:
        import dinodiff_bundle
    except ImportError:
        return None
    return dinodiff_bundle.VOCABULARY.get(command)


def _load(command, env_var, schema):
    path = os.environ.get(env_var)
    bundled = None if os.environ.get("DINODIFF_BIN") else _bundled(command)
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ToolError(f"{env_var}={path}: {e}") from None
        where = path
    elif bundled is not None:
        data = bundled
        where = f"the vocabulary `dinodiff tools` wrote into {sys.argv[0]}"
    else:
        binary = _binary()
        proc = subprocess.run([binary, command, "--format", "json"], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise ToolError(f"`{binary} {command} --format json` failed: {proc.stderr.strip()}")
        data = json.loads(proc.stdout)
        where = binary
    if data.get("schema") != schema:
        raise ToolError(f"{where}: the {command} vocabulary has schema "
                              f"{data.get('schema')!r}, this tool reads {schema!r}")
    return data


@functools.lru_cache(maxsize=None)
def _stages():
    data = _load("stages", "DINODIFF_STAGES_JSON", STAGES_SCHEMA)
    return data, {s["id"]: s for s in data["stages"]}


def stage(stage_id, block=None):
    """The canonical name of the stage with this id (`block` for the per-block stages)."""
    data, by_id = _stages()
    try:
        s = by_id[stage_id]
    except KeyError:
        raise ToolError(f"no stage with id {stage_id!r} in dinodiff's vocabulary") from None
    if (s["group"] == "block") != (block is not None):
        raise ToolError(f"stage {stage_id!r} is a {s['group']} stage: "
                              f"{'give' if block is None else 'do not give'} a block index")
    if block is None:
        return s["name"]
    return data["block_name"].replace("{i}", str(block)).replace("{name}", s["name"])


def stage_names(depth):
    """Every canonical name of a model with `depth` blocks, in execution order."""
    data, _ = _stages()
    names = []
    for group in ("stem", "block", "head"):
        kinds = [s for s in data["stages"] if s["group"] == group]
        blocks = range(depth) if group == "block" else [None]
        names += [stage(s["id"], b) for b in blocks for s in kinds]
    return names


@functools.lru_cache(maxsize=None)
def variants():
    """name -> the variant's fields (embed_dim, depth, heads, ffn, ffn_ratio, ffn_align, ...)."""
    data = _load("variants", "DINODIFF_VARIANTS_JSON", VARIANTS_SCHEMA)
    return {v["name"]: v for v in data["variants"]}


def variant(name):
    """A variant by its short, hub (`dinov3_vits16`) or full (`..._pretrain_lvd1689m`) name."""
    short = name.removeprefix("dinov3_").split("_pretrain")[0]
    known = variants()
    if short not in known:
        raise ToolError(f"unknown DINOv3 variant {name!r}; known: {', '.join(known)}")
    return known[short]


def ffn_hidden(ffn, ratio, align, dim):
    """The hub's feed-forward width (the formula `dinodiff variants` documents)."""
    if ffn == "mlp":
        return int(ratio * dim)
    return -(-int(2 * ratio * dim / 3) // align) * align
