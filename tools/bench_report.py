#!/usr/bin/env python3
"""Benchmark of `dinodiff report` (the HTML page) against `dinodiff diff` on the same dumps, side by
side: the report computes the same diff, then the per-token breakdown of every stage with a token
axis, the patch maps and the page. Target: report <= 2x diff; the ViT-L triangle's page <= 8 MB.

Pairs: the synthetic ViT-L/16 pair of tools/bench_diff.py (same files, same cache directory),
plus a third dump for the triangle. Every timing is the best of --repeat warm runs.

Run: python tools/bench_report.py --bin target/release/dinodiff   (tools/dev bench runs it too)
"""

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_diff import REPO, best, ensure_pair  # noqa: E402
from toolerror import run_main  # noqa: E402


def ensure_third(bin_path, out_dir, name, variant, image_size):
    c = out_dir / f"{name}.c.st"
    if not c.exists():
        print(f"generating {c} ...", file=sys.stderr)
        subprocess.run([bin_path, "synth", "--variant", variant, "--image-size", str(image_size),
                        "--seed", "1", "--noise", "2e-6", "--noise-seed", "3", "-o", c],
                       check=True)
    return c


def timed(repeat, cmd, **kw):
    """(best wall seconds, best CPU seconds (user + sys), peak RssAnon) over `repeat` runs. CPU
    time is what a shared machine cannot inflate much by making the process wait."""
    walls, cpus, anon = [], [], 0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, peak, _ = best(1, cmd, **kw)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(wall)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        anon = max(anon, peak)
    return min(walls), min(cpus), anon


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "dinodiff"))
    p.add_argument("--dir", default=os.environ.get("DINODIFF_BENCH_DIR", REPO / "target" / "bench"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    out_dir = pathlib.Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name, variant, size = "vitl16-224", "vitl16", 224
    a, b = ensure_pair(args.bin, out_dir, name, variant, size)
    c = ensure_third(args.bin, out_dir, name, variant, size)
    subprocess.run(["cat", a, b, c], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        page = pathlib.Path(tmp) / "report.html"
        for label, dumps in [("pair", [a, b]), ("triangle", [a, b, c])]:
            t_diff, c_diff, _ = timed(args.repeat, [args.bin, "diff", *dumps, "--format", "json"],
                                      stderr=subprocess.DEVNULL)
            t_report, c_report, anon = timed(args.repeat, [args.bin, "report", *dumps, "-o", page],
                                             stderr=subprocess.DEVNULL)
            rows.append((label, t_diff, t_report, c_diff, c_report, page.stat().st_size, anon))
    print(f"\ndinodiff report benchmark: {name} ({os.cpu_count()} cores, best of {args.repeat} "
          "warm runs)\n")
    header = ("dumps", "diff", "report", "report / diff", "CPU diff", "CPU report",
              "CPU report / diff", "page size", "RssAnon report")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, t_diff, t_report, c_diff, c_report, size_bytes, anon in rows:
        print(f"| {name} {label} | {t_diff:.2f} s | {t_report:.2f} s | {t_report / t_diff:.2f}x "
              f"| {c_diff:.2f} s | {c_report:.2f} s | {c_report / c_diff:.2f}x "
              f"| {size_bytes / 1e6:.2f} MB | {anon / 2**20:.0f} MiB |")
    print("\ntargets: report <= 2x diff (wall); page <= 8 MB. CPU = user + sys of the process")
    ok = all(t_r <= 2 * t_d and s <= 8e6 for _, t_d, t_r, _, _, s, _ in rows)
    print("all targets met" if ok else "SOME TARGETS MISSED")


if __name__ == "__main__":
    run_main(main)
