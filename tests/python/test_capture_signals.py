"""SIGINT and SIGTERM during `dinodiff capture onnx` leave nothing behind (docs/exit-codes.md):
no marked copy beside the user's model (nor its temporary directory when the model's directory is
read-only), no temporary beside `-o`, no dump at `-o`; the process ends by the signal (a shell
reports 130 / 143).

The model is what users have: timm's DINOv3 port exported by `torch.onnx.export(dynamo=True)`
(tools/export_torch_onnx.py), weights in `model.onnx.data` beside it. To catch the capture at a
known point, its stderr is a pipe filled to the brim beforehand: with `--max-memory 1KiB` the
capture announces its runs on stderr right after writing the marked copy, and blocks there until
the signal comes. The dump's temporary is caught by polling while the 100-odd runs go."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import write_dump  # noqa: E402

IMG = 32


def tool(script, *args):
    proc = subprocess.run([sys.executable, str(TOOLS / script), *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    tool("make_meta_checkpoint.py", "--variant", "vits16", "--embed-dim", 64, "--depth", 2,
         "--heads", 2, "--seed", 5, "-o", d / "m.pth")
    tool("export_torch_onnx.py", "--weights", d / "m.pth", "--img-size", IMG, "--exporter",
         "dynamo", "-o", d / "model.onnx")
    assert (d / "model.onnx.data").is_file()
    x = np.random.default_rng(2).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
    write_dump(d / "in.st", [("input", x, {"native": "input"})], source="input")
    return d


@pytest.fixture
def setup(export, tmp_path):
    """A fresh copy of the model (with its data) in `model/`, the input, an empty `out/`."""
    (tmp_path / "model").mkdir()
    (tmp_path / "out").mkdir()
    for name in ["model.onnx", "model.onnx.data"]:
        shutil.copy(export / name, tmp_path / "model" / name)
    return tmp_path


def full_pipe():
    """(read end, write end) of a pipe whose buffer is full: a write to it blocks."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def wait_for(proc, where, pattern, timeout=120.0):
    """Polls `where` until a path matching the glob `pattern` appears; fails if the process
    ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(where.glob(pattern)):
            return
        assert proc.poll() is None, f"the capture ended ({proc.returncode}) before {pattern}"
        time.sleep(0.002)
    pytest.fail(f"no {pattern} in {where} after {timeout} s")


def capture_cmd(dinodiff_bin, d, export):
    return [str(dinodiff_bin), "capture", "onnx", "--model", str(d / "model" / "model.onnx"),
            "--input", str(export / "in.st"), "-o", str(d / "out" / "onnx.st"),
            "--max-memory", "1KiB"]


def assert_nothing_left(proc, sig, d):
    assert proc.wait(timeout=60) == -sig, f"exited {proc.returncode}, not by signal {sig}"
    assert sorted(p.name for p in (d / "model").iterdir()) == ["model.onnx", "model.onnx.data"]
    assert list((d / "out").iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_removes_the_marked_copy_beside_the_model(setup, export, dinodiff_bin, sig):
    d = setup
    r, w = full_pipe()
    try:
        proc = subprocess.Popen(capture_cmd(dinodiff_bin, d, export),
                                stderr=w, stdout=subprocess.DEVNULL)
        os.close(w)
        wait_for(proc, d / "model", ".model.onnx.marked-*.onnx")
        proc.send_signal(sig)
        assert_nothing_left(proc, sig, d)
    finally:
        os.close(r)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_removes_the_dump_being_written(setup, export, dinodiff_bin, sig):
    d = setup
    proc = subprocess.Popen(capture_cmd(dinodiff_bin, d, export),
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_for(proc, d / "out", ".onnx.st.data-*")
    proc.send_signal(sig)
    assert_nothing_left(proc, sig, d)


def test_a_signal_removes_the_temporary_directory_of_a_read_only_model(setup, export,
                                                                       dinodiff_bin):
    """The model's directory is read-only: the marked copy goes to a temporary directory (under
    TMPDIR) with the model's data hard-linked; SIGINT removes that directory, links and all, and
    the model's data file is intact."""
    d = setup
    tmp = d / "tmp"
    tmp.mkdir()
    data = (d / "model" / "model.onnx.data").read_bytes()
    os.chmod(d / "model", 0o555)
    r, w = full_pipe()
    try:
        # root ignores directory permissions: drop the capabilities that let it.
        unprivileged = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                         "--inh-caps", "-all"] if os.geteuid() == 0 else [])
        cmd = [*unprivileged, *capture_cmd(dinodiff_bin, d, export)]
        proc = subprocess.Popen(cmd, stderr=w, stdout=subprocess.DEVNULL,
                                env={**os.environ, "TMPDIR": str(tmp)})
        os.close(w)
        wait_for(proc, tmp, ".tmp*/model.onnx.marked.onnx")
        proc.send_signal(signal.SIGINT)
        assert_nothing_left(proc, signal.SIGINT, d)
        # (`.ses` there is onnxruntime's Python package's, imported to find its library.)
        assert [p.name for p in tmp.iterdir() if p.name != ".ses"] == []
        assert (d / "model" / "model.onnx.data").read_bytes() == data
    finally:
        os.close(r)
        os.chmod(d / "model", 0o755)
