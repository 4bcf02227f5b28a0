"""A writer of SageMaker Linear Learner artifacts in their documented layout, for the tests.

MXNet (Linear Learner's writer) is not installable here, so this module writes the layout
itself, from the documentation (see ../shared/PROTOCOLS.md and mmhost/artifacts/mxnet.py):
``model.tar.gz`` -> ``model_algo-1`` (a stored zip) -> manifest.json, additional-params.json,
mx-mod-symbol.json and mx-mod-0000.params (MXNet's NDArray list, V1/V2/V3 or legacy headers).
Every piece can be overridden, so the tests can damage each one.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPE_FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2}
HEAD = {
    "regressor": "LinearRegressionOutput",
    "binary_classifier": "LogisticRegressionOutput",
    "multiclass_classifier": "SoftmaxOutput",
}


def ndarray(a: np.ndarray, version: int | None = V2, flag: int | None = None) -> bytes:
    """One array as ``NDArray::Save`` writes it (``version`` None: the legacy layout)."""
    a = np.ascontiguousarray(a)
    flag = DTYPE_FLAGS[a.dtype] if flag is None else flag
    out = b""
    if version in (V2, V3):
        out += struct.pack("<Ii", version, 0)  # magic, dense storage
        out += struct.pack("<i" if version == V3 else "<I", a.ndim)
        out += struct.pack(f"<{a.ndim}q", *a.shape)
    else:
        if version == V1:
            out += struct.pack("<I", V1)
        out += struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
    out += struct.pack("<ii", 1, 0)  # cpu(0)
    out += struct.pack("<i", flag)
    return out + a.astype(a.dtype.newbyteorder("<")).tobytes()


def ndarray_list(arrays: dict[str, bytes]) -> bytes:
    """Encoded arrays (``ndarray``) under their names, as an NDArray list file."""
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays.values())
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        raw = name.encode()
        out += struct.pack("<Q", len(raw)) + raw
    return out


def symbol(d: int, k: int, task: str) -> dict[str, Any]:
    """The MXNet graph of a Linear Learner model: data . fc0_weight + fc0_bias -> *Output."""
    nodes = [
        {"op": "null", "name": "data", "inputs": []},
        {"op": "null", "name": "fc0_weight", "attrs": {"__shape__": f"({d}, {k})"}, "inputs": []},
        {"op": "dot", "name": "dot0", "inputs": [[0, 0, 0], [1, 0, 0]]},
        {"op": "null", "name": "fc0_bias", "attrs": {"__shape__": f"({k},)"}, "inputs": []},
        {"op": "broadcast_add", "name": "broadcast_add0", "inputs": [[2, 0, 0], [3, 0, 0]]},
        {"op": "null", "name": "out_label", "inputs": []},
        {"op": HEAD[task], "name": "linear_output", "inputs": [[4, 0, 0], [5, 0, 0]]},
    ]
    return {
        "nodes": nodes,
        "arg_nodes": [0, 1, 3, 5],
        "node_row_ptr": list(range(len(nodes) + 1)),
        "heads": [[6, 0, 0]],
        "attrs": {"mxnet_version": ["int", 10301]},
    }


def module_zip(
    weight: np.ndarray,
    bias: np.ndarray,
    task: str,
    threshold: float = 0.5,
    version: int | None = V2,
    params: bytes | None = None,
    sym: dict[str, Any] | None = None,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """``model_algo-1``: the module's four files in a stored zip."""
    files = {
        "manifest.json": json.dumps(
            {"mx-mod": "mxnet_module", "additional-params.json": "json", "version": 1}
        ).encode(),
        "additional-params.json": json.dumps(
            {"predictor_type": task, "threshold": threshold, "loss_type": "auto"}
        ).encode(),
        "mx-mod-symbol.json": json.dumps(sym or symbol(*weight.shape, task)).encode(),
        "mx-mod-0000.params": params
        if params is not None
        else ndarray_list(
            {"arg:fc0_weight": ndarray(weight, version), "arg:fc0_bias": ndarray(bias, version)}
        ),
        **(extra or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def model_tar(model_algo: bytes) -> bytes:
    """``model.tar.gz`` holding ``model_algo-1``, as a training job uploads it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model_algo-1")
        info.size = len(model_algo)
        tar.addfile(info, io.BytesIO(model_algo))
    return buf.getvalue()


def save(path: Path, *args: Any, **kwargs: Any) -> None:
    """``model.tar.gz`` of ``module_zip(*args, **kwargs)`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_tar(module_zip(*args, **kwargs)))


def random_model(d: int, k: int, seed: int, dtype: Any = np.float32) -> tuple[np.ndarray, ...]:
    """(W (d, k), b (k,)) of a model whose scores are of order 1."""
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(d, k)) / np.sqrt(d)).astype(dtype)
    b = rng.normal(size=k).astype(dtype)
    return w, b


def expected(x: np.ndarray, w: np.ndarray, b: np.ndarray, task: str) -> np.ndarray:
    """What Linear Learner answers: x @ W + b, then the link of the predictor type (float64)."""
    z = x.astype(np.float64) @ w.astype(np.float64) + b.astype(np.float64)
    if task == "binary_classifier":
        return 1.0 / (1.0 + np.exp(-z[:, 0]))
    if task == "multiclass_classifier":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z[:, 0]
