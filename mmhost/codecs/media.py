"""Media types: which request bodies we read (Content-Type) and which answers we write (Accept).

Parameters after ``;`` are accepted and ignored (``text/csv; charset=utf-8``,
``text/csv;label_size=0``, ``application/json; verbose=true``).
"""

from __future__ import annotations

import functools

from mmhost.errors import NotAcceptable, UnsupportedMediaType, ValidationError

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
RECORDIO = "application/x-recordio-protobuf"

# aliases clients send for the same thing
_ALIASES = {
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-ndjson": JSONLINES,
    "application/ndjson": JSONLINES,
    "application/csv": CSV,
    "text/x-csv": CSV,
    "application/npy": NPY,
    "application/x-recordio": RECORDIO,
}
REQUEST_TYPES = (CSV, JSON, JSONLINES, NPY, RECORDIO)
RESPONSE_TYPES = (JSON, CSV, JSONLINES, RECORDIO)
DEFAULT_RESPONSE = JSON
MAX_ACCEPT = 4096  # characters: browsers send ~100; each distinct value is parsed, then cached
_SHOWN = 100  # characters of a refused header that the error message quotes


def verbose(accept: str | None) -> bool:
    """Whether the Accept header asks for a verbose answer (``application/json;
    verbose=true``: a k-NN model's neighbours' labels and distances too)."""
    if not accept or len(accept) > MAX_ACCEPT:
        return False
    return "verbose=true" in accept.replace(" ", "").lower()


def _bare(media_type: str) -> str:
    t = media_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(t, t)


def request_type(content_type: str | None, body: bytes) -> str:
    """The codec for a body. Without a Content-Type, JSON if it looks like JSON, else CSV."""
    if not content_type or not content_type.strip():
        head = body.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
        return JSON if head in (b"{", b"[") else CSV
    t = _bare(content_type)
    if t not in REQUEST_TYPES:
        raise UnsupportedMediaType(_clipped(content_type), REQUEST_TYPES)
    return t


def response_type(accept: str | None) -> str:
    """The best response type an Accept header allows (q-values honoured); JSON for */*."""
    if not accept or not accept.strip():
        return DEFAULT_RESPONSE
    if len(accept) > MAX_ACCEPT:
        raise ValidationError(
            f"the Accept header is {len(accept)} characters; the limit is {MAX_ACCEPT}"
        )
    return _best(accept)


@functools.lru_cache(maxsize=256)
def _best(accept: str) -> str:
    ranked = []
    for n, part in enumerate(accept.split(",")):
        t, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.replace(" ", "").lower().startswith("q="):
                try:
                    q = float(p.split("=", 1)[1])
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also NaN
                    q = 0.0
        ranked.append((-q, n, _bare(t)))
    for neg_q, _, t in sorted(ranked):
        if neg_q >= 0:
            break
        if t in RESPONSE_TYPES:
            return t
        if t in ("*/*", "application/*"):
            return DEFAULT_RESPONSE
        if t == "text/*":
            return CSV
    raise NotAcceptable(_clipped(accept), RESPONSE_TYPES)


def _clipped(header: str) -> str:
    return header if len(header) <= _SHOWN else header[: _SHOWN - 3] + "..."
