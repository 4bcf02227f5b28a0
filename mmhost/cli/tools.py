"""The offline commands: ``mmhost convert``, ``mmhost store ls``, ``mmhost build-kernels``."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    if args.command == "build-kernels":
        return build_kernels()
    if args.command == "store":
        return store_ls(args.prefix, args.store, args.s3_endpoint_url)
    return convert(args.src, args.dst, args.s3_endpoint_url, progress=not args.no_progress)


def build_kernels() -> int:
    from mmhost.kernels import _native

    prebuilt, why = _native._prebuilt()
    if prebuilt is not None:
        print(
            f"mmhost build-kernels: the kernels built at install are current ({prebuilt.__file__})"
        )
        return 0
    print(f"mmhost build-kernels: {why}; compiling into {_native.cache_dir()}", file=sys.stderr)
    try:
        module = _native.build(verbose=True)
    except Exception as exc:
        print(f"mmhost build-kernels: failed: {str(exc).strip()}", file=sys.stderr)
        return 1
    print(f"mmhost build-kernels: ready: {module.__file__}")
    return 0


def store_ls(prefix: str, store: str | None, endpoint_url: str | None) -> int:
    from mmhost.errors import MmhostError
    from mmhost.settings import Settings
    from mmhost.store import open_store

    try:
        settings = Settings.from_env(store=store, s3_endpoint_url=endpoint_url)
        keys = open_store(settings).list(prefix)
    except (MmhostError, ValueError) as exc:
        print(f"mmhost store ls: {exc}", file=sys.stderr)
        return 2
    for key in keys:
        print(key)
    return 0


def convert(src: str, dst: str, endpoint_url: str | None, *, progress: bool) -> int:
    from mmhost.convert.bulk import convert_all
    from mmhost.errors import MmhostError

    try:
        outcomes = convert_all(src, dst, s3_endpoint_url=endpoint_url, progress=progress)
    except (MmhostError, ValueError) as exc:  # the source can't be listed
        print(f"mmhost convert: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if o.error]
    print(
        f"mmhost convert: {len(outcomes) - len(failed)} of {len(outcomes)} model(s) converted "
        f"into {dst}" + (f"; {len(failed)} failed (above)" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
