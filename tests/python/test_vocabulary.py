"""The model vocabulary has one source, the binary: `dinodiff stages` / `dinodiff variants` list it,
docs/stages.md agrees with it, and the Python tools read it (tools/vocabulary.py) instead of
keeping copies: rename a stage or change a variant in the JSON alone and the tools follow."""

import json
import os
import pathlib
import re
import subprocess
import sys

from safetensors import safe_open

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
TINY = ["--embed-dim", "64", "--depth", "2", "--heads", "2", "--seed", "1"]


def vocabulary(run, what):
    return json.loads(run(what, "--format", "json").stdout)


def tool(script, *args, env=None, expect=0):
    proc = subprocess.run([sys.executable, TOOLS / script, *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    assert proc.returncode == expect, proc.stderr
    return proc


def test_stages_list_every_canonical_stage_with_its_shape_as_the_docs_say(run):
    listed = vocabulary(run, "stages")
    assert listed["schema"] == "dinodiff.stages/1"
    ours = {s["name"]: "[" + ", ".join(s["shape"]) + "]" for s in listed["stages"]}
    # docs/stages.md tables: | `name` | [shape] | what |
    doc = (REPO / "docs" / "stages.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z0-9_.]+)` \| (\[[^\]]*\]) \|", doc, re.M))
    assert documented == ours
    assert [s["name"] for s in listed["stages"] if s["headline"]] == ["cls", "pooled"]
    symbols = {d["symbol"] for d in listed["dims"]}
    assert all(set(s["shape"]) <= symbols for s in listed["stages"])


def test_variants_match_metas_hub_table(run):
    listed = {v["name"]: v for v in vocabulary(run, "variants")["variants"]}
    # (D, depth, heads, hidden, qkv bias) from Meta's hubconf / dinov3-facts.
    hub = {"vits16": (384, 12, 6, 1536, True), "vits16plus": (384, 12, 6, 1536, True),
           "vitb16": (768, 12, 12, 3072, True), "vitl16": (1024, 24, 16, 4096, True),
           "vitl16plus": (1024, 24, 16, 4096, True), "vith16plus": (1280, 32, 20, 5120, True),
           "vit7b16": (4096, 40, 32, 8192, False)}
    got = {n: (v["embed_dim"], v["depth"], v["heads"], v["ffn_hidden"], v["qkv_bias"])
           for n, v in listed.items()}
    assert got == hub


def test_a_stage_renamed_in_the_vocabulary_alone_is_what_the_timm_tool_writes(run, tmp_path,
                                                                             dinodiff_bin):
    listed = vocabulary(run, "stages")
    for s in listed["stages"]:
        if s["id"] == "ls2":
            s["name"] = "layerscale2"
    renamed = tmp_path / "stages.json"
    renamed.write_text(json.dumps(listed))
    env = {"DINODIFF_STAGES_JSON": str(renamed), "DINODIFF_BIN": str(dinodiff_bin)}
    ckpt = tmp_path / "tiny.pth"
    tool("make_meta_checkpoint.py", "--variant", "vits16", *TINY, "-o", ckpt)
    # A 32 x 32 input: a 2 x 2 patch grid.
    run("synth", "--image-size", "32", "-o", tmp_path / "synth.st")
    tool("timm_capture.py", "--weights", ckpt, "--input", tmp_path / "synth.st",
         "-o", tmp_path / "timm.st", env=env)
    with safe_open(str(tmp_path / "timm.st"), framework="numpy") as f:
        names = set(f.keys())
    assert {"blocks.0.layerscale2", "blocks.1.layerscale2"} <= names
    assert not any(n.endswith(".ls2") for n in names)
    assert {"blocks.1.ls1", "blocks.1.mlp", "pooled"} <= names


def test_a_variant_changed_in_the_vocabulary_alone_is_what_the_checkpoint_tool_makes(run,
                                                                                      tmp_path):
    listed = vocabulary(run, "variants")
    for v in listed["variants"]:
        if v["name"] == "vits16":
            v["depth"] = 3
    changed = tmp_path / "variants.json"
    changed.write_text(json.dumps(listed))
    ckpt = tmp_path / "v.pth"
    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", "64", "--heads", "2",
         "-o", ckpt, env={"DINODIFF_VARIANTS_JSON": str(changed)})
    import torch

    sd = torch.load(ckpt, weights_only=True)
    assert "blocks.2.ls2.gamma" in sd and "blocks.3.ls2.gamma" not in sd


def test_an_unreadable_vocabulary_is_an_error_that_says_where(tmp_path):
    missing = tmp_path / "nope.json"
    proc = tool("make_meta_checkpoint.py", "--variant", "vits16", "-o", tmp_path / "x.pth",
                env={"DINODIFF_VARIANTS_JSON": str(missing)}, expect=2)
    assert f"DINODIFF_VARIANTS_JSON={missing}" in proc.stderr
    assert not (tmp_path / "x.pth").exists()
