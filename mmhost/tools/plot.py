"""Charts of the device tier over a run of invocations, from a CSV: ``mmhost plot``.

``mmhost experiment cache`` writes its samples with these columns and draws them with these
functions; a benchmark or a scrape of a production endpoint with the same columns is pictured
the same way. One row per invocation:

| column | meaning | needed |
|---|---|---|
| ``invocation`` | 1-based invocation number (the x axis) | yes |
| ``LoadedModelCount`` | models resident in the device tier after it | yes |
| ``MemoryUtilization`` | device-tier bytes / its budget, 0..1 | yes |
| ``ModelCacheHit_last10`` | hit rate over the last ``WINDOW`` invocations, 0..1 | yes |
| ``phase`` | the experiment's phase; a change draws a boundary | no |
| ``ModelCacheHit_phase`` | hit rate so far within the phase, 0..1 | no |

The PNGs are ``WIDTH_IN`` x ``HEIGHT_IN`` inches at ``DPI``: 1200 x 600 pixels, always (no
tight bounding box, which would change the size with the labels). They are drawn on an Agg
canvas of their own, so matplotlib's global backend and pyplot's state are never touched.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

WINDOW = 10  # invocations in the trailing hit rate
WIDTH_IN, HEIGHT_IN, DPI = 12, 6, 100  # -> 1200 x 600 pixels
HEADROOM = 1.1  # y axes reach 110% of their largest value
REQUIRED = ["invocation", "LoadedModelCount", "MemoryUtilization", f"ModelCacheHit_last{WINDOW}"]
OPTIONAL = ["phase", "ModelCacheHit_phase"]
MEMORY_PNG = "loaded_models_memory.png"
CACHE_HIT_PNG = "loaded_models_memory_cache_hit.png"
INSTALL = "pip install 'mmhost[plots]'"

Columns = dict[str, list[float]]


class PlotsNotInstalled(ImportError):
    def __init__(self) -> None:
        super().__init__(f"matplotlib is not installed: {INSTALL}")


def require_matplotlib() -> None:
    """Raise ``PlotsNotInstalled`` now, before any long run whose end is a chart."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsNotInstalled() from None


def read_csv(path: str | Path) -> Columns:
    """The numeric columns of ``REQUIRED`` and those of ``OPTIONAL`` present, by name.
    ValueError names the file and what is wrong with it."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    f"needs {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})"
                )
            names = REQUIRED + [c for c in OPTIONAL if c in header]
            out: Columns = {c: [] for c in names}
            for line, row in enumerate(reader, start=2):
                for c in names:
                    try:
                        out[c].append(float(row[c]))
                    except (TypeError, ValueError):
                        raise ValueError(
                            f"{path}, line {line}: column {c} is {row[c]!r}, not a number"
                        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if not out["invocation"]:
        raise ValueError(f"{path}: no rows")
    return out


def render(data: Columns, out_dir: str | Path, subtitle: str = "") -> list[Path]:
    """Write the two charts into ``out_dir``; their paths.

    1. ``MEMORY_PNG``: LoadedModelCount (left axis) and MemoryUtilization (right axis).
    2. ``CACHE_HIT_PNG``: the same, plus the trailing and per-phase ModelCacheHit (right axis).
    """
    require_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / MEMORY_PNG, out / CACHE_HIT_PNG]
    _chart(data, paths[0], "Loaded models and memory utilization", subtitle, hits=False)
    _chart(data, paths[1], "Loaded models, memory utilization and cache hits", subtitle, hits=True)
    return paths


def _chart(data: Columns, path: Path, title: str, subtitle: str, hits: bool) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    x = data["invocation"]
    left = fig.add_subplot()
    right = left.twinx()
    lines: list[Any] = []
    # models of one size: the two lines coincide, so the count is wide and utilization dashed
    lines += left.plot(
        x, data["LoadedModelCount"], color="tab:blue", linewidth=4, label="LoadedModelCount"
    )
    lines += right.plot(
        x, data["MemoryUtilization"], color="tab:orange", linestyle="--", label="MemoryUtilization"
    )
    if hits:
        lines += right.plot(
            x,
            data[f"ModelCacheHit_last{WINDOW}"],
            color="tab:green",
            label=f"ModelCacheHit (last {WINDOW} invocations)",
        )
        if "ModelCacheHit_phase" in data:
            lines += right.plot(
                x,
                data["ModelCacheHit_phase"],
                color="tab:green",
                linestyle=":",
                label="ModelCacheHit (so far in the phase)",
            )
    if "phase" in data:
        _phases(left, x, data["phase"])
    left.set_xlabel("invocation")
    left.set_ylabel("LoadedModelCount (models in the device tier)")
    # the same headroom on both axes: at a full budget the count's plateau meets utilization 1
    left.set_ylim(0, max(1.0, *data["LoadedModelCount"]) * HEADROOM)
    right.set_ylabel("MemoryUtilization" + (", ModelCacheHit" if hits else "") + " (0-1)")
    right.set_ylim(0, HEADROOM)
    left.set_xlim(min(x) - 0.5, max(x) + 0.5)
    left.grid(alpha=0.3)
    fig.legend(lines, [ln.get_label() for ln in lines], loc="outside lower center", ncols=4)
    left.set_title(title + (f"\n{subtitle}" if subtitle else ""))
    fig.savefig(path, dpi=DPI)


def _phases(ax: Any, x: list[float], phase: list[float]) -> None:
    """A dashed line where the phase changes and each phase's name above its span."""
    starts = [0] + [i for i in range(1, len(phase)) if phase[i] != phase[i - 1]]
    for k, i in enumerate(starts):
        end = starts[k + 1] - 1 if k + 1 < len(starts) else len(x) - 1
        if i > 0:
            ax.axvline(x[i] - 0.5, color="gray", linestyle="--", linewidth=1)
        ax.text(
            (x[i] + x[end]) / 2,
            0.98,
            f"phase {phase[i]:g}",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            color="gray",
        )
