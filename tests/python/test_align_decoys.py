"""The aligner against look-alikes, and layouts reconciled exactly (issue 15).

A = `capture meta` of a tiny random checkpoint. B is built here with numpy from A's stages: a
"port" whose every stage is A's value with float32-sized noise (relative 1e-6), under names of
its own and without stage names; some stored in other layouts (q / k / v as [B, N, H, hd], the
patch embedding as NCHW, attn.sdpa split by heads, the MLP hidden transposed). Beside the true
partner of ten stages, B holds decoys, half of them before the partner in B's order and half
after it:
- `scaled`: the partner × 1.0001;
- `shifted`: the partner + 1e-4 · its rms;
- `rolled`: the partner rolled by one along its longest axis (the same values elsewhere: the
  same moments and quantiles);
- `swapped`: the partner's values transposed and put back into its shape (same shape, same
  multiset of values, other positions);
- `transposed` (stages whose partner is stored as is): the partner transposed, in the
  transposed shape: equal values under a permutation, a layout the contract ranks after "as is".
The truth is known by construction; the aligner must pick the true partner every time and leave
every decoy unpaired."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_fixtures import (TOOLS, apply_layout, canonical, describe, read_dump,  # noqa: E402
                            score)

D, DEPTH, HEADS, IMG = 64, 3, 2, 48
STAGES = canonical(DEPTH)
DECOYED = ["tokens", "blocks.0.norm1", "blocks.1.attn.q", "blocks.1.attn.v", "blocks.1.attn.sdpa",
           "blocks.1.mlp.hidden", "blocks.1.ls2", "blocks.2.output", "norm", "patches"]


def tool(script, *args):
    proc = subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"


@pytest.fixture(scope="module")
def meta(tmp_path_factory, dinodiff_bin):
    d = tmp_path_factory.mktemp("align_decoys")
    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", D, "--depth", DEPTH,
         "--heads", HEADS, "--seed", 9, "-o", d / "m.pth")
    sys.path.insert(0, str(TOOLS))
    from dumpfile import write_dump
    x = np.random.default_rng(4).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    proc = subprocess.run([str(dinodiff_bin), "capture", "meta", "--weights", d / "m.pth",
                           "--input", d / "in.st", "-o", d / "meta.st"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest, tensors = read_dump(d / "meta.st")
    return d, manifest, tensors


def native_name(stage):
    """The port's own name for a stage: `trunk/<i>/<part>` for block stages, `stem/...`."""
    if stage.startswith("blocks."):
        _, i, rest = stage.split(".", 2)
        return f"trunk/{i}/" + rest.replace(".", "_")
    return ("head/" if stage in ("norm", "cls", "storage", "patches", "pooled") else "stem/") \
        + stage.replace(".", "_")


