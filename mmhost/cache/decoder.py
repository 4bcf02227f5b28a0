"""Decoding an artifact's bytes into a model: small ones on the load thread, large ones in a
separate process, one at a time per process.

Parsing a 200 MB XGBoost JSON file is seconds of pure-Python work under the GIL (and ~1.5 GB
of transient objects): on a load thread it stalls every warm request of the server meanwhile.
In a worker process (``python -m mmhost.cache.decode_worker``, started on first use) it stalls
nothing here; the composed model (numpy arrays) comes back by pickle, a copy at memory speed.
The number of processes bounds how many large decodes run at once, and so their memory. With
``decode_processes=0`` large decodes run on the load threads, still one at a time. Only our own
composed model crosses back; the untrusted bytes are parsed on the far side.
"""

from __future__ import annotations

import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from mmhost.artifacts import Artifact, read_artifact, read_artifact_bytes
from mmhost.artifacts.manifest import ManifestError
from mmhost.families.router import Model, compile_model
from mmhost.store.base import Source

_GZIP = b"\x1f\x8b"


def decode(
    data: bytes | None, folder: Path | None, preprocessor: Artifact | None, max_bytes: int
) -> Model:
    """The artifact (archive bytes or a folder) composed into a model (ManifestError if bad)."""
    if folder is not None:
        art = read_artifact(folder, max_bytes)
    else:
        assert data is not None
        if len(data) > max_bytes:
            raise ManifestError(f"artifact is {len(data)} bytes, over the {max_bytes}-byte cap")
        art = read_artifact_bytes(data, max_bytes)
    return compile_model(art, preprocessor)


class DecoderDied(Exception):
    """The decoding process ended without an answer (killed, or out of memory)."""


class _Worker:
    """One ``python -m mmhost.cache.decode_worker`` process: requests and answers are pickled
    frames on its stdin and stdout (our own objects both ways: the artifact's bytes go in as
    bytes, our composed model comes back)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmhost.cache.decode_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def decode(self, request: tuple[object, ...]) -> Model:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _write(self.proc.stdin, request)
            ok, answer = _read(self.proc.stdout)
        except (OSError, EOFError, pickle.UnpicklingError):
            self.close()
            raise DecoderDied(
                "its decoding process ended without an answer (out of memory?)"
            ) from None
        if not ok:
            raise ManifestError(str(answer))
        model: Model = answer
        return model

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class Decoder:
    def __init__(self, large_bytes: int, processes: int) -> None:
        self.large_bytes = large_bytes
        self.processes = processes
        # idle workers; None stands for one not started yet (started on first use)
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(processes):
            self._idle.put(None)
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._in_thread = threading.BoundedSemaphore(1)  # large decodes without processes
        self.large_decodes = 0

    def decode(self, src: Source, preprocessor: Artifact | None, max_bytes: int) -> Model:
        """Called on load threads."""
        if _size(src) < self.large_bytes:
            return decode(src.data, src.folder, preprocessor, max_bytes)
        self.large_decodes += 1
        if self.processes == 0:
            with self._in_thread:
                return decode(src.data, src.folder, preprocessor, max_bytes)
        worker = self._idle.get()  # waits for a free process: one large decode each
        try:
            if worker is None or worker.proc.poll() is not None:
                if worker is not None:
                    worker.close()  # it died idle (killed): reap it and close its pipes
                worker = self._start()
            return worker.decode((src.data, src.folder, preprocessor, max_bytes))
        except DecoderDied:
            worker = None  # a new one next time
            raise
        finally:
            self._idle.put(worker)

    def _start(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all = [w for w in self._all if w.proc.poll() is None] + [worker]
        return worker

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for w in workers:
            w.close()


def _write(stream: IO[bytes], obj: object) -> None:
    frame = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(frame)) + frame)
    stream.flush()


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(8)
    if len(head) != 8:
        raise EOFError("the decoding process closed its pipe")
    (n,) = struct.unpack("<Q", head)
    frame = stream.read(n)
    if len(frame) != n:
        raise EOFError("the decoding process closed its pipe")
    return pickle.loads(frame)


def serve() -> None:
    """The worker's loop: decode each request, answer (True, model) or (False, why)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the answer pipe
    while True:
        try:
            data, folder, preprocessor, max_bytes = _read(stdin)
        except EOFError:
            return
        try:
            answer: tuple[bool, object] = (True, decode(data, folder, preprocessor, max_bytes))
        except ManifestError as exc:
            answer = (False, str(exc))
        _write(stdout, answer)


def _size(src: Source) -> int:
    """The artifact's size as decoding sees it: a gzip's expanded size (its trailer says it,
    modulo 4 GiB; a lie there only moves the decode, every cap still applies), else its own."""
    if src.data is not None:
        if src.data[:2] == _GZIP and len(src.data) >= 18:
            return max(len(src.data), int.from_bytes(src.data[-4:], "little"))
        return len(src.data)
    assert src.folder is not None
    try:
        return sum(p.stat().st_size for p in src.folder.iterdir() if p.is_file())
    except OSError:
        return 0
