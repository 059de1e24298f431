"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._labels import assay_selection, imputation
from ._mil import attention, task_weights, training_history

__all__ = [
    "assay_performance",
    "assay_selection",
    "attention",
    "imputation",
    "task_weights",
    "training_history",
]
