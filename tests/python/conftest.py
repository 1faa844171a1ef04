"""Shared fixtures for the Python cross-checks: they run the real dinodiff binary and check its
results against independent references (numpy, safetensors, PIL/torchvision)."""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def dinodiff_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("DINODIFF_BIN", REPO / "target" / "release" / "dinodiff"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it (cargo build --release) or set DINODIFF_BIN")
    return path


@pytest.fixture
def run(dinodiff_bin):
    """run(*args, expect=(0,)) -> CompletedProcess; fails the test on any other exit code."""

    def _run(*args, expect=(0,), cwd=None):
        proc = subprocess.run(
            [str(dinodiff_bin), *map(str, args)], capture_output=True, text=True, cwd=cwd
        )
        assert proc.returncode in expect, (
            f"dinodiff {' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return proc

    return _run


@pytest.fixture
def diff_json(run):
    """diff_json(a, b, *flags) -> the parsed JSON report (exit 0 or 1 accepted)."""

    def _diff(a, b, *flags):
        return json.loads(run("diff", a, b, "--format", "json", *flags, expect=(0, 1)).stdout)

    return _diff
