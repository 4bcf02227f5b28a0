"""Reading and writing artifact containers (folder or .tar.gz) safely.

Artifacts are untrusted: tar entries must be plain files with relative, ``..``-free names,
the gzip stream is inflated only up to the size cap (a bomb stops there, whatever its tar
headers claim), and pickles are refused by name and by magic bytes. Every failure raises
ManifestError with the reason; callers attach the model name.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import safetensors.numpy

from mmhost.artifacts import knn
from mmhost.artifacts.linear_learner import MODEL_FILE, is_linear_learner, read_linear_learner
from mmhost.artifacts.manifest import Artifact, ManifestError, Preprocessing, parse_manifest
from mmhost.artifacts.members import MAX_ENTRY_NAME, Members, check_path

MANIFEST = "mmhost.json"
PARAMS = "params.safetensors"
XGBOOST_MODEL = "xgboost-model"  # XGBoost's JSON/UBJSON file, as SageMaker's XGBoost names it
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".sav")
MAX_MEMBERS = 64
# tar's own bytes beside the files: a 512-byte header (and up to 511 of padding) per entry,
# long-name / pax records, and the end-of-archive blocks rounded up to a 10 KiB record
TAR_OVERHEAD = MAX_MEMBERS * 4096 + 20 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


def read_artifact(path: str | os.PathLike[str], max_bytes: int = 256 * 1024**2) -> Artifact:
    """Read a folder artifact or an archive file."""
    p = Path(path)
    if p.is_dir():
        files = _read_folder(p, max_bytes)
        if not files:
            _folder_hint(p)
        return _from_files(files, max_bytes)
    if p.is_symlink():
        raise ManifestError(f"{p.name} is a symbolic link")
    size = p.stat().st_size
    if size > max_bytes:
        raise ManifestError(f"archive is {size} bytes, over the {max_bytes}-byte cap")
    return read_artifact_bytes(p.read_bytes(), max_bytes)


def read_artifact_bytes(data: bytes, max_bytes: int = 256 * 1024**2) -> Artifact:
    """Read a .tar.gz (or plain .tar) artifact held in memory."""
    if _is_pickle(data):
        raise ManifestError(
            "the artifact is a pickle; mmhost never unpickles (convert it with mmhost.convert)"
        )
    return _from_files(_read_tar(data, max_bytes), max_bytes)


def artifact_bytes(art: Artifact) -> bytes:
    """The artifact as a .tar.gz: ``mmhost.json``, ``params.safetensors`` (and the XGBoost model
    file). mtime=0 and fixed member metadata: the same model gives the same bytes (and ETag)."""
    parts = []
    for name, blob in _files(art):  # what tarfile.open(mode="w").addfile writes, without its
        # file-object machinery (a third of a small model's time)
        parts += [_tar_header(name, len(blob)), blob, bytes(-len(blob) % tarfile.BLOCKSIZE)]
    parts.append(bytes(2 * tarfile.BLOCKSIZE))  # the end of the archive
    size = sum(map(len, parts))
    parts.append(bytes(-size % tarfile.RECORDSIZE))
    return gzip.compress(b"".join(parts), compresslevel=6, mtime=0)


@functools.lru_cache(maxsize=256)
def _tar_header(name: str, size: int) -> bytes:
    """A member's header (the same for every model of one shape: built once)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT)


