"""`dinodiff align` on an Equinox recording of a model with module names and layouts of its own
(align_eqx.py: unbatched, q / v as [N, H, hd], kᵀ as [H, hd, N], the patch embedding as CHW, the
RoPE tables and patch tokens as [h, w, ·], plus every intermediate the model computes on the way),
recorded by the model's own code in execution order and written with dinodiff's Python dump
writer, without stage names. A = `capture meta` of the same checkpoint. The truth is known by
construction (align_eqx.CANONICAL), confirmed with numpy against A (within 1e-5); a pair counts
as correct when the aligner picks that array or another recorded array holding exactly the same
values (the qkv slice reshaped into heads is v's own values, for instance)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_fixtures import (TOOLS, apply_layout, canonical, describe, read_dump, score,  # noqa: E402
                            value_partners)

D, DEPTH, HEADS, IMG = 64, 3, 2, 48
STAGES = canonical(DEPTH)


@pytest.fixture(scope="module")
def recording(tmp_path_factory, dinodiff_bin):
    import os
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    import align_eqx
    sys.path.insert(0, str(TOOLS))
    from dumpfile import write_dump
    d = tmp_path_factory.mktemp("align_eqx")
    proc = subprocess.run([sys.executable, str(TOOLS / "make_meta_checkpoint.py"), "--variant",
                           "vits16", "--embed-dim", str(D), "--depth", str(DEPTH), "--heads",
                           str(HEADS), "--seed", "13", "-o", str(d / "m.pth")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(8).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    proc = subprocess.run([str(dinodiff_bin), "capture", "meta", "--weights", d / "m.pth",
                           "--input", d / "in.st", "-o", d / "meta.st"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sd = {k: v.numpy() for k, v in torch.load(d / "m.pth", weights_only=True).items()}
    recorded = align_eqx.record(align_eqx.build(sd), x[0])
    write_dump(d / "eqx.st", [("input", x, {"native": "image"})]
               + [(name, value, {"native": name}) for name, value in recorded], source="other")
    _, meta = read_dump(d / "meta.st")
    _, b = read_dump(d / "eqx.st")
    table = align_eqx.canonical_map(DEPTH, IMG // 16, IMG // 16)
    for stage, (name, to_canonical) in table.items():
        np.testing.assert_allclose(to_canonical(b[name]), meta[stage], atol=1e-5, rtol=1e-5,
                                   err_msg=f"{stage} = {name}")
    truth = value_partners({s: b[n] for s, (n, _) in table.items()}, b, atol=0.0)
    return d, meta, b, truth, {s: n for s, (n, _) in table.items()}


def test_every_stage_has_a_partner(recording):
    _, meta, b, truth, strict = recording
    assert set(strict) == set(STAGES) - {"input"}
    assert all(truth[s] for s in strict)
    # the model's other intermediates: per layer the two norms' statistics, q before RoPE,
    # logits, probabilities, the MLP pre-activation; the final norm's statistics
    assert len(b) - len(strict) - 1 == 8 * DEPTH + 2


def test_align_an_equinox_recording(recording, dinodiff_bin):
    d, meta, b, truth, strict = recording
    proc = subprocess.run([str(dinodiff_bin), "align", d / "meta.st", d / "eqx.st", "--format",
                           "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    pairs = {p["a"]: p["b"] for p in report["pairs"]}
    result = score(pairs, truth, STAGES, strict)
    print(describe("equinox recording", result))
    for p in report["pairs"]:
        if p["a"] in meta and p["max_abs"] is not None:
            got = apply_layout(b[p["b"]], p.get("layout"), meta[p["a"]].shape)
            want = np.abs(meta[p["a"]].astype(np.float64) - got.astype(np.float64)).max()
            assert p["max_abs"] == pytest.approx(want, rel=1e-9, abs=1e-15), p
    assert result["precision"] >= 0.98 and result["recall"] >= 0.98, describe("eqx", result)
    # The diff through that alignment passes: the recording is Meta's computation.
    proc = subprocess.run([str(dinodiff_bin), "diff", d / "meta.st", d / "eqx.st", "--align",
                           "auto", "--format", "json"], capture_output=True, text=True)
    diff = json.loads(proc.stdout)
    assert proc.returncode == 0 and diff["verdict"]["pass"] is True, diff["verdict"]
    assert diff["verdict"]["coverage"]["fraction"] >= 0.98
