#!/usr/bin/env python3
"""Benchmark `dinodiff capture meta` streaming the weights block by block (the default) against
materializing them all before the forward (`--weights-in-memory`), and a ViT-7B capture on a
machine that cannot hold its weights in f32.

    tools/dev bench        (runs: python tools/bench_capture_meta_stream.py)
    python tools/bench_capture_meta_stream.py --checkpoint-7b vit7b16-bf16.safetensors

Part 1 (always): ViT-L/16 at 224, every stage written, each mode --repeat times in alternation
after a warm-up round (page cache warm), for an f32 `.pth` (Meta's format: zero-copy) and a bf16
safetensors (every weight converted to f32): best wall time, highest peak RSS and peak RssAnon
(anonymous memory: what the converted weights take; sampled from /proc every 20 ms), and the
ratio streamed / in memory. Target (issue 17): streamed <= 1.1x the in-memory wall time.

Part 2 (--checkpoint-7b, heavy: minutes, 13.4 GB read): one streamed capture of the given ViT-7B
checkpoint (make it with `tools/make_meta_checkpoint.py --variant vit7b16 --dtype bf16 -o
vit7b16-bf16.safetensors`, written tensor by tensor) in f32 at 224. Reported: wall time, the
capture's own load / forward figures, peak RSS, peak RssAnon (target <= 6 GB) and RssFile, the
bytes the process read from storage and through read() (/proc/<pid>/io), and the compute floor: a
plain libtorch (PyTorch) forward of one random ViT-7B block in f32 with the same ops, x 40, plus
the bf16 -> f32 conversion of one block's weights, x 40, at the same thread count. The machine's
load average is printed beside the figures: they are only comparable at the same load.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from toolerror import ToolError, run_main  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
BIN = pathlib.Path(os.environ.get("DINODIFF_BIN", REPO / "target" / "release" / "dinodiff"))
WORK = pathlib.Path(os.environ.get("DINODIFF_BENCH_DIR", REPO / "target" / "bench"))
GB = 1e9

FLOOR = r"""
import sys, time, math
import torch
import torch.nn.functional as F
threads, tokens, depth = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
D, FF, H, R = 4096, 8192, 32, 5        # ViT-7B/16: D, SwiGLU hidden, heads, 1 + 4 prefix tokens
hd = D // H
g = torch.Generator().manual_seed(0)
def rnd(*shape, std=0.02):
    return torch.randn(*shape, generator=g) * std
w = {"qkv": rnd(3 * D, D), "proj": rnd(D, D), "proj_b": rnd(D), "w1": rnd(FF, D), "w1_b": rnd(FF),
     "w2": rnd(FF, D), "w2_b": rnd(FF), "w3": rnd(D, FF), "w3_b": rnd(D), "n1": 1 + rnd(D),
     "n1_b": rnd(D), "n2": 1 + rnd(D), "n2_b": rnd(D), "g1": rnd(D), "g2": rnd(D)}
hw = tokens - R
sin, cos = torch.sin(rnd(hw, hd, std=1.0)), torch.cos(rnd(hw, hd, std=1.0))
def rope(t):
    head, tail = t[:, :, :R], t[:, :, R:]
    a, b = tail.chunk(2, -1)
    return torch.cat([head, tail * cos + torch.cat([-b, a], -1) * sin], 2)
@torch.no_grad()
def block(x):
    B, N, _ = x.shape
    y = F.layer_norm(x, (D,), w["n1"], w["n1_b"], 1e-5)
    qkv = F.linear(y, w["qkv"]).reshape(B, N, 3, H, hd)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    a = F.scaled_dot_product_attention(rope(q), rope(k), v).transpose(1, 2).reshape(B, N, D)
    x = x + F.linear(a, w["proj"], w["proj_b"]) * w["g1"]
    y = F.layer_norm(x, (D,), w["n2"], w["n2_b"], 1e-5)
    h = F.silu(F.linear(y, w["w1"], w["w1_b"])) * F.linear(y, w["w2"], w["w2_b"])
    return x + F.linear(h, w["w3"], w["w3_b"]) * w["g2"]
x = torch.randn(1, tokens, D, generator=g)
block(x)
times = []
for _ in range(3):
    t = time.perf_counter(); block(x); times.append(time.perf_counter() - t)
halves = [v.to(torch.bfloat16) for k, v in w.items()]
conv = []
for _ in range(3):
    t = time.perf_counter(); [h.float() for h in halves]; conv.append(time.perf_counter() - t)
print(min(times) * depth, min(conv) * depth)
"""


def load_average():
    return os.getloadavg()[0]


def measure(cmd):
    """Runs cmd; returns wall seconds, stderr and the peaks / last values sampled from /proc."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0, "VmHWM": 0, "read_bytes": 0, "rchar": 0}

    def sample():
        status, io = pathlib.Path(f"/proc/{proc.pid}/status"), pathlib.Path(f"/proc/{proc.pid}/io")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines() + io.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in peak:
                        n = int(value.split()[0])
                        peak[key] = max(peak[key], n * 1024 if key.startswith(("Rss", "Vm")) else n)
            except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
                pass
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    stderr = proc.stderr.read()
    code = proc.wait()
    wall = time.perf_counter() - started
    t.join()
    if code != 0:
        raise ToolError(f"{' '.join(map(str, cmd))} failed with exit code {code}:\n{stderr}")
    return wall, stderr, peak


def figure(stderr, label):
    m = re.search(label + r" ([\d.]+) s", stderr)
    return float(m.group(1)) if m else float("nan")