def stored_layout(stage, a):
    """How the port stores a stage (its tensor) and the layout that reads it back (B -> A)."""
    if stage.endswith(("attn.q", "attn.k", "attn.v")):
        return np.transpose(a, (0, 2, 1, 3)), "permute(0,2,1,3)"  # [B, N, H, hd]
    if stage == "patch_embed":  # NCHW [B, D, h, w]
        _, hw, d = a.shape
        h = int(round(hw ** 0.5))
        return np.transpose(a, (0, 2, 1)).reshape(1, d, h, hw // h), f"reshape(1,{d},{hw})|permute(0,2,1)"
    if stage.endswith("attn.sdpa"):  # unbatched, heads split
        _, n, d = a.shape
        return a.reshape(n, HEADS, d // HEADS), f"reshape(1,{n},{d})"
    if stage.endswith("mlp.hidden"):  # [F, N]
        return np.transpose(a[0]), "permute(1,0)"
    return a, None


def noisy(a, rng):
    a64 = a.astype(np.float64)
    return (a64 * (1 + 1e-6 * rng.standard_normal(a.shape))).astype(a.dtype)


def decoys(b):
    rms = float(np.sqrt(np.mean(b.astype(np.float64) ** 2)))
    axis = int(np.argmax(b.shape))
    swapped = np.ascontiguousarray(np.swapaxes(b, -1, -2)).reshape(b.shape) if b.ndim >= 2 \
        else b[::-1].copy()
    out = {
        "scaled": (b.astype(np.float64) * 1.0001).astype(b.dtype),
        "shifted": (b.astype(np.float64) + 1e-4 * rms).astype(b.dtype),
        "rolled": np.roll(b, 1, axis=axis),
        "swapped": swapped,
    }
    return out


def write_port(path, manifest, tensors, *, exact=False, with_decoys=True, seed=0):
    """B: the port dump. Returns (truth {stage: name}, layouts {stage: layout}, decoy names)."""
    sys.path.insert(0, str(TOOLS))
    from dumpfile import write_dump
    rng = np.random.default_rng(seed)
    items, truth, layouts, decoy_names = [], {}, {}, []
    for k, stage in enumerate(manifest["order"]):
        a = tensors[stage]
        if stage == "input":
            items.append(("input", a, {"native": "pixel_values"}))
            continue
        stored, layout = stored_layout(stage, a if exact else noisy(a, rng))
        name = native_name(stage)
        truth[stage], layouts[stage] = name, layout
        entry = (name, np.ascontiguousarray(stored), {"native": name})
        extra = []
        if with_decoys and stage in DECOYED:
            made = decoys(stored)
            if layout is None and stored.ndim >= 2:
                made["transposed"] = np.ascontiguousarray(np.swapaxes(stored, -1, -2))
            for kind, value in made.items():
                extra.append((f"{name}~{kind}", value, {"native": f"{name}~{kind}"}))
                decoy_names.append(f"{name}~{kind}")
        before = DECOYED.index(stage) % 2 == 0 if stage in DECOYED else False
        items += (extra + [entry]) if before else ([entry] + extra)
    write_dump(path, items, source="other")
    return truth, layouts, decoy_names


def run_json(dinodiff_bin, *args):
    proc = subprocess.run([str(dinodiff_bin), *map(str, args), "--format", "json"],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), f"dinodiff {args}: {proc.stderr}"
    return json.loads(proc.stdout)


def test_decoys_are_what_they_claim(meta, tmp_path):
    """The fixture itself, by numpy: every decoy is within 1.0001 of its partner or holds its
    values elsewhere, and none equals it."""
    d, manifest, tensors = meta
    truth, _, decoy_names = write_port(tmp_path / "port.st", manifest, tensors)
    _, b = read_dump(tmp_path / "port.st")
    assert len(decoy_names) == 5 * len(DECOYED) - sum(
        1 for s in DECOYED if stored_layout(s, tensors[s])[1] is not None)
    for name in decoy_names:
        partner = b[name.split("~")[0]]
        decoy = b[name]
        assert decoy.size == partner.size
        assert not np.array_equal(decoy.reshape(partner.shape), partner), name
        if name.endswith(("~rolled", "~swapped", "~transposed")):
            np.testing.assert_array_equal(np.sort(decoy.ravel()), np.sort(partner.ravel()))


def test_the_true_partner_beats_every_decoy(meta, dinodiff_bin, tmp_path):
    d, manifest, tensors = meta
    port = tmp_path / "port.st"
    truth, _, decoy_names = write_port(port, manifest, tensors)
    report = run_json(dinodiff_bin, "align", d / "meta.st", port)
    pairs = {p["a"]: p["b"] for p in report["pairs"]}
    result = score(pairs, {s: [n] for s, n in truth.items()}, STAGES)
    print(describe("port with decoys", result))
    picked = {s: pairs.get(s) for s in DECOYED}
    assert picked == {s: truth[s] for s in DECOYED}, picked
    assert set(decoy_names) <= set(report["unpaired_b"])
    assert result["precision"] >= 0.98 and result["recall"] >= 0.98, describe("decoys", result)
    # The runner-up of a decoyed stage is reported, and scores below the partner.
    for p in report["pairs"]:
        if p["a"] in DECOYED and p.get("runner_up"):
            assert p["runner_up"]["score"] <= p["score"], p


def test_permuted_and_reshaped_partners_compare_exactly(meta, dinodiff_bin, tmp_path):
    """B holds A's exact values, some in other layouts: every pair is compared through its
    layout with max|Δ| 0, and the layout, applied with numpy, gives A's tensor exactly."""
    d, manifest, tensors = meta
    port = tmp_path / "exact.st"
    truth, layouts, _ = write_port(port, manifest, tensors, exact=True, with_decoys=False)
    _, b = read_dump(port)
    report = run_json(dinodiff_bin, "diff", d / "meta.st", port, "--align", "auto")
    by_a = {p["a"]: p for p in report["pairs"]}
    relaid = 0
    for stage, name in truth.items():
        p = by_a.get(stage)
        assert p is not None and p["b"] == name, (stage, p and p["b"])
        assert p["shapes"]["kind"] != "mismatch", p
        # `exact` in the JSON is the comparison mode (integers compared raw), false for floats:
        # equal floats are max|Δ| 0 and rms 0 with no non-finite mismatch.
        m = p["metrics"]
        assert (m["max_abs"], m["rms"], m["nonfinite_mismatches"]) == (0.0, 0.0, 0), p
        np.testing.assert_array_equal(apply_layout(b[name], p.get("layout"), tensors[stage].shape),
                                      tensors[stage], err_msg=stage)
        if layouts[stage] is not None:
            assert p.get("layout"), p
            relaid += 1
    assert relaid == 3 * DEPTH + 1 + DEPTH + DEPTH
    assert report["verdict"]["pass"] is True and report["verdict"]["shape_mismatches"] == 0
