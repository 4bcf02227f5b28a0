"""A training run's report: ``report.csv`` (a row per entity: rows, what happened, its metric)
and ``report.png`` (the holdout metric against the entity's rows; matplotlib, when installed)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from mmhost.artifacts import Artifact


@dataclass
class EntityResult:
    entity: str
    rows: int
    train_rows: int = 0
    holdout_rows: int = 0
    status: str = "trained"  # trained | skipped | resumed
    reason: str = ""
    train_metric: float | None = None
    holdout_metric: float | None = None
    coef: np.ndarray | None = field(default=None, repr=False)  # (K, F) in the encoded space
    intercept: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TrainReport:
    metric: str  # rmse | accuracy
    entities: list[EntityResult]
    preprocessor: Artifact | None

    def by_entity(self) -> dict[str, EntityResult]:
        return {e.entity: e for e in self.entities}


COLUMNS = (
    "entity", "rows", "train_rows", "holdout_rows", "status", "reason", "train_{m}",
    "holdout_{m}",
)  # fmt: skip


def write_report(report: TrainReport, folder: str | Path) -> list[Path]:
    """The report's files in ``folder`` (made if missing)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([c.format(m=report.metric) for c in COLUMNS])
        for e in report.entities:
            w.writerow(
                [
                    e.entity, e.rows, e.train_rows, e.holdout_rows, e.status, e.reason,
                    "" if e.train_metric is None else f"{e.train_metric:.6g}",
                    "" if e.holdout_metric is None else f"{e.holdout_metric:.6g}",
                ]
            )  # fmt: skip
    written = [path]
    chart = _chart(report, out / "report.png")
    if chart is not None:
        written.append(chart)
    return written


def _chart(report: TrainReport, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    done = [e for e in report.entities if e.status == "trained"]
    rows = [e.train_rows for e in done]
    metric = [
        float("nan") if m is None else m
        for m in (
            e.holdout_metric if e.holdout_metric is not None else e.train_metric for e in done
        )
    ]
    which = "holdout" if any(e.holdout_metric is not None for e in done) else "training"
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(rows, metric, s=8)
    ax.set_xscale("log")
    ax.set_xlabel("training rows of the entity")
    ax.set_ylabel(f"{which} {report.metric}")
    skipped = sum(e.status == "skipped" for e in report.entities)
    ax.set_title(f"{len(done)} entities trained, {skipped} skipped")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.92)  # tight_layout's
    fig.savefig(path, dpi=100)  # margins for these labels, without its measuring (0.15 s)
    plt.close(fig)
    return path


def progress_bar(show: bool, err: TextIO) -> Callable[[int], Callable[[int], None]] | None:
    """A progress bar's maker: given the total, a function that counts entities done."""
    if not show:
        return None

    def start(total: int) -> Callable[[int], None]:
        try:
            from tqdm import tqdm
        except ModuleNotFoundError:
            done = [0]

            def count(n: int) -> None:
                done[0] += n
                print(f"mmhost train: {done[0]}/{total} entities", file=err)

            return count
        bar = tqdm(total=total, desc="mmhost train", unit="entity", file=err)

        def update(n: int) -> None:
            bar.update(n)

        return update

    return start
