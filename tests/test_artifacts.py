"""Artifacts round-trip, and every kind of bad artifact fails with a clear reason."""

from __future__ import annotations

import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import safetensors.numpy
from conftest import house_pipeline

from mmhost.artifacts import read_artifact, read_artifact_bytes
from mmhost.artifacts.manifest import ManifestError
from mmhost.convert import from_sklearn
from mmhost.errors import BadArtifact
from mmhost.tools.houses import COLUMNS, houses


@pytest.fixture(scope="module")
def art():
    return from_sklearn(house_pipeline(), COLUMNS)


def tar_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def parts(art) -> dict[str, bytes]:
    return {
        "mmhost.json": json.dumps(art.manifest()).encode(),
        "params.safetensors": safetensors.numpy.save(art.tensors()),
    }


def test_round_trip_folder_and_archive(art, tmp_path):
    for path in (tmp_path / "folder", tmp_path / "a.tar.gz", tmp_path / "b.tgz"):
        art.save(path)
        back = read_artifact(path)
        assert back.manifest() == art.manifest()
        for k, v in art.tensors().items():
            assert np.array_equal(back.tensors()[k], v)


def test_saving_is_deterministic(art, tmp_path):
    art.save(tmp_path / "a.tar.gz")
    art.save(tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_archive_inside_a_top_level_folder(art):
    files = {f"model/{k}": v for k, v in parts(art).items()}
    assert read_artifact_bytes(tar_of(files)).task == "regressor"


@pytest.mark.parametrize(
    "case,match",
    [
        ("truncated", "truncated or corrupt"),
        ("symlink", "is a link"),
        ("dotdot", "unsafe path"),
        ("absolute", "unsafe path"),
        ("pickle_inside", "pickle"),
        ("bare_pickle", "pickle"),
        ("bad_header", "not a valid safetensors"),
        ("lying_shapes", "coef has shape"),
        ("no_manifest", "no mmhost.json"),
        ("not_json", "not valid JSON"),
        ("wrong_format", "format must be"),
        ("int_tensor", "dtype"),
        ("nan_weights", "NaN or inf"),
        ("bad_column_index", "must index inputs"),
    ],
)
def test_bad_archives_are_refused_with_a_reason(art, case, match):
    good = parts(art)
    manifest = art.manifest()
    if case == "truncated":
        data = tar_of(good)[:200]
    elif case == "symlink":
        data = tar_of(good, links={"evil": "/etc/passwd"})
    elif case == "dotdot":
        data = tar_of({**good, "../escape.txt": b"x"})
    elif case == "absolute":
        data = tar_of({**good, "/tmp/abs.txt": b"x"})
    elif case == "pickle_inside":
        data = tar_of({"model.pkl": pickle.dumps({"coef": [1.0]})})
    elif case == "bare_pickle":
        data = pickle.dumps(object)
    elif case == "bad_header":
        data = tar_of({**good, "params.safetensors": b"\xff" * 8 + b"{not json"})
    elif case == "lying_shapes":
        manifest["outputs"]["n_outputs"] = 2  # the params hold one output row
        data = tar_of({**good, "mmhost.json": json.dumps(manifest).encode()})
    elif case == "no_manifest":
        data = tar_of({"params.safetensors": good["params.safetensors"]})
    elif case == "not_json":
        data = tar_of({**good, "mmhost.json": b"{oops"})
    elif case == "wrong_format":
        manifest["format"] = "mmhost/9"
        data = tar_of({**good, "mmhost.json": json.dumps(manifest).encode()})
    elif case == "int_tensor":
        tensors = {**art.tensors(), "coef": np.ones((1, 10), np.int64)}
        data = tar_of({**good, "params.safetensors": safetensors.numpy.save(tensors)})
    elif case == "nan_weights":
        tensors = {**art.tensors(), "coef": np.full((1, 10), np.nan)}
        data = tar_of({**good, "params.safetensors": safetensors.numpy.save(tensors)})
    elif case == "bad_column_index":
        manifest["preprocessing"]["features"][0]["column"] = 99
        data = tar_of({**good, "mmhost.json": json.dumps(manifest).encode()})
    with pytest.raises(ManifestError, match=match):
        read_artifact_bytes(data)


def test_bad_artifacts_in_a_store_fail_their_own_load(art, store, host_factory):
    art.save(store / "good.tar.gz")
    (store / "trunc.tar.gz").write_bytes((store / "good.tar.gz").read_bytes()[:100])
    (store / "pickled.tar.gz").write_bytes(tar_of({"model.joblib": pickle.dumps([1, 2])}))
    (store / "folder").mkdir()
    (store / "folder" / "mmhost.json").symlink_to(store / "good.tar.gz")
    h = host_factory(store=str(store))
    X, _ = houses(2)
    for name, why in [
        ("trunc.tar.gz", "truncated"),
        ("pickled.tar.gz", "never unpickles"),
        ("folder", "symbolic link"),
    ]:
        with pytest.raises(BadArtifact, match=why):
            h.predict(name, X.tolist())
        assert h.predict("good.tar.gz", X.tolist()).shape == (2,)


def test_oversized_archive_is_refused_before_inflating(art, tmp_path):
    art.save(tmp_path / "a.tar.gz")
    with pytest.raises(ManifestError, match="cap"):
        read_artifact(tmp_path / "a.tar.gz", max_bytes=100)


@pytest.mark.parametrize(
    "missing, why",
    [
        ("NaN", "a linear model cannot take NaN inputs"),  # parses; the linear family refuses it
        ("nan", 'missing must be a finite number or "NaN"'),
        (float("inf"), 'missing must be a finite number or "NaN"'),
    ],
)
def test_a_nan_passthrough_column_is_for_trees_only(art, store, host_factory, missing, why):
    files = parts(art)
    doc = json.loads(files["mmhost.json"])
    doc["inputs"][0]["missing"] = missing
    files["mmhost.json"] = json.dumps(doc).encode()
    (store / "nan.tar.gz").write_bytes(tar_of(files))
    art.save(store / "good.tar.gz")
    h = host_factory(store=str(store))
    X, _ = houses(2)
    with pytest.raises(BadArtifact, match=why):
        h.predict("nan.tar.gz", X.tolist())
    assert h.predict("good.tar.gz", X.tolist()).shape == (2,)
