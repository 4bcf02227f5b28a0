"""XGBoost model files (JSON or UBJSON, never pickle) -> a flat ``TreeEnsemble``: the reader
of an untrusted ``xgboost-model`` on the server's load path (offline conversion of what users
have lives in ``mmhost.convert.xgboost``).

XGBoost writes the same document as JSON (``save_model("m.json")``) or as UBJSON
(``save_model("m.ubj")``; SageMaker's ``xgboost-model`` may be either). ``read_xgboost`` parses
both (UBJSON with the small decoder in ``ubjson.py``), checks every tree is a
tree whose splits name real features, and flattens all trees into numpy arrays.
``predict_reference`` is the oracle for the trees family's fused op.

Semantics (XGBoost's), for one row ``x`` and output ``k``; node indices are relative to the
tree's root, ``o = tree_offsets[t]``::

    margin = base_score[k]
    for t in trees with tree_group[t] == k:          # in file order
        n = 0
        while feature[o + n] >= 0:                   # -1 marks a leaf
            v = x[feature[o + n]]
            go_left = default_left[o + n] if isnan(v) else v < threshold[o + n]
            n = left[o + n] if go_left else right[o + n]
        margin += value[o + n]
    out[k] = link(margin)     # identity, sigmoid, softmax / argmax over k, or exp

Size: one reader of XGBoost's JSON and UBJSON model, every field validated where it is read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmhost.artifacts import ubjson
from mmhost.errors import UnsupportedModel

MAX_DEPTH = 64  # deeper trees are refused: the fused op walks at most this many levels
MAX_OUTPUTS = 1 << 16  # classes/targets; bounds what a lying num_class can make us allocate

# objective -> (link applied to the margin, how XGBoost turns the stored base_score into a
# margin: its ProbToMargin). Checked against XGBoost 1.7.6, 2.1.4 and 3.2.0: all store
# base_score in the objective's output space (the 3.x multiclass vector is already margins,
# and softmax's ProbToMargin is the identity), and logitraw keeps it as is.
OBJECTIVES: dict[str, tuple[str, str]] = {
    "reg:squarederror": ("identity", "identity"),
    "reg:linear": ("identity", "identity"),  # the name before XGBoost 1.0
    "reg:logistic": ("sigmoid", "logit"),
    "binary:logistic": ("sigmoid", "logit"),
    "binary:logitraw": ("identity", "identity"),
    "multi:softprob": ("softmax", "identity"),
    "multi:softmax": ("argmax", "identity"),
    "count:poisson": ("exp", "log"),
    "reg:tweedie": ("exp", "log"),
}


class MalformedModel(UnsupportedModel):
    """The bytes are not a well-formed XGBoost model: truncated, inconsistent or not a tree.
    A subclass of UnsupportedModel so a loader can catch both in one place."""


class LegacyBinary(UnsupportedModel):
    """Neither JSON nor UBJSON: only the xgboost library (offline) may try to read it."""


@dataclass(eq=False)
class TreeEnsemble:
    """All trees of one model, their nodes concatenated in file order.

    Node arrays (one entry per node of every tree, length M); ``left``/``right`` are relative
    to the tree's root (node 0 of each tree), so a tree can be copied anywhere unchanged.
    Node numbers are XGBoost's own, except that deleted nodes (XGBoost < 2 writes pruned
    nodes, unreachable, into the file) are dropped and the rest renumbered in order.
    """

    feature: np.ndarray  # (M,) int32: split feature, -1 for a leaf
    threshold: np.ndarray  # (M,) float32: go left if x < threshold; 0 at leaves
    left: np.ndarray  # (M,) int32: left child relative to the tree's root; -1 at leaves
    right: np.ndarray  # (M,) int32: right child, likewise
    default_left: np.ndarray  # (M,) bool: where NaN goes
    value: np.ndarray  # (M,) float32: leaf value; 0 at split nodes
    tree_offsets: np.ndarray  # (T + 1,) int64: tree t is nodes tree_offsets[t]:tree_offsets[t+1]
    tree_group: np.ndarray  # (T,) int32: the output (class or target) tree t adds to
    base_score: np.ndarray  # (K,) float32: the starting margin of each output
    num_feature: int
    num_class: int  # K, the number of outputs (1 for a single regression/binary output)
    objective: str
    objective_params: dict[str, float] = field(default_factory=dict)  # none affects prediction
    feature_names: list[str] | None = None  # as trained (e.g. a DataFrame's columns), if known

    @property
    def link(self) -> str:
        return OBJECTIVES[self.objective][0]

    @property
    def num_trees(self) -> int:
        return len(self.tree_group)

    @property
    def nbytes(self) -> int:
        nodes = (self.feature, self.threshold, self.left, self.right, self.default_left)
        trees = (self.value, self.tree_offsets, self.tree_group, self.base_score)
        return sum(a.nbytes for a in nodes + trees)

    @property
    def max_depth(self) -> int:
        """Edges on the longest root-to-leaf path (0 when every tree is a single leaf)."""
        frontier = self.tree_offsets[:-1]  # absolute node ids of one level, all trees at once
        owner = np.arange(self.num_trees)
        depth = -1
        while len(frontier):
            depth += 1
            split = self.feature[frontier] >= 0
            frontier, owner = frontier[split], owner[split]
            base = self.tree_offsets[owner]
            frontier = np.concatenate([base + self.left[frontier], base + self.right[frontier]])
            owner = np.concatenate([owner, owner])
        return max(depth, 0)


def read_xgboost(data: bytes) -> TreeEnsemble:
    """Parse an XGBoost model file: JSON or UBJSON. Never hands the bytes to native code (the
    server reads untrusted files with this): the legacy binary format is refused here and
    converted offline by ``mmhost.convert.from_xgboost``, which asks the xgboost library."""
    data = bytes(data)
    if data[:1] == b"{" and data[1:2] in (b"i", b"U", b"I", b"l", b"L", b"#", b"$"):
        try:
            doc = ubjson.read(data)
        except ubjson.UBJSONError as e:
            raise MalformedModel(f"the XGBoost UBJSON model is {e}") from None
    elif data.lstrip()[:1] == b"{":
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
            raise MalformedModel(f"the XGBoost JSON model does not parse: {e}") from None
    elif data[:1] == b"\x80":
        raise UnsupportedModel(
            "this looks like a Python pickle; mmhost never unpickles: load the model in Python "
            "and save it with Booster.save_model('model.json')"
        )
    else:
        raise LegacyBinary(
            "this is not an XGBoost JSON or UBJSON model (perhaps the legacy binary format): "
            "convert it offline with mmhost.convert.save_xgboost(path, 'model.tar.gz'), or "
            "save it with Booster.save_model('model.json')"
        )
    return _ensemble(doc)


def predict_reference(ens: TreeEnsemble, X: np.ndarray, output_margin: bool = False) -> np.ndarray:
    """Plain-numpy prediction with the shapes ``Booster.predict(DMatrix(X))`` returns:
    (N,) for one output, (N, K) for softprob and multi-target, (N,) class ids for softmax;
    with ``output_margin`` the margins before the link, (N,) or (N, K), as XGBoost's flag.

    Like XGBoost, inputs are float32 and each output accumulates in float32 from its base
    score, tree by tree in file order, so margins match XGBoost's bit for bit."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != ens.num_feature:
        raise ValueError(f"X has shape {X.shape}; the model needs (N, {ens.num_feature})")
    n, depth = len(X), ens.max_depth
    margin = np.empty((n, ens.num_class), dtype=np.float32)  # (N, K)
    chunk = max(1, (1 << 20) // max(1, ens.num_trees))  # rows per pass: N*T index matrix ~ 1M
    for start in range(0, n, chunk):
        x = X[start : start + chunk]  # (B, F)
        rows = np.arange(len(x))[:, None]  # (B, 1)
        base = ens.tree_offsets[:-1][None, :]  # (1, T)
        node = np.zeros((len(x), ens.num_trees), dtype=np.int64)  # (B, T) relative
        for _ in range(depth):
            at = base + node
            feat = ens.feature[at]  # (B, T)
            v = x[rows, np.maximum(feat, 0)]  # (B, T)
            go_left = np.where(np.isnan(v), ens.default_left[at], v < ens.threshold[at])
            child = np.where(go_left, ens.left[at], ens.right[at])
            node = np.where(feat >= 0, child, node)  # leaves stay where they are
        leaf = ens.value[base + node]  # (B, T)
        m = margin[start : start + chunk]
        m[:] = ens.base_score
        with np.errstate(over="ignore", invalid="ignore"):  # XGBoost lets inf through too
            for t, k in enumerate(ens.tree_group):
                m[:, k] += leaf[:, t]
    if output_margin:
        return margin[:, 0] if ens.num_class == 1 else margin
    with np.errstate(over="ignore", invalid="ignore"):
        return _apply_link(ens.link, margin)


def _apply_link(link: str, margin: np.ndarray) -> np.ndarray:
    if link == "sigmoid":
        out = np.float32(1) / (np.float32(1) + np.exp(-margin))
    elif link == "exp":
        out = np.exp(margin)
    elif link in ("softmax", "argmax"):
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
        if link == "argmax":
            return np.argmax(margin, axis=1).astype(np.float32)  # (N,)
    else:
        out = margin
    return out[:, 0] if out.shape[1] == 1 and link != "softmax" else out


# -- the document -> TreeEnsemble -------------------------------------------------------------


def _ensemble(doc: Any) -> TreeEnsemble:
    learner = _dict(doc, "learner", "the model")
    param = _dict(learner, "learner_model_param", "learner")
    num_feature = _count(param, "num_feature", "learner_model_param", limit=2**31 - 1)
    num_class = _count(param, "num_class", "learner_model_param", limit=MAX_OUTPUTS, default=0)
    num_target = _count(param, "num_target", "learner_model_param", limit=MAX_OUTPUTS, default=1)

    objective = _dict(learner, "objective", "learner")
    name = _get(objective, "name", "learner.objective", str)
    if name not in OBJECTIVES:
        raise UnsupportedModel(
            f"XGBoost objective {name!r} is not supported; supported: {', '.join(OBJECTIVES)}"
        )
    params = {
        k: float(v)
        for group in objective.values()
        if isinstance(group, dict)
        for k, v in group.items()
        if _is_number(v)
    }

    booster = _dict(learner, "gradient_booster", "learner")
    kind = _get(booster, "name", "learner.gradient_booster", str)
    if kind == "dart":
        raise UnsupportedModel(
            "XGBoost booster 'dart' is not supported (its trees are scaled by dropout weights); "
            "train with booster='gbtree'"
        )
    if kind != "gbtree":
        raise UnsupportedModel(f"XGBoost booster {kind!r} is not supported; only 'gbtree' is")
    types = learner.get("feature_types")
    for i, t in enumerate(types if isinstance(types, list) else []):
        if t == "c":
            raise UnsupportedModel(
                f"feature {i} is categorical; categorical features are not "
                "supported yet: one-hot encode it before training"
            )

    outputs = num_class if name.startswith("multi:") else max(num_target, 1)
    if outputs < 1:
        raise MalformedModel(f"objective {name} needs num_class >= 1, the model has {num_class}")
    base_score = _base_score(param.get("base_score"), name, outputs)

    model = _dict(booster, "model", "learner.gradient_booster")
    trees = _get(model, "trees", "gradient_booster.model", list)
    if not trees:  # and XGBoost itself predicts such a model from the raw base_score
        raise UnsupportedModel("the XGBoost model has no trees (trained for 0 rounds?)")
    gparam = _dict(model, "gbtree_model_param", "gradient_booster.model")
    declared = _count(gparam, "num_trees", "gbtree_model_param", limit=len(trees))
    if declared != len(trees):
        raise MalformedModel(
            f"gbtree_model_param.num_trees is {declared}, the file holds {len(trees)} trees"
        )
    group = _array(model.get("tree_info", []), "tree_info", np.int64)
    if len(group) != len(trees):
        raise MalformedModel(f"tree_info has {len(group)} entries for {len(trees)} trees")
    if len(group) and (group.min() < 0 or group.max() >= outputs):
        bad = int(np.flatnonzero((group < 0) | (group >= outputs))[0])
        raise MalformedModel(f"tree {bad} adds to output {group[bad]}, the model has {outputs}")
    if "iteration_indptr" in model:
        indptr = _array(model["iteration_indptr"], "iteration_indptr", np.int64)
        if (
            len(indptr) == 0
            or indptr[0] != 0
            or indptr[-1] != len(trees)
            or (np.diff(indptr) < 0).any()
        ):
            raise MalformedModel(
                f"iteration_indptr {indptr.tolist()[:8]} does not split {len(trees)} trees"
            )

    parts = [_tree(i, t, num_feature) for i, t in enumerate(trees)]
    sizes = [len(p[0]) for p in parts]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])

    feature, threshold, left, right, default_left, value = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )
    return TreeEnsemble(
        feature=feature,
        threshold=threshold,
        left=left,
        right=right,
        default_left=default_left,
        value=value,
        tree_offsets=offsets,
        tree_group=group.astype(np.int32),
        base_score=base_score,
        num_feature=num_feature,
        num_class=outputs,
        objective=name,
        objective_params=params,
        feature_names=_feature_names(learner.get("feature_names"), num_feature),
    )


