"""``mmhost convert``: every model under a folder or S3 prefix -> an mmhost artifact under another,
keeping the keys (``berlin/model.joblib`` -> ``berlin/model.tar.gz``).

OFFLINE ONLY. scikit-learn models arrive as joblib/pickle files, and unpickling runs whatever
code the file says: convert only files you trust, on a machine of your own, never on a server
(which refuses pickles outright). What is read, by name:

- ``.joblib`` ``.pkl`` ``.pickle`` ``.sav``: a fitted scikit-learn estimator or pipeline
  (``from_sklearn``), or an XGBoost Booster / scikit-learn wrapper (``from_xgboost``);
- ``.json`` ``.ubj`` ``.bst`` ``.model`` and files named ``xgboost-model``: XGBoost model files;
- ``.tar.gz`` ``.tgz`` ``.tar`` and artifact folders: what mmhost reads (SageMaker's Linear
  Learner, XGBoost and k-NN archives, mmhost artifacts), re-written as mmhost artifacts.

A model that fails is reported with its reason and the rest go on.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mmhost.artifacts import Artifact
from mmhost.artifacts.archive import MANIFEST, XGBOOST_MODEL, artifact_bytes, read_artifact_bytes

PICKLES = (".joblib", ".pkl", ".pickle", ".sav")
XGBOOST_FILES = (".json", ".ubj", ".bst", ".model")
ARCHIVES = (".tar.gz", ".tgz", ".tar")
MAX_BYTES = 1024**3  # one model file read for conversion


@dataclass(frozen=True)
class Outcome:
    """One model: where it came from, where it went, or why not (``error``)."""

    src: str
    dst: str
    error: str | None = None


def output_key(key: str) -> str:
    """The artifact's key for a model's key: its model suffix becomes ``.tar.gz``."""
    for suffix in (*ARCHIVES, *PICKLES, *XGBOOST_FILES):
        if key.endswith(suffix):
            return key[: -len(suffix)] + ".tar.gz"
    return key + ".tar.gz"


def is_model(name: str) -> bool:
    return name == XGBOOST_MODEL or name.endswith((*PICKLES, *XGBOOST_FILES, *ARCHIVES))


def convert_all(
    src: str,
    dst: str,
    *,
    s3_endpoint_url: str | None = None,
    progress: bool = True,
    err: TextIO | None = None,
) -> list[Outcome]:
    """Convert every model under ``src`` into ``dst`` (each a folder or ``s3://bucket/prefix/``);
    each failure is also a line on ``err`` (default stderr)."""
    err = sys.stderr if err is None else err
    source = Location(src, s3_endpoint_url)
    target = Location(dst, s3_endpoint_url)
    keys = sorted(source.models())
    outcomes = []
    for key in _progress(keys, progress, err):
        out = output_key(key)
        try:
            target.write(out, artifact_bytes(convert_one(key, source.read(key))))
        except Exception as exc:  # any model's failure is its own: report it, go on
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcomes.append(Outcome(key, out, f"{type(exc).__name__}: {reason}"[:500]))
            print(f"mmhost convert: {key}: {outcomes[-1].error}", file=err)
        else:
            outcomes.append(Outcome(key, out))
    return outcomes


def convert_one(key: str, data: bytes | Path) -> Artifact:
    """The artifact of one model, by its key's name (a Path: an artifact folder)."""
    from mmhost.artifacts.archive import read_artifact
    from mmhost.convert.sklearn import from_sklearn
    from mmhost.convert.xgboost import from_xgboost

    if isinstance(data, Path):
        return read_artifact(data, MAX_BYTES)
    name = key.rsplit("/", 1)[-1]
    if name.endswith(PICKLES):
        return _from_object(_unpickle(name, data), from_sklearn, from_xgboost)
    if name == XGBOOST_MODEL or name.endswith(XGBOOST_FILES):
        return from_xgboost(data)
    art = read_artifact_bytes(data, MAX_BYTES)
    if art.algorithm == "xgboost" and not art.inputs and art.xgboost is not None:
        return from_xgboost(art.xgboost)  # SageMaker's XGBoost: columns and task from the model
    return art


def _from_object(
    obj: Any, from_sklearn: Callable[..., Artifact], from_xgboost: Callable[..., Artifact]
) -> Artifact:
    if type(obj).__name__ == "Booster" and hasattr(obj, "save_raw"):
        return from_xgboost(obj)
    if hasattr(obj, "fit") or hasattr(obj, "transform"):
        return from_sklearn(obj)
    raise TypeError(f"it holds a {type(obj).__name__}, not a scikit-learn or XGBoost model")


def _unpickle(name: str, data: bytes) -> Any:
    """TRUSTED files only (see the module docstring)."""
    import joblib

    try:
        if name.endswith(".joblib"):
            return joblib.load(io.BytesIO(data))
        try:
            return pickle.loads(data)  # noqa: S301 - offline conversion of the user's own files
        except pickle.UnpicklingError:
            return joblib.load(io.BytesIO(data))  # joblib's format under a pickle's name
    except ModuleNotFoundError as exc:
        raise ValueError(f"it needs the module {exc.name!r}, which is not installed") from None
    except Exception as exc:
        raise ValueError(f"not a readable joblib/pickle file ({type(exc).__name__})") from None


def _progress(keys: list[str], show: bool, err: TextIO) -> Iterator[str]:
    if not show or not keys:
        yield from keys
        return
    try:
        from tqdm import tqdm
    except ImportError:
        for i, key in enumerate(keys, 1):
            if i == len(keys) or i % max(1, len(keys) // 20) == 0:
                print(f"mmhost convert: {i}/{len(keys)}", file=err)
            yield key
        return
    yield from tqdm(keys, desc="mmhost convert", unit="model", file=err)


class Location:
    """A folder or an S3 prefix, as convert (and ``mmhost train``) read and write it."""

    def __init__(self, url: str, endpoint_url: str | None) -> None:
        self.url = url
        if url.startswith("s3://"):
            from mmhost.store.s3 import client, parse_url

            self.bucket, self.prefix = parse_url(url)
            self.client = client(endpoint_url or os.environ.get("MMHOST_S3_ENDPOINT_URL") or None)
            self.root: Path | None = None
        else:
            self.root = Path(url)

    def files(self, suffixes: tuple[str, ...]) -> list[str]:
        """The keys under it whose names end with one of ``suffixes``, sorted."""
        if self.root is None:
            return sorted(k for k in self._s3_keys() if k.endswith(suffixes))
        if not self.root.is_dir():
            raise ValueError(f"{self.url!r} is not a folder")
        keys: list[str] = []
        for dirpath, _, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            keys.extend((rel / f).as_posix().removeprefix("./") for f in filenames)
        return sorted(k for k in keys if k.endswith(suffixes))

    def exists(self, key: str) -> bool:
        if self.root is not None:
            return (self.root / key).exists()
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            from mmhost.store.s3 import _translate

            raise _translate(exc, key, self.url) from None
        return True

    def models(self) -> list[str]:
        if self.root is None:
            return self._s3_models()
        if not self.root.is_dir():
            raise ValueError(f"{self.url!r} is not a folder")
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if MANIFEST in filenames and rel != Path("."):
                keys.append(rel.as_posix())  # an artifact folder is one model
                dirnames.clear()
                continue
            keys.extend((rel / f).as_posix().removeprefix("./") for f in filenames if is_model(f))
        return keys

    def _s3_models(self) -> list[str]:
        return [k for k in self._s3_keys() if is_model(k.rsplit("/", 1)[-1])]

    def _s3_keys(self) -> list[str]:
        from mmhost.store.s3 import _translate

        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _translate(exc, self.prefix or "(listing)", self.url) from None
        return keys

    def read(self, key: str) -> bytes | Path:
        if self.root is None:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            size = reply.get("ContentLength")
            if not isinstance(size, int) or size > MAX_BYTES:
                reply["Body"].close()
                raise ValueError(f"it is {size} bytes, over the {MAX_BYTES}-byte cap")
            data = bytes(reply["Body"].read(size + 1))
            if len(data) != size:
                raise ValueError(f"its download was {len(data)} bytes, not the {size} S3 said")
            return data
        path = self.root / key
        if path.is_dir():
            return path
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ValueError(f"it is {size} bytes, over the {MAX_BYTES}-byte cap")
        return path.read_bytes()

    def write(self, key: str, data: bytes) -> None:
        if self.root is None:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
            return
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
