"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_performance
from ._mil import attention, task_weights, training_history
from ._perturbation import dose_response, perturbation_metrics, perturbation_regression, rank_heatmap

__all__ = [
    "assay_performance",
    "attention",
    "dose_response",
    "perturbation_metrics",
    "perturbation_regression",
    "rank_heatmap",
    "task_weights",
    "training_history",
]