def _feature_names(raw: Any, num_feature: int) -> list[str] | None:
    """The names the model was trained with (a DataFrame's columns), when they name every
    feature once; else None (they are informational: inputs are read by position)."""
    if not isinstance(raw, list) or len(raw) != num_feature or not raw:
        return None
    if not all(isinstance(n, str) and 0 < len(n) <= 256 for n in raw) or len(set(raw)) < len(raw):
        return None
    return list(raw)


def _base_score(raw: Any, objective: str, outputs: int) -> np.ndarray:
    """``"5E-1"`` (XGBoost < 3), ``"[5E-1]"`` or ``"[a,b,c]"`` (3.x, one per output), or a
    number, in the objective's output space -> float32 margins, one per output."""
    where = "learner_model_param.base_score"
    if raw is None:
        raise MalformedModel(f"{where} is missing")
    try:
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            values = [float(s) for s in text.split(",")]
        elif _is_number(raw):
            values = [float(raw)]
        else:
            raise ValueError(type(raw).__name__)
    except ValueError:
        raise MalformedModel(f"{where} {str(raw)[:40]!r} is not a number or list") from None
    if len(values) not in (1, outputs):
        raise MalformedModel(f"{where} has {len(values)} values for {outputs} outputs")
    p = np.array(values, dtype=np.float32)
    to_margin = OBJECTIVES[objective][1]
    if not np.isfinite(p).all():
        raise MalformedModel(f"{where} {values} is not finite")
    with np.errstate(divide="ignore", invalid="ignore"):
        if to_margin == "logit":  # XGBoost: -log(1/p - 1) in float32
            if ((p <= 0) | (p >= 1)).any():
                raise MalformedModel(f"{where} {values} must lie in (0, 1) for {objective}")
            p = -_logf(np.float32(1) / p - np.float32(1))
        elif to_margin == "log":
            if (p <= 0).any():
                raise MalformedModel(f"{where} {values} must be positive for {objective}")
            p = _logf(p)
    return np.broadcast_to(p, (outputs,)).astype(np.float32)


