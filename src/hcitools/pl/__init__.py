"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._mil import attention, task_weights, training_history

__all__ = ["assay_performance", "attention", "task_weights", "training_history"]
