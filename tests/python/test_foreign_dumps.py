"""Dumps dinodiff did not write: files from safetensors' own numpy API (no manifest, tensors stored
alphabetically). Expectations are computed here with numpy, in a stage order written out in this
file, never with dinodiff's output."""

import json
import re

import numpy as np
from safetensors.numpy import save_file

STEM = ["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
HEAD = ["norm", "cls", "storage", "patches", "pooled"]
ORDER = STEM + [f"blocks.{i}.{s}" for i in range(2) for s in BLOCK] + HEAD
ATOL = RTOL = 1e-4


def pair(drift_from):
    """A and B, B drifting by 1e-2 from `drift_from` on in execution order, plus two tensors
    without canonical names."""
    rng = np.random.default_rng(0)
    a = {n: rng.standard_normal((1, 3, 4)).astype(np.float32) for n in ORDER}
    a["zz_extra"] = rng.standard_normal(5).astype(np.float32)
    a["aa_extra"] = rng.standard_normal(5).astype(np.float32)
    b = {n: v.copy() for n, v in a.items()}
    for n in ORDER[ORDER.index(drift_from):]:
        b[n] = b[n] + np.float32(1e-2)
    return a, b


def first_over(a, b):
    for n in ORDER:
        x, y = a[n].astype(np.float64), b[n].astype(np.float64)
        if np.any(np.abs(x - y) > ATOL + RTOL * np.maximum(np.abs(x), np.abs(y))):
            return n
    return None


def test_stock_safetensors_files_are_read_in_canonical_stage_order(tmp_path, run):
    a, b = pair("blocks.1.mlp")
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    expected = first_over(a, b)
    assert expected == "blocks.1.mlp"
    # The file order is alphabetical: blocks.1.ls2 comes before blocks.1.mlp there.
    out = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--format", "json",
              expect=(1,))
    report = json.loads(out.stdout)
    names = [p["name"] for p in report["pairs"]]
    # Canonical names in stage order, then the others in file (here: alphabetical) order.
    assert names == ORDER + ["aa_extra", "zz_extra"]
    assert report["pairs"][report["first_over"]]["name"] == expected
    table = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", expect=(1,)).stdout
    assert "no manifest: canonical stage order, then file order" in table
    first = re.search(r"^first (?:and worst )?over tolerance: (\S+)$", table, re.M)
    assert first and first.group(1) == expected, table


def test_inspect_lists_a_stock_file_in_that_order(tmp_path, run):
    a, _ = pair("cls")
    save_file(a, str(tmp_path / "a.safetensors"))
    listed = json.loads(run("inspect", tmp_path / "a.safetensors", "--format", "json").stdout)
    assert [t["name"] for t in listed["tensors"]] == ORDER + ["aa_extra", "zz_extra"]


def write_raw(path, tensors):
    """A plain safetensors file written byte by byte (name -> (dtype name, shape, raw bytes)), for
    dtypes numpy has no name for in safetensors' own API."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


FP8 = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
       "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu"}


def test_every_fp8_value_equals_ml_dtypes_decoding(tmp_path, run):
    import ml_dtypes

    every_byte = np.arange(256, dtype=np.uint8)
    for name, ml_name in FP8.items():
        decoded = every_byte.view(getattr(ml_dtypes, ml_name)).astype(np.float32)
        write_raw(tmp_path / "q.safetensors", {"x": (name, [256], every_byte.tobytes())})
        save_file({"x": decoded}, str(tmp_path / "ref.safetensors"))
        report = json.loads(run("diff", tmp_path / "q.safetensors", tmp_path / "ref.safetensors",
                                "--format", "json", "--atol", "0", "--rtol", "0").stdout)
        m = report["pairs"][0]["metrics"]
        assert report["verdict"]["pass"], (name, m)
        assert (m["max_abs"], m["nonfinite_mismatches"]) == (0.0, 0), name
        assert m["nan_a"] == int(np.isnan(decoded).sum()), name
        assert m["inf_a"] == int(np.isinf(decoded).sum()), name
        stats = json.loads(run("inspect", tmp_path / "q.safetensors", "--format", "json").stdout)
        finite = decoded[np.isfinite(decoded)].astype(np.float64)
        s = stats["tensors"][0]["stats"]
        assert (s["min"], s["max"]) == (finite.min(), finite.max()), name
        assert abs(s["mean"] - finite.mean()) <= 1e-12 * max(1.0, abs(finite.mean())), name


def test_an_fp8_run_against_its_f32_reference_reports_the_quantization_error(tmp_path, run):
    import ml_dtypes

    rng = np.random.default_rng(1)
    ref = rng.standard_normal(1000).astype(np.float32)
    q = ref.astype(ml_dtypes.float8_e4m3fn)
    write_raw(tmp_path / "q.safetensors", {"x": ("F8_E4M3", [1000], q.tobytes())})
    save_file({"x": ref}, str(tmp_path / "ref.safetensors"))
    m = json.loads(run("diff", tmp_path / "q.safetensors", tmp_path / "ref.safetensors",
                       "--format", "json", expect=(1,)).stdout)["pairs"][0]["metrics"]
    delta = np.abs(q.astype(np.float64) - ref.astype(np.float64))
    assert m["max_abs"] == delta.max()
    assert abs(m["mean_abs"] - delta.mean()) <= 1e-12
    cosine = (q.astype(np.float64) @ ref.astype(np.float64)) / (
        np.linalg.norm(q.astype(np.float64)) * np.linalg.norm(ref.astype(np.float64)))
    assert abs(m["cosine"] - cosine) <= 1e-12


def test_fp8_written_by_safetensors_torch_decodes_as_ml_dtypes_says(tmp_path, run):
    """The way users write FP8 runs: torch float8 tensors through safetensors' torch API."""
    import ml_dtypes
    import torch
    from safetensors.torch import save_file as save_torch

    every_byte = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    for torch_dtype, ml_name in ((torch.float8_e4m3fn, "float8_e4m3fn"),
                                 (torch.float8_e5m2, "float8_e5m2")):
        save_torch({"x": every_byte.view(torch_dtype)}, str(tmp_path / "q.safetensors"))
        decoded = every_byte.numpy().view(getattr(ml_dtypes, ml_name)).astype(np.float32)
        save_file({"x": decoded}, str(tmp_path / "ref.safetensors"))
        report = json.loads(run("diff", tmp_path / "q.safetensors", tmp_path / "ref.safetensors",
                                "--format", "json", "--atol", "0", "--rtol", "0").stdout)
        assert report["pairs"][0]["dtype_a"].startswith("F8_"), report["pairs"][0]
        m = report["pairs"][0]["metrics"]
        assert report["verdict"]["pass"] and m["max_abs"] == 0.0, (ml_name, m)
