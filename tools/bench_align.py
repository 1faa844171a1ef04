#!/usr/bin/env python3
"""Benchmark of `dinodiff align` (value alignment, issue 15), side by side with baselines on the
same dumps, in fresh processes, best of --repeat warm runs; peak RssAnon / VmRSS sampled from
/proc every 5 ms (tools/bench_diff.py's sampler).

Pairs:
- vits16: A = `capture meta` of a random ViT-S/16 Meta checkpoint (178 tensors), B = the
  jax2onnx export of the same weights (tools/meta_to_eqx.py, tools/export_onnx.py), `capture
  onnx` (every value, ~1,570), rewritten WITHOUT stage names (tools/make_unnamed_dump.py).
  Needs a torch-featured binary. Also printed: precision / recall of the pairing against the
  mapping the stage rules produced (a pick counts when it is that value or an exact copy of it).
- vitl16: synthetic ViT-L/16 dumps as tools/bench_diff.py makes them (`dinodiff synth`), B with
  noise 1e-6, rewritten here like an export: native names, no stage names, q / k / v as
  [B, N, H, hd], attn.sdpa unbatched, patch_embed NCHW, and per block the values an export
  holds beside the stages (LayerNorm statistics, q / k before RoPE as near-copies, attention
  logits and probabilities, the MLP pre-activation, 40 small constants per block): ~1,500
  tensors.

Baselines, on the same files: `dinodiff diff A B` with names only (what a diff costs when the
names agree: B with its stage names), and Python reading both dumps whole with safetensors.
Targets (issue 15): ViT-S <= 3 s, ViT-L <= 15 s on 2 cores; memory bounded like `diff`: peak
RssAnon of align beside diff's (a torch-featured binary holds ~57 MiB of libtorch's own from its
start, `dinodiff --version` included, so the two columns differ by what align itself allocates).

    python tools/bench_align.py [--bin target/release/dinodiff] [--only vits16|vitl16] [--repeat 3]
Run: tools/dev bench
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

TOOLS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
from bench_diff import best  # noqa: E402
from dumpfile import read_dump, write_dump  # noqa: E402
from make_unnamed_dump import sliced_values, unnamed_copy  # noqa: E402
from toolerror import ToolError, run_main  # noqa: E402

REPO = TOOLS.parent
TARGETS = {"vits16": 3.0, "vitl16": 15.0}

READ = r"""
import sys
from safetensors import safe_open
total = 0
for path in sys.argv[1:]:
    with safe_open(path, "numpy") as f:
        for name in f.keys():
            total += f.get_tensor(name).nbytes