def _logf(x: np.ndarray) -> np.ndarray:
    """float32 log as XGBoost computes base margins: the C library's ``logf``. Neither numpy's
    float32 log nor a correctly rounded one agrees with it everywhere (each was one ulp off
    glibc's for a few percent of 1,000 fitted base scores), and a base margin one ulp off
    shifts some margins by one ulp. Without a C library, a correctly rounded log."""
    logf = _libm_logf()
    if logf is None:
        return np.log(x.astype(np.float64)).astype(np.float32)
    return np.array([logf(float(v)) for v in x], dtype=np.float32)


@functools.cache
def _libm_logf() -> Any:
    name = ctypes.util.find_library("m") or ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).logf
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def _tree(i: int, tree: Any, num_feature: int) -> tuple[np.ndarray, ...]:
    """One tree, checked, as (feature, threshold, left, right, default_left, value)."""
    where = f"tree {i}"
    if not isinstance(tree, dict):
        raise MalformedModel(f"{where} is a {type(tree).__name__}, not an object")
    tparam = _dict(tree, "tree_param", where)
    if _count(tparam, "size_leaf_vector", f"{where}.tree_param", limit=2**31, default=1) > 1:
        raise UnsupportedModel(
            f"{where} has vector leaves (multi_strategy='multi_output_tree'); "
            "only one output per tree is supported"
        )
    left = _array(_get(tree, "left_children", where, object), f"{where}.left_children", np.int64)
    n = len(left)
    if n == 0:
        raise MalformedModel(f"{where} has no nodes")

    def column(key: str, dtype: type) -> np.ndarray:
        a = _array(_get(tree, key, where, object), f"{where}.{key}", dtype)
        if len(a) != n:
            raise MalformedModel(f"{where}: {key} has {len(a)} entries, left_children has {n}")
        return a

    right = column("right_children", np.int64)
    feature = column("split_indices", np.int64)
    cond = column("split_conditions", np.float32)
    default_left = column("default_left", np.int64)
    split_type = column("split_type", np.int64) if "split_type" in tree else np.zeros(n)
    deleted = _count(tparam, "num_deleted", f"{where}.tree_param", limit=n, default=0)
    declared = _count(tparam, "num_nodes", f"{where}.tree_param", limit=2**63, default=n)
    if declared != n:
        raise MalformedModel(f"{where}: tree_param.num_nodes is {declared}, the arrays have {n}")

    # Shape: a leaf has both children -1; a split has both in range; every node has at most one
    # parent and the root none. Then a walk from the root cannot revisit a node, and what it
    # does not reach must be the nodes XGBoost marked deleted.
    is_leaf = left == -1
    for name, child in (("left", left), ("right", right)):
        bad = np.flatnonzero(np.where(is_leaf, child != -1, (child < 0) | (child >= n)))
        if len(bad):
            j = int(bad[0])
            what = "is not -1 at a leaf" if is_leaf[j] else "is out of range"
            raise MalformedModel(
                f"{where}, node {j}: {name} child {child[j]} {what} (the tree has {n} nodes)"
            )
    splits = np.flatnonzero(~is_leaf)
    children = np.concatenate([left[splits], right[splits]])
    parents = np.bincount(children, minlength=n)
    if parents[0]:
        p = int(splits[np.flatnonzero(children == 0)[0] % len(splits)])
        raise MalformedModel(f"{where}: the root is a child of node {p} (a cycle)")
    if (parents > 1).any():
        j = int(np.flatnonzero(parents > 1)[0])
        two = sorted({int(splits[s % len(splits)]) for s in np.flatnonzero(children == j)})
        raise MalformedModel(f"{where}: node {j} is a child of nodes {two} (not a tree)")
    reached = np.zeros(n, dtype=bool)
    level, depth = np.zeros(1, dtype=np.int64), 0
    while True:
        reached[level] = True
        level = level[~is_leaf[level]]
        if not len(level):
            break
        depth += 1
        if depth > MAX_DEPTH:
            raise UnsupportedModel(f"{where} is deeper than {MAX_DEPTH} levels")
        level = np.concatenate([left[level], right[level]])
    lost = np.flatnonzero(~reached)
    if len(lost) != deleted:
        raise MalformedModel(
            f"{where}: {len(lost)} nodes (first: node {lost[0] if len(lost) else '-'}) are not "
            f"reachable from the root, and the tree declares {deleted} deleted (a cycle?)"
        )

    live = np.flatnonzero(reached)
    split = ~is_leaf & reached
    categorical = _array(tree.get("categories_nodes", []), f"{where}.categories_nodes", np.int64)
    if (split_type[split] != 0).any() or len(categorical):
        raise UnsupportedModel(f"{where} has categorical splits, which are not supported yet")
    bad = np.flatnonzero(split & ((feature < 0) | (feature >= num_feature)))
    if len(bad):
        j = int(bad[0])
        raise MalformedModel(
            f"{where}, node {j}: split feature {feature[j]} is out of range "
            f"(the model has {num_feature} features)"
        )
    bad = np.flatnonzero(split & np.isnan(cond))
    if len(bad):
        raise MalformedModel(f"{where}, node {int(bad[0])}: the split threshold is NaN")
    bad = np.flatnonzero(is_leaf & reached & ~np.isfinite(cond))
    if len(bad):
        j = int(bad[0])
        raise MalformedModel(f"{where}, node {j}: the leaf value {cond[j]} is not finite")
    if ((default_left[split] != 0) & (default_left[split] != 1)).any():
        raise MalformedModel(f"{where}: default_left holds values other than 0 and 1")

    renumber = np.cumsum(reached) - 1  # old node id -> new; the identity without deletions

    def kids(child: np.ndarray) -> np.ndarray:
        return np.where(is_leaf, -1, renumber[np.maximum(child, 0)])[live].astype(np.int32)

    return (
        np.where(is_leaf, -1, feature)[live].astype(np.int32),
        np.where(is_leaf, 0, cond)[live].astype(np.float32),
        kids(left),
        kids(right),
        (np.where(is_leaf, 0, default_left)[live] == 1),
        np.where(is_leaf, cond, 0)[live].astype(np.float32),
    )


