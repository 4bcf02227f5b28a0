"""The mover's read side: store (or disk tier) -> artifact -> composed model. Runs on worker
threads; every way an artifact can be bad ends as BadArtifact naming the model."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mmhost.artifacts import Artifact, read_artifact, read_artifact_bytes
from mmhost.artifacts.manifest import ManifestError
from mmhost.cache.tiers import DiskTier
from mmhost.errors import BadArtifact
from mmhost.families.router import Model, compile_model
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


def load_model(
    key: str, store: Store, disk: DiskTier | None, preprocessor: Artifact | None, max_bytes: int
) -> Loaded:
    t0 = time.perf_counter()
    if disk is not None:
        src, from_disk = disk.fetch(key, store)
    else:
        src, from_disk = store.fetch(key), False
    t1 = time.perf_counter()
    try:
        if src.folder is not None:
            art = read_artifact(src.folder, max_bytes)
        else:
            assert src.data is not None
            if len(src.data) > max_bytes:
                raise ManifestError(
                    f"artifact is {len(src.data)} bytes, over the {max_bytes}-byte cap"
                )
            art = read_artifact_bytes(src.data, max_bytes)
        model = compile_model(art, preprocessor)
    except ManifestError as exc:
        if disk is not None:
            disk.drop(key)  # never keep serving a bad copy from the disk tier
        raise BadArtifact(key, str(exc)) from None
    return Loaded(model, src.version, from_disk, t1 - t0, time.perf_counter() - t1)
