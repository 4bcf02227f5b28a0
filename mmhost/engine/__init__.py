"""The engine: micro-batching of concurrent requests into fused-op calls."""

from mmhost.engine.batcher import Batcher

__all__ = ["Batcher"]
