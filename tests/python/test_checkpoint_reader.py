"""`dinodiff checkpoint` (the Rust torch.save reader, no libtorch) on checkpoints written at test
time the way users write them: `torch.save(module.state_dict())`, training dicts, teacher/student
wrappers, DDP's `module.` prefix, every common dtype, views, the legacy format, a malicious
pickle, truncated files. Expectations come from torch and numpy, never from dinodiff."""

import collections
import hashlib
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "make_meta_checkpoint.py"


def sha256(t: torch.Tensor) -> str:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def listing(run, path, *flags):
    return json.loads(run("checkpoint", path, "--format", "json", *flags).stdout)


def check_tensors(got, expected: dict):
    """The listing holds exactly `expected` (name -> tensor), in order, with torch's values."""
    assert [t["name"] for t in got["tensors"]] == list(expected)
    for t in got["tensors"]:
        want = expected[t["name"]]
        assert t["shape"] == list(want.shape), t["name"]
        assert t["sha256"] == sha256(want), t["name"]


@pytest.fixture(scope="module")
def meta_sd(tmp_path_factory):
    """A tiny state dict with Meta's DINOv3 key names (the predicate's key set)."""
    out = tmp_path_factory.mktemp("meta") / "tiny.pth"
    subprocess.run([sys.executable, TOOL, "--variant", "vits16", "--embed-dim", "64", "--depth",
                    "2", "--heads", "2", "-o", out], check=True, capture_output=True)
    return torch.load(out, weights_only=True)


def test_module_state_dict_ordered_dict_with_metadata(run, tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    sd = module.state_dict()
    assert isinstance(sd, collections.OrderedDict) and hasattr(sd, "_metadata")
    torch.save(sd, tmp_path / "sd.pth")
    got = listing(run, tmp_path / "sd.pth")
    assert got["provenance"]["container"] == "OrderedDict"
    assert got["provenance"]["choice"] == "only" and not got["provenance"]["accepted"]
    check_tensors(got, sd)
    table = run("checkpoint", tmp_path / "sd.pth").stdout
    assert "0.weight" in table and "[3, 4]" in table


def test_training_dict_and_ddp_prefix(run, tmp_path, meta_sd):
    class Wrapper(torch.nn.Module):  # what DistributedDataParallel's state_dict() looks like
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Module()
            for name, value in meta_sd.items():
                owner = self.module
                *path, leaf = name.split(".")
                for part in path:
                    if not hasattr(owner, part):
                        owner.add_module(part, torch.nn.Module())
                    owner = getattr(owner, part)
                owner.register_buffer(leaf, value.clone())

    wrapped = Wrapper().state_dict()
    assert next(iter(wrapped)).startswith("module.")
    torch.save({"model": wrapped, "epoch": 3, "optimizer": {"lr": 1e-3}}, tmp_path / "train.pth")
    got = listing(run, tmp_path / "train.pth")
    p = got["provenance"]
    assert (p["key"], p["prefix"], p["choice"], p["accepted"]) == ("model", "module.", "found", True)
    assert p["container"] == "OrderedDict"
    check_tensors(got, {k.removeprefix("module."): v for k, v in wrapped.items()})


def test_teacher_student_is_ambiguous_without_key(run, tmp_path, meta_sd):
    def backbone(scale):
        sd = {f"backbone.{k}": v * scale for k, v in meta_sd.items()}
        sd["dino_head.mlp.0.weight"] = torch.ones(2, 2) * scale
        return sd

    teacher, student = backbone(1.0), backbone(2.0)
    torch.save({"teacher": teacher, "student": student, "iteration": 10}, tmp_path / "ts.pth")
    proc = run("checkpoint", tmp_path / "ts.pth", expect=(2,))
    assert "--key teacher.backbone" in proc.stderr and "--key student.backbone" in proc.stderr
    for key, sd in (("teacher", teacher), ("student.backbone", student)):
        got = listing(run, tmp_path / "ts.pth", "--key", key)
        p = got["provenance"]
        assert (p["key"], p["prefix"], p["accepted"], p["left_out"]) == (
            key.split(".")[0], "backbone.", True, 1)
        check_tensors(got, {k.removeprefix("backbone."): v for k, v in sd.items()
                            if k.startswith("backbone.")})
    proc = run("checkpoint", tmp_path / "ts.pth", "--key", "ema", expect=(2,))
    assert "`--key teacher`" in proc.stderr and "`--key student`" in proc.stderr


def test_dtypes_views_and_offsets(run, tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "f32": base,
        "transposed": base.t(),
        "rows": base[1:3],
        "column": base[:, 2],
        "strided": base[::2, 1::3],
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "f16": torch.randn(7).to(torch.float16),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "i64": torch.tensor([-(2**40), 0, 2**40]),
        "i32": torch.tensor([-5, 6], dtype=torch.int32),
        "bool": torch.tensor([True, False, True]),
        "u8": torch.arange(200, 210, dtype=torch.uint8),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "f8": torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn),
        "param": torch.nn.Parameter(torch.ones(3)),
    }
    torch.save(tensors, tmp_path / "mix.pth")
    got = listing(run, tmp_path / "mix.pth")
    want = dict(tensors)
    f8 = want.pop("f8")
    by_name = {t["name"]: t for t in got["tensors"]}
    assert by_name["f8"]["dtype"] == "F8_E4M3"
    assert by_name["f8"]["sha256"] == hashlib.sha256(f8.view(torch.uint8).numpy().tobytes()).hexdigest()
    got["tensors"] = [t for t in got["tensors"] if t["name"] != "f8"]
    check_tensors(got, want)
    dtypes = {t["name"]: t["dtype"] for t in got["tensors"]}
    assert (dtypes["bf16"], dtypes["f16"], dtypes["f64"], dtypes["i64"], dtypes["bool"],
            dtypes["u8"]) == ("BF16", "F16", "F64", "I64", "BOOL", "U8")
    views = {n: by_name[n] for n in ("f32", "transposed", "rows", "column")}
    assert len({v["storage"] for v in views.values()}) == 1
    assert not views["transposed"]["contiguous"] and views["rows"]["storage_offset"] == 6


