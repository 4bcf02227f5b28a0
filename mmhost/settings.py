"""The one settings object, built once at start-up and passed down.

Only this module reads the environment (``MMHOST_<FIELD>``). Keyword arguments to
``mmhost.Host`` are the same fields; later the CLI flags are too.

Size: one field a setting, each with the docstring that is its ``--help`` text.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

# the runtime's rule for an EndpointName
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_bytes(value: str | int | None) -> int | None:
    """'512MiB' -> 536870912; ints pass through; None stays None (= choose a default)."""
    if value is None or isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {value!r} as a byte size (e.g. 512MiB, 2GB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass
class Settings:
    """Every knob of a host. Byte fields accept ints or strings with units ('512MiB')."""

    store: str = "./models"
    """Model store: a local folder, or s3://bucket/prefix/ (keys are paths under it)."""
    preprocessor: str | None = None
    """Artifact path of a shared preprocessor put in front of every target model."""
    device: str = "auto"
    """'auto' (cuda when available, else cpu), 'cpu' or 'cuda'."""
    device_budget: int | None = None
    """Bytes of arena slots (the device tier). None: 50% of free VRAM on cuda, 1 GiB on cpu."""
    host_budget: int = 1024**3
    """Bytes of decoded parameters kept in host RAM for models demoted from the device."""
    disk_budget: int = 10 * 1024**3
    """Bytes of artifacts kept in the disk tier (only when disk_dir is set)."""
    disk_dir: str | None = None
    """Folder for the disk tier; None disables it (a folder store already is on disk)."""
    max_batch_rows: int = 65536
    """Rows per fused call; a larger burst is split into several calls."""
    max_delay_us: int = 0
    """Extra wait for more requests before a batch runs; 0 = run on the next loop turn."""
    revalidate_seconds: float = 60.0
    """How often a loaded model's artifact is checked for a change in the store (s); the new
    version is loaded before the old one is dropped. 0 = only when a model is loaded cold."""
    capacity_wait_seconds: float = 5.0
    """How long a load waits for in-flight batches to unpin models when the device budget is
    full of them, before failing with InsufficientCapacity (507)."""
    load_workers: int = 4
    """Threads reading and decoding artifacts (cold loads run there, off the engine loop)."""
    max_artifact_bytes: int = 256 * 1024**2
    """Refuse artifacts (compressed or expanded) larger than this."""
    large_artifact_bytes: int = 16 * 1024**2
    """Artifacts at least this big are decoded in a separate process (``decode_processes``),
    so parsing them (seconds for a 200 MB XGBoost JSON file) never stalls warm requests."""
    decode_processes: int = 1
    """Processes decoding large artifacts; each decodes one at a time, bounding their memory.
    0: large artifacts are decoded on the load threads, one at a time."""
    max_rows_per_request: int = 100_000
    """Refuse requests with more rows than this."""
    max_request_values: int = 50_000_000
    """Refuse requests whose encoded rows (rows x the model's encoded width, one-hot categories
    included) exceed this many float32 values (200 MB), before any is allocated."""
    load_timeout_seconds: float = 30.0
    """Seconds a request waits for its model's load before it gets ModelNotReadyException
    (429, which boto3 retries); the load itself goes on."""

    store_check: bool = True
    """Check at start-up of ``mmhost serve`` that the store answers (lists); an S3 store without
    credentials or an unreachable bucket then stops start-up, saying why, instead of failing
    every request with 503."""
    load_model: tuple[str, ...] = ()
    """Model keys ``mmhost serve`` loads before it opens its port (the flag repeats; the variable
    is comma-separated). A key that fails to load stops start-up."""
    load_models_from: str | None = None
    """A file of model keys (one a line; blank lines and lines starting with # skipped) to load
    the same way."""

    # --- the S3 store ----------------------------------------------------------------------
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible server (MinIO, Ceph, R2); None: AWS S3. Credentials and
    region come from boto3's standard chain (env, ~/.aws, instance role)."""
    s3_connect_timeout_seconds: float = 2.0
    """Seconds to wait for a connection to the store before an attempt fails."""
    s3_read_timeout_seconds: float = 10.0
    """Seconds to wait for bytes from the store before an attempt fails."""
    s3_max_attempts: int = 3
    """Attempts per store request (botocore's standard retry mode, with backoff)."""
    max_concurrent_downloads: int = 16
    """Downloads from a remote store in flight at once (its connections); a burst of cold
    loads beyond this waits its turn instead of opening a connection each."""

    # --- the HTTP server (``mmhost serve``) -------------------------------------------------
    bind_address: str = "127.0.0.1"
    """Address to listen on. The default keeps an unauthenticated server off the network."""
    port: int = 8080
    """TCP port to listen on."""
    endpoint_name: str = "mmhost"
    """The EndpointName that ``POST /endpoints/{name}/invocations`` answers to."""
    max_body_bytes: int = 6 * 1024**2
    """Largest request body accepted (bytes); the SageMaker runtime's limit is 6 MiB."""
    max_response_bytes: int = 6 * 1024**2
    """Largest answer sent (bytes); the SageMaker runtime's limit is 6 MB. Checked from rows x
    outputs before a request is scored (at 4 bytes a value at least), then on the answer."""
    body_timeout_seconds: float = 30.0
    """Seconds a client has to send a request's whole body once its head has arrived."""
    max_inflight_body_bytes: int = 256 * 1024**2
    """Bytes of request bodies being received at once, all clients together (by their
    Content-Length); past it a request gets 503 (ServiceUnavailable) before its body is read."""
    header_timeout_seconds: float = 5.0
    """Seconds a client has to send a request's head (request line and headers) once its first
    byte has arrived, or once it connected; then 408 and the connection is closed."""
    keep_alive_timeout_seconds: float = 5.0
    """Seconds an idle keep-alive connection is held open between requests."""
    max_connections: int = 1000
    """Open client connections at once; one more is answered 503 and closed at once (keep it
    below the process's open-file limit, ``ulimit -n``)."""
    max_container_models: int = 100_000
    """Names each principal may have loaded through ``POST /models`` at once."""
    log_level: str = "info"
    """Log level of the server: debug, info, warning or error."""
    log_format: str = "text"
    """Log lines as "text" or "json" (one JSON object a line: requests at debug, loads and
    evictions at info, each request with its id, which replies echo in x-amzn-RequestId)."""
    graceful_timeout_seconds: float = 30.0
    """Seconds requests in flight get to finish once the server stops (SIGTERM / SIGINT)."""
    drain_seconds: float = 0.0
    """Seconds between SIGTERM and the server ceasing to accept: readiness
    (``/v2/health/ready``) is false meanwhile, so a load balancer takes the replica out first."""
    docs: bool = True
    """Serve the API's description at /docs (Swagger UI) and /openapi.json; with an auth config
    they need an authenticated caller."""
    per_model_metrics: bool = False
    """Add a per-model invocation counter to /metrics (one series per model: small fleets)."""

    # --- security (``mmhost serve``): who may call, and how much ----------------------------
    auth_config: str | None = None
    """A JSON or YAML file of principals (access keys for SigV4, API keys for Bearer) and their
    IAM policies. None: the server is open to anyone who can reach it (keep it on loopback)."""
    auth_regions: str = "us-east-1"
    """Comma-separated regions a SigV4 signature may be scoped to; the first is the region of
    the endpoint ARN for API-key callers."""
    account_id: str = "000000000000"
    """The account in this endpoint's ARN (arn:aws:sagemaker:<region>:<account>:endpoint/...),
    which policies' Resource patterns match."""
    clock_skew_seconds: float = 300.0
    """How far a SigV4 request's X-Amz-Date may be from the server's clock (s)."""
    reject_replays: bool = False
    """Refuse a SigV4 signature seen before within the clock-skew window (a replayed request).
    Off by default, as AWS: boto3 signs two identical calls made in the same second
    identically, so callers must then make each call unique (InvokeEndpoint's InferenceId,
    which is signed); a failed request may always be sent again."""
    rate_limit: float = 0.0
    """Requests per second per principal (token bucket; 0 = unlimited), unless the principal's
    own ``limits`` in the auth config say otherwise."""
    rate_burst: int = 0
    """Requests a principal may send at once above its rate (0: one second's worth)."""
    cold_load_limit: float = 0.0
    """Cold model loads per second a principal may cause (0 = unlimited): one caller can't
    thrash the cache for everyone."""
    audit_log: str | None = None
    """File the audit log (JSON lines: denied, unauthenticated, throttled) is appended to;
    None: stderr."""

    _byte_fields = (
        "device_budget",
        "host_budget",
        "disk_budget",
        "max_artifact_bytes",
        "large_artifact_bytes",
        "max_body_bytes",
        "max_response_bytes",
        "max_inflight_body_bytes",
    )
    # (field, least allowed value, whether the least value itself is allowed): every number a
    # user can set, so that ``--load-timeout-seconds 0`` or ``--clock-skew-seconds -1`` stops
    # start-up
    _ranges = (
        ("device_budget", 1, True),
        ("host_budget", 0, True),
        ("disk_budget", 0, True),
        ("max_batch_rows", 1, True),
        ("max_delay_us", 0, True),
        ("revalidate_seconds", 0, True),
        ("capacity_wait_seconds", 0, True),
        ("load_workers", 1, True),
        ("max_artifact_bytes", 1, True),
        ("large_artifact_bytes", 0, True),
        ("decode_processes", 0, True),
        ("max_rows_per_request", 1, True),
        ("max_request_values", 1, True),
        ("load_timeout_seconds", 0, False),
        ("s3_connect_timeout_seconds", 0, False),
        ("s3_read_timeout_seconds", 0, False),
        ("s3_max_attempts", 1, True),
        ("max_concurrent_downloads", 1, True),
        ("max_body_bytes", 1, True),
        ("max_response_bytes", 1, True),
        ("body_timeout_seconds", 0, False),
        ("max_inflight_body_bytes", 1, True),
        ("header_timeout_seconds", 0, False),
        ("keep_alive_timeout_seconds", 0, False),
        ("max_connections", 1, True),
        ("max_container_models", 1, True),
        ("clock_skew_seconds", 0, True),
        ("graceful_timeout_seconds", 0, True),
        ("drain_seconds", 0, True),
        ("rate_limit", 0, True),
        ("rate_burst", 0, True),
        ("cold_load_limit", 0, True),
    )

    def __post_init__(self) -> None:
        for name in self._byte_fields:
            setattr(self, name, parse_bytes(getattr(self, name)))
        for name, least, inclusive in self._ranges:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, not {value!r}")
            if not (value >= least if inclusive else value > least) or value != value:
                bound = f">= {least}" if inclusive else f"> {least}"
                raise ValueError(f"{name} must be {bound}, not {value!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if not _ENDPOINT_NAME.fullmatch(self.endpoint_name):
            raise ValueError(
                f"endpoint_name {self.endpoint_name!r} must be 1-63 letters, digits and "
                "inner hyphens"
            )
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be 0..65535 (0: any free port), not {self.port}")
        if not [r for r in self.auth_regions.split(",") if r.strip()]:
            raise ValueError("auth_regions must name at least one region (e.g. us-east-1)")
        if not re.fullmatch(r"\d{12}", self.account_id):
            raise ValueError(f"account_id must be 12 digits, not {self.account_id!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {self.log_format!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError(
                f"log_level must be debug, info, warning or error, not {self.log_level!r}"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Fields from MMHOST_* variables, then explicit overrides (flags, kwargs) on top. The
        previous release's names (``RENAMED``) are still read, with a DeprecationWarning."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for old, new in RENAMED.items():
            if f"MMHOST_{old.upper()}" in env and f"MMHOST_{new.upper()}" not in env:
                deprecated(f"MMHOST_{old.upper()}", f"MMHOST_{new.upper()}")
                env = {**env, f"MMHOST_{new.upper()}": env[f"MMHOST_{old.upper()}"]}
            if old in overrides:
                deprecated(old, new)
                overrides.setdefault(new, overrides.pop(old))
        for f in dataclasses.fields(cls):
            raw = env.get(f"MMHOST_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = coerce(f, raw)
                except ValueError as exc:
                    raise ValueError(f"MMHOST_{f.name.upper()}={raw!r}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def resolved_device(self) -> str:
        """cuda needs a device torch sees and the Triton kernels (``mmhost[cuda]``); auto
        takes cuda when both are there (and says so when only the device is)."""
        import importlib.util
        import logging

        import torch

        cuda = torch.cuda.is_available()
        kernels = importlib.util.find_spec("triton") is not None
        if self.device == "auto":
            if cuda and not kernels:
                logging.getLogger("mmhost").warning(
                    "a CUDA device is there but not Triton, which its kernels need: serving "
                    "on the CPU (pip install 'mmhost[cuda]' to use the GPU)"
                )
            return "cuda" if cuda and kernels else "cpu"
        if self.device == "cuda" and not cuda:
            raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
        if self.device == "cuda" and not kernels:
            raise ValueError(
                "device='cuda' needs Triton for its kernels: pip install 'mmhost[cuda]'"
            )
        return self.device

    def resolved_device_budget(self, device: str) -> int:
        if self.device_budget is not None:
            return self.device_budget
        if device == "cuda":
            import torch

            free, _total = torch.cuda.mem_get_info()
            return free // 2
        return 1024**3


# the previous release's names of renamed settings (read until mmhost 0.2, with a warning)
RENAMED = {
    "host": "bind_address",
    "load_timeout": "load_timeout_seconds",
    "s3_connect_timeout": "s3_connect_timeout_seconds",
    "s3_read_timeout": "s3_read_timeout_seconds",
    "body_timeout": "body_timeout_seconds",
    "header_timeout": "header_timeout_seconds",
    "keep_alive_timeout": "keep_alive_timeout_seconds",
}


def deprecated(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated (mmhost 0.2 removes it): use {new}", DeprecationWarning, stacklevel=4
    )


def field_help() -> dict[str, str]:
    """Each field's docstring (the text under it in this file), for ``--help``."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(Settings)).body[0].body  # type: ignore[attr-defined]
    out = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            out[node.target.id] = " ".join(str(nxt.value.value).split())
    return out


def coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(f.type)
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind == "bool":
        value = raw.strip().lower()
        if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"expected true or false, not {raw!r}")
        return value in ("1", "true", "yes", "on")
    if "int" in kind and f.name not in Settings._byte_fields:
        return int(raw)
    if "float" in kind:
        return float(raw)
    return raw