def write_artifact(
    art: Artifact, path: str | os.PathLike[str], *, s3_endpoint_url: str | None = None
) -> None:
    """A folder, a .tar.gz / .tgz file, or an ``s3://bucket/key.tar.gz`` object (uploaded with
    boto3's credentials; the endpoint from ``s3_endpoint_url`` or ``MMHOST_S3_ENDPOINT_URL``)."""
    text = os.fspath(path)
    if text.startswith("s3://"):
        from mmhost.store.s3 import put_object

        if not text.endswith((".tar.gz", ".tgz")):
            raise ValueError(f"an artifact in S3 is one .tar.gz object: end {text!r} with .tar.gz")
        endpoint = s3_endpoint_url or os.environ.get("MMHOST_S3_ENDPOINT_URL") or None
        put_object(text, artifact_bytes(art), endpoint_url=endpoint)
        return
    p = Path(text)
    if p.name.endswith((".tar.gz", ".tgz")):
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(artifact_bytes(art))
        os.replace(tmp, p)  # readers never see a half-written archive
    else:
        p.mkdir(parents=True, exist_ok=True)
        for name, blob in sorted(_files(art), key=lambda f: f[0] == MANIFEST):
            (p / name).write_bytes(blob)  # the manifest last: a folder is whole once it's there


def _files(art: Artifact) -> list[tuple[str, bytes]]:
    files = [
        (MANIFEST, json.dumps(art.manifest()).encode()),  # one line: the C encoder
        (PARAMS, safetensors.numpy.save(art.tensors())),
    ]
    if art.xgboost is not None:
        files.append((XGBOOST_MODEL, art.xgboost))
    return files


def _from_files(files: dict[str, bytes], max_bytes: int) -> Artifact:
    """The artifact, recognized by what it holds: ``mmhost.json`` (mmhost/1), an
    ``xgboost-model`` (SageMaker's XGBoost), a ``model_algo-1`` MXNet module (Linear Learner)."""
    pickles = [
        n
        for n, b in files.items()
        if n not in (MANIFEST, PARAMS) and (n.endswith(PICKLE_SUFFIXES) or _is_pickle(b))
    ]
    if pickles:
        missing = "" if MANIFEST in files else f" and no {MANIFEST}"
        raise ManifestError(
            f"the artifact holds a pickle ({pickles[0]}){missing}; "
            "mmhost never unpickles (convert it with mmhost.convert)"
        )
    if MANIFEST not in files:
        if XGBOOST_MODEL in files:
            # SageMaker's built-in XGBoost: the model file alone; its inputs, task and outputs
            # come from the model itself when it is parsed (families.trees)
            return Artifact(
                "model",
                [],
                Preprocessing.identity(0),
                algorithm="xgboost",
                xgboost=files[XGBOOST_MODEL],
            )
        if MODEL_FILE in files and knn.PARAMS in files:  # SageMaker's k-NN: index, labels, params
            return knn.read_sagemaker_knn(files, max_bytes)
        if MODEL_FILE in files:
            if is_linear_learner(files[MODEL_FILE]):
                return read_linear_learner(files[MODEL_FILE], max_bytes)
            raise ManifestError(
                f"{MODEL_FILE} is not a Linear Learner module (a zip), and no {knn.PARAMS} "
                "beside it makes it a k-NN model; other SageMaker built-ins' models are not "
                "served yet"
            )
        found = ", ".join(sorted(files)[:8]) + (", ..." if len(files) > 8 else "")
        raise ManifestError(f"no {MANIFEST} in the artifact (found: {found or 'nothing'})")
    if PARAMS not in files:
        raise ManifestError(f"no {PARAMS} in the artifact")
    try:
        tensors = safetensors.numpy.load(files[PARAMS])
    except Exception as exc:  # safetensors raises its own error type from Rust
        raise ManifestError(f"{PARAMS} is not a valid safetensors file: {exc}") from None
    for name, arr in tensors.items():
        if arr.dtype not in (np.float32, np.float64):
            raise ManifestError(f"tensor {name!r} has dtype {arr.dtype}; only float32/64 allowed")
    art = parse_manifest(files[MANIFEST], tensors)
    if art.algorithm == "xgboost":
        if XGBOOST_MODEL not in files:
            raise ManifestError(f"an xgboost artifact needs its model file {XGBOOST_MODEL!r}")
        art.xgboost = files[XGBOOST_MODEL]
    return art


