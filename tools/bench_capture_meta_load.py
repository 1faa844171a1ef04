#!/usr/bin/env python3
"""Benchmark how `dinodiff capture meta` loads a checkpoint: dinodiff's reader (zero-copy over a
memory map, the default) against libtorch's loader (`--loader libtorch`), side by side in one run.

    tools/dev bench            (or: python tools/bench_capture_meta_load.py [--variant vitl16])

A deterministic random checkpoint of the variant (tools/make_meta_checkpoint.py; ViT-L/16 is
1.2 GB) is captured at 224 with every stage written, each loader --repeat times in alternation
(page cache warm for both). Reported per loader: the load time the capture prints (reading the
checkpoint, building the model; the sha256 runs in a thread beside the forward; with the zero-copy
reader the pages of the map are faulted in later, by the forward, so the whole capture is the fair
comparison too), the wall time of the whole process, and its peak RSS (os.wait4's ru_maxrss)
against the checkpoint's size.
Targets (issue 12): peak RSS <= 1.3 x the checkpoint, load >= 3x faster than libtorch's.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolerror import ToolError, run_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
BIN = Path(os.environ.get("DINODIFF_BIN", REPO / "target" / "release" / "dinodiff"))
WORK = REPO / "target" / "bench"


def measure(cmd):
    """(load seconds, wall seconds, peak RSS bytes) of one capture process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(map(str, cmd))} failed:\n{stderr}")
    m = re.search(r"load ([\d.]+) s", stderr)
    if not m:
        raise ToolError(f"no load time in {stderr!r}")
    return float(m.group(1)), wall, usage.ru_maxrss * 1024


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", default="vitl16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    image = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    inp = WORK / "input-224.st"
    subprocess.run([BIN, "prep", "--image", image, "-o", inp], check=True, capture_output=True)
    ckpt = WORK / f"{a.variant}-seed0.pth"
    if not ckpt.exists():
        subprocess.run([sys.executable, TOOLS / "make_meta_checkpoint.py", "--variant", a.variant,
                        "-o", ckpt], check=True, capture_output=True)
    size = ckpt.stat().st_size
    loaders = ["dinodiff", "libtorch"]
    runs = {name: [] for name in loaders}
    out = WORK / f"{a.variant}.load.st"
    for i in range(a.repeat + 1):  # the first round warms the page cache
        for name in loaders:
            cmd = [BIN, "capture", "meta", "--weights", ckpt, "--input", inp, "-o", out,
                   "--threads", str(a.threads), "--loader", name]
            result = measure(cmd)
            if i > 0:
                runs[name].append(result)
    dump = out.stat().st_size
    print(f"capture meta checkpoint loading: {a.variant} ({size / 1e9:.2f} GB checkpoint, "
          f"{dump / 1e6:.0f} MB dump, every stage), 224x224, {a.threads} thread(s), best of "
          f"{a.repeat} (load, wall) and highest peak RSS")
    print()
    print("| loader | load | whole capture | peak RSS | peak RSS / checkpoint |")
    print("|---|---|---|---|---|")
    best = {}
    for name in loaders:
        load = min(r[0] for r in runs[name])
        wall = min(r[1] for r in runs[name])
        rss = max(r[2] for r in runs[name])
        best[name] = (load, wall, rss)
        print(f"| {name} | {load * 1e3:.0f} ms | {wall:.2f} s | {rss / 1e9:.2f} GB | {rss / size:.2f}x |")
    (ours_load, ours_wall, ours_rss), (lt_load, lt_wall, lt_rss) = best["dinodiff"], best["libtorch"]
    print()
    print(f"load {lt_load / max(ours_load, 1e-9):.1f}x faster (target >= 3x); whole capture "
          f"{lt_wall / ours_wall:.2f}x; peak RSS {ours_rss / size:.2f}x the checkpoint (target "
          f"<= 1.3x; libtorch's loader {lt_rss / size:.2f}x)")


if __name__ == "__main__":
    run_main(main)
