"""Write and read dinodiff dumps (`.st`, docs/dump-format.md) from Python tools.

A dump is a plain safetensors file whose tensors are stored in execution order, with a manifest
in `__metadata__["dinodiff.manifest"]`. The `safetensors` package reorders tensors when it saves,
so `write_dump` writes the (simple) safetensors layout itself; `read_dump` uses the stock reader.
The file appears at its path only when complete (written beside it, then renamed).
"""

import datetime
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toolerror import ToolError  # noqa: E402

DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("float64"): "F64",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
}


def _dtype_name(array):
    if array.dtype.name == "bfloat16":
        return "BF16"
    try:
        return DTYPES[array.dtype]
    except KeyError:
        raise ToolError(f"no safetensors dtype for numpy {array.dtype}") from None


def file_identity(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(path), "size": size, "sha256": digest.hexdigest()}


def write_dump(path, tensors, *, source="other", model=None, variant=None, frameworks=None,
               device="cpu", dtype="f32", input_provenance=None, extra=None):
    """tensors: list of (name, numpy array, record dict with at least "native"), in execution
    order. Returns the number of bytes written."""
    arrays = []
    header = {}
    offset = 0
    for name, array, _ in tensors:
        array = np.ascontiguousarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        nbytes = array.nbytes
        header[name] = {"dtype": _dtype_name(array), "shape": list(array.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        arrays.append(array)
    names = [name for name, _, _ in tensors]
    if len(set(names)) != len(names):
        raise ToolError("tensor names must be unique")
    input_sha256 = None
    if "input" in names:
        input_sha256 = hashlib.sha256(arrays[names.index("input")].tobytes()).hexdigest()
    manifest = {
        "format_version": 1,
        "source": source,
        "dinodiff_version": "tools/" + os.path.basename(sys.argv[0]),
        "command_line": sys.argv,
        "model": model,
        "variant": variant,
        "frameworks": frameworks or {},
        "device": device,
        "dtype": dtype,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "input_sha256": input_sha256,
        "input": input_provenance,
        "order": names,
        "tensors": {name: record for name, _, record in tensors},
        **(extra or {}),
    }
    header["__metadata__"] = {"dinodiff.format_version": "1",
                              "dinodiff.manifest": json.dumps(manifest)}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for array in arrays:
                f.write(array.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return 8 + len(blob) + offset


def read_dump(path):
    """Returns (manifest or None, {name: numpy array}) with the stock safetensors reader."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        manifest = json.loads(meta["dinodiff.manifest"]) if "dinodiff.manifest" in meta else None
        return manifest, {k: f.get_tensor(k) for k in f.keys()}