def make_input(size):
    image = pathlib.Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    inp = WORK / f"input-{size}.st"
    if not inp.exists():
        subprocess.run([BIN, "prep", "--image", image, "--size", str(size), "-o", inp], check=True,
                       capture_output=True)
    return inp


def make_checkpoint(variant, dtype, suffix):
    ckpt = WORK / f"{variant}-seed0{'' if dtype == 'f32' else '-' + dtype}{suffix}"
    if not ckpt.exists():
        subprocess.run([sys.executable, TOOLS / "make_meta_checkpoint.py", "--variant", variant,
                        "--dtype", dtype, "-o", ckpt], check=True, capture_output=True)
    return ckpt


def side_by_side(variant, threads, repeat):
    inp = make_input(224)
    out = WORK / f"{variant}.stream.st"
    print(f"capture meta, weights streamed per block vs in memory: {variant} at 224, every stage, "
          f"{threads} thread(s), best of {repeat} after a warm-up round, load average "
          f"{load_average():.1f} at start\n")
    print("| checkpoint | mode | wall | forward + stream | peak RSS | peak RssAnon | "
          "wall streamed / in memory |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for dtype, suffix in (("f32", ".pth"), ("bf16", ".safetensors")):
        ckpt = make_checkpoint(variant, dtype, suffix)
        modes = {"streamed": [], "in memory": ["--weights-in-memory"]}
        runs = {m: [] for m in modes}
        for i in range(repeat + 1):
            for mode, extra in modes.items():
                cmd = [BIN, "capture", "meta", "--weights", ckpt, "--input", inp, "-o", out,
                       "--threads", str(threads), *extra]
                result = measure(cmd)
                if i > 0:
                    runs[mode].append(result)
        best = {m: min(r[0] for r in rs) for m, rs in runs.items()}
        ratio = best["streamed"] / best["in memory"]
        ratios.append(ratio)
        for mode, rs in runs.items():
            fwd = min(figure(r[1], "forward \\+ stream") for r in rs)
            rss = max(r[2]["VmHWM"] for r in rs)
            anon = max(r[2]["RssAnon"] for r in rs)
            shown = f"{ratio:.2f}x" if mode == "streamed" else "1.00x"
            print(f"| {ckpt.name} ({ckpt.stat().st_size / GB:.2f} GB) | {mode} | "
                  f"{best[mode]:.2f} s | {fwd:.2f} s | {rss / GB:.2f} GB | {anon / GB:.2f} GB | "
                  f"{shown} |")
    print(f"\nload average at the end {load_average():.1f}; target: streamed <= 1.1x in memory: "
          f"{'met' if max(ratios) <= 1.1 else 'MISSED'}\n")


def seven_b(ckpt, threads, dump):
    inp = make_input(224)
    load_before = load_average()
    cmd = [BIN, "capture", "meta", "--weights", ckpt, "--input", inp, "-o", dump,
           "--threads", str(threads)]
    wall, stderr, peak = measure(cmd)
    load_after = load_average()
    tokens = 1 + 4 + (224 // 16) ** 2
    floor = subprocess.run([sys.executable, "-c", FLOOR, str(threads), str(tokens), "40"],
                           check=True, capture_output=True, text=True).stdout.split()
    compute, convert = float(floor[0]), float(floor[1])
    forward = figure(stderr, "forward \\+ stream")
    size = pathlib.Path(ckpt).stat().st_size
    print(f"capture meta, ViT-7B/16 ({size / GB:.1f} GB checkpoint {pathlib.Path(ckpt).name}), "
          f"f32 at 224, every stage, {threads} thread(s), weights streamed per block; load average "
          f"{load_before:.1f} before, {load_after:.1f} after\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| wall time | {wall:.1f} s |")
    print(f"| load (capture's figure) | {figure(stderr, 'load'):.2f} s |")
    print(f"| forward + stream (capture's figure) | {forward:.1f} s |")
    print(f"| compute floor: plain libtorch forward of one block x 40 | {compute:.1f} s |")
    print(f"| conversion floor: bf16 -> f32 of one block's weights x 40 | {convert:.1f} s |")
    print(f"| forward / (compute + conversion floors) | {forward / (compute + convert):.2f}x |")
    print(f"| peak RSS (VmHWM) | {peak['VmHWM'] / GB:.2f} GB |")
    print(f"| peak RssAnon (target <= 6 GB) | {peak['RssAnon'] / GB:.2f} GB |")
    print(f"| peak RssFile (mapped checkpoint pages) | {peak['RssFile'] / GB:.2f} GB |")
    print(f"| read from storage (io read_bytes) | {peak['read_bytes'] / GB:.2f} GB |")
    print(f"| read through read() (io rchar: the sha256 thread, the input) | "
          f"{peak['rchar'] / GB:.2f} GB |")
    print(f"| dump | {pathlib.Path(dump).stat().st_size / GB:.2f} GB |")
    print(f"\ncapture's stderr:\n{stderr.strip()}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", default="vitl16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--checkpoint-7b", help="also capture this ViT-7B checkpoint (heavy)")
    p.add_argument("--dump-7b", default=str(WORK / "vit7b16.stream.st"),
                   help="where the 7B capture goes (kept, for `bench_diff.py --dumps`)")
    p.add_argument("--skip-side-by-side", action="store_true")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if not a.skip_side_by_side:
        side_by_side(a.variant, a.threads, a.repeat)
    if a.checkpoint_7b:
        seven_b(a.checkpoint_7b, a.threads, a.dump_7b)


if __name__ == "__main__":
    run_main(main)
