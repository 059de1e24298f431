"""Plots (:mod:`hcitools.pl`)."""

from ._assays import assay_heatmap, assay_performance, bootstrap_auroc_intervals
from ._hci import attention_field, plate_effects, top_attended
from ._labels import assay_selection, imputation
from ._m4 import assay_radar, gate_weights
from ._mil import attention, task_weights, training_history
from ._perturbation import dose_response, perturbation_metrics, perturbation_regression, rank_heatmap

__all__ = [
    "assay_heatmap",
    "assay_performance",
    "assay_radar",
    "assay_selection",
    "attention",
    "attention_field",
    "bootstrap_auroc_intervals",
    "dose_response",
    "gate_weights",
    "imputation",
    "perturbation_metrics",
    "perturbation_regression",
    "plate_effects",
    "rank_heatmap",
    "task_weights",
    "top_attended",
    "training_history",
]
