"""diff's metrics against numpy on random tensors of every float dtype (f16, bf16, f32, f64),
integers and bools, with NaN and Inf planted on either side. The expectations are computed here,
with numpy, from the definitions in docs/alignment.md, never from dinodiff's own output."""

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

ATOL, RTOL = 1e-3, 1e-2


def expected(a: np.ndarray, b: np.ndarray) -> dict:
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    both = np.isfinite(x) & np.isfinite(y)
    same_nonfinite = (x == y) | (np.isnan(x) & np.isnan(y))
    xs, ys = np.where(both, x, 0.0), np.where(both, y, 0.0)
    d = np.abs(xs - ys)
    scale = np.maximum(np.abs(xs), np.abs(ys))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, d / scale, 0.0)
    nf = both.sum()
    out = {
        "max_abs": d.max() if d.size else 0.0,
        "argmax": int(np.argmax(d)) if nf else None,
        "mean_abs": d.sum() / nf if nf else 0.0,
        "rms": np.sqrt((d * d).sum() / nf) if nf else 0.0,
        "max_rel": rel.max() if rel.size else 0.0,
        "nan_a": int(np.isnan(x).sum()),
        "nan_b": int(np.isnan(y).sum()),
        "inf_a": int(np.isinf(x).sum()),
        "inf_b": int(np.isinf(y).sum()),
        "nonfinite_mismatches": int((~both & ~same_nonfinite).sum()),
        "over_tolerance": int((d > ATOL + RTOL * scale).sum()),
    }
    na, nb = np.sqrt((xs * xs).sum()), np.sqrt((ys * ys).sum())
    out["cosine"] = (xs * ys).sum() / (na * nb) if na * nb > 0 else None
    return out


def make_pair(rng, dtype, shape, plant_nonfinite):
    a = rng.standard_normal(shape).astype(np.float32)
    b = a + rng.standard_normal(shape).astype(np.float32) * 1e-2
    if plant_nonfinite:
        fa, fb = a.reshape(-1), b.reshape(-1)
        fa[3] = np.nan  # NaN vs number: mismatch
        fa[5] = fb[5] = np.nan  # NaN vs NaN: equal
        fa[7] = np.inf  # Inf vs number: mismatch
        fa[11] = fb[11] = -np.inf  # same Inf: equal
        fb[13] = np.inf  # number vs Inf: mismatch
        fa[17], fb[17] = np.inf, -np.inf  # opposite Infs: mismatch
    return a.astype(dtype), b.astype(dtype)


FLOATS = {
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "f32": np.float32,
    "f64": np.float64,
}


@pytest.mark.parametrize("dtype", list(FLOATS))
@pytest.mark.parametrize("nonfinite", [False, True])
def test_float_metrics_match_numpy(tmp_path, diff_json, dtype, nonfinite):
    rng = np.random.default_rng(hash((dtype, nonfinite)) % 2**32)
    # Sizes across the parallel chunk boundary (8 Ki elements) and a tiny one.
    tensors = {
        f"t{i}": make_pair(rng, FLOATS[dtype], shape, nonfinite)
        for i, shape in enumerate([(3, 7), (1, 201, 384), (40_000,)])
    }
    save_file({k: v[0] for k, v in tensors.items()}, tmp_path / "a.safetensors")
    save_file({k: v[1] for k, v in tensors.items()}, tmp_path / "b.safetensors")
    report = diff_json(
        tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--atol", ATOL, "--rtol", RTOL
    )
    assert {p["name"] for p in report["pairs"]} == set(tensors)
    for p in report["pairs"]:
        a, b = tensors[p["name"]]
        want, got = expected(a, b), p["metrics"]
        for key in ["nan_a", "nan_b", "inf_a", "inf_b", "nonfinite_mismatches", "argmax"]:
            assert got[key] == want[key], (p["name"], key, got[key], want[key])
        # over-tolerance counts are exact but for positions within 1 ulp of the threshold.
        assert abs(got["over_tolerance"] - want["over_tolerance"]) <= 1
        for key in ["max_abs", "mean_abs", "rms", "cosine"]:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-300), (p["name"], key)
        assert got["max_rel"] == pytest.approx(want["max_rel"], rel=1e-12)
        flat = int(want["argmax"])
        assert got["a_at_max"] == pytest.approx(float(a.ravel()[flat]), rel=0)
        assert got["b_at_max"] == pytest.approx(float(b.ravel()[flat]), rel=0)
        assert p["argmax_index"] == list(np.unravel_index(flat, a.shape))
        assert p["fails"] == (want["over_tolerance"] > 0 or want["nonfinite_mismatches"] > 0)
    assert report["verdict"]["pass"] is False


