"""`dinodiff capture meta` streams the weights block by block (the default) and writes the same
dump, byte for byte, as materializing them all first (`--weights-in-memory`): tiny configs and
ViT-S/16, f32 checkpoints (zero-copy) and bf16 ones (every weight converted to f32), `.pth` and
safetensors. The files are compared with the safetensors format read by hand (header JSON, then
the data section's bytes), not with dinodiff."""

import json
import pathlib
import struct
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
GRACE_HOPPER = pathlib.Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"

CONFIGS = {
    # name: make_meta_checkpoint.py arguments, file suffix
    "mlp-f32": (["--variant", "vits16", "--embed-dim", "64", "--depth", "2", "--heads", "2"], ".pth"),
    "swiglu-bf16": (["--variant", "vits16plus", "--embed-dim", "64", "--depth", "2", "--heads", "2",
                     "--dtype", "bf16"], ".pth"),
    "7b-like-bf16": (["--variant", "vit7b16", "--embed-dim", "128", "--depth", "3", "--heads", "2",
                      "--dtype", "bf16"], ".safetensors"),
    "vits16-f32": (["--variant", "vits16"], ".pth"),
    "vits16-bf16": (["--variant", "vits16", "--dtype", "bf16"], ".safetensors"),
}

# Manifest entries that differ between two captures of the same run: when and how it was asked.
VOLATILE = {"created", "command_line"}


def read_st(path):
    """(header without the manifest, manifest, data section bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    manifest = json.loads(header.pop("__metadata__")["dinodiff.manifest"])
    return header, manifest, raw[8 + n:]


@pytest.fixture(scope="module")
def work(tmp_path_factory, dinodiff_bin):
    d = tmp_path_factory.mktemp("stream")
    for name, (args, suffix) in CONFIGS.items():
        subprocess.run([sys.executable, TOOLS / "make_meta_checkpoint.py", *args, "--seed", "3",
                        "-o", d / f"{name}{suffix}"], check=True, capture_output=True)
    subprocess.run([dinodiff_bin, "prep", "--image", GRACE_HOPPER, "-o", d / "photo.st"],
                   check=True, capture_output=True)
    return d


def checkpoint(work, name):
    return work / f"{name}{CONFIGS[name][1]}"


def capture(dinodiff_bin, work, name, out, *extra):
    """Runs the capture; returns its peak anonymous memory (RssAnon sampled from /proc every
    5 ms: the converted weights live there; ru_maxrss would count the forked test process) and
    its stderr."""
    proc = subprocess.Popen(
        [dinodiff_bin, "capture", "meta", "--weights", checkpoint(work, name), "--input",
         work / "photo.st", "-o", out, "--threads", "2", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        status = pathlib.Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stderr = proc.stderr.read()
    code = proc.wait()
    sampler.join()
    assert code == 0, stderr
    return peak[0], stderr


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streamed_and_in_memory_dumps_are_identical(work, dinodiff_bin, name):
    streamed, in_memory = work / f"{name}.streamed.st", work / f"{name}.in-memory.st"
    _, said = capture(dinodiff_bin, work, name, streamed)
    assert "weights streamed per block" in said
    capture(dinodiff_bin, work, name, in_memory, "--weights-in-memory")
    hs, ms, data_s = read_st(streamed)
    hm, mm, data_m = read_st(in_memory)
    assert hs == hm  # names, dtypes, shapes, offsets
    assert data_s == data_m, "the tensor bytes differ"
    assert ms["order"] == mm["order"] and len(ms["order"]) > 30
    assert ms["meta"].pop("weights")["residency"] == "streamed per block"
    assert mm["meta"].pop("weights")["residency"] == "in memory"
    for k in VOLATILE:
        ms.pop(k), mm.pop(k)
    assert ms == mm


def test_streaming_holds_one_block_of_converted_weights(work, dinodiff_bin):
    """ViT-S in bf16: in memory, all 12 blocks' f32 weights (~85 MB) are held at once; streamed,
    one block's (~7 MB). The peak anonymous memory must show most of the difference."""
    peaks = {}
    for mode, extra in (("streamed", []), ("in memory", ["--weights-in-memory"])):
        peaks[mode] = min(capture(dinodiff_bin, work, "vits16-bf16", work / "rss.st", *extra)[0]
                          for _ in range(2))
    d, blocks = 384, 12
    # qkv 3D x D, proj D x D, fc1 / fc2 4D x D; biases, bias_mask, norms, gammas 18 D; in f32.
    per_block = 4 * (12 * d * d + 18 * d)
    saved = peaks["in memory"] - peaks["streamed"]
    assert saved >= 0.6 * (blocks - 1) * per_block, (peaks, per_block)


def test_a_budget_one_block_does_not_fit_is_refused(work, dinodiff_bin, tmp_path):
    out = tmp_path / "no.st"
    proc = subprocess.run(
        [dinodiff_bin, "capture", "meta", "--weights", checkpoint(work, "vits16-bf16"), "--input",
         work / "photo.st", "-o", out, "--max-memory", "8MiB"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        "error: the weights do not fit the memory budget of 8.00 MiB (--max-memory): one block's "
        "weights take 6.78 MiB in the compute dtype, the stem and head "), proc.stderr
    assert "raise --max-memory, or compute in bf16 (--dtype bf16), which halves them" in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_in_memory_needs_every_block_within_the_budget(work, dinodiff_bin, tmp_path):
    args = [dinodiff_bin, "capture", "meta", "--weights", checkpoint(work, "vits16-bf16"),
            "--input", work / "photo.st", "-o", tmp_path / "x.st", "--max-memory", "64MiB"]
    ok = subprocess.run(args, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*args, "--weights-in-memory"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert ("every block's weights take 81.3 MiB together in the compute dtype "
            "(--weights-in-memory)") in refused.stderr
    assert "stream them one block at a time (drop --weights-in-memory)" in refused.stderr
