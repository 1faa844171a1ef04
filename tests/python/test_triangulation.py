"""The seed's workflow end to end on a tiny DINOv3 (D 64, 8 blocks, 2 heads, 32 x 32 input):
a random Meta-format checkpoint, captured by `dinodiff capture meta`; mapped onto the Equinox
example, recorded by tools/eqx_capture.py and imported by `dinodiff capture eqx`; exported with
jax2onnx and captured by `dinodiff capture onnx`; then `dinodiff diff meta.st eqx.st onnx.st`.

The numbers asserted come from the three frameworks (libtorch, JAX, ONNX Runtime), checked here
with numpy; the faults are injected in the Equinox model and in the ONNX file, and the
triangulation must name where they are. Bad recordings for `capture eqx` pin exact errors."""

import json
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import read_dump, write_dump  # noqa: E402

D, DEPTH, HEADS, IMG = 64, 8, 2, 32


def tool(script, *args):
    proc = subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"
    return proc


def canonical(depth):
    from importlib import import_module  # noqa: F401
    block = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
             "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]
    return (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
            + [f"blocks.{i}.{s}" for i in range(depth) for s in block]
            + ["norm", "cls", "storage", "patches", "pooled"])


@pytest.fixture(scope="module")
def tri(tmp_path_factory, dinodiff_bin):
    d = tmp_path_factory.mktemp("tri")
    b = str(dinodiff_bin)

    def dd(*args):
        proc = subprocess.run([b, *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, f"dinodiff {args} failed:\n{proc.stderr}"

    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", D, "--depth", DEPTH,
         "--heads", HEADS, "--seed", 3, "-o", d / "m.pth")
    x = np.random.default_rng(11).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    dd("capture", "meta", "--weights", d / "m.pth", "--input", d / "in.st", "-o", d / "meta.st")
    for name, extra in [("good", []), ("ls2", ["--scale-ls2", 5, 1.01])]:
        tool("meta_to_eqx.py", "--weights", d / "m.pth", "--img-size", IMG, "-o",
             d / f"{name}.eqx", *extra)
        tool("eqx_capture.py", "--model", d / f"{name}.eqx", "--input", d / "in.st", "-o",
             d / f"{name}.npz")
        dd("capture", "eqx", "--npz", d / f"{name}.npz", "--input", d / "in.st", "-o",
           d / f"eqx-{name}.st")
        tool("export_onnx.py", "--model", d / f"{name}.eqx", "-o", d / f"{name}.onnx")
        dd("capture", "onnx", "--model", d / f"{name}.onnx", "--input", d / "in.st", "-o",
           d / f"onnx-{name}.st")
    tool("export_onnx.py", "--model", d / "good.eqx", "-o", d / "b7.onnx",
         "--perturb-initializer-block", 7)
    dd("capture", "onnx", "--model", d / "b7.onnx", "--input", d / "in.st", "-o",
       d / "onnx-b7.st")
    return d


def triangle(run, d, eqx, onnx, fmt="json"):
    proc = run("diff", d / "meta.st", d / eqx, d / onnx, "--format", fmt, expect=(0, 1))
    return proc


def test_every_canonical_stage_in_all_three_dumps(tri):
    want = set(canonical(DEPTH))
    for dump in ["meta.st", "eqx-good.st", "onnx-good.st"]:
        m, t = read_dump(tri / dump)
        stages = {n for n in m["order"] if m["tensors"][n].get("stage")}
        assert want <= stages, (dump, sorted(want - stages))
        assert all(np.isfinite(t[n]).all() for n in want)


def test_clean_triangle(tri, run):
    proc = triangle(run, tri, "eqx-good.st", "onnx-good.st")
    assert proc.returncode == 0
    r = json.loads(proc.stdout)
    assert r["schema"] == "dinodiff.triangle/1" and r["pass"] is True
    assert r["diagnosis"]["finding"] == "all_agree"
    assert [s["label"] for s in r["sides"]] == ["Meta ⇔ ONNX", "Meta ⇔ Equinox", "Equinox ⇔ ONNX"]
    dumps = {"meta": read_dump(tri / "meta.st")[1], "eqx": read_dump(tri / "eqx-good.st")[1],
             "onnx": read_dump(tri / "onnx-good.st")[1]}
    for side, (a, b) in zip(r["sides"], [("meta", "onnx"), ("meta", "eqx"), ("eqx", "onnx")]):
        rep = side["report"]
        assert rep["verdict"]["pass"] and rep["verdict"]["compared"] >= len(canonical(DEPTH))
        for h in rep["headline"]:
            # Independent check of the reported numbers with numpy (f64); an ONNX side's
            # headline is its deployed session's (deployed/<stage>).
            assert h["a_deployed"] is False and h["b_deployed"] is (b == "onnx")
            x = dumps[a][h["name"]].astype(np.float64).ravel()
            y = dumps[b][("deployed/" if b == "onnx" else "") + h["name"]]
            y = y.astype(np.float64).ravel()
            cos = x @ y / np.linalg.norm(x) / np.linalg.norm(y)
            assert h["cosine"] == pytest.approx(cos, abs=1e-9) and cos >= 0.999999
            assert h["max_abs"] == pytest.approx(np.abs(x - y).max(), rel=1e-6)
            assert h["max_abs"] <= 1e-4
        assert not any(p["fails"] for p in rep["pairs"])
    assert {h["name"] for s in r["sides"] for h in s["report"]["headline"]} == {"cls", "pooled"}


def ort_outputs(model, x, level):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if level is not None:
        options.graph_optimization_level = level
    session = ort.InferenceSession(str(model), options)
    return session.run(None, {session.get_inputs()[0].name: x})


def test_onnx_headline_is_the_deployed_session(tri, run):
    """The Meta ⇔ ONNX headline is what a default onnxruntime Python session gives, and the
    optimizer effect is that session against the graph as exported (optimizations disabled)."""
    import onnxruntime as ort
    x = read_dump(tri / "in.st")[1]["input"]
    deployed = ort_outputs(tri / "good.onnx", x, None)[0].astype(np.float64)
    graph = ort_outputs(tri / "good.onnx", x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    meta = read_dump(tri / "meta.st")[1]
    # The jax2onnx export returns concat(cls, patches) over tokens.
    cls, patches = deployed[:, 0, :], deployed[:, 1:, :]
    pooled = patches.mean(axis=1).astype(np.float32).astype(np.float64)
    r = json.loads(run("diff", tri / "meta.st", tri / "onnx-good.st", "--format", "json").stdout)
    head = {h["name"]: h for h in r["headline"]}
    assert head["cls"]["b_deployed"] and head["pooled"]["b_deployed"]
    assert abs(head["cls"]["max_abs"] - np.abs(cls - meta["cls"]).max()) <= 1e-12
    assert abs(head["pooled"]["max_abs"] - np.abs(pooled - meta["pooled"]).max()) <= 1e-12
    effect = r["b"]["optimizer_effect"]
    want = np.abs(deployed - graph.astype(np.float64)).max()
    assert effect["deployed_opt_level"] == "all" and effect["graph_opt_level"] == "disable"
    assert abs(effect["max_abs"] - want) <= 1e-12 and effect["over_tolerance"] is False
    manifest = read_dump(tri / "onnx-good.st")[0]
    assert manifest["onnx"]["optimizer_effect"] == effect
    assert manifest["onnx"]["deployed_headline"] == ["cls", "pooled"]
    table = run("diff", tri / "meta.st", tri / "onnx-good.st").stdout
    assert "; headline: deployed session (all), optimizer effect " in table


def test_optimizer_effect_over_tolerance_is_a_finding(tri, run, tmp_path):
    """A dump whose manifest records an optimizer effect over tolerance: diff and the triangle
    say it as a finding (the capture's judgment is unit-tested in capture/onnx/deployed.rs)."""
    from safetensors.numpy import save_file
    manifest, arrays = read_dump(tri / "onnx-good.st")
    manifest["onnx"]["optimizer_effect"].update(max_abs=0.25, over_tolerance=True)
    save_file(arrays, str(tmp_path / "onnx.st"),
              metadata={"dinodiff.format_version": "1", "dinodiff.manifest": json.dumps(manifest)})
    out = run("diff", tri / "meta.st", tmp_path / "onnx.st").stdout
    assert ("finding: ONNX Runtime's graph optimizations (all) change the outputs of "
            f"{tmp_path / 'onnx.st'} by max|Δ| 2.50e-01 against the graph as exported "
            "(disable), over the default tolerance") in out
    tri_out = run("diff", tri / "meta.st", tri / "eqx-good.st", tmp_path / "onnx.st").stdout
    assert "finding: ONNX Runtime's graph optimizations (all)" in tri_out


def test_clean_triangle_table(tri, run):
    out = triangle(run, tri, "eqx-good.st", "onnx-good.st", fmt="table").stdout
    assert "A: Meta — " in out and "B: Equinox — " in out and "C: ONNX — " in out
    assert "Meta ⇔ Equinox, max|Δ| per stage:" in out and "Equinox ⇔ ONNX, max|Δ| per stage:" in out
    assert ("diagnosis: all three agree within tolerance: Equinox reproduces Meta, and ONNX "
            "reproduces Equinox.") in out


def test_fault_in_the_port_is_named(tri, run):
    """ls2 of block 5 scaled by 1.01 in the Equinox model (and so in its export)."""
    proc = triangle(run, tri, "eqx-ls2.st", "onnx-ls2.st")
    assert proc.returncode == 1
    r = json.loads(proc.stdout)
    diag = r["diagnosis"]
    assert diag["finding"] == "port_diverges"
    assert diag["first_over"][0]["side"] == "reference_port"
    assert diag["first_over"][0]["stage"] == "blocks.5.ls2"
    assert diag["text"].startswith("Meta ⇔ Equinox diverges: the port is at fault. The first "
                                   "stage over tolerance is `blocks.5.ls2`")
    sides = {s["side"]: s["report"]["verdict"]["pass"] for s in r["sides"]}
    assert sides == {"reference_export": False, "reference_port": False, "port_export": True}


def test_fault_in_the_export_is_named(tri, run):
    """One weight of block 7 scaled by 1.01 in the ONNX file only."""
    proc = triangle(run, tri, "eqx-good.st", "onnx-b7.st")
    assert proc.returncode == 1
    diag = json.loads(proc.stdout)["diagnosis"]
    assert diag["finding"] == "export_drifts"
    first = diag["first_over"][0]
    assert first["side"] == "port_export" and first["stage"].startswith("blocks.7.")
    assert diag["text"].startswith("Meta ⇔ Equinox is clean, but ONNX drifts from Equinox: the "
                                   "export is at fault, not the port. ONNX departs from Equinox "
                                   f"first at `{first['stage']}`")
    out = triangle(run, tri, "eqx-good.st", "onnx-b7.st", fmt="markdown").stdout
    assert out.startswith("### ❌ dinodiff triangulation FAIL · the export drifts · first "
                          f"divergence {first['stage']} (Equinox ⇔ ONNX, max|Δ| "), out


@pytest.mark.parametrize("fault,eqx,onnx,port_stage", [
    ("ls2", "eqx-ls2.st", "onnx-ls2.st", "blocks.5.ls2"),
    ("b7", "eqx-good.st", "onnx-b7.st", None),
])
def test_report_of_a_fault_in_chromium(tri, run, tmp_path, fault, eqx, onnx, port_stage):
    """`dinodiff report` on the faults above: the page loads cleanly in headless Chromium, and the
    patch map of the faulty side is of the stage the diagnosis names. Screenshots go to
    $DINODIFF_SCREENSHOT_DIR when set."""
    import os
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import chromium
    binary = chromium.require()
    page = tmp_path / f"{fault}.html"
    run("report", tri / "meta.st", tri / eqx, tri / onnx, "-o", page, expect=(1,))
    html = page.read_text()
    first = json.loads(triangle(run, tri, eqx, onnx).stdout)["diagnosis"]["first_over"][0]
    assert port_stage is None or first["stage"] == port_stage
    assert f"per-patch max|Δ| at <code>{first['stage']}</code> (the first stage over tolerance" in html
    browser = chromium.Chromium(binary)
    try:
        assert browser.load(page.as_uri()) == []
        shots = pathlib.Path(os.environ.get("DINODIFF_SCREENSHOT_DIR", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(shots / f"report-fault-{fault}.png")
    finally:
        browser.close()
    std, _ = chromium.pixel_spread(shot)
    assert std > 10


# --- capture eqx: bad recordings --------------------------------------------------------------

def rewrite(src, dst, drop=(), replace=None, manifest_edit=None):
    z = np.load(src, allow_pickle=False)
    arrays = {k: z[k] for k in z.files}
    manifest = json.loads(bytes(arrays["__dinodiff_manifest__"]).decode())
    for k in drop:
        del arrays[k]
    for k, v in (replace or {}).items():
        arrays[k] = v
    if manifest_edit:
        manifest_edit(manifest)
    arrays["__dinodiff_manifest__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(dst, **arrays)


def fails(run, args, message):
    proc = run("capture", "eqx", *args, expect=(2,))
    assert proc.stderr == f"error: {message}\n", proc.stderr
    out = pathlib.Path(args[args.index("-o") + 1])
    assert not out.exists()


def test_npz_with_a_missing_array(tri, run, tmp_path):
    bad = tmp_path / "missing.npz"
    rewrite(tri / "good.npz", bad, drop=["blocks[2].ls1"])
    fails(run, ["--npz", bad, "-o", tmp_path / "o.st"],
          f"{bad}: the manifest lists 1 array(s) the npz does not hold: blocks[2].ls1. The "
          "recording is incomplete; record it again with tools/eqx_capture.py")


def test_npz_with_an_unsupported_dtype(tri, run, tmp_path):
    bad = tmp_path / "complex.npz"
    rewrite(tri / "good.npz", bad, replace={"norm": np.zeros((1, 21, D), np.complex64)})
    fails(run, ["--npz", bad, "-o", tmp_path / "o.st"],
          f"{bad}: array \"norm\" has dtype <c8, which a dump cannot hold; dinodiff imports "
          "f16, bf16, f32, f64, integer and bool arrays")


def test_npz_with_an_object_array(tri, run, tmp_path):
    bad = tmp_path / "object.npz"
    z = np.load(tri / "good.npz")
    arrays = {k: z[k] for k in z.files}
    arrays["blocks[0].ls1"] = np.array([{"payload": 1}, None], dtype=object)
    np.savez(bad, **arrays)  # np.save pickles object arrays
    fails(run, ["--npz", bad, "-o", tmp_path / "o.st"],
          f"{bad}: array \"blocks[0].ls1\" is an object array (pickled Python objects), which "
          "dinodiff never unpickles; dinodiff imports f16, bf16, f32, f64, integer and bool arrays")


@pytest.mark.parametrize("shape", [(1, 10**12, D), (2**40, 2**40, 2**40)])
def test_npz_header_claiming_more_than_the_file_holds(tri, run, tmp_path, shape):
    """A damaged .npy header (a huge shape, or one whose size overflows 64 bits) is refused
    before anything is allocated for it, naming the array and the entry's real size."""
    import io
    entry = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        entry, {"descr": "<f4", "fortran_order": False, "shape": shape})
    entry.write(b"\0" * 64)
    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(tri / "good.npz") as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = entry.getvalue() if info.filename == "norm.npy" else src.read(info)
            dst.writestr(info.filename, data)
    fails(run, ["--npz", bad, "-o", tmp_path / "o.st"],
          f"{bad}: array \"norm\" claims shape {list(shape)} of 4-byte elements, more data than "
          f"its zip entry holds ({len(entry.getvalue())} bytes): the file is damaged or cut "
          "short; record the run again")


def test_not_an_npz(run, tmp_path):
    bad = tmp_path / "plain.npz"
    bad.write_text("not a zip at all")
    proc = run("capture", "eqx", "--npz", bad, "-o", tmp_path / "o.st", expect=(2,))
    assert proc.stderr.startswith(f"error: {bad} is not an npz file (a zip of .npy arrays): ")
    assert not (tmp_path / "o.st").exists()
    # A zip that is not a recording.
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    fails(run, ["--npz", other, "-o", tmp_path / "o.st"],
          f"{other} has no __dinodiff_manifest__ array: it was not written by "
          f"tools/eqx_capture.py (record the run with `python tools/eqx_capture.py --model M.eqx "
          f"--input input.st -o {other}`)")


def test_npz_recorded_for_a_different_input(tri, run, tmp_path):
    y = np.random.default_rng(99).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(tmp_path / "other.st", [("input", y, {"native": "input"})], source="input")
    _, theirs = read_dump(tmp_path / "other.st")
    import hashlib
    want = hashlib.sha256(np.ascontiguousarray(theirs["input"]).tobytes()).hexdigest()
    z = np.load(tri / "good.npz")
    have = hashlib.sha256(z["input"].tobytes()).hexdigest()
    fails(run, ["--npz", tri / "good.npz", "--input", tmp_path / "other.st", "-o",
                tmp_path / "o.st"],
          f"{tri / 'good.npz'} was recorded for a different input: its input has sha256 {have} "
          f"(shape [1, 3, {IMG}, {IMG}]), {tmp_path / 'other.st'} has {want} (shape "
          f"[1, 3, {IMG}, {IMG}]). Record the Equinox run again on {tmp_path / 'other.st'}")


def test_imported_arrays_are_the_recorded_ones(tri):
    """capture eqx copies the arrays: every canonical stage equals the npz array it names."""
    m, t = read_dump(tri / "eqx-good.st")
    z = np.load(tri / "good.npz")
    for name in m["order"]:
        rec = m["tensors"][name]
        src = rec.get("eqx_name", name)
        if "derived" in rec:
            continue
        np.testing.assert_array_equal(t[name].reshape(z[src].shape), z[src], err_msg=name)
    np.testing.assert_array_equal(t["cls"], t["norm"][:, 0])
    np.testing.assert_allclose(t["pooled"], t["patches"].astype(np.float64).mean(1), atol=1e-7)
    assert zipfile.is_zipfile(tri / "good.npz")
