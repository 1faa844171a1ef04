"""`dinodiff capture eqx --model` and `dinodiff tools` as a user without a checkout has them: a
copy of the binary in a directory of its own, the user's files in another (the cwd), no tools/ on
any path, no DINODIFF_BIN; Python is the venv's, given with --python.

The user's files are made the way users make them:
- a Meta-format ViT-S/16 checkpoint (`dinodiff tools make-meta-checkpoint`, random weights) mapped
  with `dinodiff tools meta-to-eqx` (model.eqx + sidecar); the same .eqx without its sidecar is a
  bare file;
- jax2onnx's own workflow: its example model `jax2onnx.plugins.examples.eqx.dino.
  VisionTransformer` with random weights saved by `eqx.tree_serialise_leaves`, no sidecar
  (what jax2onnx's scripts/map_equimo_dino_weights.py writes as eqx_dinov3_vits16_mapped.eqx).
References: safetensors' and numpy's reading of the dumps, the example model run directly (its
block_outputs and output), tools/requirements.txt for the pins."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

REPO = pathlib.Path(__file__).resolve().parents[2]
PY = os.environ.get("DINODIFF_TEST_PYTHON", sys.executable)
IMG = 64  # a 4 x 4 patch grid: the ViT-S/16 recording stays fast
NEEDS = ["numpy", "jax", "jaxlib", "equinox", "jax2onnx", "safetensors"]


def pins():
    out = {}
    for line in (REPO / "tools" / "requirements.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            out[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    return out


def clean_env(**extra):
    """The user's environment: no dinodiff variables, no PYTHONPATH, no checkout on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DINODIFF_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory, dinodiff_bin):
    """bin/ (a copy of the binary), user/ (the user's files, the cwd), scripts/ (written out)."""
    d = tmp_path_factory.mktemp("nocheckout")
    for sub in ("bin", "user", "scripts"):
        (d / sub).mkdir()
    shutil.copy2(dinodiff_bin, d / "bin" / "dinodiff")
    return d


