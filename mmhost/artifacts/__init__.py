"""The ``mmhost/1`` artifact: ``mmhost.json`` + ``params.safetensors`` in a folder or .tar.gz.

Reading validates everything and never unpickles.
"""

from mmhost.artifacts.archive import read_artifact, read_artifact_bytes
from mmhost.artifacts.manifest import FORMAT, Artifact, Column, Feature, Preprocessing

__all__ = [
    "FORMAT",
    "Artifact",
    "Column",
    "Feature",
    "Preprocessing",
    "read_artifact",
    "read_artifact_bytes",
]