def _get(d: dict[str, Any], key: str, where: str, kind: type) -> Any:
    if key not in d:
        raise MalformedModel(f"{where} has no {key!r} field")
    value = d[key]
    if kind is not object and not isinstance(value, kind):
        raise MalformedModel(f"{where}.{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _dict(d: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise MalformedModel(f"{where} is a {type(d).__name__}, not an object")
    value: dict[str, Any] = _get(d, key, where, dict)
    return value


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _count(d: dict[str, Any], key: str, where: str, limit: int, default: int | None = None) -> int:
    """A non-negative integer field; XGBoost writes most of them as strings ("15")."""
    if key not in d and default is not None:
        return default
    raw = _get(d, key, where, object)
    try:
        value = int(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or not 0 <= value <= limit:
        raise MalformedModel(f"{where}.{key} is {str(raw)[:40]!r}, not a count in [0, {limit}]")
    return value


def _array(value: Any, where: str, dtype: type) -> np.ndarray:
    """A 1-D numeric array from a JSON list or a UBJSON typed array, checked to fit dtype."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):  # ragged or nested lists
        raise MalformedModel(f"{where} is not a flat list of numbers") from None
    if a.ndim != 1 or (a.size and a.dtype.kind not in "biuf"):
        raise MalformedModel(f"{where} is not a flat list of numbers")
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):
            return a.astype(dtype)
    if a.size and a.dtype.kind == "f" and not (np.isfinite(a) & (a == np.round(a))).all():
        raise MalformedModel(f"{where} holds non-integers")
    if a.size and (a.min() < -(2**62) or a.max() > 2**62):
        raise MalformedModel(f"{where} holds integers out of range")
    return a.astype(dtype)


__all__ = [
    "LegacyBinary",
    "MalformedModel",
    "MAX_DEPTH",
    "TreeEnsemble",
    "predict_reference",
    "read_xgboost",
]
