"""Evaluation: dataset-level confusion matrices, the paper's F1 / IoU tables, and ``fpliif eval``."""

from .evaluate import evaluate, format_table, trivial_baseline
from .metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix", "evaluate", "format_table", "trivial_baseline"]
