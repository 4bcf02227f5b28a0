"""Batched training of many per-entity models, straight into a store: ``mmhost train``.

``train_linear_learner`` fits one Linear Learner model per entity of a table in one batched
solve and writes each to a store (``mmhost/train/linear_learner.py``); ``fit_table`` does the
fitting alone, on a table already read (``read_table``); ``write_report`` writes what a run did
as a CSV and a chart; ``train_knn`` and ``train_rcf`` keep samples of each entity's rows
(``mmhost/train/samples.py``).
"""

from mmhost.train.data import Table, read_table
from mmhost.train.linear_learner import (
    Hyperparameters,
    fit_table,
    train_linear_learner,
)
from mmhost.train.report import TrainReport, write_report
from mmhost.train.samples import train_knn, train_rcf

__all__ = [
    "Hyperparameters",
    "Table",
    "TrainReport",
    "fit_table",
    "read_table",
    "train_knn",
    "train_linear_learner",
    "train_rcf",
    "write_report",
]
