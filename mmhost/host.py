"""``mmhost.Host``: the Python API over the whole data flow.

    decode rows (codecs) -> acquire the model (cache) -> batch (engine) -> fused op (kernels)

The engine runs on its own event loop in a background thread (``engine/loop.py``); the request
path on it is ``engine/invoke.py``. Naming rule: every call has a sync form ``x`` (from any
thread but the engine's) and an async form ``ax`` (awaited on any event loop): ``predict`` /
``apredict``, ``load`` / ``aload``, ``stats`` / ``astats``... Both share one cache and one
batcher; artifact loads run on a small thread pool beside them. The names of the previous
release (``invoke``, ``invoke_many``, ``infer``, ``areport``, ``ametrics``) still work, with a
DeprecationWarning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, read_artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.cache import ModelCache, Resident
from mmhost.cache.names import Names
from mmhost.engine import Batcher
from mmhost.engine.invoke import Invoker
from mmhost.engine.loop import EngineLoop, call
from mmhost.errors import ModelNotLoaded
from mmhost.families.router import Families
from mmhost.metrics import Metrics, exposition
from mmhost.settings import Settings
from mmhost.store import open_store, validate_key
from mmhost.types import BatchStats, HostStats, ModelInfo, ModelUsage, Prediction

log = logging.getLogger("mmhost")
T = TypeVar("T")
Results = list[np.ndarray | Exception]


class Host:
    """Many models behind one object. Settings come as ``Settings.from_env`` makes them for
    ``mmhost serve``: ``MMHOST_*`` variables, then the keyword arguments (the fields of
    ``Settings``) over them; or pass ``settings=`` whole."""

    def __init__(
        self, store: str | None = None, *, settings: Settings | None = None, **kwargs: Any
    ) -> None:
        if settings is None:
            if store is not None:
                kwargs["store"] = store
            settings = Settings.from_env(**kwargs)
        elif store is not None or kwargs:
            raise TypeError("pass either settings= or keyword settings, not both")
        self.settings = settings
        self.device = torch.device(settings.resolved_device())
        self.store = open_store(settings)
        self.preprocessor = _read_preprocessor(settings.preprocessor)
        self.families = Families(self.device)
        # loads from a remote store wait on the network: enough threads to keep every
        # allowed download going
        workers = settings.load_workers
        if not self.store.local:
            workers = max(workers, settings.max_concurrent_downloads)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="mmhost-load"
        )
        self.metrics = Metrics(settings.per_model_metrics)
        self.cache = ModelCache(
            settings,
            self.store,
            self.families,
            self._pool,
            settings.resolved_device_budget(self.device.type),
            self.preprocessor,
            metrics=self.metrics,
        )
        self.batcher = Batcher(
            self.families,
            settings.max_batch_rows,
            settings.max_delay_us,
            self.metrics,
            settings.max_request_values,
        )
        self.names = Names(settings.max_container_models)  # container-contract names
        self.invoker = Invoker(
            settings, self.device, self.cache, self.batcher, self.families, self.metrics
        )
        self._engine = EngineLoop()
        self.draining = False  # set on SIGTERM by ``mmhost serve``: readiness turns false

    # --- scoring -------------------------------------------------------------------------------
    def predict(self, target_model: str, rows: Any, timeout: float | None = None) -> np.ndarray:
        """Regressor: (N,) values. Binary classifier: (N,) probability of the positive class.
        Multiclass: (N, k) probabilities. ``rows``: a 2-D array, a list of rows (strings for
        categorical columns), {column: values}, or a numeric torch/CuPy tensor (DLPack)."""
        return self._run(self.invoker.invoke(target_model, rows), timeout).scores

    async def apredict(self, target_model: str, rows: Any) -> np.ndarray:
        return (await self._on_engine(self.invoker.invoke(target_model, rows))).scores

    def prediction(
        self, target_model: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        """``predict``, with the model's task, classes (and k-NN neighbours) beside the scores.
        With ``max_response_bytes``, an answer that can't be encoded in that many bytes is
        refused (ResponseTooLarge) before it is scored."""
        return self._run(self.invoker.invoke(target_model, rows, max_response_bytes))

    async def aprediction(
        self, target_model: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        return await self._on_engine(self.invoker.invoke(target_model, rows, max_response_bytes))

    def predict_many(
        self, requests: list[tuple[str, Any]], timeout: float | None = None
    ) -> Results:
        """Several (target_model, rows) requests submitted together: they share fused calls.
        Each result is its scores, or the error of that request alone."""
        return self._run(self.invoker.invoke_many(requests), timeout)

    async def apredict_many(self, requests: list[tuple[str, Any]]) -> Results:
        return await self._on_engine(self.invoker.invoke_many(requests))

    # --- models --------------------------------------------------------------------------------
    def load(self, name: str) -> ModelInfo:
        """Make ``name`` resident on the device (from whichever tier holds it)."""
        return self._run(self._load(name))

    async def aload(self, name: str) -> ModelInfo:
        return await self._on_engine(self._load(name))

    def describe(self, name: str) -> ModelInfo:
        """What a loaded model is (ModelNotLoaded when it is not: this never loads)."""
        return self._run(call(self._describe, validate_key(name)))

    async def adescribe(self, name: str) -> ModelInfo:
        return await self._on_engine(call(self._describe, validate_key(name)))

    def unload(self, name: str) -> bool:
        """Drop ``name`` from the device and host tiers. False if it was not loaded."""
        return self._run(call(self.cache.unload, validate_key(name)))

    async def aunload(self, name: str) -> bool:
        return await self._on_engine(call(self.cache.unload, validate_key(name)))

    def list_models(self) -> dict[str, str]:
        """Loaded models and the tier each is in ("device" or "host")."""
        return self._run(call(self.cache.loaded))

    async def alist_models(self) -> dict[str, str]:
        return await self._on_engine(call(self.cache.loaded))

    def tier(self, name: str) -> str | None:
        """ "device" or "host" when ``name`` is loaded, else None (never loads)."""
        return self._run(call(self.cache.tier_of, validate_key(name)))

    async def atier(self, name: str) -> str | None:
        return await self._on_engine(call(self.cache.tier_of, validate_key(name)))

    def loading(self, name: str) -> bool:
        """Whether a load of ``name`` is running now."""
        return self._run(call(self.cache.loading, validate_key(name)))

    async def aloading(self, name: str) -> bool:
        return await self._on_engine(call(self.cache.loading, validate_key(name)))

    def usage(self, name: str | None = None) -> list[ModelUsage]:
        """What ``name`` (or every loaded model) served since it was placed (never loads)."""
        return self._run(call(self.cache.usage, None if name is None else validate_key(name)))

    async def ausage(self, name: str | None = None) -> list[ModelUsage]:
        key = None if name is None else validate_key(name)
        return await self._on_engine(call(self.cache.usage, key))

    def store_keys(
        self, prefix: str = "", start_after: str = "", limit: int | None = None
    ) -> list[str]:
        """Model keys in the store under ``prefix``; see ``Store.list`` for the paging."""
        return self.store.list(prefix, start_after, limit)

    async def astore_keys(
        self, prefix: str = "", start_after: str = "", limit: int | None = None
    ) -> list[str]:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.store.list, prefix, start_after, limit
        )

    # --- numbers -------------------------------------------------------------------------------
    def stats(self, top: int = 10) -> HostStats:
        """Cache and batch counters, request metrics summarized, the ``top`` hottest models."""
        return self._run(call(self._stats, top))

    async def astats(self, top: int = 10) -> HostStats:
        return await self._on_engine(call(self._stats, top))

    def prometheus(self) -> bytes:
        """Every metric in Prometheus' text format (``mmhost/metrics.py``)."""
        return self._run(call(self._exposition))

    async def aprometheus(self) -> bytes:
        return await self._on_engine(call(self._exposition))

    # --- the previous release's names ----------------------------------------------------------
    async def invoke(self, target_model: str, rows: Any) -> np.ndarray:
        _deprecated("invoke", "apredict")
        return await self.apredict(target_model, rows)

    async def invoke_many(self, requests: list[tuple[str, Any]]) -> Results:
        _deprecated("invoke_many", "apredict_many")
        return await self.apredict_many(requests)

    async def infer(
        self, target_model: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        _deprecated("infer", "aprediction")
        return await self.aprediction(target_model, rows, max_response_bytes)

    async def areport(self, top: int = 10) -> HostStats:
        _deprecated("areport", "astats")
        return await self.astats(top)

    async def ametrics(self) -> bytes:
        _deprecated("ametrics", "aprometheus")
        return await self.aprometheus()

    # --- life ----------------------------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the engine's event loop. The HTTP server runs there, so its handlers
        reach the cache and batcher without a hop between threads."""
        return self._engine.submit(coro)

    @property
    def closed(self) -> bool:
        return self._engine.closed

    def close(self) -> None:
        if self._engine.closed:
            return
        self._engine.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.cache.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- on the engine loop --------------------------------------------------------------------
    def _stats(self, top: int) -> HostStats:
        b = self.batcher.counters
        return HostStats(
            **self.cache.stats(),
            device=str(self.device),
            batches=BatchStats(b.calls, b.rows, b.requests),
            **self.metrics.summary(),
            hottest=self.cache.hottest(top),
        )

    def _exposition(self) -> bytes:
        stats = self.cache.stats()
        gpu = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            gpu = (total - free, total)
        return exposition(lambda: self.metrics.families(stats, gpu))

    async def _load(self, name: str) -> ModelInfo:
        r = await self.invoker.acquire(validate_key(name))
        self.cache.release(r)
        return _info(name, r)

    def _describe(self, key: str) -> ModelInfo:
        r = self.cache.resident.get(key)
        if r is None or r.gone:
            raise ModelNotLoaded(key)
        return _info(key, r)

    # (test helpers reach the engine through these)
    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._engine.run(coro, timeout)

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return self._engine.submit(coro)

    async def _on_engine(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self._engine.on_engine(coro)

    _call = staticmethod(call)


def _info(name: str, r: Resident) -> ModelInfo:
    m = r.meta
    return ModelInfo(
        name=name,
        family=m.family,
        task=m.task,
        classes=m.classes,
        outputs=r.slab.k,
        version=r.version,
        inputs=[c.to_json() for c in m.encoder.columns],
    )


def _deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"Host.{old} is deprecated (mmhost 0.2 removes it): use Host.{new}",
        DeprecationWarning,
        stacklevel=3,
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
