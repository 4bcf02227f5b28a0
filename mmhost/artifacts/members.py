"""What the tar and zip readers share: an entry's path checked, and the entries' sizes summed
against the cap (before each is read) with one file per name."""

from __future__ import annotations

from pathlib import PurePosixPath

from mmhost.artifacts.manifest import ManifestError

MAX_ENTRY_NAME = 256  # characters of an entry's path


def check_path(name: str, where: str, is_file: bool = True) -> None:
    """A relative, ``..``-free path of at most one folder (ManifestError if not)."""
    if len(name) > MAX_ENTRY_NAME:
        raise ManifestError(
            f"{where} entry {name[:64]!r}... has a name of {len(name)} characters; "
            f"the limit is {MAX_ENTRY_NAME}"
        )
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\x00" in name or ":" in name[:3]:
        raise ManifestError(f"{where} entry {name!r} has an unsafe path")
    if is_file and len([p for p in parts if p != "."]) > 2:
        raise ManifestError(f"{where} entry {name!r} is nested too deep")


class Members:
    """The files of one container by base name, their declared sizes summed against the cap."""

    def __init__(self, where: str, max_bytes: int) -> None:
        self.where, self.max_bytes = where, max_bytes
        self.files: dict[str, bytes] = {}
        self._total = 0

    def admit(self, name: str, size: int) -> str:
        """Count an entry of ``size`` bytes before it is read; its base name."""
        self._total += size
        if self._total > self.max_bytes:
            raise ManifestError(f"{self.where} expands past the {self.max_bytes}-byte cap")
        base = PurePosixPath(name).name
        if base in self.files:
            raise ManifestError(f"{self.where} holds {base} twice")
        return base
