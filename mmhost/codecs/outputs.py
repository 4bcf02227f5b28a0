"""Predictions -> response bodies, in the built-in algorithms' shapes.

application/json       regressor   {"predictions": [{"score": 412000.5}, ...]}
                       binary      {"predictions": [{"score": 0.83, "predicted_label": 1}]}
                       multiclass  {"predictions": [{"score": [0.1, 0.7, 0.2],
                                                     "predicted_label": "b"}]}
                       anomaly     {"scores": [{"score": 1.02}, ...]} (Random Cut Forest)
application/jsonlines  one of those objects per line
text/csv               one value per line: the score (a binary classifier's P(positive));
                       a multiclass row's probabilities, comma-separated
application/x-recordio-protobuf  a record per row: label["score"], label["predicted_label"]

k-NN models answer as SageMaker's k-NN: {"predictions": [{"predicted_label": 2.0}, ...]}, and
with ``verbose`` (``Accept: application/json; verbose=true``) each prediction also holds its
neighbours' "labels" and "distances", nearest first. CSV: one predicted label per line.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from mmhost.artifacts.manifest import RCF_TASK
from mmhost.codecs import media, recordio, text
from mmhost.codecs.v2 import check_scores, label_index, predicted_labels
from mmhost.errors import ResponseTooLarge

if TYPE_CHECKING:
    from mmhost.types import Prediction

# the fewest bytes any answer spends on one value: "0.0" and a separator in text (a float's
# repr always has a "." or an "e"), 4 in a V2 binary FP32 tensor
MIN_VALUE_BYTES = 4


def encode(
    p: Prediction, media_type: str, limit: int | None = None, verbose: bool = False
) -> bytes:
    """The body for ``p`` in ``media_type`` (one of ``media.RESPONSE_TYPES``), refused
    (ResponseTooLarge) when it passes ``limit`` bytes. ``verbose``: a k-NN answer's
    neighbours too."""
    if p.neighbors is not None:
        body = _neighbors(p, media_type, verbose, limit)
    else:
        body = _encode(p, media_type)
    check_size(body, p.scores.shape, limit)
    return body


def check_values(rows: int, per_row: int, limit: int | None) -> None:
    """Refuse, before building it, an answer of ``rows`` x ``per_row`` values that no encoding
    fits in ``limit`` bytes."""
    least = rows * per_row * MIN_VALUE_BYTES
    if limit is not None and least > limit:
        what = f"{rows} rows x {per_row} values (at least {MIN_VALUE_BYTES} bytes each)"
        raise ResponseTooLarge(what, least, limit)


def check_size(body: bytes | memoryview, shape: tuple[int, ...], limit: int | None) -> None:
    if limit is not None and len(body) > limit:
        what = " x ".join(map(str, shape)) + " scores"
        raise ResponseTooLarge(what, len(body), limit)


def _encode(p: Prediction, media_type: str) -> bytes:
    check_scores(p.scores)
    if media_type == media.RECORDIO:
        labels = None
        if p.classes is not None:
            labels = predicted_labels(p.scores, p.task, p.classes, p.threshold)
        return recordio.encode(p.scores, labels)
    native = _native_text(p, media_type)
    if native is not None:
        return native
    if media_type == media.CSV:
        return _csv(p)
    key = b"scores" if p.task == RCF_TASK else b"predictions"  # SageMaker RCF's own key
    if media_type == media.JSON and p.classes is None and p.scores.ndim == 1:
        # the repr of a finite float is valid JSON
        scores = p.scores.tolist()
        return b'{"%s":[' % key + b",".join(b'{"score":%r}' % s for s in scores) + b"]}"
    records = _records(p)
    if media_type == media.JSON:
        return json.dumps({key.decode(): records}, separators=(",", ":")).encode()
    if media_type == media.JSONLINES:
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    raise AssertionError(f"no encoder for {media_type!r}")


def _native_text(p: Prediction, media_type: str) -> bytes | None:
    """A large answer written by C++ (``codecs.text``), the same bytes as the Python path;
    None: the Python path writes it."""
    if p.scores.ndim == 0 or p.scores.shape[0] < text.MIN_ROWS:
        return None
    if media_type == media.CSV:
        return text.write(p.scores, text.CSV)
    index = None
    if p.classes is not None:
        index = label_index(p.scores, p.task, p.threshold)
    key = "scores" if p.task == RCF_TASK else "predictions"
    multi = p.scores.ndim == 2
    if media_type == media.JSON:
        layout = text.records(key, multi, index is not None)
    elif media_type == media.JSONLINES:
        layout = text.records(None, multi, index is not None)
    else:
        return None
    return text.write(p.scores, layout, index, p.classes)


def _neighbors(p: Prediction, media_type: str, verbose: bool, limit: int | None) -> bytes:
    assert p.neighbors is not None
    n, k = p.neighbors.distances.shape
    if verbose:  # the neighbours' labels and distances too: refused before they are built
        check_values(n, 1 + 2 * k, limit)
    check_scores(p.neighbors.distances)  # an overflowed distance decided nothing: a 400
    if p.classes is None:  # a regressor's mean
        check_scores(p.scores)
    predicted = p.scores.tolist()
    labels = distances = None
    if verbose:
        labels, distances = p.neighbors.labels.tolist(), p.neighbors.distances
    if media_type == media.CSV:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([v] for v in predicted)
        return buf.getvalue().encode()
    if media_type == media.RECORDIO:
        return recordio.encode_neighbors(predicted, labels, distances)
    records: list[dict[str, Any]] = [{"predicted_label": v} for v in predicted]
    if labels is not None and distances is not None:
        for r, lab, dist in zip(records, labels, distances.tolist(), strict=True):
            r["labels"], r["distances"] = lab, dist
    if media_type == media.JSON:
        return json.dumps({"predictions": records}, separators=(",", ":")).encode()
    if media_type == media.JSONLINES:
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    raise AssertionError(f"no encoder for {media_type!r}")


def _records(p: Prediction) -> list[dict[str, Any]]:
    scores = p.scores.tolist()
    if p.classes is None:
        return [{"score": s} for s in scores]
    labels = predicted_labels(p.scores, p.task, p.classes, p.threshold)
    return [{"score": s, "predicted_label": lb} for s, lb in zip(scores, labels, strict=True)]


def _csv(p: Prediction) -> bytes:
    if p.scores.ndim == 2:
        lines = [",".join(map(repr, row)) for row in p.scores.tolist()]
    else:
        lines = [repr(s) for s in p.scores.tolist()]
    return ("\n".join(lines) + "\n").encode() if lines else b""
