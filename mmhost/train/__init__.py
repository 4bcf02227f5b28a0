"""Batched training of many per-entity models, straight into a store: ``mmhost train``.

``train_linear_learner`` fits one Linear Learner model per entity of a table in one batched
solve (``mmhost/train/linear_learner.py``); ``write_report`` writes what it did as a CSV and a
chart.
"""

from mmhost.train.linear_learner import Hyperparameters, TrainReport, train_linear_learner
from mmhost.train.report import write_report

__all__ = ["Hyperparameters", "TrainReport", "train_linear_learner", "write_report"]
