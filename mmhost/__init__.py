"""mmhost: a multi-model host. Many small models, one fused kernel per batch."""

from mmhost.errors import MmhostError
from mmhost.host import Host
from mmhost.settings import Settings

__all__ = ["Host", "MmhostError", "Settings"]
__version__ = "0.1.0"
