"""The decoder (``mmhost/cache/decoder.py``): large artifacts decoded in a worker process give
the same model as on the load thread; a dead worker is replaced; a bad artifact's reason comes
back from the worker as it would from the thread."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest
from conftest import house_pipeline

from mmhost.artifacts.manifest import ManifestError
from mmhost.cache.decoder import Decoder, _size, decode
from mmhost.convert import from_sklearn
from mmhost.store.base import Source
from mmhost.tools.houses import COLUMNS


@pytest.fixture
def archive(tmp_path) -> bytes:
    path = tmp_path / "m.tar.gz"
    from_sklearn(house_pipeline(0), COLUMNS).save(path)
    return path.read_bytes()


@pytest.fixture
def decoder():
    d = Decoder(large_bytes=1, processes=1)  # everything is "large"
    yield d
    d.close()


def test_a_worker_decodes_what_the_thread_decodes(archive, decoder):
    here = decode(archive, None, None, 2**20)
    there = decoder.decode(Source("v", data=archive), None, 2**20)
    assert decoder.large_decodes == 1
    # the same shared encoder (so the same bookkeeping copy and decode blocks), same numbers
    assert type(there) is type(here) and there.meta_key == here.meta_key
    assert there.encoder is here.encoder
    np.testing.assert_array_equal(there.weight, here.weight)
    np.testing.assert_array_equal(there.bias, here.bias)


def test_a_killed_worker_is_replaced(archive, decoder):
    decoder.decode(Source("v", data=archive), None, 2**20)
    (worker,) = decoder._all
    worker.proc.kill()
    worker.proc.wait()
    model = decoder.decode(Source("v", data=archive), None, 2**20)  # a new worker
    assert model.nbytes > 0
    assert [w.proc.poll() for w in decoder._all] == [None]


def test_a_bad_artifact_is_refused_by_the_worker_with_its_reason(decoder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ManifestError) as info:
        decoder.decode(Source("v", data=buf.getvalue()), None, 2**20)
    with pytest.raises(ManifestError) as here:
        decode(buf.getvalue(), None, None, 2**20)
    assert str(info.value) == str(here.value)


def test_without_processes_large_decodes_run_on_the_thread(archive):
    d = Decoder(large_bytes=1, processes=0)
    assert d.decode(Source("v", data=archive), None, 2**20).nbytes > 0
    assert d.large_decodes == 1 and d._all == []


def test_an_archive_is_as_large_as_its_expanded_gzip(archive):
    expanded = len(gzip.decompress(archive))
    assert _size(Source("v", data=archive)) == max(expanded, len(archive))
    assert _size(Source("v", data=b"\x1f\x8b")) == 2  # too short for a trailer: its own size
