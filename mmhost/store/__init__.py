"""Model stores: where artifacts live, addressed by key (the TargetModel name)."""

from mmhost.store.base import Source, Store, validate_key
from mmhost.store.folder import FolderStore

__all__ = ["FolderStore", "Source", "Store", "validate_key"]
