"""Predictions -> response bodies, in the built-in algorithms' shapes.

application/json       regressor   {"predictions": [{"score": 412000.5}, ...]}
                       binary      {"predictions": [{"score": 0.83, "predicted_label": 1}]}
                       multiclass  {"predictions": [{"score": [0.1, 0.7, 0.2],
                                                     "predicted_label": "b"}]}
application/jsonlines  one of those objects per line
text/csv               one value per line: the score (a binary classifier's P(positive));
                       a multiclass row's probabilities, comma-separated
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mmhost.codecs import media
from mmhost.codecs.v2 import check_scores, predicted_labels

if TYPE_CHECKING:
    from mmhost.host import Prediction


def encode(p: Prediction, media_type: str) -> bytes:
    """The body for ``p`` in ``media_type`` (one of ``media.RESPONSE_TYPES``)."""
    check_scores(p.scores)
    if media_type == media.CSV:
        return _csv(p)
    if media_type == media.JSON and p.classes is None and p.scores.ndim == 1:
        # the repr of a finite float is valid JSON
        scores = p.scores.tolist()
        return b'{"predictions":[' + b",".join(b'{"score":%r}' % s for s in scores) + b"]}"
    records = _records(p)
    if media_type == media.JSON:
        return json.dumps({"predictions": records}, separators=(",", ":")).encode()
    if media_type == media.JSONLINES:
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    raise AssertionError(f"no encoder for {media_type!r}")


def _records(p: Prediction) -> list[dict[str, Any]]:
    scores = p.scores.tolist()
    if p.classes is None:
        return [{"score": s} for s in scores]
    labels = predicted_labels(p.scores, p.task, p.classes)
    return [{"score": s, "predicted_label": lb} for s, lb in zip(scores, labels, strict=True)]


def _csv(p: Prediction) -> bytes:
    if p.scores.ndim == 2:
        lines = [",".join(map(repr, row)) for row in p.scores.tolist()]
    else:
        lines = [repr(s) for s in p.scores.tolist()]
    return ("\n".join(lines) + "\n").encode() if lines else b""
