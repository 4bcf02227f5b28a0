"""Model stores: where artifacts live, addressed by key (the TargetModel name)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmhost.store.base import Source, Store, validate_key
from mmhost.store.folder import FolderStore
from mmhost.store.s3 import S3Store

if TYPE_CHECKING:
    from mmhost.settings import Settings

__all__ = ["FolderStore", "S3Store", "Source", "Store", "open_store", "validate_key"]


def open_store(settings: Settings) -> Store:
    """The store ``settings.store`` names: ``s3://bucket/prefix/`` or a local folder."""
    if settings.store.startswith("s3://"):
        return S3Store(
            settings.store,
            endpoint_url=settings.s3_endpoint_url,
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
            max_attempts=settings.s3_max_attempts,
            max_downloads=settings.max_concurrent_downloads,
        )
    return FolderStore(settings.store)
