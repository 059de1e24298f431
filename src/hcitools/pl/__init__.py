"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._m4 import assay_radar, gate_weights
from ._labels import assay_selection, imputation
from ._mil import attention, task_weights, training_history

__all__ = [
    "assay_performance",
    "assay_radar",
    "assay_selection",
    "attention",
    "gate_weights",
    "imputation",
    "task_weights",
    "training_history",
]
