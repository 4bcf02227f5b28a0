"""The mover's read side: store (or disk tier) -> artifact -> composed model. Runs on worker
threads; every way an artifact can be bad ends as BadArtifact naming the model."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mmhost.artifacts import Artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.cache.decoder import Decoder, DecoderDied
from mmhost.cache.disk import DiskTier
from mmhost.errors import BadArtifact
from mmhost.families.router import Model
from mmhost.store.base import Store


@dataclass
class Loaded:
    model: Model
    version: str
    from_disk: bool
    fetch_seconds: float
    """Reading the artifact's bytes: the download, or the disk tier's checked read."""
    decode_seconds: float
    """Unpacking, validating and composing it into a model."""


_IN_THREAD = Decoder(large_bytes=2**63, processes=0)  # everything on the calling thread


def load_model(
    key: str,
    store: Store,
    disk: DiskTier | None,
    preprocessor: Artifact | None,
    max_bytes: int,
    decoder: Decoder | None = None,
) -> Loaded:
    t0 = time.perf_counter()
    if disk is not None:
        src, from_disk = disk.fetch(key, store)
    else:
        src, from_disk = store.fetch(key), False
    t1 = time.perf_counter()
    try:
        model = (decoder or _IN_THREAD).decode(src, preprocessor, max_bytes)
    except ManifestError as exc:
        if disk is not None:
            disk.drop(key)  # never keep serving a bad copy from the disk tier
        raise BadArtifact(key, str(exc)) from None
    except DecoderDied as exc:
        raise BadArtifact(key, str(exc)) from None
    return Loaded(model, src.version, from_disk, t1 - t0, time.perf_counter() - t1)
