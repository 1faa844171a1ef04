#!/usr/bin/env python3
"""Benchmark of `dinodiff diff` against (a) a numpy baseline doing the same per-tensor max|Δ| and
cosine with safetensors + numpy, and (b) reading both files warm (`cat a b > /dev/null`).

Pairs: synthetic DINOv3-shaped dumps from `dinodiff synth` (every canonical stage, real shapes):
ViT-L/16 at 224 and a ViT-7B-sized pair (40 blocks x 4096 wide). Every timing is the best of
--repeat warm runs; memory is the peak RssAnon (anonymous memory: heap, stacks; not the page
cache that mapped files use) sampled every 5 ms from /proc.

Real dumps instead (say two ViT-7B captures, `tools/bench_capture_meta_stream.py --checkpoint-7b`):
    python tools/bench_diff.py --dumps a.st b.st

Run: tools/dev bench            (or: python tools/bench_diff.py --bin target/release/dinodiff)
"""

import argparse
import os
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from toolerror import ToolError, run_main  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

BASELINE = r"""
import sys
import numpy as np
from safetensors import safe_open
a_path, b_path = sys.argv[1], sys.argv[2]
worst = 0.0
# numpy has no bfloat16: a bf16 dump is read through ml_dtypes' bfloat16 (exact widening).
import json, struct, ml_dtypes
def reader(path):
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    bf16 = {k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"}
    if not bf16:
        return lambda f, name: f.get_tensor(name)
    data_start = 8 + struct.unpack("<Q", open(path, "rb").read(8))[0]
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    def get(f, name):
        if name not in bf16:
            return f.get_tensor(name)
        lo, hi = header[name]["data_offsets"]
        return mapped[data_start + lo:data_start + hi].view(ml_dtypes.bfloat16)
    return get
get_a, get_b = reader(a_path), reader(b_path)
with safe_open(a_path, "numpy") as fa, safe_open(b_path, "numpy") as fb:
    keys_b = set(fb.keys())
    for name in fa.keys():
        if name not in keys_b:
            continue
        a = get_a(fa, name).astype(np.float64).ravel()
        b = get_b(fb, name).astype(np.float64).ravel()
        d = np.abs(a - b)
        max_abs = d.max()
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        worst = max(worst, max_abs)
print(worst)
"""


def peak_rss_anon(cmd, ok=(0, 1), **kw):
    """Runs cmd; returns (seconds, peak RssAnon in bytes, peak VmRSS in bytes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **kw)
    peak = {"anon": 0, "rss": 0}

    def sample():
        status = pathlib.Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in ("RssAnon", "VmRSS"):
                        kb = int(value.split()[0]) * 1024
                        slot = "anon" if key == "RssAnon" else "rss"
                        peak[slot] = max(peak[slot], kb)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    code = proc.wait()
    elapsed = time.perf_counter() - start
    t.join()
    if code not in ok:
        raise ToolError(f"{' '.join(map(str, cmd))} failed with exit code {code}")
    return elapsed, peak["anon"], peak["rss"]


def best(runs, cmd, **kw):
    """(best seconds, highest peak RssAnon, highest peak VmRSS) of `runs` runs."""
    results = [peak_rss_anon(cmd, **kw) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results), max(r[2] for r in results)


def ensure_pair(bin_path, out_dir, name, variant, image_size):
    a, b = out_dir / f"{name}.a.st", out_dir / f"{name}.b.st"
    common = ["synth", "--variant", variant, "--image-size", str(image_size), "--seed", "1"]
    if not a.exists():
        print(f"generating {a} ...", file=sys.stderr)
        subprocess.run([bin_path, *common, "-o", a], check=True)
    if not b.exists():
        print(f"generating {b} ...", file=sys.stderr)
        subprocess.run(
            [bin_path, *common, "--noise", "1e-6", "--drift", "blocks.7.mlp=1e-3", "-o", b],
            check=True,
        )
    return a, b


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "dinodiff"))
    p.add_argument("--dir", default=os.environ.get("DINODIFF_BENCH_DIR", REPO / "target" / "bench"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", choices=["vitl16", "vit7b16"], action="append")
    p.add_argument("--size-7b", type=int, default=288, help="image size of the 7B pair")
    p.add_argument("--dumps", nargs=2, metavar=("A.st", "B.st"),
                   help="benchmark this pair of real dumps instead of the synthetic ones")
    args = p.parse_args()
    out_dir = pathlib.Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [("vitl16-224", "vitl16", 224), (f"vit7b16-{args.size_7b}", "vit7b16", args.size_7b)]
    if args.only:
        cases = [c for c in cases if c[1] in args.only]
    if args.dumps:
        given = [pathlib.Path(d) for d in args.dumps]
        cases = [(f"{given[0].name} vs {given[1].name}", given, None)]
    rows = []
    for name, variant, size in cases:
        a, b = variant if size is None else ensure_pair(args.bin, out_dir, name, variant, size)
        total = a.stat().st_size + b.stat().st_size
        subprocess.run(["cat", a, b], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        t_cat, _, _ = best(args.repeat, ["cat", a, b])
        t_dd, anon_dd, rss_dd = best(
            args.repeat, [args.bin, "diff", a, b, "--format", "json"], stderr=subprocess.DEVNULL
        )
        t_np, anon_np, _ = best(args.repeat, [sys.executable, "-c", BASELINE, a, b], ok=(0,))
        rows.append((name, total, t_cat, t_dd, t_np, anon_dd, rss_dd, anon_np))

    gb = 1e9
    print(f"\ndinodiff diff benchmark ({os.cpu_count()} cores, best of {args.repeat} warm runs)\n")
    header = ("pair", "both files", "cat", "dinodiff", "numpy", "vs numpy", "of read bw",
              "RssAnon dinodiff", "RssAnon numpy")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, total, t_cat, t_dd, t_np, anon_dd, rss_dd, anon_np in rows:
        print(
            f"| {name} | {total / gb:.2f} GB | {t_cat:.2f} s ({total / t_cat / gb:.1f} GB/s) "
            f"| {t_dd:.2f} s ({total / t_dd / gb:.1f} GB/s) | {t_np:.2f} s | {t_np / t_dd:.1f}x "
            f"| {t_cat / t_dd:.0%} | {anon_dd / 2**20:.0f} MiB | {anon_np / 2**20:.0f} MiB |"
        )
    print("\ntargets: >= 5x faster than numpy, >= 50% of the warm read bandwidth, "
          "RssAnon <= 256 MiB")
    ok = all(
        t_np / t_dd >= 5 and t_cat / t_dd >= 0.5 and anon_dd <= 256 * 2**20
        for _, _, t_cat, t_dd, t_np, anon_dd, _, _ in rows
    )
    print("all targets met" if ok else "SOME TARGETS MISSED")


if __name__ == "__main__":
    run_main(main)