def test_pickle_protocol_4(run, tmp_path):
    sd = {"a": torch.randn(3, 2), "b": torch.arange(4), "note": "x" * 300}
    torch.save(sd, tmp_path / "p4.pth", pickle_protocol=4)
    got = listing(run, tmp_path / "p4.pth")
    check_tensors(got, {k: v for k, v in sd.items() if k != "note"})
    assert got["provenance"]["skipped"] == ["note (str)"]


def test_legacy_format_is_refused_with_the_resave_command(run, tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    proc = run("checkpoint", path, expect=(2,))
    assert "legacy format" in proc.stderr
    command = (f"python -c \"import torch; torch.save(torch.load('{path}', weights_only=True), "
               f"'{tmp_path / 'old.zip.pth'}')\"")
    assert command in proc.stderr, proc.stderr
    # The command it gives works, and its output is read.
    subprocess.run(command.replace("python", sys.executable, 1), shell=True, check=True)
    check_tensors(listing(run, tmp_path / "old.zip.pth"), {"w": torch.ones(2)})
    torch.save({"w": torch.ones(2)}, tmp_path / "old4.pth", _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    assert "legacy format" in run("checkpoint", tmp_path / "old4.pth", expect=(2,)).stderr


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickles_are_refused_and_nothing_runs(run, tmp_path):
    target = tmp_path / "pwned"
    torch.save({"w": torch.ones(1), "evil": Evil(target)}, tmp_path / "evil.pth")
    proc = run("checkpoint", tmp_path / "evil.pth", expect=(2,))
    assert "`posix.system`" in proc.stderr or "`os.system`" in proc.stderr, proc.stderr
    assert "nothing was executed" in proc.stderr
    assert not target.exists()
    # A pickle calling builtins.eval (protocol 4, STACK_GLOBAL) in a zip laid out like torch's;
    # Python's own unpickler would run it.
    payload = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x10__import__('os')\x85R."
    assert pickle.loads(payload) is os
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ck/data.pkl", payload)
    (tmp_path / "eval.pth").write_bytes(buf.getvalue())
    proc = run("checkpoint", tmp_path / "eval.pth", expect=(2,))
    assert "`builtins.eval`" in proc.stderr, proc.stderr


def test_truncated_files_exit_2(run, tmp_path):
    sd = torch.nn.Linear(8, 4).state_dict()
    torch.save(sd, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    for cut in (0, 3, 100, len(data) // 2, len(data) - 23, len(data) - 1):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        proc = run("checkpoint", path, expect=(2,))
        assert str(path) in proc.stderr and "error:" in proc.stderr
    check_tensors(listing(run, tmp_path / "full.pth"), sd)
