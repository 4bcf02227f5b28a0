"""SageMaker Linear Learner's model, as its training jobs write it, read as a linear artifact.

``model.tar.gz`` holds ``model_algo-1``: a zip (stored, not compressed) of

    manifest.json           {"mx-mod": "mxnet_module", "additional-params.json": "json",
                             "version": 1}
    additional-params.json  {"predictor_type": ..., "threshold": ..., "loss_type": ...}
    mx-mod-symbol.json      the MXNet graph: data . fc0_weight (D, K), + fc0_bias, an *Output
    mx-mod-0000.params      the arrays (``artifacts.mxnet``)

SageMaker folds its input normalization into the weights, so the model is ``score = x @ W + b``
over the raw features, then the link of ``predictor_type``: identity (regressor), sigmoid
(binary; the label is 1 where the score passes ``threshold``) or softmax (multiclass; argmax).
It becomes an ``Artifact`` of the linear family: the same fused op, tiers and budgets as a
scikit-learn model. The graph must be exactly that shape; anything else is refused naming the
op it found.
"""

from __future__ import annotations

import io
import json
import math
import stat
import zipfile
import zlib
from typing import Any

import numpy as np

from mmhost.artifacts.manifest import (
    Artifact,
    Column,
    ManifestError,
    Preprocessing,
    check_linear,
)
from mmhost.artifacts.members import Members, check_path
from mmhost.artifacts.mxnet import read_ndarray_list, read_symbol, shape_attr

MODEL_FILE = "model_algo-1"  # what SageMaker's built-ins (Linear Learner, k-NN) call the model
MODULE_FILES = ("manifest.json", "additional-params.json", "mx-mod-symbol.json")
PARAMS = "mx-mod-0000.params"
MAX_ENTRIES = 16
PREDICTOR_TYPES = ("regressor", "binary_classifier", "multiclass_classifier")
# the head each predictor type ends in (a regressor's loss picks its regression output op)
HEADS = {
    "regressor": ("LinearRegressionOutput", "MAERegressionOutput"),
    "binary_classifier": ("LogisticRegressionOutput",),
    "multiclass_classifier": ("SoftmaxOutput",),
}
_ZIP_MAGIC = b"PK\x03\x04"


def is_linear_learner(blob: bytes) -> bool:
    """A ``model_algo-1`` that is a zip (k-NN's is a faiss index)."""
    return blob.startswith(_ZIP_MAGIC)


def read_linear_learner(blob: bytes, max_bytes: int) -> Artifact:
    """``model_algo-1``'s bytes -> a linear ``Artifact`` (ManifestError says what is off)."""
    files = _unzip(blob, max_bytes)
    manifest = _json(files, "manifest.json")
    if manifest.get("mx-mod") != "mxnet_module":
        raise ManifestError(
            f"{MODEL_FILE}: manifest.json has mx-mod={manifest.get('mx-mod')!r}, "
            "not an MXNet module (mxnet_module)"
        )
    params = _json(files, "additional-params.json")
    task = params.get("predictor_type")
    if task not in PREDICTOR_TYPES:
        raise ManifestError(
            f"{MODEL_FILE}: additional-params.json has predictor_type {task!r}; "
            f"one of {PREDICTOR_TYPES} is served"
        )
    threshold = params.get("threshold", 0.5)
    if task != "binary_classifier":
        threshold = 0.5
    elif not (
        isinstance(threshold, (int, float))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
    ):
        raise ManifestError(f"{MODEL_FILE}: threshold {threshold!r} is not a number")
    if PARAMS not in files:
        raise ManifestError(f"{MODEL_FILE} holds no {PARAMS}")
    arrays = read_ndarray_list(files[PARAMS], f"{MODEL_FILE}/{PARAMS}")
    weight, bias = _graph(read_symbol(files["mx-mod-symbol.json"]), task, arrays)
    d, k = weight.shape
    want = {"regressor": 1, "binary_classifier": 1}.get(task, k)
    if k != want or (task == "multiclass_classifier" and k < 2):
        raise ManifestError(
            f"{MODEL_FILE}: fc0_weight has {k} outputs; a {task} has "
            f"{want if task != 'multiclass_classifier' else '2 or more'}"
        )
    inputs = [Column(f"f{i}", "float") for i in range(d)]
    pre = Preprocessing.identity(d)
    coef, intercept = weight.T.copy(), bias
    check_linear(coef, intercept, inputs, pre)
    classes: list[Any] | None = None
    if task == "binary_classifier":
        classes = [0, 1]
    elif task == "multiclass_classifier":
        classes = list(range(k))
    return Artifact(
        "model",
        inputs,
        pre,
        algorithm="linear",
        task=task,
        classes=classes,
        params={"coef": coef, "intercept": intercept},
        threshold=min(max(float(threshold), 0.0), 1.0),
    )


