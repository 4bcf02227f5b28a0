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
import time
from collections.abc import Awaitable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from mmhost.artifacts import Artifact, read_artifact
from mmhost.artifacts.manifest import ManifestError
from mmhost.cache import ModelCache, ModelUsage, Resident
from mmhost.codecs.outputs import MIN_VALUE_BYTES
from mmhost.engine import Batcher
from mmhost.engine.batcher import Rows, Slots, runs_of_rows
from mmhost.errors import HostClosed, ModelNotReady, ResponseTooLarge, ValidationError
from mmhost.families.arena import Slab
from mmhost.families.base import Neighbors
from mmhost.families.router import Families
from mmhost.metrics import Metrics, exposition
from mmhost.settings import Settings
from mmhost.store import open_store, validate_key

log = logging.getLogger("mmhost")
T = TypeVar("T")
# slab, member requests, their rows (N, D), slots (N,), and each member's row count
_Block = tuple[Slab, list[int], "Rows", np.ndarray, list[int]]


@dataclass(frozen=True)
class Prediction:
    """One request's answer, with what a response encoder needs to label it."""

    scores: np.ndarray
    """As ``Host.predict`` returns them: (N,) or, for multiclass, (N, k) probabilities."""
    task: str
    """regressor, binary_classifier or multiclass_classifier."""
    classes: list[Any] | None
    """Class labels of a classifier (binary: [negative, positive])."""
    model_seconds: float = 0.0
    """Time in the model: waiting for the batch and the fused op (ModelLatency)."""
    wait_seconds: float = 0.0
    """Time spent waiting for the model to be loaded (0 when it was resident)."""
    threshold: float = 0.5
    """A binary classifier's decision threshold on P(positive)."""
    neighbors: Neighbors | None = None
    """A k-NN answer's neighbours (then ``scores`` are the predicted labels)."""


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
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mmhost-engine", daemon=True
        )
        self._thread.start()
        self._closed = False
        self.draining = False  # set on SIGTERM by ``mmhost serve``: readiness turns false

    # --- the public API ----------------------------------------------------------------------
    async def invoke(self, target_model: str, rows: Any) -> np.ndarray:
        """Scores for ``rows`` from ``target_model`` (see ``predict`` for shapes)."""
        return (await self._on_engine(self._invoke(target_model, rows))).scores

    async def infer(
        self, target_model: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        """``invoke``, with the model's task and classes beside the scores. With
        ``max_response_bytes``, an answer that can't be encoded in that many bytes (at
        ``MIN_VALUE_BYTES`` a value) is refused (ResponseTooLarge) before it is scored."""
        return await self._on_engine(self._invoke(target_model, rows, max_response_bytes))

    def predict(self, target_model: str, rows: Any, timeout: float | None = None) -> np.ndarray:
        """Regressor: (N,) values. Binary classifier: (N,) probability of the positive class.
        Multiclass: (N, k) probabilities. ``rows``: a 2-D array, a list of rows (strings for
        categorical columns), or a numeric torch/CuPy tensor (taken through DLPack)."""
        return self._run(self._invoke(target_model, rows), timeout).scores

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
        return self._run(self._call(self._stats))

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the engine's event loop. The HTTP server runs there, so its handlers
        reach the cache and batcher without a hop between threads."""
        return self._submit(coro)

    # async twins of the management calls, for callers on another event loop (the HTTP app)
    async def aload(self, name: str) -> dict[str, Any]:
        return await self._on_engine(self._load(name))

    async def aunload(self, name: str) -> bool:
        return await self._on_engine(self._call(self.cache.unload, validate_key(name)))

    async def alist_models(self) -> dict[str, str]:
        return await self._on_engine(self._call(self.cache.loaded))

    async def atier(self, name: str) -> str | None:
        """ "device" or "host" when ``name`` is loaded, else None (never loads)."""
        return await self._on_engine(self._call(self.cache.tier_of, validate_key(name)))

    async def ausage(self, name: str | None = None) -> list[ModelUsage]:
        """What ``name`` (or every loaded model) served since it was placed (never loads)."""
        key = None if name is None else validate_key(name)
        return await self._on_engine(self._call(self.cache.usage, key))

    async def aloading(self, name: str) -> bool:
        """Whether a load of ``name`` is running now."""
        return await self._on_engine(self._call(self.cache.loading, validate_key(name)))

    async def astore_keys(
        self, prefix: str = "", start_after: str = "", limit: int | None = None
    ) -> list[str]:
        """Model keys in the store under ``prefix`` (listed on a worker thread); see
        ``Store.list`` for the paging arguments."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self.store.list, prefix, start_after, limit
        )

    async def ametrics(self) -> bytes:
        """Every metric in Prometheus' text format (``mmhost/metrics.py``)."""
        return await self._on_engine(self._call(self._exposition))

    async def areport(self, top: int = 10) -> dict[str, Any]:
        """``stats()`` with the request metrics and the ``top`` hottest resident models."""
        return await self._on_engine(self._call(self._report, top))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # requests still in flight end with CancelledError instead of waiting forever
        asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.cache.close()
        self._loop.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- on the engine loop --------------------------------------------------------------------
    async def _invoke(
        self, name: str, rows: Any, max_response_bytes: int | None = None
    ) -> Prediction:
        key, n = self._checked_key(name, rows)
        self.metrics.invoked(key, n)
        waited = 0.0
        r = self.cache.acquire_now(key)
        if r is None:
            t0 = time.perf_counter()
            try:
                r = await self._acquire(key)
            finally:  # a failed load was waited for too
                waited = time.perf_counter() - t0
                self.metrics.loading_wait(waited)
        r.uses += 1
        self.metrics.served(key)
        try:
            if max_response_bytes is not None:
                _check_answer(self.families.answer_values(r.slab, r.meta), n, max_response_bytes)
            x = self._encode(r, rows)  # (n, D)
            t1 = time.perf_counter()
            out = await self._score(r.slab, x, r.slot)  # (n, K)
            in_model = time.perf_counter() - t1
            r.served(n, in_model)
        finally:
            self.cache.release(r)
        self.metrics.model_latency(in_model)
        m = r.meta
        scores, neighbors = self.families.answer(m, out)
        return Prediction(scores, m.task, m.classes, in_model, waited, m.threshold, neighbors)

    async def _acquire(self, key: str) -> Resident:
        """The model pinned; a load still running after ``load_timeout`` goes on without us."""
        r = self.cache.acquire_now(key)
        if r is not None:
            return r
        # shielded: the load (and our place in it) goes on when we stop waiting; the pin it
        # brings is dropped then, so a timed-out or cancelled request leaks nothing
        acquiring = asyncio.ensure_future(self.cache.acquire(key))
        try:
            return await asyncio.wait_for(asyncio.shield(acquiring), self.settings.load_timeout)
        except BaseException as exc:
            acquiring.add_done_callback(self._drop_pin)
            if isinstance(exc, asyncio.TimeoutError):
                raise ModelNotReady(key, self.settings.load_timeout) from None
            raise

    def _drop_pin(self, acquiring: asyncio.Future[Resident]) -> None:
        if not acquiring.cancelled() and acquiring.exception() is None:
            self.cache.release(acquiring.result())

    async def _invoke_many(self, requests: list[tuple[str, Any]]) -> list[np.ndarray | Exception]:
        """Like one ``_invoke`` per request, but requests whose models share an input schema
        and a slab are decoded and submitted as one block (for 1-row requests decoding, not the
        op, is the cost)."""
        results: list[Any] = [None] * len(requests)
        held: dict[int, Resident] = {}
        sizes: dict[int, int] = {}
        misses = []
        for i, (name, rows) in enumerate(requests):
            try:
                key, sizes[i] = self._checked_key(name, rows)
            except ValidationError as exc:
                results[i] = exc
                continue
            self.metrics.invoked(key, sizes[i])
            r = self.cache.acquire_now(key)  # resident: no task, no await
            if r is None:
                misses.append(self._acquire_into(held, results, i, key))
            else:
                held[i] = r
        try:
            if misses:
                await asyncio.gather(*misses)
            blocks = self._blocks(requests, sizes, held, results)
            futures = [
                (members, counts, self._score(slab, x, slots, len(members)))
                for slab, members, x, slots, counts in blocks
            ]
            for members, counts, fut in futures:
                try:
                    out = await fut  # (rows of all members, K)
                except Exception as exc:
                    for i in members:
                        results[i] = exc
                    continue
                for i, part in zip(members, np.split(out, np.cumsum(counts)[:-1]), strict=True):
                    held[i].uses += 1
                    held[i].served(len(part))
                    self.metrics.served(held[i].name)
                    results[i] = self.families.answer(held[i].meta, part)[0]
        finally:
            for r in held.values():
                self.cache.release(r)
        return results

    async def _acquire_into(
        self, held: dict[int, Resident], results: list[Any], i: int, key: str
    ) -> None:
        try:
            held[i] = await self._acquire(key)
        except Exception as exc:
            results[i] = exc

    def _blocks(
        self,
        requests: list[tuple[str, Any]],
        sizes: dict[int, int],
        held: dict[int, Resident],
        results: list[Any],
    ) -> list[_Block]:
        """(slab, member requests, rows, slots) per block: list rows (or 2-D numeric arrays of
        one width) that share an encoder and a slab are decoded in one call; a block that fails
        to decode is split into single requests so each error stays with its own request."""
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, r in held.items():
            rows = requests[i][1]
            if isinstance(rows, list):
                key: tuple[object, ...] = (id(r.meta.encoder), id(r.slab), "list")
            elif _is_matrix(rows):
                key = (id(r.meta.encoder), id(r.slab), "array", rows.shape[1])
            else:  # tensors and anything else go alone
                key = (i,)
            groups.setdefault(key, []).append(i)
        blocks: list[_Block] = []
        for group in groups.values():
            for members in runs_of_rows(group, sizes.__getitem__, self.settings.max_batch_rows):
                self._decode_block(members, requests, sizes, held, results, blocks)
        return blocks

    def _decode_block(
        self,
        members: list[int],
        requests: list[tuple[str, Any]],
        sizes: dict[int, int],
        held: dict[int, Resident],
        results: list[Any],
        blocks: list[_Block],
    ) -> None:
        """Decode ``members`` together; if that fails, each alone, so an error (row numbers
        included) belongs to its own request."""
        attempts = ([members] if len(members) > 1 else []) + [[i] for i in members]
        for attempt in attempts:
            r0 = held[attempt[0]]
            rows = requests[attempt[0]][1]
            if len(attempt) > 1:
                parts = [requests[i][1] for i in attempt]
                rows = (
                    np.concatenate(parts)
                    if isinstance(rows, np.ndarray)
                    else [row for part in parts for row in part]
                )
            try:
                x = self._encode(r0, rows)  # (rows of all of them, D)
            except Exception as exc:
                if len(attempt) == 1:
                    results[attempt[0]] = exc
                continue
            counts = [sizes[i] for i in attempt]
            slots = np.repeat(np.array([held[i].slot for i in attempt], np.int64), counts)
            blocks.append((r0.slab, attempt, x, slots, counts))
            if len(attempt) > 1:
                return  # all decoded together: no singles needed

    def _score(self, slab: Slab, x: Rows, slots: Slots, requests: int = 1) -> Awaitable[np.ndarray]:
        if x.shape[0] == 0:
            done: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
            done.set_result(np.zeros((0, slab.k), np.float32))
            return done
        return self.batcher.submit(slab, x, slots, requests)

    def _checked_key(self, name: str, rows: Any) -> tuple[str, int]:
        """The validated key and the request's row count (refused past the limit)."""
        key = validate_key(name)
        n = _row_count(rows)
        if n > self.settings.max_rows_per_request:
            raise ValidationError(
                f"{n} rows in one request; the limit is {self.settings.max_rows_per_request}"
            )
        return key, n

    def _encode(self, r: Resident, rows: Any) -> Rows:
        """Rows -> (n, D) float32 as the slab's op takes them (a linear slab's padded width):
        a tensor input stays a tensor on the device; anything else is a host array (the
        batcher moves a whole batch at once)."""
        encoder = r.meta.encoder
        d = self.families.row_width(r.slab, r.meta)
        # the widest array the request makes: the raw encoding, the op's rows, or its outputs
        wide = max(d, encoder.encoded_width, r.slab.k)
        cells = _row_count(rows) * wide
        if cells > self.settings.max_request_values:
            raise ValidationError(
                f"{_row_count(rows)} rows x {wide} encoded features or outputs = {cells} values "
                f"in one request; the limit is {self.settings.max_request_values}"
            )
        if _is_tensor(rows):
            return encoder.encode_tensor(rows, self.device, d)
        return encoder.encode(rows, d)

    def _stats(self) -> dict[str, Any]:
        b = self.batcher.counters
        return {
            **self.cache.stats(),
            "device": str(self.device),
            "batches": {"calls": b.calls, "rows": b.rows, "requests": b.requests},
        }

    def _exposition(self) -> bytes:
        stats = self.cache.stats()
        gpu = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            gpu = (total - free, total)
        return exposition(lambda: self.metrics.families(stats, gpu))

    def _report(self, top: int) -> dict[str, Any]:
        return {**self._stats(), **self.metrics.summary(), "hottest": self.cache.hottest(top)}

    async def _load(self, name: str) -> dict[str, Any]:
        r = await self._acquire(validate_key(name))
        self.cache.release(r)
        m = r.meta
        return {
            "name": name,
            "family": m.family,
            "task": m.task,
            "classes": m.classes,
            "outputs": r.slab.k,  # score columns (a multiclass model's k probabilities)
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


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with uvicorn[standard]): the HTTP server shares this
    loop, and uvloop's I/O costs a fraction of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _check_answer(per_row: int, n: int, limit: int) -> None:
    """Refuse an answer of ``n`` rows of ``per_row`` values that no encoding fits in
    ``limit`` bytes."""
    least = n * per_row * MIN_VALUE_BYTES
    if least > limit:
        raise ResponseTooLarge(
            f"{n} rows x {per_row} values (at least {MIN_VALUE_BYTES} bytes each)", least, limit
        )


def _row_count(rows: Any) -> int:
    if isinstance(rows, Mapping):  # columns by name
        return max((_row_count(v) for v in rows.values()), default=0)
    shape = getattr(rows, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    return len(rows) if isinstance(rows, (list, tuple)) else 0


def _is_matrix(rows: Any) -> bool:
    """A 2-D numeric numpy array (requests of these can be joined and decoded at once)."""
    return isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype.kind in "fiub"


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
