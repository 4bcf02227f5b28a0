from __future__ import annotations

import pytest
from conftest import house_pipeline

from mmhost.convert import from_sklearn
from mmhost.errors import InvalidModelName, ModelNotFound
from mmhost.store import FolderStore, validate_key
from mmhost.tools.houses import COLUMNS


@pytest.mark.parametrize(
    "key", ["Chicago_IL/Chicago_IL.tar.gz", "a", "company_a/x/y.tgz", "with space/m.tar.gz"]
)
def test_valid_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        "a//b",
        "bad\x00nul",
        "tab\there",
        " lead",
        "C:\\x",
        "\\\\share\\x",
        "x" * 1025,
        42,
    ],
)
def test_invalid_keys(key):
    with pytest.raises(InvalidModelName):
        validate_key(key)


def test_listing_versions_and_fetching(store):
    art = from_sklearn(house_pipeline(), COLUMNS)
    art.save(store / "a" / "a.tar.gz")
    art.save(store / "b")  # a folder artifact
    (store / "notes.txt").write_text("not a model")
    fs = FolderStore(store)
    assert fs.list() == ["a/a.tar.gz", "b"]
    assert fs.list("a/") == ["a/a.tar.gz"]
    v1 = fs.version("a/a.tar.gz")
    src = fs.fetch("a/a.tar.gz")
    assert src.version == v1 and src.data == (store / "a" / "a.tar.gz").read_bytes()
    assert fs.fetch("b").folder == (store / "b").resolve()
    with pytest.raises(ModelNotFound, match="'missing.tar.gz'"):
        fs.version("missing.tar.gz")


def test_a_missing_store_folder_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        FolderStore(tmp_path / "nope")
