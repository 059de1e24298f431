"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._m4 import assay_radar, gate_weights
from ._mil import attention, task_weights, training_history

__all__ = [
    "assay_performance",
    "assay_radar",
    "attention",
    "gate_weights",
    "task_weights",
    "training_history",
]
