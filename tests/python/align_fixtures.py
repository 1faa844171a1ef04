"""Helpers of the alignment tests (tests/python/test_align*.py): the truth of a pairing, computed
here with numpy and independent of dinodiff, and the dumps the aligner is given.

- `python_marked`: every node output of an ONNX model by onnxruntime's Python API (marked in
  Python), in graph order;
- `layouts_matching` / `value_partners`: the tensors of a dump that hold a reference tensor's
  values under some axis permutation and reshape (numpy, every permutation tried);
- `apply_layout`: the layout grammar of docs/alignment.md (`reshape(..)|permute(..)`), in numpy;
- `unnamed_copy` (tools/make_unnamed_dump.py): a dump rewritten without stage names (tensors
  under their ONNX value names, stage fields dropped), written with safetensors' own Python API;
- `score`: precision and recall of the aligner's pairs against a truth."""

import itertools
import re
import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
from dumpfile import read_dump  # noqa: E402
from make_unnamed_dump import sliced_values, unnamed_copy  # noqa: E402,F401  (re-exported)

BLOCK = ["norm1", "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.sdpa", "attn", "ls1",
         "residual1", "norm2", "mlp.hidden", "mlp", "ls2", "output"]


def canonical(depth):
    return (["input", "patch_embed", "tokens", "rope.sin", "rope.cos"]
            + [f"blocks.{i}.{s}" for i in range(depth) for s in BLOCK]
            + ["norm", "cls", "storage", "patches", "pooled"])


def python_marked(path, x):
    """(names in graph order, {name: array}): every node output of the model, by onnxruntime's
    Python API, the model marked in Python (outputs added), optimizations disabled."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    names = [o for n in model.graph.node for o in n.output if o]
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=o) for o in names)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return names, dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x})))


def squeeze_leading(shape):
    shape = list(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return shape


def layouts_matching(b, a, atol=0.0, rtol=0.0):
    """The ways b holds a's values (within atol + rtol·|a|; exactly when both are 0): b's axes
    permuted then read in row-major order (`("permute", p)`), or b read as a's shape with its
    axes in another order, then permuted back (`("split", p)`: a head split, NCHW). [] when none
    does. Every permutation is tried."""
    if b.size != a.size or b.dtype.kind not in "fiu":
        return []
    av = a.astype(np.float64).ravel()
    bv = b.astype(np.float64)
    # Cheap necessary condition first: the same multiset of values.
    if not np.allclose(np.sort(bv.ravel()), np.sort(av), atol=atol, rtol=rtol):
        return []
    found, seen = [], set()
    for p in itertools.permutations(range(b.ndim)):
        order = tuple(i for i in p if b.shape[i] != 1)  # singleton axes do not move elements
        if order in seen:
            continue
        seen.add(order)
        if np.allclose(np.transpose(bv, p).ravel(), av, atol=atol, rtol=rtol):
            found.append(("permute", p))
    a_shape = a.shape
    for p in itertools.permutations(range(a.ndim)):
        shape = tuple(a_shape[i] for i in p)
        if shape == tuple(b.shape):  # b as is: the permutations above
            continue
        back = np.transpose(bv.reshape(shape), np.argsort(p))
        if np.allclose(back.ravel(), av, atol=atol, rtol=rtol):
            found.append(("split", p))
    return found


def value_partners(reference, tensors, atol, rtol=0.0):
    """{stage: [names]}: for each reference tensor, the tensors (name -> array, any order) that
    hold its values under some permutation and reshape, within the tolerance."""
    by_size = {}
    for name, t in tensors.items():
        by_size.setdefault(t.size, []).append(name)
    return {stage: [n for n in by_size.get(ref.size, [])
                    if layouts_matching(tensors[n], ref, atol, rtol)]
            for stage, ref in reference.items()}


LAYOUT_STEP = re.compile(r"^(reshape|permute)\(([-\d, ]*)\)$")


def apply_layout(b, layout, a_shape):
    """B read through `layout` (docs/alignment.md: `|`-separated `reshape(..)` / `permute(..)`
    steps, left to right; none = identity), then given A's shape (leading singleton dimensions
    reconcile as `diff` does: the element count must agree)."""
    x = np.asarray(b)
    for step in (layout.split("|") if layout else []):
        m = LAYOUT_STEP.match(step.strip())
        assert m, f"layout step {step!r} of {layout!r} is not reshape(..) or permute(..)"
        dims = [int(d) for d in m.group(2).split(",") if d.strip()]
        x = x.reshape(dims) if m.group(1) == "reshape" else np.transpose(x, dims)
    assert squeeze_leading(x.shape) == squeeze_leading(a_shape), (
        f"layout {layout!r} turns {list(b.shape)} into {list(x.shape)}, not A's {list(a_shape)}")
    return x.reshape(a_shape)


def score(pairs, truth, stages, strict=None):
    """Precision and recall of `pairs` ({a: b} from the aligner) over the canonical `stages` of A
    (`input` aside, which both sides name alike):
    - `truth` {stage: [names]}: the B tensors that hold the stage's values (empty: no partner);
    - a pair is correct when its B tensor is one of them; precision = correct / pairs proposed
      for canonical stages (a pair for a stage without partner is wrong), recall = correct /
      stages with a partner;
    - `strict` {stage: name}: the one partner a rule names; `strict_correct` counts those."""
    stages = [s for s in stages if s != "input"]
    proposed = {s: pairs[s] for s in stages if s in pairs}
    correct = [s for s, b in proposed.items() if b in truth.get(s, [])]
    wrong = {s: b for s, b in proposed.items() if b not in truth.get(s, [])}
    has_partner = [s for s in stages if truth.get(s)]
    missed = [s for s in has_partner if s not in proposed]
    result = {
        "stages": len(stages), "with_partner": len(has_partner), "proposed": len(proposed),
        "correct": len(correct),
        "precision": len(correct) / len(proposed) if proposed else 0.0,
        "recall": len(correct) / len(has_partner) if has_partner else 0.0,
        "wrong": wrong, "missed": missed,
        "no_partner": [s for s in stages if not truth.get(s)],
    }
    if strict is not None:
        result["strict_correct"] = sum(1 for s, b in proposed.items() if strict.get(s) == b)
    return result


def describe(name, result):
    """One line for the test log (pytest -s, or a failure's message)."""
    line = (f"{name}: precision {result['precision']:.3f} ({result['correct']}/"
            f"{result['proposed']}), recall {result['recall']:.3f} ({result['correct']}/"
            f"{result['with_partner']}) over {result['stages']} canonical stages")
    if "strict_correct" in result:
        line += f"; the rules' own value chosen for {result['strict_correct']}"
    if result["no_partner"]:
        line += f"; no single partner in B: {', '.join(result['no_partner'])}"
    if result["wrong"]:
        line += f"; WRONG: {result['wrong']}"
    if result["missed"]:
        line += f"; MISSED: {result['missed']}"
    return line
