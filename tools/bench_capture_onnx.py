#!/usr/bin/env python3
"""Benchmark `dinodiff capture onnx` (every value of the graph) against the Python ways of doing
the same job, side by side in one run, on the same input and the same thread count.

    python tools/bench_capture_onnx.py [--repeat 5] [--threads 2] [--work DIR] [--dinodiff PATH]
    python tools/bench_capture_onnx.py --tiny      # D 64, 2 blocks: checks the script end to end

(a) jax2onnx export of the Equinox DINOv3 example (`jax2onnx.plugins.examples.eqx.dino`,
    ViT-S/16: D 384, 12 blocks, 6 heads, 4 storage tokens, random init, key 0; nested local
    functions): `dinodiff capture onnx` vs a plain onnxruntime Python inference of the same model
    in a fresh process (import + session create + one run, default session options but the
    thread count). Reported: both wall times (ratio, target <= 3x), the Python session + run
    and run alone as the process measures them, and dinodiff's own marked-run time.
(b) torch.onnx dynamo export of timm's DINOv3 port (tools/export_torch_onnx.py, ViT-S/16 from a
    deterministic random Meta checkpoint; flat graph, external data): `dinodiff capture onnx` vs
    `polygraphy run model.onnx --onnxrt --onnx-outputs '*' --load-inputs inputs.json
    --save-outputs out.json` ('*' = every tensor; `mark all` is its deprecated spelling).
    Reported: wall time (speed-up, target >= 5x), output file size and peak RSS of each process
    (the child's own ru_maxrss from wait4).

Each command runs as a fresh process: once to warm the page cache, then --repeat times,
interleaved, each after its previous output is deleted and the disk synced (outside the
timing); the best time is kept (peak RSS: the lowest). ONNX Runtime threads: dinodiff
`--threads N`, Python `intra_op_num_threads = N`; Polygraphy sizes its pools by the CPUs the
process may use, so it runs with its CPU affinity cut to N CPUs when N is below that.
Models, checkpoints and the input are cached in --work by name (delete them to rebuild).
dinodiff finds ONNX Runtime through ORT_DYLIB_PATH, set to this Python's onnxruntime library.
"""

import argparse
import importlib.util
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolerror import ToolError, run_main  # noqa: E402

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
PY = sys.executable
sys.path.insert(0, str(TOOLS))
from dumpfile import read_dump, write_dump  # noqa: E402

# name: (embed_dim, depth, heads)
CONFIGS = {"vits16": (384, 12, 6), "tiny": (64, 2, 2)}
IMG = 224

JAX2ONNX_EXPORT = r"""
import sys
import jax, jax2onnx, onnx
from jax2onnx.plugins.examples.eqx.dino import VisionTransformer
size, d, depth, heads, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
model = VisionTransformer(img_size=size, patch_size=16, embed_dim=d, depth=depth, num_heads=heads,
                          num_storage_tokens=4, key=jax.random.PRNGKey(0))
jax2onnx.to_onnx(model, inputs=[(1, 3, size, size)], return_mode="file", output_path=out)
m = onnx.load(out, load_external_data=False)
if m.ir_version > 13:  # ONNX Runtime 1.31 accepts up to 13
    m.ir_version = 13
    onnx.save(m, out)
"""

