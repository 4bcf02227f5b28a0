"""Large answers at native speed: the scores of ``MIN_ROWS`` rows or more are written by C++
(``mmhost/csrc/answers.cpp``) in one pass, each value exactly as Python's ``repr`` writes it,
so an answer's bytes are the same whichever path wrote them. ``outputs`` asks here first; None
means "write it in Python" (a small answer, or no C++ kernels).

A layout names the literal text around the values (see ``Layout``); a label, where the answer
has one, is the JSON text of each row's class, chosen by index.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import torch

from mmhost.kernels import _native

MIN_ROWS = 64  # below this the Python path is as fast, and one-row answers stay as they were


class Layout(NamedTuple):
    """head, then per row [row_sep] row_open list_open v (value_sep v)* list_close
    [label_mid label] row_close, then tail."""

    head: str = ""
    row_open: str = ""
    list_open: str = ""
    value_sep: str = ","
    list_close: str = ""
    label_mid: str = ""
    row_close: str = ""
    row_sep: str = ""
    tail: str = ""


CSV = Layout(row_close="\n")
"""One row per line: its value, or a multiclass row's values comma-separated."""


def records(key: str | None, multi: bool, labelled: bool) -> Layout:
    """``{"key":[{"score":v,"predicted_label":L},...]}``, or with ``key`` None one record per
    line (JSON Lines); ``multi``: the score is a list of the classes' probabilities."""
    return Layout(
        head="" if key is None else '{"' + key + '":[',
        row_open='{"score":',
        list_open="[" if multi else "",
        list_close="]" if multi else "",
        label_mid=',"predicted_label":' if labelled else "",
        row_close="}" if key is not None else "}\n",
        row_sep="," if key is not None else "",
        tail="" if key is None else "]}",
    )


def write(
    scores: np.ndarray,
    layout: Layout,
    label_index: np.ndarray | None = None,
    labels: list[Any] | None = None,
) -> bytes | None:
    """The answer's bytes, or None: write it in Python. ``scores``: (n,) or (n, k), finite;
    ``label_index``: each row's index into ``labels`` (class values, written as JSON)."""
    n = scores.shape[0] if scores.ndim else 0
    if n < MIN_ROWS:
        return None
    fn = _native.function("format_rows", "answer text")
    if fn is None:
        return None
    values = torch.from_numpy(np.ascontiguousarray(scores.reshape(n, -1), np.float64))
    if label_index is None or labels is None:
        index, texts = torch.empty(0, dtype=torch.int64), []
    else:
        index = torch.from_numpy(np.ascontiguousarray(label_index, np.int64))
        texts = [json.dumps(c) for c in labels]
    return bytes(fn(values, index, texts, list(layout)))