def _unzip(blob: bytes, max_bytes: int) -> dict[str, bytes]:
    """The module's files from the zip: plain entries with safe names, sizes checked against
    the cap before anything is inflated (zipfile stops each entry at its declared size)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise ManifestError(
                    f"{MODEL_FILE} holds {len(infos)} entries; at most {MAX_ENTRIES} are read"
                )
            members = Members(MODEL_FILE, max_bytes)
            for info in infos:
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ManifestError(
                        f"{MODEL_FILE} entry {info.filename!r} is a link; plain files only"
                    )
                check_path(info.filename, MODEL_FILE, not info.is_dir())
                if not info.is_dir():
                    base = members.admit(info.filename, info.file_size)
                    members.files[base] = zf.read(info)
    except (
        zipfile.BadZipFile,
        NotImplementedError,
        EOFError,
        OSError,
        RuntimeError,
        zlib.error,
    ) as exc:
        # a corrupt entry or CRC, an unknown compression, an encrypted entry
        raise ManifestError(f"{MODEL_FILE} is not a readable zip: {exc}") from None
    missing = [f for f in MODULE_FILES if f not in members.files]
    if missing:
        raise ManifestError(f"{MODEL_FILE} holds no {missing[0]} (not a Linear Learner module)")
    return members.files


def _json(files: dict[str, bytes], name: str) -> dict[str, Any]:
    try:
        doc = json.loads(files[name])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{MODEL_FILE}/{name} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{MODEL_FILE}/{name} is not a JSON object")
    return doc


def _graph(
    sym: dict[str, Any], task: str, arrays: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Check the graph is ``*Output(broadcast_add(dot(data, fc0_weight), fc0_bias), label)``
    and return (W (D, K), b (K,)) from the arrays it names."""
    nodes = sym["nodes"]
    where = f"{MODEL_FILE}/mx-mod-symbol.json"
    for node in nodes:
        if node["op"] not in ("null", "dot", "broadcast_add", *HEADS[task]):
            raise ManifestError(
                f"{where}: op {node['op']!r} ({node['name']}) is not part of a linear model"
            )
    if len(sym["heads"]) != 1:
        raise ManifestError(f"{where}: {len(sym['heads'])} outputs; a linear model has one")
    head = nodes[sym["heads"][0]]
    if head["op"] not in HEADS[task]:
        raise ManifestError(
            f"{where}: the output op is {head['op']!r}; a {task} ends in {HEADS[task][0]}"
        )
    add = _input(nodes, head, 0, "broadcast_add", where)
    dot = _input(nodes, add, 0, "dot", where)
    bias_var = _input(nodes, add, 1, "null", where)
    data_var = _input(nodes, dot, 0, "null", where)
    weight_var = _input(nodes, dot, 1, "null", where)
    for flag in ("transpose_a", "transpose_b"):
        if str(dot["attrs"].get(flag, "False")).lower() in ("true", "1"):
            raise ManifestError(f"{where}: dot with {flag} is not a linear model's")
    if data_var["name"] != "data":
        raise ManifestError(f"{where}: the dot's input is {data_var['name']!r}, not 'data'")
    ops = [n for n in nodes if n["op"] != "null"]
    if len(ops) != 3:
        extra = next(n for n in ops if n is not head and n is not add and n is not dot)
        raise ManifestError(f"{where}: a second {extra['op']!r} ({extra['name']}) is not expected")
    weight = arrays.get("arg:" + weight_var["name"])
    bias = arrays.get("arg:" + bias_var["name"])
    if weight is None or bias is None:
        missing = weight_var["name"] if weight is None else bias_var["name"]
        raise ManifestError(f"{MODEL_FILE}/{PARAMS} holds no arg:{missing}")
    declared = shape_attr(weight_var["attrs"])
    if weight.ndim != 2 or (declared is not None and declared != weight.shape):
        raise ManifestError(
            f"{MODEL_FILE}: {weight_var['name']} has shape {weight.shape}; the symbol "
            f"declares {declared if declared is not None else 'a 2-D (features, outputs)'}"
        )
    k = weight.shape[1]
    if bias.shape not in ((k,), (1, k)):
        raise ManifestError(
            f"{MODEL_FILE}: {bias_var['name']} has shape {bias.shape}; {weight_var['name']} "
            f"{weight.shape} needs ({k},)"
        )
    return weight, bias.reshape(k)


def _input(
    nodes: list[dict[str, Any]], node: dict[str, Any], i: int, op: str, where: str
) -> dict[str, Any]:
    if len(node["inputs"]) <= i:
        raise ManifestError(f"{where}: {node['op']} ({node['name']}) lacks input {i}")
    found = nodes[node["inputs"][i]]
    if found["op"] != op:
        raise ManifestError(
            f"{where}: {node['op']} ({node['name']}) takes {found['op']!r} ({found['name']}) "
            f"as input {i}, where a linear model has {op!r}"
        )
    return found
