"""``mmhost train linear-learner``: per-entity models fitted in one batched job, into a store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def add_parser(sub: Any) -> None:
    train = sub.add_parser("train", help="fit many per-entity models in one batched job")
    kinds = train.add_subparsers(dest="algorithm", required=True)
    ll = kinds.add_parser(
        "linear-learner",
        help="one Linear Learner model per entity (ridge, lasso, logistic, softmax)",
        description="Fit one linear model per entity of DATA, all in one batched solve (on "
        "CUDA when there is one), and write each to OUT as {entity}/{entity}.tar.gz, with the "
        "shared preprocessor as preprocessor.tar.gz. Hyperparameters are Linear Learner's.",
    )
    ll.add_argument("--data", required=True, help="a CSV/Parquet table, or a folder/prefix of "
                    "per-entity CSV files (label first, no header); local or s3://")  # fmt: skip
    ll.add_argument("--out", required=True, help="the store folder or s3:// prefix to write to")
    ll.add_argument("--entity-column", help="the table's entity column")
    ll.add_argument("--label-column", help="the table's label column")
    ll.add_argument("--feature-columns", help="comma-separated (default: every other column)")
    ll.add_argument("--categorical-columns", help="comma-separated columns to one-hot encode")
    ll.add_argument("--feature-names", help="comma-separated names of per-entity CSV features")
    ll.add_argument("--per-entity-preprocessing", action="store_true",
                    help="standardize each entity with its own means and deviations")  # fmt: skip
    types = ["regressor", "binary_classifier", "multiclass_classifier"]
    ll.add_argument("--predictor-type", default="regressor", choices=types)
    ll.add_argument("--num-classes", type=int, help="a multiclass_classifier's classes (>= 3)")
    ll.add_argument("--wd", type=float, default=0.0, help="L2 weight decay [0]")
    ll.add_argument("--l1", type=float, default=0.0, help="L1 penalty (regressors) [0]")
    ll.add_argument("--normalize-data", default="true", metavar="true|false")
    ll.add_argument("--normalize-label", default="auto", metavar="auto|true|false")
    ll.add_argument("--fit-intercept", default="true", metavar="true|false")
    ll.add_argument("--holdout-fraction", type=float, default=0.2,
                    help="each entity's rows held out for the report's metric [0.2]")  # fmt: skip
    ll.add_argument("--min-rows", type=int, default=1, help="skip entities with fewer [1]")
    ll.add_argument("--seed", type=int, default=0)
    ll.add_argument("--resume", action="store_true", help="skip entities already in OUT")
    ll.add_argument("--report", metavar="DIR", help="folder for report.csv and report.png "
                    "[default: OUT when it is a folder, else .]")  # fmt: skip
    ll.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ll.add_argument("--batch-entities", type=int, help="entities solved (and written) at once")
    ll.add_argument("--s3-endpoint-url", help="an S3-compatible endpoint (default: AWS)")
    ll.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mmhost.errors import MmhostError
    from mmhost.train import train_linear_learner, write_report

    try:
        report = train_linear_learner(
            args.data,
            args.out,
            entity_column=args.entity_column,
            label_column=args.label_column,
            feature_columns=_names(args.feature_columns),
            categorical_columns=_names(args.categorical_columns),
            feature_names=_names(args.feature_names),
            per_entity_preprocessing=args.per_entity_preprocessing,
            resume=args.resume,
            device=args.device,
            batch_entities=args.batch_entities,
            progress=not args.no_progress,
            s3_endpoint_url=args.s3_endpoint_url,
            predictor_type=args.predictor_type,
            num_classes=args.num_classes,
            wd=args.wd,
            l1=args.l1,
            normalize_data=_flag(args.normalize_data, "--normalize-data"),
            normalize_label=None
            if args.normalize_label == "auto"
            else _flag(args.normalize_label, "--normalize-label"),
            fit_intercept=_flag(args.fit_intercept, "--fit-intercept"),
            holdout_fraction=args.holdout_fraction,
            min_rows=args.min_rows,
            seed=args.seed,
        )
    except (MmhostError, ValueError) as exc:
        print(f"mmhost train: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    folder = args.report or (args.out if not args.out.startswith("s3://") else ".")
    files = write_report(report, Path(folder))
    counts: dict[str, int] = {}
    for e in report.entities:
        counts[e.status] = counts.get(e.status, 0) + 1
    said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"mmhost train: {said}; report: {', '.join(map(str, files))}", file=sys.stderr)
    return 0


def _names(text: str | None) -> list[str] | None:
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def _flag(text: str, name: str) -> bool:
    t = text.strip().lower()
    if t not in TRUE + FALSE:
        raise ValueError(f"{name} takes true or false, not {text!r}")
    return t in TRUE