def _folder_hint(p: Path) -> None:
    """A folder of no artifact files: where it holds one archive, the key meant that file."""
    from mmhost.store.folder import ARCHIVE_SUFFIXES

    inside = sorted(e.name for e in p.iterdir() if e.name.endswith(ARCHIVE_SUFFIXES))[:2]
    if len(inside) == 1:
        raise ManifestError(
            f"this key is a folder that holds one archive, {inside[0]!r}: name it in the key "
            f"(.../{p.name}/{inside[0]}) to invoke that model"
        )


def _read_folder(p: Path, max_bytes: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for entry in sorted(p.iterdir())[:MAX_MEMBERS]:
        if entry.is_symlink():
            raise ManifestError(f"{entry.name} is a symbolic link; artifacts hold plain files only")
        if not entry.is_file():
            continue
        total += entry.stat().st_size
        if total > max_bytes:
            raise ManifestError(f"artifact files exceed the {max_bytes}-byte cap")
        known = (MANIFEST, PARAMS, XGBOOST_MODEL, MODEL_FILE, *knn.FILES)
        if entry.name in known or entry.name.endswith(PICKLE_SUFFIXES):
            files[entry.name] = entry.read_bytes()
    return files


def _inflate(data: bytes, max_bytes: int) -> bytes:
    """The tar inside a gzip stream (a plain tar as is), refused as soon as it passes
    ``max_bytes`` plus tar's own overhead: tar headers (pax records, GNU long names) are read
    whole before any entry size can be checked, so only the inflated size bounds memory."""
    if not data.startswith(_GZIP_MAGIC):
        if data[257:262] != b"ustar":  # where every POSIX and GNU tar header says so
            raise ManifestError(
                "the artifact is not a .tar.gz or .tar archive (only gzip and tar are read)"
                if data
                else "the artifact is empty"
            )
        return data  # a plain .tar is no bigger than the bytes we hold
    limit = max_bytes + TAR_OVERHEAD
    out = bytearray()
    rest = data
    try:
        while rest:  # gzip allows several members one after another
            gz = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            out += gz.decompress(rest, limit + 1 - len(out))
            if len(out) > limit:
                raise ManifestError(f"archive expands past the {max_bytes}-byte cap")
            if not gz.eof:
                raise ManifestError("archive is truncated or corrupt: the gzip stream ends early")
            rest = gz.unused_data.lstrip(b"\x00")  # gzip tolerates zero padding at the end
    except zlib.error as exc:
        raise ManifestError(f"archive is truncated or corrupt: {exc}") from None
    return bytes(out)


def _read_tar(data: bytes, max_bytes: int) -> dict[str, bytes]:
    raw = _inflate(data, max_bytes)
    members = Members("archive", max_bytes)
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for n, member in enumerate(tar):
                if n >= MAX_MEMBERS:
                    raise ManifestError(f"archive has more than {MAX_MEMBERS} entries")
                name = _safe_name(member)
                if member.isdir():
                    continue
                base = members.admit(name, member.size)
                f = tar.extractfile(member)
                assert f is not None  # regular files always have a payload
                blob = f.read()
                if len(blob) != member.size:
                    raise ManifestError(f"archive is truncated inside {name}")
                members.files[base] = blob
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ManifestError(
            f"archive is truncated or corrupt: {exc or type(exc).__name__}"
        ) from None
    return members.files


def _safe_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if len(name) > MAX_ENTRY_NAME:
        check_path(name, "archive")  # says how long it is
    if member.issym() or member.islnk():
        raise ManifestError(f"archive entry {name!r} is a link; artifacts hold plain files only")
    if not (member.isfile() or member.isdir()):
        raise ManifestError(f"archive entry {name!r} is not a plain file")
    check_path(name, "archive", member.isfile())
    return name


def _is_pickle(blob: bytes) -> bool:
    # protocol 2+ pickles start with PROTO (0x80) and the protocol number
    return len(blob) >= 2 and blob[0] == 0x80 and 2 <= blob[1] <= 5