def test_mixed_float_dtypes_compare_by_value(tmp_path, diff_json):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5, 9)).astype(np.float32)
    b = a.astype(np.float16)
    save_file({"x": a}, tmp_path / "a.safetensors")
    save_file({"x": b}, tmp_path / "b.safetensors")
    got = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors")["pairs"][0]
    want = expected(a, b)
    assert got["dtype_a"] == "F32" and got["dtype_b"] == "F16"
    assert got["metrics"]["max_abs"] == pytest.approx(want["max_abs"], rel=1e-12)


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.bool_]
)
def test_integers_and_bools_compare_exactly(tmp_path, diff_json, dtype):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2 if dtype is np.bool_ else 100, size=(1000,)).astype(dtype)
    b = a.copy()
    flip = [10, 500, 999]
    b[flip] = (~a[flip]) if dtype is np.bool_ else a[flip] + 1
    save_file({"same": a, "differs": b}, tmp_path / "b.safetensors")
    save_file({"same": a, "differs": a}, tmp_path / "a.safetensors")
    # A huge tolerance must not excuse an integer difference.
    report = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--atol", "1e9")
    by_name = {p["name"]: p for p in report["pairs"]}
    assert by_name["same"]["fails"] is False
    assert by_name["differs"]["fails"] is True
    assert by_name["differs"]["metrics"]["over_tolerance"] == len(flip)
    assert by_name["differs"]["metrics"]["argmax"] in flip
    assert by_name["differs"]["metrics"]["exact"] is True


def test_large_int64_differences_are_not_lost_to_f64_rounding(tmp_path, diff_json):
    a = np.array([2**62, 5], dtype=np.int64)
    b = np.array([2**62 + 1, 5], dtype=np.int64)
    save_file({"x": a}, tmp_path / "a.safetensors")
    save_file({"x": b}, tmp_path / "b.safetensors")
    got = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors")["pairs"][0]
    assert got["fails"] is True, "2**62 vs 2**62+1 rounds to the same f64 but must differ"


@pytest.mark.parametrize("dtype", list(FLOATS))
def test_inspect_statistics_match_numpy(tmp_path, run, dtype):
    import json

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3, 40_000)) * 3 + 100).astype(FLOATS[dtype])
    x.reshape(-1)[[7, 9000]] = np.nan
    x.reshape(-1)[12345] = -np.inf
    save_file({"x": x}, tmp_path / "x.safetensors")
    got = json.loads(run("inspect", tmp_path / "x.safetensors", "--format", "json").stdout)
    stats = got["tensors"][0]["stats"]
    v = x.astype(np.float64).ravel()
    finite = v[np.isfinite(v)]
    assert (stats["nan"], stats["inf"]) == (2, 1)
    assert stats["min"] == finite.min() and stats["max"] == finite.max()
    assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(finite.std(), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.bool_])
def test_integers_against_floats_compare_by_value_with_the_tolerance(tmp_path, diff_json, dtype):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2 if dtype is np.bool_ else 100, size=(1000,)).astype(dtype)
    close = a.astype(np.float32) + np.float32(5e-5)
    far = close.copy()
    far[[3, 700]] += np.float32(5.0)
    save_file({"close": a, "far": a}, tmp_path / "a.safetensors")
    save_file({"close": close, "far": far}, tmp_path / "b.safetensors")
    report = diff_json(tmp_path / "a.safetensors", tmp_path / "b.safetensors",
                       "--atol", str(ATOL), "--rtol", str(RTOL))
    by_name = {p["name"]: p for p in report["pairs"]}
    for name, b in (("close", close), ("far", far)):
        want = expected(a.astype(np.float64), b.astype(np.float64))
        got = by_name[name]["metrics"]
        assert got["exact"] is False
        assert got["max_abs"] == pytest.approx(want["max_abs"], rel=1e-12)
        assert got["over_tolerance"] == want["over_tolerance"]
    assert by_name["close"]["fails"] is False and by_name["far"]["fails"] is True
