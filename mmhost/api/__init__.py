"""The HTTP layer: SageMaker runtime + container contract, KServe V2. Thin: no model logic."""

from mmhost.api.app import create_app
from mmhost.api.server import ServerThread, serve

__all__ = ["ServerThread", "create_app", "serve"]