def dd(home, *args, expect=0, env=None, cwd=None):
    proc = subprocess.run([str(home / "bin" / "dinodiff"), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or home / "user", env=env or clean_env())
    assert proc.returncode == expect, (
        f"dinodiff {' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def script(home, name, *args, cwd=None):
    """Writes `dinodiff tools NAME` into scripts/ (stdout, as the README says) and runs it there."""
    path = home / "scripts" / f"{name.replace('-', '_')}.py"
    path.write_text(dd(home, "tools", name).stdout)
    proc = subprocess.run([PY, str(path), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or home / "scripts", env=clean_env())
    assert proc.returncode == 0, f"{name} {args} failed:\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def files(home):
    from PIL import Image

    user = home / "user"
    script(home, "make-meta-checkpoint", "--variant", "vits16", "--seed", 11, "-o",
           user / "vits16.pth")
    (user / "sided").mkdir()
    script(home, "meta-to-eqx", "--weights", user / "vits16.pth", "--img-size", IMG, "-o",
           user / "sided" / "vits16.eqx")
    assert (user / "sided" / "vits16.eqx.json").is_file()
    (user / "bare").mkdir()
    shutil.copy(user / "sided" / "vits16.eqx", user / "bare" / "vits16.eqx")
    pixels = np.random.default_rng(3).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(user / "photo.png")
    dd(home, "prep", "--image", "photo.png", "--transform", "square", "--size", IMG, "-o",
       "input.st")
    return user


@pytest.fixture(scope="module")
def jax2onnx_model(files):
    """eqx_dinov3_vits16_mapped.eqx as jax2onnx's scripts write it (random weights), and the
    model itself."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import equinox as eqx
    import jax
    from jax2onnx.plugins.examples.eqx.dino import VisionTransformer

    model = VisionTransformer(img_size=IMG, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                              num_storage_tokens=4, key=jax.random.PRNGKey(7))
    path = files / "eqx_dinov3_vits16_mapped.eqx"
    eqx.tree_serialise_leaves(path, model)
    assert not path.with_name(path.name + ".json").exists()
    return path, model


@pytest.fixture(scope="module")
def one_step(home, jax2onnx_model):
    """The one-step capture of the jax2onnx-saved file, its config inferred."""
    proc = dd(home, "capture", "eqx", "--model", jax2onnx_model[0].name, "--input", "input.st",
              "-o", "j2o.st", "--python", PY)
    return proc, load_file(home / "user" / "j2o.st")


def canonical_names(home, depth):
    data = json.loads(dd(home, "stages", "--format", "json").stdout)
    names = []
    for s in data["stages"]:
        blocks = range(depth) if s["group"] == "block" else [None]
        for i in blocks:
            names.append(s["name"] if i is None else
                         data["block_name"].replace("{i}", str(i)).replace("{name}", s["name"]))
    return names


def leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_bare_capture_equals_the_sidecar_capture_at_every_stage(home, files):
    sided = dd(home, "capture", "eqx", "--model", "sided/vits16.eqx", "--input", "input.st",
               "-o", "sided.st", "--python", PY, "--keep-npz", "sided.npz")
    assert "(the config of its sidecar sided/vits16.eqx.json)" in sided.stderr
    # --keep-npz kept the recording, which imports (--npz) to the same tensors.
    dd(home, "capture", "eqx", "--npz", "sided.npz", "--input", "input.st", "-o", "again.st")
    kept, again = load_file(files / "sided.st"), load_file(files / "again.st")
    assert sorted(kept) == sorted(again)
    assert all(kept[k].tobytes() == again[k].tobytes() for k in kept)
    bare = dd(home, "capture", "eqx", "--model", "bare/vits16.eqx", "--input", "input.st",
              "-o", "bare.st", "--python", PY)
    config = f"img_size={IMG},patch_size=16,embed_dim=384,depth=12,num_heads=6,num_storage_tokens=4"
    assert f"{config} (inferred from its leaves: vits16)" in bare.stderr
    a, b = load_file(files / "sided.st"), load_file(files / "bare.st")
    stages = canonical_names(home, 12)
    missing = [s for s in stages if s not in a]
    assert not missing, f"canonical stages not captured: {missing}"
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name
    assert leftovers(files) == []  # no temporary directory left beside -o


def test_a_jax2onnx_saved_file_is_inferred_and_recorded_exactly(home, jax2onnx_model, one_step):
    import jax.numpy as jnp

    proc, dump = one_step
    assert "(inferred from its leaves: vits16)" in proc.stderr
    _, model = jax2onnx_model
    x = jnp.asarray(dump["input"])
    outputs = model.block_outputs(x)
    for i, want in enumerate(outputs):
        assert np.array_equal(dump[f"blocks.{i}.output"], np.asarray(want)), i
    norm = dump["norm"]
    assert np.array_equal(np.concatenate([norm[:, :1], norm[:, 5:]], axis=1), np.asarray(model(x)))
    assert np.array_equal(dump["cls"], norm[:, 0])


def test_the_written_out_recorder_runs_without_dinodiff(home, jax2onnx_model, one_step):
    """`dinodiff tools eqx-capture > eqx_capture.py`, run from an empty directory by a Python with
    neither dinodiff on PATH nor DINODIFF_BIN (`--variant` reads the vocabulary the script
    carries), then `capture eqx --npz` imports it to the dump the one-step capture made."""
    empty = home / "empty"
    empty.mkdir()
    text = dd(home, "tools", "eqx-capture").stdout
    (empty / "eqx_capture.py").write_text(text)
    proc = subprocess.run(
        [PY, "eqx_capture.py", "--model", str(jax2onnx_model[0]), "--variant",
         "dinov3_vits16_pretrain_lvd1689m", "--input", str(home / "user" / "input.st"), "-o",
         str(home / "user" / "two.npz")],
        capture_output=True, text=True, cwd=empty, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in empty.iterdir()) == ["eqx_capture.py"]
    dd(home, "capture", "eqx", "--npz", "two.npz", "--input", "input.st", "-o", "two.st")
    one, two = one_step[1], load_file(home / "user" / "two.st")
    assert sorted(one) == sorted(two)
    for name in one:
        assert one[name].tobytes() == two[name].tobytes() and one[name].shape == two[name].shape


@pytest.mark.parametrize("name", ["meta-to-eqx", "export-onnx", "timm-capture"])
def test_every_written_out_tool_starts_from_an_empty_directory(home, name, tmp_path):
    (tmp_path / "tool.py").write_text(dd(home, "tools", name).stdout)
    proc = subprocess.run([PY, "tool.py", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: tool.py")


def test_the_timm_reference_runs_written_out(home, files):
    script(home, "timm-capture", "--weights", files / "vits16.pth", "--input",
           files / "input.st", "-o", files / "timm.st")
    timm = load_file(files / "timm.st")
    assert set(canonical_names(home, 12)) <= set(timm)


# --- what is missing, said before anything runs ---------------------------------------------

def blocked_python(tmp_path, body):
    """PYTHONPATH holding a sitecustomize.py with `body`, which the venv's Python runs first."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(body)
    return clean_env(PYTHONPATH=str(hook))


BLOCK = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == {0!r} or name.startswith({0!r} + "."):
            raise ModuleNotFoundError("No module named %r (blocked by the test)" % name, name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def refused(home, *args, env=None):
    proc = dd(home, "capture", "eqx", "--model", "bare/vits16.eqx", "--input", "input.st", "-o",
              "refused.st", *args, expect=2, env=env)
    assert not (home / "user" / "refused.st").exists()
    assert leftovers(home / "user") == []
    return proc.stderr.strip()


def python_version():
    return subprocess.run([PY, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("package", NEEDS)
def test_each_missing_package_is_named_with_its_pip_command(home, files, tmp_path, package):
    env = blocked_python(tmp_path, BLOCK.format(package))
    message = refused(home, "--python", PY, env=env)
    assert message == (
        f"error: {PY} (Python {python_version()}) lacks a package that eqx_capture.py imports: "
        f"{package}. Install it into that Python's environment: {PY} -m pip install "
        f"{pins()[package]}")


def test_a_python_without_packages_gets_the_whole_pip_command(home, files, tmp_path):
    subprocess.run([PY, "-m", "venv", "--without-pip", str(tmp_path / "bare-venv")], check=True)
    python = tmp_path / "bare-venv" / "bin" / "python"
    message = refused(home, "--python", python)
    assert message == (
        f"error: {python} (Python {python_version()}) lacks packages that eqx_capture.py imports: "
        f"{', '.join(NEEDS)}. Install them into that Python's environment: {python} -m pip "
        f"install {' '.join(pins()[p] for p in NEEDS)}")


def test_a_missing_interpreter_is_named_by_where_it_came_from(home, files, tmp_path):
    how = "pass a Python that has JAX with --python PATH or set DINODIFF_PYTHON"
    assert refused(home, "--python", "/nowhere/python3") == (
        f"error: --python /nowhere/python3: no such file; {how}")
    assert refused(home, env=clean_env(DINODIFF_PYTHON="/nowhere/py")) == (
        f"error: DINODIFF_PYTHON=/nowhere/py: no such file; {how}")
    assert refused(home, env=clean_env(PATH=str(tmp_path))) == (
        f"error: python3: not found on PATH; install Python >= 3.11 or {how}")
    # DINODIFF_PYTHON is used when --python is not given; a program that is not Python is refused.
    assert refused(home, env=clean_env(DINODIFF_PYTHON="/bin/true")).startswith(
        "error: /bin/true does not run as Python (`/bin/true -c <probe>` exited with exit "
        "status: 0); pass a Python >= 3.11 with --python PATH")


def test_a_python_too_old_is_refused(home, files, tmp_path):
    env = blocked_python(tmp_path, "import sys\nsys.version_info = (3, 9, 18, 'final', 0)\n")
    assert refused(home, "--python", PY, env=env) == (
        f"error: {PY} is Python 3.9.18; eqx_capture.py needs Python >= 3.11 (jax and jax2onnx "
        "require it): pass a newer one with --python PATH or DINODIFF_PYTHON")
    older = [str(p) for p in pathlib.Path.home().glob(".pyenv/versions/3.10*/bin/python3")]
    older += [p for p in [shutil.which("python3.10")] if p and "/shims/" not in p]
    for python in older[:1]:  # a real older interpreter, when this machine has one
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                 capture_output=True, text=True).stdout.strip()
        assert refused(home, "--python", python).startswith(
            f"error: {python} is Python {version}; eqx_capture.py needs Python >= 3.11")


# --- interrupted ------------------------------------------------------------------------------

def processes_mentioning(text):
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and text in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")
def test_a_signal_during_the_recording_leaves_nothing_running_nor_written(home, files):
    """SIGTERM to dinodiff while the recorder runs: dinodiff ends by the signal, its temporary
    directory (recorder script, partial recording) is removed, the recorder is ended too, and
    nothing is at -o."""
    import signal
    import time

    user = home / "user"
    proc = subprocess.Popen(
        [str(home / "bin" / "dinodiff"), "capture", "eqx", "--model", "bare/vits16.eqx",
         "--input", "input.st", "-o", "killed.st", "--python", PY],
        cwd=user, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workdir = None
    while time.monotonic() < deadline and proc.poll() is None:
        dirs = [p for p in user.iterdir() if p.name.startswith(".killed.st.eqx-record-")]
        if dirs and processes_mentioning(str(dirs[0])):
            workdir = dirs[0]
            break
        time.sleep(0.05)
    assert workdir is not None, "the recorder never started"
    time.sleep(1.0)  # into JAX's import or the forward
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    for _ in range(100):
        if not processes_mentioning(str(workdir)):
            break
        time.sleep(0.05)
    assert processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
    assert not (user / "killed.st").exists()
    assert leftovers(user) == []
