"""The embedded default store: a local folder, each model a .tar.gz file or an artifact folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mmhost.errors import BadArtifact, InvalidModelName, ModelNotFound
from mmhost.store.base import Source, validate_key

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_RESOLVED_MAX = 1_000_000  # resolved paths kept (about 200 B each)


class FolderStore:
    local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        # what callers are told: the store's folder name, never a path on this machine
        self.name = f"the store {self.root.name!r}"
        if not self.root.is_dir():
            raise ValueError(f"the model store {str(self.root)!r} is not a folder")
        # key -> its resolved path: revalidation stats it on the request path, and resolving
        # (realpath, the inside-the-store check) costs ~10x the stat
        self._resolved: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        p = self.root / key
        # a symlink inside the store must not lead outside it
        real = Path(os.path.realpath(p))
        if real != self.root and self.root not in real.parents:
            raise InvalidModelName(key, "it resolves outside the store")
        if not real.exists():
            raise ModelNotFound(key, self.name)
        return real

    def version(self, key: str) -> str:
        p = self._resolved.get(key)
        try:
            if p is None:
                p = self._path(key)
                if len(self._resolved) >= _RESOLVED_MAX:
                    self._resolved.clear()
                self._resolved[key] = p
            st = os.stat(p)
        except FileNotFoundError:  # gone since it was resolved: resolve again (or not found)
            self._resolved.pop(key, None)
            p = self._path(key)
            st = os.stat(p)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            # reading a FIFO blocks a load worker forever; a device never ends
            raise BadArtifact(key, "it is not a regular file or an artifact folder")
        if stat.S_ISDIR(st.st_mode):
            stats = [e.stat() for e in p.iterdir() if e.is_file()]
            if not stats:
                raise ModelNotFound(key, f"{self.name} (empty folder)")
            return f"{sum(s.st_size for s in stats)}-{max(s.st_mtime_ns for s in stats)}"
        return f"{st.st_size}-{st.st_mtime_ns}"

    def fetch(self, key: str) -> Source:
        version = self.version(key)
        p = self._path(key)
        if p.is_dir():
            return Source(version, folder=p)
        try:
            return Source(version, data=p.read_bytes())
        except FileNotFoundError:  # deleted between the stat and the read
            self._resolved.pop(key, None)
            raise ModelNotFound(key, self.name) from None

    def lexical_key(self, location: str) -> str:
        """The key ``location`` names, from its text alone: no stat, no realpath, no listing
        (a caller is authorized against it before the store is looked at)."""
        path = location.removeprefix("file://")
        if os.path.isabs(path):
            rel = os.path.relpath(os.path.normpath(path), self.root)
            if rel == "." or rel.startswith(".."):
                raise InvalidModelName(location, "it is outside the store")
            path = Path(rel).as_posix()
        return validate_key(path)

    def key_of(self, location: str) -> str:
        """The key of a model given by a location: a key, or a path (``file://`` allowed) inside
        the store to an archive, an artifact folder, or a folder holding exactly one archive
        (as a platform unpacks ``model.tar.gz`` into a model folder)."""
        path = location.removeprefix("file://")
        if os.path.isabs(path):
            real = Path(os.path.realpath(path))
            if real != self.root and self.root not in real.parents:
                raise InvalidModelName(location, "it is outside the store")
            if not real.exists():
                raise ModelNotFound(self.lexical_key(location), self.name)
        else:
            real = self._path(path)
        if real.is_dir() and not (real / "mmhost.json").is_file():
            archives = sorted(p for p in real.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES))
            if len(archives) != 1:
                raise InvalidModelName(
                    location, f"the folder holds {len(archives)} model archives, not one"
                )
            real = archives[0]
        if real == self.root:
            raise InvalidModelName(location, "it is the store itself")
        return validate_key(real.relative_to(self.root).as_posix())

    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if "mmhost.json" in filenames and rel != Path("."):
                out.append(rel.as_posix())
                dirnames.clear()
                continue
            out.extend(
                (rel / f).as_posix().removeprefix("./")
                for f in filenames
                if f.endswith(ARCHIVE_SUFFIXES)
            )
        keys = sorted(k for k in out if k.startswith(prefix) and k > start_after)
        return keys if limit is None else keys[:limit]
