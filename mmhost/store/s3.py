"""The S3 store: artifacts under ``s3://bucket/prefix/`` (AWS S3 or any S3-compatible server:
MinIO, Ceph, R2), read through boto3.

Credentials and region come from boto3's standard chain. Timeouts and retries are explicit
(settings), so an unreachable store fails a cold load in seconds, as ``StoreUnavailable``
(503), and never hangs a request. The version of a key is its ETag; a download is checked
against the size S3 reports and, for single-part uploads (an ETag that is a plain MD5),
against the MD5 of the bytes, so a truncated or corrupted download is never served.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from mmhost.errors import InvalidModelName, ModelNotFound, StoreAccessDenied, StoreUnavailable
from mmhost.store.base import Source, validate_key
from mmhost.store.folder import ARCHIVE_SUFFIXES

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def parse_url(url: str) -> tuple[str, str]:
    """'s3://bucket/a/b/' -> ('bucket', 'a/b/'); the prefix is '' or ends with '/'."""
    if not url.startswith("s3://"):
        raise ValueError(f"an S3 store URL starts with s3://, not {url!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in the S3 store URL {url!r}")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def client(endpoint_url: str | None = None, **config: Any) -> Any:
    """A boto3 S3 client (credentials and region from boto3's standard chain)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, config=Config(**config))


def put_object(url: str, data: bytes, *, endpoint_url: str | None = None) -> None:
    """Upload ``data`` to ``s3://bucket/key`` (offline tools: ``Artifact.save``, ``convert``);
    StoreAccessDenied / StoreUnavailable say why it failed."""
    bucket, key = parse_url(url)
    key = key.rstrip("/")
    if not key:
        raise ValueError(f"no object key in {url!r}")
    try:
        client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as exc:
        raise _translate(exc, key, f"s3://{bucket}/") from None


class S3Store:
    local = False

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        max_downloads: int = 16,
    ) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.client = client(
            endpoint_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_downloads + 4,  # the rest: HEADs and listings
        )
        self.max_attempts = max(1, max_attempts)
        self._downloads = threading.BoundedSemaphore(max_downloads)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def version(self, key: str) -> str:
        head = self._call(key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        etag = head.get("ETag")
        if not isinstance(etag, str):  # a reply cut inside its headers
            raise StoreUnavailable(self.url, f"the reply for {key!r} lacks its ETag")
        return etag.strip('"')

    def fetch(self, key: str) -> Source:
        """The object's bytes, checked. A body that breaks off or fails its check is fetched
        again (botocore retries the request, not the body), up to ``max_attempts`` in all."""
        for attempt in range(1, self.max_attempts + 1):
            with self._downloads:
                try:
                    return self._download(key)
                except _BrokenBody as exc:
                    if attempt == self.max_attempts:
                        raise StoreUnavailable(self.url, str(exc)) from None
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    def _download(self, key: str) -> Source:
        reply = self._call(key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        etag, size, body = reply.get("ETag"), reply.get("ContentLength"), reply.get("Body")
        try:
            if not isinstance(etag, str) or not isinstance(size, int) or body is None:
                # a reply cut inside its headers parses as one without them
                raise _BrokenBody(f"the reply for {key!r} lacks its ETag or Content-Length")
            try:
                data = body.read()
            except Exception as exc:  # the connection broke mid-body
                raise _BrokenBody(f"the download of {key!r} broke off: {exc}") from None
        finally:
            if body is not None:
                body.close()  # a broken connection goes, not back to the pool
        etag = etag.strip('"')
        if len(data) != size:
            raise _BrokenBody(
                f"the download of {key!r} was incomplete ({len(data)} of {size} bytes)"
            )
        if "-" not in etag and len(etag) == 32 and hashlib.md5(data).hexdigest() != etag:
            raise _BrokenBody(f"the download of {key!r} does not match its ETag")
        return Source(etag, data=data)

    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        keys: list[str] = []
        args = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            args["StartAfter"] = self.prefix + start_after
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                for obj in page.get("Contents", []):
                    k = obj["Key"][len(self.prefix) :]
                    if k.endswith(ARCHIVE_SUFFIXES):
                        keys.append(k)
                if limit is not None and len(keys) >= limit:
                    return keys[:limit]  # S3 lists in key order: stop reading pages
        except Exception as exc:
            err = _translate(exc, prefix or "(listing)", self.url)
            if isinstance(err, ModelNotFound):  # a listing finds nothing missing but the bucket
                err = StoreUnavailable(self.url, f"the bucket {self.bucket!r} does not exist")
            raise err from None
        return keys

    def key_of(self, location: str) -> str:
        if location.startswith("s3://"):
            bucket, rest = parse_url(location.rstrip("/") + "/")
            rest = rest.rstrip("/")
            if bucket != self.bucket or not rest.startswith(self.prefix):
                raise InvalidModelName(location, f"it is outside the store {self.url}")
            location = rest[len(self.prefix) :]
        return validate_key(location)

    lexical_key = key_of  # an S3 location is resolved by its text alone

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _call(self, key: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise _translate(exc, key, self.url) from None


class _BrokenBody(Exception):
    """A download whose body broke off or failed its size/MD5 check (worth another try)."""


def _translate(exc: Exception, key: str, url: str) -> Exception:
    """botocore's errors -> ours: not found, access denied, or the store is unavailable."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            return ModelNotFound(key, url)
        if code in _DENIED:
            return StoreAccessDenied(url, key)
        return StoreUnavailable(url, f"{code or 'error'} for {key!r}")
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(url, str(exc))
    return exc
