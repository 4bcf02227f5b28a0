"""``mmhost.Host``: the Python API over the whole data flow.

    decode rows (codecs) -> acquire the model (cache) -> batch (engine) -> fused op (kernels)

The engine runs on its own event loop in a background thread, so the sync ``predict`` and the
async ``invoke`` (from any other loop) share one cache and one batcher; artifact loads run on a
small thread pool beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, read_artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.cache import ModelCache
from mmhost.engine import Batcher
from mmhost.errors import HostClosed, ValidationError
from mmhost.families.arena import size_class
from mmhost.families.linear import LinearFamily
from mmhost.settings import Settings
from mmhost.store import FolderStore, validate_key

log = logging.getLogger("mmhost")
T = TypeVar("T")


class Host:
    """Many models behind one object. Keyword arguments are the fields of ``Settings``."""

    def __init__(
        self, store: str | None = None, *, settings: Settings | None = None, **kwargs: Any
    ) -> None:
        if settings is None:
            if store is not None:
                kwargs["store"] = store
            settings = Settings(**kwargs)
        elif store is not None or kwargs:
            raise TypeError("pass either settings= or keyword settings, not both")
        self.settings = settings
        self.device = torch.device(settings.resolved_device())
        self.store = FolderStore(settings.store)
        self.preprocessor = _read_preprocessor(settings.preprocessor)
        self.family = LinearFamily(self.device)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            settings.load_workers, thread_name_prefix="mmhost-load"
        )
        self.cache = ModelCache(
            settings,
            self.store,
            self.family,
            self._pool,
            settings.resolved_device_budget(self.device.type),
            self.preprocessor,
        )
        self.batcher = Batcher(self.family, settings.max_batch_rows, settings.max_delay_us)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mmhost-engine", daemon=True
        )
        self._thread.start()
        self._closed = False

    # --- the public API ----------------------------------------------------------------------
    async def invoke(self, target_model: str, rows: Any) -> np.ndarray:
        """Scores for ``rows`` from ``target_model`` (see ``predict`` for shapes)."""
        return await self._on_engine(self._invoke(target_model, rows))

    def predict(self, target_model: str, rows: Any, timeout: float | None = None) -> np.ndarray:
        """Regressor: (N,) values. Binary classifier: (N,) probability of the positive class.
        Multiclass: (N, k) probabilities. ``rows``: a 2-D array, a list of rows (strings for
        categorical columns), or a numeric torch/CuPy tensor (taken through DLPack)."""
        return self._run(self._invoke(target_model, rows), timeout)

    async def invoke_many(self, requests: list[tuple[str, Any]]) -> list[np.ndarray | Exception]:
        """Several (target_model, rows) requests submitted together: they share fused calls.
        Each result is its scores, or the error of that request alone."""
        return await self._on_engine(self._invoke_many(requests))

    def predict_many(
        self, requests: list[tuple[str, Any]], timeout: float | None = None
    ) -> list[np.ndarray | Exception]:
        """Sync ``invoke_many``."""
        return self._run(self._invoke_many(requests), timeout)

    def load(self, name: str) -> dict[str, Any]:
        """Make ``name`` resident on the device (from whichever tier holds it)."""
        return self._run(self._load(name))

    def unload(self, name: str) -> bool:
        """Drop ``name`` from the device and host tiers. False if it was not loaded."""
        return self._run(self._call(self.cache.unload, validate_key(name)))

    def list_models(self) -> dict[str, str]:
        """Loaded models and the tier each is in ("device" or "host")."""
        return self._run(self._call(self.cache.loaded))

    def describe(self, name: str) -> dict[str, Any]:
        """Task, classes and input columns of a model (loads it if needed)."""
        return self._run(self._load(name))

    def stats(self) -> dict[str, Any]:
        def collect() -> dict[str, Any]:
            b = self.batcher.counters
            return {
                **self.cache.stats(),
                "device": str(self.device),
                "batches": {"calls": b.calls, "rows": b.rows, "requests": b.requests},
            }

        return self._run(self._call(collect))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # requests still in flight end with CancelledError instead of waiting forever
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._loop.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- on the engine loop --------------------------------------------------------------------
    async def _invoke(self, name: str, rows: Any) -> np.ndarray:
        key = validate_key(name)
        n = _row_count(rows)
        if n > self.settings.max_rows_per_request:
            raise ValidationError(
                f"{n} rows in one request; the limit is {self.settings.max_rows_per_request}"
            )
        r = await self.cache.acquire(key)
        try:
            model = r.meta
            width = size_class(model.encoder.width)
            if _is_tensor(rows):
                x = model.encoder.encode_tensor(rows, self.device, width)
            else:
                x = torch.from_numpy(model.encoder.encode(rows, width)).to(self.device)
            if x.shape[0] == 0:
                out = torch.zeros((0, r.slab.k))
            else:
                out = await self.batcher.submit(r, x)  # (n, K)
        finally:
            self.cache.release(r)
        scores = out.cpu().numpy()
        return scores if model.task == "multiclass_classifier" else scores[:, 0]

    async def _invoke_many(self, requests: list[tuple[str, Any]]) -> list[np.ndarray | Exception]:
        out = await asyncio.gather(
            *[self._invoke(n, rows) for n, rows in requests], return_exceptions=True
        )
        for r in out:  # cancellation and the like are not per-request results
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r
        return out  # type: ignore[return-value]

    async def _load(self, name: str) -> dict[str, Any]:
        r = await self.cache.acquire(validate_key(name))
        self.cache.release(r)
        m = r.meta
        return {
            "name": name,
            "task": m.task,
            "classes": m.classes,
            "version": r.version,
            "inputs": [c.to_json() for c in m.encoder.columns],
        }

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)

    # --- bridging to the engine thread -------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._closed:
            coro.close()
            raise HostClosed()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "sync Host calls can't be made from the engine loop; await host.invoke instead"
            )
        return self._submit(coro).result(timeout)

    async def _on_engine(self, coro: Coroutine[Any, Any, T]) -> T:
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(self._submit(coro))


def _row_count(rows: Any) -> int:
    shape = getattr(rows, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    return len(rows) if isinstance(rows, (list, tuple)) else 0


def _is_tensor(rows: Any) -> bool:
    return isinstance(rows, torch.Tensor) or (
        hasattr(rows, "__dlpack__") and not isinstance(rows, np.ndarray)
    )


def _read_preprocessor(path: str | None) -> Artifact | None:
    if path is None:
        return None
    try:
        art = read_artifact(path)
    except (ManifestError, OSError) as exc:
        raise ValueError(f"cannot read the shared preprocessor {path!r}: {exc}") from None
    if art.kind != "preprocessor":
        raise ValueError(f"{path!r} is a {art.kind} artifact, not a preprocessor")
    return art