print(total)
"""


def sh(*cmd, **kw):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise ToolError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def make_vits16(bin_path, out):
    """(A, B unnamed, B named, truth) for ViT-S/16, made once and cached in `out`."""
    a, named, b = out / "vits16.meta.st", out / "vits16.onnx.st", out / "vits16.unnamed.st"
    truth_path = out / "vits16.truth.json"
    py = sys.executable
    if not (out / "vits16.pth").exists():
        sh(py, TOOLS / "make_meta_checkpoint.py", "--variant", "vits16", "--seed", 0,
           "-o", out / "vits16.pth")
    if not (out / "in224.st").exists():
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        write_dump(out / "in224.st", [("input", x, {"native": "input"})], source="input")
    if not a.exists():
        print(f"generating {a} ...", file=sys.stderr)
        sh(bin_path, "capture", "meta", "--weights", out / "vits16.pth", "--input",
           out / "in224.st", "-o", a)
    if not named.exists():
        print(f"generating {named} (jax2onnx export, capture onnx) ...", file=sys.stderr)
        sh(py, TOOLS / "meta_to_eqx.py", "--weights", out / "vits16.pth", "--img-size", 224,
           "-o", out / "vits16.eqx")
        sh(py, TOOLS / "export_onnx.py", "--model", out / "vits16.eqx", "-o", out / "vits16.onnx")
        sh(bin_path, "capture", "onnx", "--model", out / "vits16.onnx", "--input",
           out / "in224.st", "-o", named)
    if not b.exists() or not truth_path.exists():
        manifest, _ = read_dump(named)
        truth = unnamed_copy(named, b, replace=sliced_values(out / "vits16.onnx", manifest))
        # The rules' values hold the stages as they are (reshaped at most), except a table
        # sliced out of a larger value: no single partner.
        sliced = {s for s, r in manifest["tensors"].items() if "sliced" in r}
        truth = {s: [n, None] for s, n in truth.items() if s not in sliced}
        truth_path.write_text(json.dumps(truth))
    return a, b, named, json.loads(truth_path.read_text())


def make_vitl16(bin_path, out):
    """(A, B unnamed, B named, truth) for ViT-L/16 from `dinodiff synth`, cached in `out`."""
    a, named, b = out / "vitl16-224.a.st", out / "vitl16-224.noisy.st", out / "vitl16.unnamed.st"
    truth_path = out / "vitl16.truth.json"
    common = ["synth", "--variant", "vitl16", "--image-size", "224", "--seed", "1"]
    if not a.exists():
        print(f"generating {a} ...", file=sys.stderr)
        sh(bin_path, *common, "-o", a)
    if not named.exists():
        print(f"generating {named} ...", file=sys.stderr)
        sh(bin_path, *common, "--noise", "1e-6", "-o", named)
    if not b.exists() or not truth_path.exists():
        print(f"generating {b} (export-like names, layouts and extra values) ...",
              file=sys.stderr)
        truth = export_like(named, b)
        truth_path.write_text(json.dumps(truth))
    return a, b, named, json.loads(truth_path.read_text())


def export_like(src, dst):
    """src's stages under export-like names and layouts, with an export's other values."""
    manifest, t = read_dump(src)
    rng = np.random.default_rng(0)
    heads = 16
    items, truth = [], {}
    for stage in manifest["order"]:
        x = t[stage]
        if stage == "input":
            items.append(("input", x, {"native": "input"}))
            continue
        parts = stage.split(".")
        block = parts[1] if parts[0] == "blocks" else None
        prefix = f"/encoder/layer.{block}/" if block else "/"
        name = prefix + "_".join(parts[2:] if block else parts) + "_output_0"
        extra, layout = [], None  # layout: how the stored value reads as the stage (B -> A)
        if stage.endswith(("attn.q", "attn.k", "attn.v")):
            x = np.ascontiguousarray(np.transpose(x, (0, 2, 1, 3)))  # [B, N, H, hd]
            layout = "permute(0,2,1,3)"
            if not stage.endswith("attn.v"):  # before RoPE: the prefix rows equal, others not
                pre = x.copy()
                pre[:, 5:] += rng.standard_normal(pre[:, 5:].shape).astype(x.dtype) * 1e-2
                extra.append((name.replace("_output_0", "_prerope_output_0"), pre))
        elif stage.endswith("attn.sdpa"):
            layout = f"reshape({','.join(map(str, x.shape))})"
            x = x.reshape(x.shape[1], heads, -1)
        elif stage == "patch_embed":
            hw, d = x.shape[1], x.shape[2]
            side = int(round(hw ** 0.5))
            x = np.ascontiguousarray(np.transpose(x, (0, 2, 1))).reshape(1, d, side, hw // side)
            layout = f"reshape(1,{d},{hw})|permute(0,2,1)"
        elif stage.endswith(("norm1", "norm2")) or stage == "norm":
            n = x.shape[1]
            for stat in ("mean", "var"):
                extra.append((name.replace("_output_0", f"_{stat}_output_0"),
                              rng.standard_normal((1, n, 1)).astype(np.float32)))
            extra.append((name.replace("_output_0", "_shape_output_0"),
                          np.array(x.shape, dtype=np.int64)))
        if stage.endswith("attn.k"):  # the attention weights, before and after the softmax
            n = x.shape[1]
            logits = rng.standard_normal((1, heads, n, n)).astype(np.float32)
            extra.append((name.replace("k_output_0", "logits_output_0"), logits))
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            extra.append((name.replace("k_output_0", "probs_output_0"),
                          (probs / probs.sum(-1, keepdims=True)).astype(np.float32)))
        if stage.endswith(".output"):  # the small values an export is full of
            for j in range(40):
                extra.append((f"{prefix}Constant_{j}_output_0",
                              np.array([1, x.shape[1], j + 1, 64], dtype=np.int64) if j % 2
                              else np.array(0.5 + j, dtype=np.float32)))
        if stage.endswith("mlp.hidden"):
            extra.append((name.replace("_output_0", "_pre_gelu_output_0"),
                          x + rng.standard_normal(x.shape).astype(x.dtype) * 0.1))
        truth[stage] = [name, layout]
        # An export computes these before the stage's value.
        items += [(n, v, {"native": n}) for n, v in extra]
        items.append((name, x, {"native": name}))
    write_dump(dst, items, source="other")
    return truth


def precision_recall(report, truth, b_path):
    """Pairs for canonical stages against the truth {stage: [name, layout]}. A pick that is not
    the truth's value counts when, read through its layout, it holds exactly the elements of the
    truth's value read through the truth's layout (an Identity / Reshape / Transpose copy)."""
    from safetensors import safe_open

    pairs = {p["a"]: p for p in report["pairs"] if p["a"] != "input"}
    correct, wrongs = 0, []
    with safe_open(str(b_path), "numpy") as fb:
        for stage, p in pairs.items():
            if stage not in truth:
                wrongs.append(stage)
            elif p["b"] == truth[stage][0]:
                correct += 1
            elif np.array_equal(read_through(fb.get_tensor(p["b"]), p.get("layout")).ravel(),
                                read_through(fb.get_tensor(truth[stage][0]),
                                             truth[stage][1]).ravel()):
                correct += 1
            else:
                wrongs.append(stage)
    proposed = len(pairs)
    return (correct / proposed if proposed else 0.0, correct / len(truth) if truth else 0.0,
            correct, proposed, len(truth), wrongs)


def read_through(x, layout):
    """docs/alignment.md's layout grammar: `|`-separated reshape(..) / permute(..) steps."""
    for step in (layout.split("|") if layout else []):
        kind, _, dims = step.strip().partition("(")
        dims = [int(d) for d in dims.rstrip(")").split(",") if d.strip()]
        x = x.reshape(dims) if kind == "reshape" else np.transpose(x, dims)
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bin", default=str(REPO / "target" / "release" / "dinodiff"))
    p.add_argument("--dir", default=os.environ.get("DINODIFF_BENCH_DIR", REPO / "target" / "bench"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", choices=list(TARGETS), action="append")
    a = p.parse_args()
    out = pathlib.Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    if subprocess.run([a.bin, "align", "--help"], capture_output=True).returncode:
        raise ToolError(f"{a.bin} has no `align` command")
    rows = []
    for case in a.only or list(TARGETS):
        make = make_vits16 if case == "vits16" else make_vitl16
        a_path, b_path, named, truth = make(a.bin, out)
        subprocess.run(["cat", a_path, b_path, named], stdout=subprocess.DEVNULL, check=True)
        n_a = len(read_dump(a_path)[0]["order"])
        n_b = len(read_dump(b_path)[0]["order"])
        align_cmd = [a.bin, "align", a_path, b_path, "--format", "json"]
        t_al, anon_al, rss_al = best(a.repeat, align_cmd, ok=(0,), stderr=subprocess.DEVNULL)
        t_df, anon_df, rss_df = best(a.repeat, [a.bin, "diff", a_path, named, "--format", "json"],
                                     stderr=subprocess.DEVNULL)
        t_rd, anon_rd, rss_rd = best(a.repeat, [sys.executable, "-c", READ, a_path, b_path],
                                     ok=(0,))
        report = json.loads(sh(*align_cmd).stdout)
        pr = precision_recall(report, truth, b_path)
        size = a_path.stat().st_size + b_path.stat().st_size
        rows.append((case, n_a, n_b, size, t_al, rss_al, anon_al, t_df, rss_df, anon_df, t_rd,
                     rss_rd, pr))

    print(f"\ndinodiff align benchmark ({os.cpu_count()} cores, best of {a.repeat} warm runs; "
          "RSS = peak VmRSS (mapped file pages included), anon = peak RssAnon)\n")
    header = ("pair", "tensors A / B", "both files", "align", "diff (names)", "Python read",
              "align / diff", "align / read", "RSS align", "RSS diff", "RSS read", "anon align",
              "anon diff", "target")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ok = True
    for case, n_a, n_b, size, t_al, rss_al, anon_al, t_df, rss_df, anon_df, t_rd, rss_rd, _ in rows:
        met = t_al <= TARGETS[case]
        ok &= met
        print(f"| {case} | {n_a} / {n_b} | {size / 1e9:.2f} GB | {t_al:.2f} s | {t_df:.2f} s "
              f"| {t_rd:.2f} s | {t_al / t_df:.1f}x | {t_al / t_rd:.1f}x "
              f"| {rss_al / 2**20:.0f} MiB | {rss_df / 2**20:.0f} MiB | {rss_rd / 2**20:.0f} MiB "
              f"| {anon_al / 2**20:.0f} MiB | {anon_df / 2**20:.0f} MiB "
              f"| <= {TARGETS[case]:.0f} s {'met' if met else 'MISSED'} |")
    print()
    for case, *_, pr in rows:
        precision, recall, correct, proposed, total, wrongs = pr
        print(f"{case}: precision {precision:.3f} ({correct}/{proposed}), recall {recall:.3f} "
              f"({correct}/{total}) against the truth"
              + (f"; wrong: {', '.join(wrongs[:10])}" if wrongs else ""))
    print("all time targets met" if ok else "SOME TIME TARGETS MISSED")


if __name__ == "__main__":
    run_main(main)
