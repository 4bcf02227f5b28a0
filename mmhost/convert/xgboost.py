"""What users have of XGBoost (a Booster, its scikit-learn wrappers, a model file in any format
XGBoost writes) -> the bytes of a JSON/UBJSON model file, a SageMaker-layout ``model.tar.gz``, or
an ``Artifact``. Offline: the legacy binary format is handed to the xgboost library here, never
on the server (whose reader is ``mmhost.artifacts.xgboost``).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import tarfile
from pathlib import Path
from typing import Any

from mmhost.artifacts import Artifact, Column, Preprocessing
from mmhost.artifacts.xgboost import LegacyBinary, TreeEnsemble, read_xgboost
from mmhost.errors import UnsupportedModel


def from_xgboost(model: Any) -> Artifact:
    """A Booster, an sklearn wrapper (XGBRegressor, XGBClassifier...), a path, or bytes -> an
    ``mmhost/1`` artifact you ``.save()``: numeric columns named as the model was trained
    (else f0, f1, ...) where NaN is missing, and the task of its objective (binary:logistic a
    binary classifier of 0/1, multi:softprob a classifier of 0..K-1, others one number a row,
    as SageMaker's XGBoost answers)."""
    data = model_file(model)
    ens = read_xgboost(data)
    names = ens.feature_names or [f"f{i}" for i in range(ens.num_feature)]
    task, classes = "regressor", None
    if ens.objective == "binary:logistic":
        task, classes = "binary_classifier", [0, 1]
    elif ens.objective == "multi:softprob":
        task, classes = "multiclass_classifier", list(range(ens.num_class))
    return Artifact(
        "model",
        [Column(n, "float", missing=math.nan) for n in names],
        Preprocessing.identity(ens.num_feature),
        algorithm="xgboost",
        task=task,
        classes=classes,
        xgboost=data,
    )


def read_model(model: Any) -> TreeEnsemble:
    """What ``from_xgboost`` takes, parsed as the server parses it (tests, benchmarks)."""
    return read_xgboost(model_file(model))


def model_file(model: Any) -> bytes:
    """What ``from_xgboost`` takes, as the bytes of a JSON or UBJSON model file (legacy binary
    is converted to UBJSON by the xgboost library, offline). Checked: it reads back."""
    if isinstance(model, str | os.PathLike):
        with open(model, "rb") as f:
            model = f.read()
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        try:
            read_xgboost(data)
        except LegacyBinary:
            data = _legacy_to_ubjson(data)
        return data
    if hasattr(model, "get_booster"):
        model = model.get_booster()
    if hasattr(model, "save_raw"):
        data = bytes(model.save_raw(raw_format="ubj"))
        read_xgboost(data)
        return data
    raise TypeError(f"cannot read an XGBoost model from a {type(model).__name__}")


def save_xgboost(model: Any, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (anything ``from_xgboost`` takes) as SageMaker's XGBoost does: a
    ``model.tar.gz`` holding one file, ``xgboost-model`` (UBJSON or JSON, never a pickle), which
    mmhost serves with a schema of numeric columns f0, f1, ... where NaN is missing. Same model,
    same bytes (and ETag)."""
    data = model_file(model)
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        info = tarfile.TarInfo("xgboost-model")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)  # readers never see a half-written archive


def _legacy_to_ubjson(data: bytes) -> bytes:
    try:
        import xgboost
    except ImportError:
        raise UnsupportedModel(
            "this is not an XGBoost JSON or UBJSON model (perhaps the legacy binary format): "
            "install xgboost to convert it, or save it with Booster.save_model('model.json')"
        ) from None
    try:
        booster = xgboost.Booster(model_file=bytearray(data))
    except Exception as e:  # XGBoostError; xgboost 3.2 also fails to decode some messages
        lines = str(e).strip().splitlines() if isinstance(e, xgboost.core.XGBoostError) else []
        why = " ".join(lines[:2]) or type(e).__name__
        raise UnsupportedModel(
            f"this is not an XGBoost JSON or UBJSON model, and xgboost {xgboost.__version__} "
            f"cannot read it either ({why}); save it as JSON with an XGBoost that reads it "
            "(the legacy binary format was removed in 3.1)"
        ) from None
    data = bytes(booster.save_raw(raw_format="ubj"))
    read_xgboost(data)
    return data
