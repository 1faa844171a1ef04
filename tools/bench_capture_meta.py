#!/usr/bin/env python3
"""Benchmark `dinodiff capture meta` against the same job done in Python, side by side.

    tools/dev bench            (or: python tools/bench_capture_meta.py [--variants vits16 vitb16])

For each variant at 224 on a deterministic random checkpoint, with the same thread count:
- end to end, whole processes (best of --repeat): `dinodiff capture meta` vs
  `python tools/timm_capture.py` (timm + forward hooks + a dump written in execution order);
- forward compute: dinodiff's forward alone (`--only '^cls$'`, so almost nothing is streamed)
  and with every stage streamed, against a plain torch forward of timm's model (no hooks) in
  the same kind of fresh process: its first forward (what a capture runs) and its best warm one.
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
PY = sys.executable

PLAIN_FORWARD = r"""
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from timm_capture import build_timm
from dumpfile import read_dump
torch.set_num_threads(int(sys.argv[4]))
model, _, _ = build_timm(torch.load(sys.argv[2], map_location="cpu", weights_only=True))
x = torch.from_numpy(read_dump(sys.argv[3])[1]["input"].copy())
times = []
for _ in range(6):
    t = time.perf_counter()
    with torch.inference_mode():
        model.forward_features(x)
    times.append(time.perf_counter() - t)
print(times[0], min(times[1:]))
"""


def wall(cmd):
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr}")
    return elapsed, proc.stderr


def seconds(pattern, text):
    m = re.search(pattern, text)
    if not m:
        raise ToolError(f"no {pattern!r} in {text!r}")
    return float(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["vits16", "vitb16"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    image = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    inp = WORK / "input-224.st"
    subprocess.run([BIN, "prep", "--image", image, "-o", inp], check=True, capture_output=True)
    threads = str(a.threads)
    rows = []
    for variant in a.variants:
        ckpt = WORK / f"{variant}-seed0.pth"
        if not ckpt.exists():
            subprocess.run([PY, TOOLS / "make_meta_checkpoint.py", "--variant", variant,
                            "-o", ckpt], check=True, capture_output=True)
        ours_cmd = [BIN, "capture", "meta", "--weights", ckpt, "--input", inp,
                    "-o", WORK / f"{variant}.meta.st", "--threads", threads]
        timm_cmd = [PY, TOOLS / "timm_capture.py", "--weights", ckpt, "--input", inp,
                    "-o", WORK / f"{variant}.timm.st", "--threads", threads]
        wall(ours_cmd)  # warm the page cache and the dynamic loader
        wall(timm_cmd)
        ours, timm, ours_fwd, ours_fwd_only, plain_first, plain_warm = [], [], [], [], [], []
        for _ in range(a.repeat):
            t, err = wall(ours_cmd)
            ours.append(t)
            ours_fwd.append(seconds(r"forward \+ stream ([\d.]+) s", err))
            t, err = wall(timm_cmd)
            timm.append(t)
            _, err = wall(ours_cmd[:8] + [WORK / f"{variant}.cls.st", "--threads", threads,
                                          "--only", "^cls$"])
            ours_fwd_only.append(seconds(r"forward \+ stream ([\d.]+) s", err))
            out = subprocess.run([PY, "-c", PLAIN_FORWARD, TOOLS, ckpt, inp, threads],
                                 check=True, capture_output=True, text=True).stdout.split()
            plain_first.append(float(out[0]))
            plain_warm.append(float(out[1]))
        size = (WORK / f"{variant}.meta.st").stat().st_size
        rows.append((variant, size, min(ours), min(timm), min(ours_fwd_only), min(ours_fwd),
                     min(plain_first), min(plain_warm)))
    print(f"capture meta benchmark: 224x224, {threads} thread(s), best of {a.repeat}; "
          f"torch {__import__('torch').__version__}, timm {__import__('timm').__version__}")
    print()
    print("| variant | dump | dinodiff end to end | Python (timm + hooks) end to end | speed-up "
          "| dinodiff forward alone | dinodiff forward + streaming | plain torch forward, "
          "first / warm | forward alone vs first | forward alone vs warm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, size, ours, timm, fwd_only, fwd, first, warm in rows:
        print(f"| {v} | {size / 1e6:.0f} MB | {ours:.2f} s | {timm:.2f} s | {timm / ours:.1f}x "
              f"| {fwd_only * 1e3:.0f} ms | {fwd * 1e3:.0f} ms | {first * 1e3:.0f} / "
              f"{warm * 1e3:.0f} ms | {fwd_only / first:.2f} | {fwd_only / warm:.2f} |")


if __name__ == "__main__":
    run_main(main)
