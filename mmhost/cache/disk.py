"""The disk tier: artifacts copied from the store into a local folder, under a byte budget.
The only file I/O of the cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from mmhost.cache.tiers import Tier
from mmhost.errors import StoreUnavailable
from mmhost.store.base import Source, Store

log = logging.getLogger("mmhost.cache")
MIN_FREE_BYTES = 64 * 1024**2  # the disk tier never fills its filesystem past this


@dataclass(frozen=True)
class DiskRecord:
    """What the tier knows of a kept file: the store's version of it and its sha256."""

    version: str
    sha256: str


class DiskTier:
    """Artifacts copied from the store into a local folder, under a byte budget (LRU).

    Thread-safe: loads run on worker threads. Each artifact is written to a temp name and
    renamed into place, then its record (``.json``: key, version, size, sha256) is renamed in
    beside it, so a record always describes a whole file. At start the folder is re-indexed
    from the records (a restart re-uses what is on disk); a file whose size disagrees is
    deleted, and every read is checked against its sha256 (a bad copy is deleted and fetched
    again, never served). When the store can't be reached, a copy here is served as is.
    """

    def __init__(self, folder: str | os.PathLike[str], budget: int) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".probe{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ValueError(
                f"the disk tier's folder {str(folder)!r} is not a writable folder "
                f"({exc.strerror or exc}); give disk_dir a folder this process can write"
            ) from None
        self.tier: Tier[str, DiskRecord] = Tier("disk", budget)
        self._lock = threading.Lock()
        self.hits = 0
        self.evictions = 0
        self._reindex()

    def _reindex(self) -> None:
        for tmp in self.folder.glob("*.tmp*"):  # a write that never finished
            tmp.unlink(missing_ok=True)
        records = []
        for meta in self.folder.glob("*.json"):
            try:
                rec = json.loads(meta.read_text())
                path = self._file(rec["key"])
                ok = path.stat().st_size == rec["size"] and meta == self._meta(rec["key"])
            except (OSError, ValueError, KeyError, TypeError):
                ok, path = False, meta.with_suffix(".artifact")
            if not ok:
                meta.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                continue
            records.append((path.stat().st_mtime, rec))
        for _, rec in sorted(records, key=lambda r: r[0]):  # oldest first: LRU order
            if self.tier.used + rec["size"] > self.tier.budget:
                self._delete(rec["key"])
                continue
            self.tier.add(rec["key"], DiskRecord(rec["version"], rec["sha256"]), rec["size"])
        known = {self._file(k).name for k in self.tier.keys()}
        for orphan in self.folder.glob("*.artifact"):  # no record: unknown key or version
            if orphan.name not in known:
                orphan.unlink(missing_ok=True)

    def _file(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode()).hexdigest() + ".artifact")

    def _meta(self, key: str) -> Path:
        return self._file(key).with_suffix(".json")

    def _delete(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)
        self._meta(key).unlink(missing_ok=True)

    def fetch(self, key: str, store: Store) -> tuple[Source, bool]:
        """The artifact from this tier when it holds the store's current version, else from the
        store (kept here for next time). Returns (source, was_a_disk_hit)."""
        try:
            version = store.version(key)
        except StoreUnavailable:
            version = None  # serve what we hold, if anything
            if key not in self.tier:
                raise
        with self._lock:
            have = self.tier.get(key)
            if have is not None and version in (have.version, None):
                data = self._read(key, have)
                if data is not None:
                    self.tier.touch(key)
                    self.hits += 1
                    return Source(have.version, data=data), True
        src = store.fetch(key)
        if src.data is None or len(src.data) > self.tier.budget:
            return src, False  # folders are read in place; oversized artifacts aren't kept
        try:
            self._keep(key, src)
        except OSError as exc:  # ENOSPC, EIO, a folder removed: the load goes on without it
            log.warning(
                "could not keep %s in the disk tier (%s); serving it from memory",
                key,
                exc.strerror or exc,
                extra={"fields": {"event": "disk_tier_write_failed", "model": key}},
            )
        return src, False

    def _keep(self, key: str, src: Source) -> None:
        """Write ``src`` into the tier, within the budget and the filesystem's free space (at
        least ``MIN_FREE_BYTES`` stay free). Nothing is left behind if the write fails."""
        assert src.data is not None
        size = len(src.data)
        tmp = self._file(key).with_suffix(f".tmp{threading.get_ident()}")
        meta_tmp = tmp.with_name(tmp.name + ".json")
        with self._lock:
            self._drop(key)
            while self.tier.used + size > self.tier.budget or not self._room_for(size):
                if not len(self.tier):
                    log.warning(
                        "not keeping %s (%d bytes) in the disk tier: the filesystem of %s has "
                        "%d bytes free",
                        key,
                        size,
                        self.folder,
                        _free_bytes(self.folder),
                    )
                    return
                old, _ = next(self.tier.oldest_first())
                self._drop(old)
                self.evictions += 1
        try:
            tmp.write_bytes(src.data)
            with self._lock:
                digest = hashlib.sha256(src.data).hexdigest()
                record = {"key": key, "version": src.version, "size": size, "sha256": digest}
                meta_tmp.write_text(json.dumps(record))
                os.replace(tmp, self._file(key))
                os.replace(meta_tmp, self._meta(key))  # last: the record commits the file
                self.tier.add(key, DiskRecord(src.version, digest), size)
        except OSError:
            tmp.unlink(missing_ok=True)
            meta_tmp.unlink(missing_ok=True)
            self._file(key).unlink(missing_ok=True)  # (renamed in, but its record was not)
            raise

    def _room_for(self, size: int) -> bool:
        return _free_bytes(self.folder) - size >= MIN_FREE_BYTES

    def _read(self, key: str, record: DiskRecord) -> bytes | None:
        """The file's bytes if they match their record; else it is deleted (caller holds the
        lock) and None."""
        try:
            data = self._file(key).read_bytes()
        except OSError:
            data = None
        if data is None or hashlib.sha256(data).hexdigest() != record.sha256:
            self._drop(key)
            return None
        return data

    def drop(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: str) -> None:
        """Out of the tier and off the disk (the caller holds the lock)."""
        if self.tier.discard(key) is not None:
            self._delete(key)


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0
