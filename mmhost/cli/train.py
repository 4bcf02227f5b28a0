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
    _data_args(ll)
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
    ll.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ll.add_argument("--batch-entities", type=int, help="entities solved (and written) at once")
    knn = kinds.add_parser(
        "knn",
        help="one k-NN model per entity (up to sample_size of its rows)",
        description="Keep up to --sample-size rows of each entity of DATA, encoded by the "
        "shared preprocessor, as a k-NN model at OUT/{entity}/{entity}.tar.gz.",
    )
    _data_args(knn)
    knn.add_argument("--k", type=int, required=True, help="neighbours that vote")
    knn.add_argument("--sample-size", type=int, required=True, help="rows kept per entity")
    knn.add_argument("--predictor-type", default="classifier", choices=["classifier", "regressor"])
    rcf = kinds.add_parser(
        "rcf",
        help="one Random Cut Forest per entity (AWS's library, the rcf extra)",
        description="Stream each entity's numeric rows of DATA into a Random Cut Forest and "
        "write it to OUT/{entity}/{entity}.tar.gz. --label-column is optional (not a feature).",
    )
    _data_args(rcf)
    rcf.add_argument("--num-trees", type=int, default=100)
    rcf.add_argument("--num-samples-per-tree", type=int, default=256)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="a CSV/Parquet table, or a folder/prefix of "
                   "per-entity CSV files (label first, no header); local or s3://")  # fmt: skip
    p.add_argument("--out", required=True, help="the store folder or s3:// prefix to write to")
    p.add_argument("--entity-column", help="the table's entity column")
    p.add_argument("--label-column", help="the table's label column")
    p.add_argument("--feature-columns", help="comma-separated (default: every other column)")
    p.add_argument("--categorical-columns", help="comma-separated columns to one-hot encode")
    p.add_argument("--feature-names", help="comma-separated names of per-entity CSV features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="skip entities already in OUT")
    p.add_argument("--report", metavar="DIR", help="folder for report.csv and report.png "
                   "[default: OUT when it is a folder, else .]")  # fmt: skip
    p.add_argument("--s3-endpoint-url", help="an S3-compatible endpoint (default: AWS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mmhost.errors import MmhostError
    from mmhost.train import write_report

    data = {
        "entity_column": args.entity_column,
        "label_column": args.label_column,
        "feature_columns": _names(args.feature_columns),
        "categorical_columns": _names(args.categorical_columns),
        "feature_names": _names(args.feature_names),
        "resume": args.resume,
        "progress": not args.no_progress,
        "s3_endpoint_url": args.s3_endpoint_url,
        "seed": args.seed,
    }
    try:
        report = _train(args, data)
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


def _train(args: argparse.Namespace, data: dict[str, Any]) -> Any:
    from mmhost.train import train_knn, train_linear_learner, train_rcf

    if args.algorithm == "knn":
        return train_knn(
            args.data, args.out, k=args.k, sample_size=args.sample_size,
            predictor_type=args.predictor_type, **data,
        )  # fmt: skip
    if args.algorithm == "rcf":
        return train_rcf(
            args.data, args.out, num_trees=args.num_trees,
            num_samples_per_tree=args.num_samples_per_tree, **data,
        )  # fmt: skip
    return train_linear_learner(
        args.data,
        args.out,
        per_entity_preprocessing=args.per_entity_preprocessing,
        device=args.device,
        batch_entities=args.batch_entities,
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
        **data,
    )


def _names(text: str | None) -> list[str] | None:
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def _flag(text: str, name: str) -> bool:
    t = text.strip().lower()
    if t not in TRUE + FALSE:
        raise ValueError(f"{name} takes true or false, not {text!r}")
    return t in TRUE
