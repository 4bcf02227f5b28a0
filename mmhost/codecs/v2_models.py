"""V2 answers about models, as Triton's clients read them: the model metadata, the model
configuration (``get_model_config``), the statistics extension (``get_inference_statistics``)
and the repository index. The routes (``api/v2.py``) only authorize and call these."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from mmhost.codecs import v2
from mmhost.types import ModelInfo, ModelUsage

_TYPES = {"float": "FP32", "category": "BYTES"}
# V2 datatypes as a Triton model configuration spells them
_CONFIG_TYPES = {
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "INT64": "TYPE_INT64",
    "BYTES": "TYPE_STRING",
}


def metadata(info: ModelInfo) -> dict[str, Any]:
    """The model metadata response (``GET /v2/models/{name}``)."""
    k = info.outputs
    outputs: list[dict[str, Any]]
    if info.family == "knn":  # answered as SageMaker's k-NN (codecs/v2.neighbor_outputs)
        label = "FP32" if info.classes is None else v2.label_type(info.classes)
        outputs = [
            {"name": "predicted_label", "datatype": label, "shape": [-1]},
            {"name": "labels", "datatype": label, "shape": [-1, -1]},
            {"name": "distances", "datatype": "FP32", "shape": [-1, -1]},
        ]
    else:
        outputs = _score_outputs(info, k)
    return {
        "name": info.name,
        "versions": [info.version],
        "platform": "mmhost",
        "inputs": [
            {"name": c["name"], "datatype": _TYPES[c["type"]], "shape": [-1]} for c in info.inputs
        ],
        "outputs": outputs,
        "parameters": {"task": info.task},
    }


def config(info: ModelInfo, max_batch: int) -> dict[str, Any]:
    """A Triton model configuration (``/config``) from the metadata: every tensor's first axis
    is the batch (rows), so ``dims`` are the rest."""
    meta = metadata(info)

    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": t["name"],
                "data_type": _CONFIG_TYPES.get(t["datatype"], "TYPE_STRING"),
                "dims": t["shape"][1:] or [1],
            }
            for t in items
        ]

    return {
        "name": meta["name"],
        "platform": meta["platform"],
        "backend": "mmhost",
        "max_batch_size": max_batch,
        "input": tensors(meta["inputs"]),
        "output": tensors(meta["outputs"]),
        "parameters": {k: {"string_value": str(v)} for k, v in meta["parameters"].items()},
    }


def statistics(usage: list[ModelUsage]) -> dict[str, Any]:
    """The statistics extension's answer (``/stats``) for these models."""
    return {"model_stats": [_statistics(u) for u in usage]}


def index(names: list[str], loaded: Collection[str]) -> list[dict[str, Any]]:
    """The repository index: ``names``, each READY when loaded."""
    return [
        {"name": n, "version": "", "state": "READY" if n in loaded else "UNAVAILABLE", "reason": ""}
        for n in names
    ]


def _statistics(u: ModelUsage) -> dict[str, Any]:
    """The statistics extension's entry for one model: requests are inferences and
    executions alike (a request's rows are scored together), its op time the compute."""
    ns = int(u.infer_seconds * 1e9)
    nothing = {"count": 0, "ns": 0}
    return {
        "name": u.name,
        "version": u.version,
        "last_inference": int(u.last_used * 1000),
        "inference_count": u.rows,
        "execution_count": u.requests,
        "inference_stats": {
            "success": {"count": u.requests, "ns": ns},
            "fail": nothing,
            "queue": nothing,
            "compute_input": nothing,
            "compute_infer": {"count": u.requests, "ns": ns},
            "compute_output": nothing,
            "cache_hit": nothing,
            "cache_miss": nothing,
        },
        "batch_stats": [],
    }


def _score_outputs(info: ModelInfo, k: int) -> list[dict[str, Any]]:
    outputs = [
        {
            "name": "score",
            "datatype": "FP32",
            "shape": [-1, k] if info.task == "multiclass_classifier" else [-1],
        }
    ]
    if info.classes is not None:
        label_type = v2.label_type(info.classes)
        outputs.append({"name": "predicted_label", "datatype": label_type, "shape": [-1]})
    return outputs