PLAIN_ORT = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
sys.path.insert(0, sys.argv[1])
from dumpfile import read_dump
x = read_dump(sys.argv[3])[1]["input"]
t1 = time.perf_counter()
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(sys.argv[4])
sess = ort.InferenceSession(sys.argv[2], opts, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
sess.run(None, {sess.get_inputs()[0].name: x})
t3 = time.perf_counter()
print(t3 - t1, t3 - t2)
"""


def say(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, affinity=None, env=None, fresh=(), sync=False):
    """Runs cmd as a fresh process; returns (wall s, peak RSS bytes, stdout, stderr). With
    `sync`, the files in `fresh` are deleted and everything written so far is synced first,
    outside the timing: neither freeing the previous output nor its writeback lands in a run."""
    for f in fresh:
        Path(f).unlink(missing_ok=True)
    if sync:
        os.sync()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        pre = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
        t = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env,
                                preexec_fn=pre)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{stderr[-4000:]}")
    return wall, usage.ru_maxrss * 1024, stdout, stderr


def cached_dir(path, make):
    """path/ is made by make(tmp_dir) into a temporary sibling, then renamed: a half-made
    model is never taken for a cached one."""
    if path.is_dir():
        return path
    tmp = path.with_name(path.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        make(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def make_models(work, cfg, threads):
    d, depth, heads = CONFIGS[cfg]
    ckpt = work / f"{cfg}-seed0.pth"
    if not ckpt.exists():
        say(f"writing the checkpoint {ckpt}")
        extra = [] if cfg == "vits16" else ["--embed-dim", d, "--depth", depth, "--heads", heads]
        run([PY, TOOLS / "make_meta_checkpoint.py", "--variant", "vits16", *extra,
             "-o", ckpt])

    def jax2onnx_export(tmp):
        say(f"exporting the Equinox example ({cfg}) with jax2onnx")
        run([PY, "-c", JAX2ONNX_EXPORT, IMG, d, depth, heads, tmp / "model.onnx"])

    def torch_export(tmp):
        say(f"exporting timm's DINOv3 ({cfg}) with torch.onnx (dynamo)")
        run([PY, TOOLS / "export_torch_onnx.py", "--weights", ckpt, "--img-size", IMG,
             "--exporter", "dynamo", "--threads", threads, "-o", tmp / "model.onnx"])

    j2o = cached_dir(work / f"jax2onnx-{cfg}-{IMG}", jax2onnx_export) / "model.onnx"
    dyn = cached_dir(work / f"torch-dynamo-{cfg}-{IMG}", torch_export) / "model.onnx"
    return j2o, dyn


def make_input(work, dinodiff, env):
    inp = work / f"input-{IMG}.st"
    if inp.exists():
        return inp
    # The image bench_capture_meta.py uses, found without importing matplotlib (see own_rss).
    spec = importlib.util.find_spec("matplotlib")
    image = spec and Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if image and image.exists():
        run([dinodiff, "prep", "--image", image, "--size", IMG, "-o", inp], env=env)
    else:
        x = np.random.default_rng(0).standard_normal((1, 3, IMG, IMG)).astype(np.float32)
        write_dump(inp, [("input", x, {"native": "input", "stage": "input"})],
                   input_provenance={"from": "numpy default_rng(0) standard normal"})
    return inp


POLYGRAPHY_INPUTS = r"""
import sys
sys.path.insert(0, sys.argv[1])
from dumpfile import read_dump
from polygraphy.json import save_json
save_json([{"input": read_dump(sys.argv[2])[1]["input"]}], sys.argv[3], description="input.st")
"""


def polygraphy_inputs(work, inp):
    """Polygraphy's --load-inputs format: a JSON list of feed dicts, written by its save_json
    (NumPy arrays as base64 .npy). In a child: polygraphy's JSON module imports torch."""
    path = work / f"polygraphy-inputs-{IMG}.json"
    if not path.exists():
        tmp = path.with_name(path.name + f".partial-{os.getpid()}")
        run([PY, "-c", POLYGRAPHY_INPUTS, TOOLS, inp, tmp])
        os.replace(tmp, path)
    return path


def number(pattern, text, cast=float):
    m = re.search(pattern, text)
    return cast(m.group(1)) if m else None


def ort_library():
    spec = importlib.util.find_spec("onnxruntime")  # not imported: keeps this process small
    if spec is None:
        raise ToolError(f"no onnxruntime package in {PY}")
    libs = sorted((Path(spec.origin).parent / "capi").glob("libonnxruntime.so*"))
    if not libs:
        raise ToolError(f"no libonnxruntime.so* in the onnxruntime package of {PY}")
    return libs[-1]


def onnx_summary(path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*") if f.is_file())
    return len(m.graph.node), len(m.functions), size


def mb(n):
    return f"{n / 1e6:.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


def ms(s):
    return f"{s * 1e3:.0f} ms" if s < 10 else f"{s:.1f} s"


def secs(s):
    return f"{s:.2f} s"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dinodiff", type=Path,
                   default=Path(os.environ.get("DINODIFF_BIN", REPO / "target/release/dinodiff")))
    p.add_argument("--repeat", type=int, default=5, help="best of N (default 5)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads everywhere")
    p.add_argument("--work", type=Path, default=REPO / "target" / "bench" / "onnx",
                   help="models, checkpoints, input and outputs (models are cached by name)")
    p.add_argument("--tiny", action="store_true",
                   help="D 64, 2 blocks, 2 heads instead of ViT-S/16 (checks the script)")
    a = p.parse_args()
    if not a.dinodiff.exists():
        raise ToolError(f"{a.dinodiff} does not exist: build it (cargo build --release) or pass --dinodiff")
    cfg = "tiny" if a.tiny else "vits16"
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    threads = str(a.threads)
    env = dict(os.environ, ORT_DYLIB_PATH=str(ort_library()))
    cpus = sorted(os.sched_getaffinity(0))
    affinity = set(cpus[:a.threads]) if a.threads < len(cpus) else None

    inp = make_input(work, a.dinodiff, env)
    j2o, dyn = make_models(work, cfg, threads)
    pg_inputs = polygraphy_inputs(work, inp)
    out = work / "out"
    out.mkdir(exist_ok=True)

    st_a, st_b = out / f"jax2onnx-{cfg}.st", out / f"torch-dynamo-{cfg}.st"
    pg_out = out / f"polygraphy-{cfg}.json"

    def dinodiff_cmd(model, dump):
        return [a.dinodiff, "capture", "onnx", "--model", model, "--input", inp, "-o", dump,
                "--threads", threads]

    polygraphy = Path(PY).parent / "polygraphy"
    polygraphy = [polygraphy] if polygraphy.exists() else [PY, "-m", "polygraphy"]
    # name: (command, CPU affinity, files deleted before each run)
    jobs = {
        "ours_a": (dinodiff_cmd(j2o, st_a), None, [st_a]),
        "plain_a": ([PY, "-c", PLAIN_ORT, TOOLS, j2o, inp, threads], None, []),
        "ours_b": (dinodiff_cmd(dyn, st_b), None, [st_b]),
        "poly_b": (polygraphy + ["run", dyn, "--onnxrt", "--onnx-outputs", "*", "--load-inputs",
                                 pg_inputs, "--save-outputs", pg_out], affinity, [pg_out]),
    }

    # Linux starts a child's ru_maxrss at the RSS of the process it was forked from, so this
    # process stays small (numpy only) until every measurement is done.
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    say("warm-up run of each command")
    for cmd, aff, fresh in jobs.values():
        run(cmd, aff, env, fresh, sync=True)
    res = {k: [] for k in ("ours_a", "plain_a", "plain_a_in", "plain_a_run", "ours_a_run",
                           "ours_b", "ours_b_rss", "poly_b", "poly_b_rss")}
    stderr = {}
    for i in range(a.repeat):
        say(f"round {i + 1} of {a.repeat}")
        for name, (cmd, aff, fresh) in jobs.items():
            t, rss, stdout, stderr[name] = run(cmd, aff, env, fresh, sync=True)
            res[name].append(t)
            if name + "_rss" in res:
                res[name + "_rss"].append(rss)
            if name == "plain_a":
                inside, run_only = map(float, stdout.split())
                res["plain_a_in"].append(inside)
                res["plain_a_run"].append(run_only)
            elif name == "ours_a":
                run_s = number(r"marked runs? ([\d.]+) s", stderr[name])
                if run_s is not None:
                    res["ours_a_run"].append(run_s)
    ours_a_err, ours_b_err = stderr["ours_a"], stderr["ours_b"]
    best = {k: min(v) if v else None for k, v in res.items()}

    # Same work on both sides of (b)? Compare the model's output and count the saved values.
    from polygraphy.json import load_json

    _, ours_t = read_dump(st_b)
    pg = load_json(str(pg_out))
    pg_values = dict(list(pg.values())[0][0]) if len(pg) else {}
    values_pg = len(pg_values)
    same_out = None
    if "output" in pg_values and "output" in ours_t:
        y = pg_values["output"]
        y = y.load() if hasattr(y, "load") else np.asarray(y)
        same_out = float(np.abs(y - ours_t["output"]).max())
    values_b = number(r"(\d+) values marked", ours_b_err, int)
    values_a = number(r"(\d+) values marked", ours_a_err, int)
    del pg, pg_values, ours_t

    import onnxruntime
    import polygraphy

    j2o_nodes, j2o_funcs, j2o_size = onnx_summary(j2o)
    dyn_nodes, _, dyn_size = onnx_summary(dyn)
    d, depth, heads = CONFIGS[cfg]
    print(f"capture onnx benchmark: {cfg} (D {d}, {depth} blocks, {heads} heads), {IMG}x{IMG}, "
          f"{threads} ONNX Runtime thread(s), best of {a.repeat}, fresh process each")
    print(f"environment: onnxruntime {onnxruntime.__version__} (dinodiff loads {env['ORT_DYLIB_PATH']}), "
          f"polygraphy {polygraphy.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s) ({len(cpus)} usable), {platform.machine()} "
          f"{platform.system()} {platform.release()}; dinodiff {a.dinodiff}")
    print()
    print(f"(a) jax2onnx export ({j2o_nodes} main-graph node(s), {j2o_funcs} local functions, "
          f"{mb(j2o_size)}): every value vs a plain inference")
    print()
    print("| dinodiff capture onnx, end to end | values | dump | plain onnxruntime (Python), "
          "end to end | ratio (target <= 3x) | Python session + run | Python run alone "
          "| dinodiff marked run |")
    print("|---|---|---|---|---|---|---|---|")
    dump_a = st_a.stat().st_size
    ratio_a = best["ours_a"] / best["plain_a"]
    print(f"| {secs(best['ours_a'])} | {values_a if values_a is not None else '?'} "
          f"| {mb(dump_a)} | {secs(best['plain_a'])} | {ratio_a:.2f}x "
          f"{'(ok)' if ratio_a <= 3 else '(MISSED)'} | {ms(best['plain_a_in'])} "
          f"| {ms(best['plain_a_run'])} | "
          f"{ms(best['ours_a_run']) if best['ours_a_run'] is not None else '?'} |")
    print()
    print(f"(b) torch.onnx dynamo export ({dyn_nodes} nodes, {mb(dyn_size)} with external "
          f"data): every value, dinodiff vs Polygraphy"
          + (f"; final output max|Δ| between the two: {same_out:.3g}" if same_out is not None
             else ""))
    print()
    print("| tool | wall | peak RSS | output file | values |")
    print("|---|---|---|---|---|")
    size_ours = st_b.stat().st_size
    size_pg = pg_out.stat().st_size
    print(f"| dinodiff capture onnx | {secs(best['ours_b'])} | {mb(best['ours_b_rss'])} "
          f"| {mb(size_ours)} (.st) | {values_b if values_b is not None else '?'} |")
    print(f"| polygraphy run --onnx-outputs '*' --save-outputs | {secs(best['poly_b'])} "
          f"| {mb(best['poly_b_rss'])} | {mb(size_pg)} (.json) | {values_pg} |")
    speed = best["poly_b"] / best["ours_b"]
    print(f"| **ratio (Polygraphy / dinodiff)** | **{speed:.1f}x** "
          f"{'(target >= 5x: ok)' if speed >= 5 else '(target >= 5x: MISSED)'} "
          f"| {best['poly_b_rss'] / best['ours_b_rss']:.1f}x | {size_pg / size_ours:.2f}x | |")
    print()
    print("All runs (wall s, in order): " + "; ".join(
        f"{label} {' '.join(f'{t:.2f}' for t in res[key])}"
        for label, key in (("(a) dinodiff", "ours_a"), ("(a) Python", "plain_a"),
                           ("(b) dinodiff", "ours_b"), ("(b) Polygraphy", "poly_b"))) + ".")
    print(f"Peak RSS: each child's ru_maxrss (wait4); a child's figure cannot be below this "
          f"process's {mb(own_rss)} at fork time. Polygraphy runs ONNX Runtime with its default "
          f"graph optimizations (ORT_ENABLE_ALL), dinodiff with its default (--opt-level disable).")


if __name__ == "__main__":
    run_main(main)
